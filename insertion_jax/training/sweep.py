"""A sweep's configurations: running one, and comparing the finished ones.

`experiments.sweep` turns a grid of `experiments.train` flags into
`Configuration`s, one run directory each under the sweep's directory (its
name from the grid values, e.g. `algo=sac,reward=dense`). This module holds
what does not need the flags, so that a Slurm or submitit job can import it
from the installed package alone:

  * `RunConfiguration`: the function every launcher runs on one
    configuration: `runner.train` into its run directory, which resumes a
    stopped run from its checkpoint. Run as a submitit job, a job cut off by
    its time limit or preempted is requeued by submitit (its `checkpoint`)
    and resumes from the run's last checkpoint.
  * `finished_summary`: a configuration's summary once its run has ended.
  * The comparison: `comparison_row` (one per finished configuration: its
    grid values, seeds, the final success per evaluation condition as the
    mean over seeds with the percentile-bootstrap 95% interval over seeds,
    `stats.bootstrap_band`, and each seed's, env steps and wall-clock), `table_csv`,
    `table_markdown`, `plot_comparison` and `write_comparison`, which writes
    comparison.csv, comparison.md and comparison.png (atomically).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from insertion_jax.training import plots, run_dir, runner, stats
from insertion_jax.training.config import TrainConfig
from insertion_jax.training.plots import plt

COMPARISON_FILES = ('comparison.csv', 'comparison.md', 'comparison.png')


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One point of a sweep's grid.

    Attributes:
      name: its run directory's name under the sweep's directory.
      values: (grid key, value as given) pairs, in the grid's order.
      train_config, run_config: what `experiments.train` builds from the
        sweep's flags with these values.
    """

    name: str
    values: Tuple[Tuple[str, str], ...]
    train_config: TrainConfig
    run_config: runner.RunConfig


def run_path(sweep_dir: str, configuration: Configuration) -> str:
    return os.path.join(sweep_dir, configuration.name)


def finished_summary(sweep_dir: str, configuration: Configuration) -> Optional[Dict[str, Any]]:
    """The configuration's summary once its run has ended (`runner.finished_summary`:
    ConfigMismatchError where its directory holds another configuration)."""
    return runner.finished_summary(
        run_path(sweep_dir, configuration), configuration.train_config, configuration.run_config
    )


class RunConfiguration:
    """The function every launcher runs on one configuration (in the sweep's
    process, or as a submitit job in a process of its own).

    Args:
      sweep_dir: the sweep's directory (absolute for a job).
      train_kwargs: further keyword arguments of `runner.train` (those that
        experiments.train sets from its flags).
      cache_dir: JAX's persistent compilation cache, turned on in the job's
        process (None: leave the process's setting).
    """

    def __init__(
        self,
        sweep_dir: str,
        train_kwargs: Optional[Mapping[str, Any]] = None,
        cache_dir: Optional[str] = None,
    ):
        self.sweep_dir = sweep_dir
        self.train_kwargs = dict(train_kwargs or {})
        self.cache_dir = cache_dir

    def __call__(
        self, configuration: Configuration, log: Callable[[str], None] = print
    ) -> Dict[str, Any]:
        """Trains (or resumes) the configuration's run; its summary."""
        if self.cache_dir:
            import jax

            jax.config.update('jax_compilation_cache_dir', self.cache_dir)
            jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
        return runner.train(
            configuration.train_config,
            configuration.run_config,
            run_path(self.sweep_dir, configuration),
            log=log,
            **self.train_kwargs,
        )

    def checkpoint(self, configuration: Configuration, *args, **kwargs):
        """What submitit requeues when the job's time is up or it is preempted:
        the same call, which resumes from the run's last checkpoint."""
        from submitit.helpers import DelayedSubmission  # only ever called inside a submitit job

        return DelayedSubmission(self, configuration, *args, **kwargs)


# ------------------------------------------------------------ the comparison
def comparison_row(configuration: Configuration, summary: Mapping[str, Any]) -> Dict[str, Any]:
    """A finished configuration's row: its grid values, seeds, and per
    evaluation condition the seeds' mean final success with its
    percentile-bootstrap 95% interval over seeds (none with one seed: low =
    high = the mean), each seed's (`per_seed_<condition>`, not in the CSV) and
    the hand-designed controller's success on the same episodes (None without
    one); then env steps and wall-clock seconds."""
    seeds = summary['seeds']
    row: Dict[str, Any] = {'configuration': configuration.name, **dict(configuration.values)}
    row.update(seeds=len(seeds), eval_episodes=summary['eval_episodes'])
    row['eval_noise_mm'] = summary.get('eval_noise_mm')
    reference = summary.get('p_controller') or {}
    for condition in summary['conditions']:
        key = f'success_{condition}'
        values = np.array([_number(s.get(key)) for s in seeds], np.float64)
        mean, low, high = stats.bootstrap_band(values)
        row[key] = _finite(mean)
        row[f'{key}_low'] = _finite(np.clip(low, 0.0, 1.0))
        row[f'{key}_high'] = _finite(np.clip(high, 0.0, 1.0))
        row[f'p_controller_{condition}'] = reference.get(key)
        row[f'per_seed_{condition}'] = [_finite(v) for v in values]
    row['env_steps'] = summary['mean']['env_steps']
    row['wall_clock_s'] = summary['mean']['wall_clock_s']
    return row


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _finite(value) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def conditions_of(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The evaluation conditions of the rows, in first-seen order."""
    seen: List[str] = []
    for row in rows:
        for key in row:
            if key.startswith('success_') and not key.endswith(('_low', '_high')):
                if key[len('success_') :] not in seen:
                    seen.append(key[len('success_') :])
    return seen


def columns(keys: Sequence[str], conditions: Sequence[str]) -> List[str]:
    """comparison.csv's columns."""
    per_condition = [
        f'{prefix}{c}{suffix}'
        for c in conditions
        for prefix, suffix in (
            ('success_', ''),
            ('success_', '_low'),
            ('success_', '_high'),
            ('p_controller_', ''),
        )
    ]
    return [
        'configuration',
        *keys,
        'seeds',
        'eval_episodes',
        *per_condition,
        'env_steps',
        'wall_clock_s',
    ]


def table_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        fieldnames=columns(keys, conditions_of(rows)),
        lineterminator='\n',
        extrasaction='ignore',
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: '' if v is None else v for k, v in row.items()})
    return out.getvalue()


def _pct(x: Optional[float]) -> str:
    return '–' if x is None else f'{100 * x:.0f}%'


def success_cell(row: Mapping[str, Any], condition: str) -> str:
    """'78% [60, 96]': the mean and its 95% interval over seeds, in percent."""
    mean = row.get(f'success_{condition}')
    if mean is None:
        return '–'
    low, high = row[f'success_{condition}_low'], row[f'success_{condition}_high']
    if row['seeds'] < stats.MIN_SEEDS or low is None or high is None:
        return f'{_pct(mean)} (1 seed)'
    return f'{_pct(mean)} [{100 * low:.0f}, {100 * high:.0f}]'


def table_markdown(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    unfinished: Sequence[str] = (),
) -> str:
    """One row per finished configuration (see `comparison_row`); the
    hand-designed controller's success as one more row where every
    configuration shares it, else as columns; the configurations not
    finished are listed below."""
    conditions = conditions_of(rows)
    noise = next((r['eval_noise_mm'] for r in rows if r.get('eval_noise_mm') is not None), 1.0)
    names = [plots.condition_label(c, noise) for c in conditions]
    references = [tuple(row.get(f'p_controller_{c}') for c in conditions) for row in rows]
    measured = {r for r in references if any(x is not None for x in r)}
    # One row where every configuration has the same reference, else columns.
    reference_row = len(set(references)) == 1 and bool(measured)
    reference_columns = bool(measured) and not reference_row
    header = [*keys, 'seeds', *names]
    if reference_columns:
        header += [f'P-controller, {name}' for name in names]
    header += ['env steps', 'wall-clock (s)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [str(row.get(k, '')) for k in keys] + [str(row['seeds'])]
        cells += [success_cell(row, c) for c in conditions]
        if reference_columns:
            cells += [_pct(row.get(f'p_controller_{c}')) for c in conditions]
        cells += [str(row['env_steps']), f'{row["wall_clock_s"]:.0f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    if reference_row:
        reference = references[0]
        cells = ['P-controller'] + [''] * (len(keys) - 1) + ['–']
        cells += [_pct(x) for x in reference] + ['–', '–']
        lines.append('| ' + ' | '.join(cells) + ' |')
    episodes = sorted({row['eval_episodes'] for row in rows})
    lines += [
        '',
        "Final evaluation of each configuration: the mean over seeds of each seed's "
        f'success on {" or ".join(map(str, episodes)) or "its"} episodes per condition, '
        'and the percentile-bootstrap 95% interval of that mean over seeds (seeds '
        'resampled; none with one seed)'
        + ('; the P-controller on the same episodes.' if measured else '.'),
    ]
    if unfinished:
        lines += ['', f'Not finished (not in the table): {", ".join(unfinished)}.']
    return '\n'.join(lines)


def plot_comparison(
    rows: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Tuple[np.ndarray, np.ndarray]],
    path: str,
    title: str,
) -> None:
    """Left: the final success per configuration, a bar per evaluation
    condition with its 95% interval over seeds, each seed a dot, the
    P-controller a black tick. Then one panel per condition: evaluation
    success against environment steps per configuration, the mean over seeds
    and its bootstrap 95% band. `curves`: {configuration: {condition: (steps,
    values (seeds, T))}}."""
    conditions = conditions_of(rows)
    noise = next((r['eval_noise_mm'] for r in rows if r.get('eval_noise_mm') is not None), 1.0)
    n = max(1, len(rows))
    bar_width = max(5.0, 0.9 * n * max(1, len(conditions)) + 1.5)
    fig, axes = plt.subplots(
        1,
        1 + len(conditions),
        figsize=(bar_width + 5.0 * len(conditions), 5.2),
        gridspec_kw={'width_ratios': [bar_width] + [5.0] * len(conditions)},
        squeeze=False,
    )
    ax = axes[0][0]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(conditions))
    for i, (condition, colour) in enumerate(zip(conditions, plots.COLOURS, strict=False)):
        offset = (i - (len(conditions) - 1) / 2) * width
        mean = np.array([_pct_value(r.get(f'success_{condition}')) for r in rows])
        low = np.array([_pct_value(r.get(f'success_{condition}_low')) for r in rows])
        high = np.array([_pct_value(r.get(f'success_{condition}_high')) for r in rows])
        label = plots.condition_label(condition, noise)
        ax.bar(x + offset, mean, width * 0.95, color=colour, alpha=0.8, label=label)
        ax.errorbar(
            x + offset,
            mean,
            yerr=[np.maximum(mean - low, 0), np.maximum(high - mean, 0)],
            fmt='none',
            ecolor='k',
            lw=1,
            capsize=3,
        )
        for xi, row in zip(x, rows, strict=True):
            finals = [_pct_value(v) for v in row.get(f'per_seed_{condition}', [])]
            ax.scatter(
                np.full(len(finals), xi + offset), finals, s=10, color='k', alpha=0.5, zorder=3
            )
            reference = row.get(f'p_controller_{condition}')
            if reference is not None:
                ax.hlines(
                    100 * reference,
                    xi + offset - width / 2,
                    xi + offset + width / 2,
                    colors='k',
                    linestyles='--',
                    lw=1.5,
                    zorder=4,
                    label='P-controller' if i == 0 and xi == x[0] else None,
                )
    ax.set_xticks(x, [r['configuration'].replace(',', '\n') for r in rows], fontsize=8)
    ax.set_ylabel('final success (%), mean and 95% interval over seeds')
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, loc='upper center', ncol=3, frameon=False)
    ax.set_title('final policy (seeds as dots)')
    colours = plt.get_cmap('tab10' if len(rows) <= 10 else 'tab20')
    for ax, condition in zip(axes[0][1:], conditions, strict=True):
        for k, row in enumerate(rows):
            steps, values = curves.get(row['configuration'], {}).get(
                condition, (np.zeros(0), np.zeros((1, 0)))
            )
            if not steps.size:
                continue
            mean, lower, upper = plots.mean_and_band(100 * values)
            colour = colours(k % colours.N)
            ax.plot(steps, mean, color=colour, marker='o', ms=3, label=row['configuration'])
            ax.fill_between(steps, lower, upper, color=colour, alpha=0.15)
        ax.set_title(f'evaluation, {plots.condition_label(condition, noise)}')
        ax.set_xlabel('environment steps per seed')
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    if conditions:
        axes[0][1].set_ylabel('success (%)')
        axes[0][-1].legend(fontsize=7, loc='lower right')
    fig.suptitle(title)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _pct_value(x: Optional[float]) -> float:
    return math.nan if x is None else 100.0 * x


def read_curves(path: str, num_seeds: int, conditions: Sequence[str]):
    """{condition: (env steps, success (seeds, T))} of a run's evaluations."""
    records = run_dir.Records(os.path.join(path, 'metrics.jsonl')).read()
    return {c: plots.curves(records, f'eval/success_{c}', num_seeds) for c in conditions}


def write_comparison(
    sweep_dir: str,
    keys: Sequence[str],
    finished: Sequence[Tuple[Configuration, Mapping[str, Any]]],
    unfinished: Sequence[str] = (),
    title: str = 'sweep',
) -> List[Dict[str, Any]]:
    """Writes comparison.csv, comparison.md and comparison.png into
    `sweep_dir` for the finished (configuration, summary) pairs; their rows."""
    rows = [comparison_row(c, s) for c, s in finished]
    run_dir.write_text(os.path.join(sweep_dir, 'comparison.csv'), table_csv(rows, keys))
    run_dir.write_text(
        os.path.join(sweep_dir, 'comparison.md'), table_markdown(rows, keys, unfinished) + '\n'
    )
    curves = {
        c.name: read_curves(run_path(sweep_dir, c), len(s['seeds']), s['conditions'])
        for c, s in finished
    }
    plot_comparison(rows, curves, os.path.join(sweep_dir, 'comparison.png'), title)
    return rows
