"""Run outputs people read: metrics.jsonl, the learning curve, the summary table."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

EVAL_KEYS = ('eval/success_exact', 'eval/success_noisy')


def to_python(value: Any) -> Any:
    """JSON-ready scalar: NaN and inf become None, numpy scalars become floats/ints."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsWriter:
    """Appends one JSON object per line to `path`, flushing after each batch.

    On resume, `truncate_after(iteration)` drops the lines written after the
    checkpoint being resumed, so the file never holds an iteration twice.
    """

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, iteration: int) -> None:
        if not os.path.exists(self.path):
            return
        kept = [r for r in read_jsonl(self.path) if r.get('iteration', 0) <= iteration]
        with open(self.path, 'w') as f:
            for record in kept:
                f.write(json.dumps(record) + '\n')

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        with open(self.path, 'a') as f:
            for record in records:
                f.write(json.dumps(record) + '\n')


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_and_band(values: np.ndarray) -> tuple:
    """Mean over axis 0 and the half-width of its 95% confidence band (normal
    approximation, 1.96 standard errors; zero for a single seed)."""
    values = np.asarray(values, float)
    mean = np.nanmean(values, axis=0)
    if values.shape[0] < 2:
        return mean, np.zeros_like(mean)
    sem = np.nanstd(values, axis=0, ddof=1) / math.sqrt(values.shape[0])
    return mean, 1.96 * sem


def band_limits(mean: np.ndarray, band: np.ndarray, low: float = 0.0, high: float = 100.0):
    """(lower, upper) edges of a band around a percentage, clipped to [low, high]."""
    return np.clip(mean - band, low, high), np.clip(mean + band, low, high)


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


def plot_learning_curve(
    records: Sequence[Mapping[str, Any]],
    path: str,
    num_seeds: int,
    title: str,
    reference: Optional[Mapping[str, float]] = None,
) -> None:
    """Success vs environment steps: mean over seeds with a 95% band.

    Left: evaluation success of the deterministic policy (exact goal and
    +-1 mm goal noise), with the P-controller's success on the same evaluation
    episodes as dashed lines. Right: end-of-episode success of the training
    episodes (exploration on), smoothed.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colours = {'exact': 'tab:blue', 'noisy': 'tab:orange'}
    for condition, key in zip(('exact', 'noisy'), EVAL_KEYS, strict=True):
        if not any(r.get(key) is not None for r in records):
            continue
        steps, values = curves(records, key, num_seeds)
        mean, band = mean_and_band(100 * values)
        label = 'exact goal' if condition == 'exact' else '±1 mm goal noise'
        ax_eval.plot(steps, mean, color=colours[condition], marker='o', ms=3, label=label)
        ax_eval.fill_between(steps, *band_limits(mean, band), color=colours[condition], alpha=0.2)
        if reference and condition in reference:
            ax_eval.axhline(
                100 * reference[condition],
                color=colours[condition],
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
        mean, band = mean_and_band(100 * smooth(values, 5))
        ax_train.plot(steps, mean, color='tab:green', label='training episodes')
        ax_train.fill_between(steps, *band_limits(mean, band), color='tab:green', alpha=0.2)
    ax_train.set_title('training episodes (exploring), moving average of 5 iterations')
    ax_train.set_xlabel('environment steps per seed')
    ax_train.grid(alpha=0.3)
    band_note = f'mean and 95% band over {num_seeds} seeds' if num_seeds > 1 else '1 seed'
    fig.suptitle(f'{title} ({band_note})')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table: one row per seed, the mean, the P-controller."""
    lines = [
        '| run | exact goal | ±1 mm goal noise | env steps | wall-clock (s) |',
        '|---|---|---|---|---|',
    ]

    def pct(x):
        return f'{100 * x:.0f}%' if x is not None else '–'

    for row in summary['seeds']:
        lines.append(
            f'| seed {row["seed"]} | {pct(row["success_exact"])} | {pct(row["success_noisy"])} '
            f'| {row["env_steps"]} | {row["wall_clock_s"]:.0f} |'
        )
    mean = summary['mean']
    lines.append(
        f'| **mean** | **{pct(mean["success_exact"])}** | **{pct(mean["success_noisy"])}** '
        f'| {mean["env_steps"]} | {mean["wall_clock_s"]:.0f} |'
    )
    ref = summary.get('p_controller')
    if ref:
        lines.append(
            f'| P-controller | {pct(ref["success_exact"])} | {pct(ref["success_noisy"])} | – | – |'
        )
    return '\n'.join(lines)
