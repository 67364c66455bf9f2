"""What people look at: learning curves with 95% bands and the summary table.

Evaluation records carry `eval/success_<condition>` per seed, where the
conditions are the evaluator's (`evaluate.conditions_for`): 'exact' and
'noisy' for the connector tasks, 'random' for tasks evaluated under their own
randomization.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from insertion_jax.training import stats  # noqa: E402


def mean_and_band(values: np.ndarray, low: float = 0.0, high: float = 100.0) -> tuple:
    """(mean, lower edge, upper edge) over axis 0 (seeds): the percentile
    bootstrap 95% band of the mean (`stats.bootstrap_band`; no width for a
    single seed), its edges clipped to [low, high] (a percentage by default;
    None: unclipped)."""
    mean, lower, upper = stats.bootstrap_band(values)
    if low is not None or high is not None:
        lower, upper = np.clip(lower, low, high), np.clip(upper, low, high)
    return mean, lower, upper


def curves(records: Sequence[Mapping[str, Any]], key: str, num_seeds: int):
    """(env_steps (T,), values (num_seeds, T)) of `key` over the records that have it."""
    by_step: Dict[int, Dict[int, float]] = {}
    for r in records:
        if r.get(key) is not None:
            by_step.setdefault(r['env_steps'], {})[r['seed']] = r[key]
    steps = sorted(s for s, v in by_step.items() if len(v) == num_seeds)
    if not steps:
        return np.zeros(0), np.zeros((num_seeds, 0))
    seeds = sorted(by_step[steps[0]])
    return np.asarray(steps), np.array([[by_step[s][seed] for s in steps] for seed in seeds])


def first_reaching(
    records: Sequence[Mapping[str, Any]], key: str, threshold: float, num_seeds: int
):
    """(env_steps, wall_clock_s) of the first record step where the mean of `key`
    over all seeds reaches `threshold`; (None, None) if it never does."""
    steps, values = curves(records, key, num_seeds)
    for i, step in enumerate(steps):
        if values[:, i].mean() >= threshold:
            wall = next(r['wall_clock_s'] for r in records if r['env_steps'] == step)
            return int(step), wall
    return None, None


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis, ignoring NaNs."""
    if window <= 1 or values.shape[-1] == 0:
        return values
    out = np.empty_like(values, dtype=float)
    for t in range(values.shape[-1]):
        out[..., t] = np.nanmean(values[..., max(0, t - window + 1) : t + 1], axis=-1)
    return out


def condition_label(condition: str, noise_mm: float = 1.0) -> str:
    """How a table or a legend names an evaluation condition."""
    return {
        'exact': 'exact goal',
        'noisy': f'±{noise_mm:g} mm goal noise',
        'random': 'success (task randomization)',
    }.get(condition, condition)


def eval_conditions(records: Sequence[Mapping[str, Any]]) -> list:
    """The evaluation conditions present in `records`, in first-seen order."""
    seen = []
    for r in records:
        for key in r:
            if key.startswith('eval/success_'):
                name = key[len('eval/success_') :]
                if name not in seen:
                    seen.append(name)
    return seen


COLOURS = ('tab:blue', 'tab:orange', 'tab:purple', 'tab:brown')


def plot_learning_curve(
    records: Sequence[Mapping[str, Any]],
    path: str,
    num_seeds: int,
    title: str,
    reference: Optional[Mapping[str, float]] = None,
    noise_mm: float = 1.0,
) -> None:
    """Success vs environment steps: mean over seeds with a 95% band.

    Left: evaluation success of the deterministic policy in each condition
    (exact goal and goal noise for the connectors), with the hand-designed
    controller's success on the same evaluation episodes as dashed lines
    (`reference`, per condition). Right: end-of-episode success of the
    training episodes (exploration on), smoothed.
    """
    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for condition, colour in zip(eval_conditions(records), COLOURS, strict=False):
        steps, values = curves(records, f'eval/success_{condition}', num_seeds)
        mean, lower, upper = mean_and_band(100 * values)
        label = condition_label(condition, noise_mm)
        ax_eval.plot(steps, mean, color=colour, marker='o', ms=3, label=label)
        ax_eval.fill_between(steps, lower, upper, color=colour, alpha=0.2)
        if reference and reference.get(condition) is not None:
            ax_eval.axhline(
                100 * reference[condition],
                color=colour,
                ls='--',
                lw=1,
                label=f'P-controller, {label}',
            )
    ax_eval.set_title('evaluation (deterministic policy)')
    ax_eval.set_xlabel('environment steps per seed')
    ax_eval.set_ylabel('success (%)')
    ax_eval.set_ylim(-2, 102)
    ax_eval.legend(loc='lower right', fontsize=8)
    ax_eval.grid(alpha=0.3)

    steps, values = curves(records, 'success', num_seeds)
    if steps.size:
        mean, lower, upper = mean_and_band(100 * smooth(values, 5))
        ax_train.plot(steps, mean, color='tab:green', label='training episodes')
        ax_train.fill_between(steps, lower, upper, color='tab:green', alpha=0.2)
    ax_train.set_title('training episodes (exploring), moving average of 5 iterations')
    ax_train.set_xlabel('environment steps per seed')
    ax_train.grid(alpha=0.3)
    band_note = f'mean and bootstrap 95% band over {num_seeds} seeds' if num_seeds > 1 else '1 seed'
    fig.suptitle(f'{title} ({band_note})')
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Writes `fig` to `path` atomically (a temporary file, then a rename: a
    stopped run never leaves half a picture), creating its directory, and
    closes it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f'{root}.tmp{ext or ".png"}'
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table: one row per seed, the mean, the P-controller.

    Columns: one per evaluation condition of `summary['conditions']`.
    """
    conditions = summary['conditions']
    noise_mm = summary.get('eval_noise_mm', 1.0)
    names = [condition_label(c, noise_mm) for c in conditions]
    lines = [
        '| run | ' + ' | '.join(names) + ' | env steps | wall-clock (s) |',
        '|---|' + '---|' * len(names) + '---|---|',
    ]

    def pct(x):
        return f'{100 * x:.0f}%' if x is not None else '–'

    def cells(row, bold=False):
        mark = '**' if bold else ''
        return ' | '.join(f'{mark}{pct(row["success_" + c])}{mark}' for c in conditions)

    for row in summary['seeds']:
        lines.append(
            f'| seed {row["seed"]} | {cells(row)} | {row["env_steps"]} | {row["wall_clock_s"]:.0f} |'
        )
    mean = summary['mean']
    lines.append(
        f'| **mean** | {cells(mean, bold=True)} | {mean["env_steps"]} | '
        f'{mean["wall_clock_s"]:.0f} |'
    )
    ref = summary.get('p_controller')
    if ref:
        lines.append(f'| P-controller | {cells(ref)} | – | – |')
    return '\n'.join(lines)
