"""The DER study's results: summaries, the verdict on DER's effect, the task
comparison and the figures, computed from `results.csv` rows alone.

`der_study.run_study` writes them after every run; they are also what a
reader of a finished study calls (`summarize(config, read_rows(path))`).
  summarize / summary_markdown   per configuration: final success (mean of
                                 the last quarter of iterations, seeds
                                 averaged) with its bootstrap 95% band,
                                 iterations to the threshold, and the last
                                 quarter's return, zone share and critic Q
  der_effects / effects_markdown does DER help with no demonstrations and
                                 with all shots in all buffers?
  compare_tasks (+ markdown, plot) is the lap joint harder than the
                                 peg-in-hole?
  plot_study                     the paper's figure layout

A `config` here is the study's `der_study.StudyConfig` (its task, threshold,
configurations, iterations and steps per iteration are read); this module
does not import `der_study`, which imports it.
"""

from __future__ import annotations

import dataclasses
import textwrap
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from insertion_jax.training import plots, run_dir, stats


def nanmean(values, axis=None):
    """np.nanmean without the warning for all-NaN slices (they stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        return np.nanmean(np.asarray(values, float), axis=axis)


def curves(rows, structure: str, der_on: bool, key: str) -> Tuple[np.ndarray, np.ndarray]:
    """(iterations (T,), values (seeds, T)) of one configuration."""
    mine = [
        r for r in rows if r['structure'] == structure and r['der'] == ('on' if der_on else 'off')
    ]
    iterations = sorted({r['iteration'] for r in mine})
    seeds = sorted({r['seed'] for r in mine})
    table = {(r['seed'], r['iteration']): r.get(key, np.nan) for r in mine}
    values = np.array([[table.get((s, i), np.nan) for i in iterations] for s in seeds], float)
    return np.asarray(iterations), values


def summarize(config: Any, rows) -> Dict[str, Any]:
    """Final success (mean over the last quarter of the iterations run so far)
    with its 95% band, the first iteration whose seed mean reaches the
    threshold, and the final return, zone share and critic's mean Q
    (last-quarter means over seeds); `planned_iterations` tells a finished
    study (every configuration's `iterations` equal to it) from a stopped one."""
    out = {
        'task': config.task,
        'threshold': config.threshold,
        'planned_iterations': config.iterations,
        'steps_per_run': config.iterations * config.steps_per_iteration,
        'configurations': [],
    }
    for structure, der_on in config.configurations:
        iterations, success = curves(rows, structure, der_on, 'success_rate')
        tail = max(1, len(iterations) // 4)

        def final_mean(key, structure=structure, der_on=der_on, tail=tail):
            values = curves(rows, structure, der_on, key)[1]
            return run_dir.to_python(nanmean(values[:, -tail:])) if values.size else None

        final = nanmean(success[:, -tail:], axis=1) if success.size else np.zeros(0)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            mean, low, high = (
                plots.mean_and_band(final[:, None], None, None)
                if final.size
                else (np.nan, np.nan, np.nan)
            )
        seed_mean = nanmean(success, axis=0) if success.size else np.zeros(0)
        reached = [
            int(i) for i, v in zip(iterations, seed_mean, strict=True) if v >= config.threshold
        ]
        out['configurations'].append(
            {
                'structure': structure,
                'der': der_on,
                'final_success': run_dir.to_python(np.squeeze(mean)),
                'final_success_low': run_dir.to_python(np.squeeze(low)),
                'final_success_high': run_dir.to_python(np.squeeze(high)),
                'seeds': int(final.size),
                'final_return': final_mean('mean_return'),
                'final_zone_share': final_mean('zone_share'),
                'final_q_mean': final_mean('q_mean'),
                'iterations_to_threshold': reached[0] if reached else None,
                'iterations': int(iterations[-1]) if iterations.size else 0,
            }
        )
    return out


def summary_markdown(summary: Dict[str, Any]) -> str:
    def pct(v):
        return '–' if v is None else f'{100 * v:.0f}%'

    lines = [
        f'**{summary["task"]}**: success of the training episodes, last quarter of the '
        'iterations, mean over seeds [bootstrap 95% band]',
        '',
        f'| structure | DER | final success | final return | iterations to '
        f'{100 * summary["threshold"]:.0f}% | zone share of batches | critic mean Q |',
        '|---|---|---|---|---|---|---|',
    ]

    def number(v):
        return '–' if v is None else f'{v:.0f}'

    for c in summary['configurations']:
        band = f'[{pct(c["final_success_low"])}, {pct(c["final_success_high"])}]'
        lines.append(
            f'| {c["structure"]} | {"on" if c["der"] else "off"} | {pct(c["final_success"])} '
            f'{band} | {number(c["final_return"])} | '
            f'{c["iterations_to_threshold"] or "not reached"} | '
            f'{pct(c.get("final_zone_share"))} | {number(c.get("final_q_mean"))} |'
        )
    lines += [
        '',
        'Zone share: the chance that a batch item comes from a demonstration zone '
        '(zone items keep the top priority unless the study ran with '
        '--nozone_top_priority). The critic can be right only below the '
        'largest return an episode can have (the success bonus).',
    ]
    return '\n'.join(lines)


# The DER paper's effect: DER helps with no demonstrations and with all of
# them in all buffers.
EFFECT_STRUCTURES = ('none', 'all_shots_all')


def _band(c: Dict[str, Any]) -> Tuple[float, float]:
    return c['final_success_low'], c['final_success_high']


def _final_cell(c: Dict[str, Any]) -> str:
    """A configuration's final success, its band and when it reached the threshold."""
    return (
        f'{100 * c["final_success"]:.0f}% [{100 * c["final_success_low"]:.0f}, '
        f'{100 * c["final_success_high"]:.0f}], threshold at iteration '
        f'{c["iterations_to_threshold"] or "never"}'
    )


def der_effects(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """For each of `EFFECT_STRUCTURES`: whether DER on beats DER off, decided
    from the summary alone. 'shown' only where the final success's 95% bands
    do not overlap with DER on above, on 2 seeds or more; 'not shown'
    otherwise, the evidence saying which reached the threshold first (a
    first crossing of the seed mean has no band of its own, so it never
    decides); 'not run' where a configuration is missing."""
    by_key = {(c['structure'], c['der']): c for c in summary['configurations']}
    out = []
    for structure in EFFECT_STRUCTURES:
        on, off = by_key.get((structure, True)), by_key.get((structure, False))
        if on is None or off is None:
            out.append({'structure': structure, 'verdict': stats.NOT_RUN, 'evidence': 'missing'})
            continue
        order = stats.separated(_band(on), _band(off))
        seeds = min(on['seeds'], off['seeds'])
        shown = order == 1 and stats.enough_seeds(seeds)
        word = {1: 'above', -1: 'below', None: 'overlapping'}[order]
        evidence = f'DER on {_final_cell(on)}; off {_final_cell(off)}: bands {word}; {seeds} seeds'
        if not stats.enough_seeds(seeds):
            evidence += ' (too few to show anything)'
        out.append(
            {
                'structure': structure,
                'verdict': stats.SHOWN if shown else stats.NOT_SHOWN,
                'evidence': evidence,
            }
        )
    return out


def effects_markdown(summary: Dict[str, Any]) -> str:
    lines = [
        f'# DER on {summary["task"]}: does it help?',
        '',
        'The paper: with no demonstrations and with all demonstrations in all '
        'buffers, DER reaches success sooner or higher. Final success: mean of the '
        'training episodes over the last quarter of the iterations, seeds averaged, '
        'with its bootstrap 95% band (with 2 or 3 seeds that band is the range of the '
        "seeds' values). Shown only where the bands lie apart; the first iteration at "
        'the threshold is given, but has no band and decides nothing.',
        '',
    ]
    for e in der_effects(summary):
        lines.append(f'- **{e["verdict"]}** ({STRUCTURE_TITLES[e["structure"]]}): {e["evidence"]}')
    return '\n'.join(lines) + '\n'


def summarize_at_equal_steps(
    studies: Sequence[Tuple[Any, List[Dict[str, Any]]]],
) -> List[Dict[str, Any]]:
    """`summarize` of each (config, results.csv rows) over the steps every study
    has run: a study that ran fewer steps per run would otherwise look harder
    only because it stopped earlier. Each summary's `steps_per_run` is the
    common length."""
    done = [
        max((r['iteration'] for r in rows), default=0) * config.steps_per_iteration
        for config, rows in studies
    ]
    common = min(done)
    out = []
    for config, rows in studies:
        iterations = common // config.steps_per_iteration
        kept = [r for r in rows if r['iteration'] <= iterations]
        out.append(summarize(dataclasses.replace(config, iterations=iterations), kept))
    return out


def compare_tasks(peg: Dict[str, Any], lap: Dict[str, Any]) -> Dict[str, Any]:
    """The paper's 'the lap joint is harder than the peg-in-hole', decided from
    the two studies' summaries.

    Per configuration both ran: 'peg' where the peg-in-hole's final-success
    band lies wholly above the lap joint's, 'lap' where below, 'level' where
    they overlap. The effect is shown where the peg-in-hole is above in at
    least one configuration and below in none, on at least 2 seeds each.
    Returns {'verdict', 'rows': [{structure, der, peg, lap, order}], 'seeds',
    'steps_per_run': {'peg', 'lap'}} (None where a summary predates it).
    """
    lap_by_key = {(c['structure'], c['der']): c for c in lap['configurations']}
    rows, seeds = [], []
    for p in peg['configurations']:
        q = lap_by_key.get((p['structure'], p['der']))
        if q is None:
            continue
        order = {1: 'peg', -1: 'lap', None: 'level'}[stats.separated(_band(p), _band(q))]
        rows.append(
            {'structure': p['structure'], 'der': p['der'], 'peg': p, 'lap': q, 'order': order}
        )
        seeds += [p['seeds'], q['seeds']]
    orders = [r['order'] for r in rows]
    enough = bool(seeds) and stats.enough_seeds(min(seeds))
    if not rows:
        verdict = stats.NOT_RUN
    elif enough and 'peg' in orders and 'lap' not in orders:
        verdict = stats.SHOWN
    else:
        verdict = stats.NOT_SHOWN
    return {
        'verdict': verdict,
        'rows': rows,
        'seeds': min(seeds) if seeds else 0,
        'steps_per_run': {'peg': peg.get('steps_per_run'), 'lap': lap.get('steps_per_run')},
    }


def compare_tasks_markdown(comparison: Dict[str, Any]) -> str:
    """`compare_tasks` as a table and its verdict."""
    lines = [
        '# Is the lap joint harder than the peg-in-hole?',
        '',
        f'**{comparison["verdict"]}** ({comparison["seeds"]} seeds at least per configuration): '
        'the peg-in-hole must end higher, bands apart, in at least one configuration and '
        'lower in none. Final success: mean of the training episodes over the last quarter '
        'of the iterations [bootstrap 95% band].',
        '',
    ]
    steps = comparison.get('steps_per_run') or {}
    if steps.get('peg') and steps.get('lap') and steps['peg'] == steps['lap']:
        lines += [f'Both over their first {steps["peg"]:,} environment steps per run.', '']
    elif steps.get('peg') and steps.get('lap'):
        lines += [
            f'Environment steps per run: peg-in-hole {steps["peg"]:,}, lap joint '
            f'{steps["lap"]:,} (the shorter run may look harder for that alone).',
            '',
        ]
    lines += [
        '| structure | DER | peg-in-hole | lap joint | higher |',
        '|---|---|---|---|---|',
    ]
    for r in comparison['rows']:
        lines.append(
            f'| {r["structure"]} | {"on" if r["der"] else "off"} | {_final_cell(r["peg"])} | '
            f'{_final_cell(r["lap"])} | {r["order"]} |'
        )
    return '\n'.join(lines) + '\n'


def plot_task_comparison(comparison: Dict[str, Any], path: str) -> None:
    """Final success per configuration, the two tasks side by side, with bands."""
    rows = comparison['rows']
    fig, ax = plots.plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    for offset, task, colour in ((-0.2, 'peg', 'tab:blue'), (0.2, 'lap', 'tab:orange')):
        mean = np.array([100 * r[task]['final_success'] for r in rows])
        low = np.array([100 * r[task]['final_success_low'] for r in rows])
        high = np.array([100 * r[task]['final_success_high'] for r in rows])
        ax.bar(x + offset, mean, 0.4, color=colour, label=TASK_TITLES[task])
        ax.errorbar(x + offset, mean, yerr=[mean - low, high - mean], fmt='none', ecolor='k')
    ax.set_xticks(x)
    ax.set_xticklabels(
        [
            f'{textwrap.fill(STRUCTURE_TITLES[r["structure"]], 14)}\n'
            f'DER {"on" if r["der"] else "off"}'
            for r in rows
        ],
        fontsize=8,
    )
    ax.set_ylabel('final success (%)')
    ax.set_ylim(0, 105)
    steps = comparison.get('steps_per_run') or {}
    equal = steps.get('peg') and steps.get('peg') == steps.get('lap')
    at = f', {steps["peg"]:,} steps per run' if equal else ''
    ax.set_title(f'Peg-in-hole against lap joint: {comparison["verdict"]} (95% bands{at})', pad=24)
    ax.legend(loc='lower center', bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    plots.save_figure(fig, path)


TASK_TITLES = {'peg': 'peg-in-hole', 'lap': 'lap joint'}


STRUCTURE_TITLES = {
    'none': 'no human demos',
    'one_shot_all': 'one shot in all buffers',
    'all_shots_all': 'all shots in all buffers',
    'one_shot_each': 'one shot in each buffer',
}


def plot_study(config: Any, rows, path: str) -> None:
    """The paper's layout: a column per structure, success (top) and return
    (middle) per iteration, DER on and off, mean over seeds and 95% band; and
    below, the critic's mean Q against the largest return an episode can have
    (the success bonus), which a diverging critic crosses."""
    columns = len(config.structures)
    fig, axes = plots.plt.subplots(
        3, columns, figsize=(4 * columns, 9.0), squeeze=False, sharex=True
    )
    colours = {True: 'tab:red', False: 'tab:blue'}
    bonus = getattr(config.env_config, 'reward_bonus', None)
    for c, structure in enumerate(config.structures):
        if bonus is not None:
            axes[2, c].axhline(bonus, color='k', ls='--', lw=0.8, label='success bonus R')
        for row, (key, scale, label) in enumerate(
            (
                ('success_rate', 100.0, 'success rate (%)'),
                ('mean_return', 1.0, 'episode return'),
                ('q_mean', 1.0, "critic's mean Q"),
            )
        ):
            ax = axes[row, c]
            for der_on in config.der_modes:
                iterations, values = curves(rows, structure, der_on, key)
                if not iterations.size:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', RuntimeWarning)
                    bounds = (0.0, 100.0) if key == 'success_rate' else (None, None)
                    mean, low, high = plots.mean_and_band(values * scale, *bounds)
                name = 'with DER' if der_on else 'without DER'
                ax.plot(iterations, mean, ':', marker='.', color=colours[der_on], label=name)
                ax.fill_between(iterations, low, high, color=colours[der_on], alpha=0.2)
            if row == 0:
                ax.set_title(STRUCTURE_TITLES[structure])
                ax.set_ylim(-2, 102)
            if row == 2:
                ax.set_xlabel(f'iteration ({config.steps_per_iteration:,} steps per run)')
            if c == 0:
                ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(loc='upper left')
    if bonus is not None:
        axes[2, 0].legend(loc='upper left')
    fig.suptitle(
        f'{config.task}: Ape-X DDPG, {config.num_seeds} seed(s) per configuration, '
        'mean and 95% band'
    )
    fig.tight_layout()
    plots.save_figure(fig, path)
