"""Tables and plots of evaluation results, for people to look at."""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Sequence, Tuple

import numpy as np

from insertion_jax.training import paper_table, plots
from insertion_jax.training.plots import plt

# The paper's P-controller row (Schoettler, Nair et al., Fig. 6), in percent.
PAPER_P_CONTROLLER = {
    connector: tuple(100.0 * v for v in paper_table.PAPER[(connector, 'p_controller')])
    for connector in paper_table.CONNECTORS
}
CALIBRATION_BAND_PCT = 15.0
PAPER_NOISE_MM = 1.0  # the paper's noisy condition


def calibration_rows(results: Iterable) -> Dict[str, Dict[float, object]]:
    """Groups `EvalResult`s as {task: {goal_noise_mm: result}}."""
    table: Dict[str, Dict[float, object]] = {}
    for r in results:
        table.setdefault(r.task, {})[r.goal_noise_mm] = r
    return table


def within_band(measured_pct: float, paper_pct: float, band: float = CALIBRATION_BAND_PCT) -> bool:
    return abs(measured_pct - paper_pct) <= band


def calibration_markdown(results: Iterable, noisy_mm: float = PAPER_NOISE_MM) -> str:
    """Markdown table: measured P-controller success next to the paper's.

    The paper measured its noisy condition at +-1 mm: at another `noisy_mm`
    the noisy column is shown but not compared with it.
    """
    table = calibration_rows(results)
    comparable = noisy_mm == PAPER_NOISE_MM
    paper_noisy = 'paper' if comparable else 'paper (at ±1 mm, not compared)'
    lines = [
        f'| connector | exact goal | paper | ±{noisy_mm:g} mm goal noise | {paper_noisy} '
        f'| within ±{CALIBRATION_BAND_PCT:g} pts |',
        '|---|---|---|---|---|---|',
    ]
    for task, by_noise in table.items():
        exact, noisy = by_noise.get(0.0), by_noise.get(noisy_mm)
        paper = PAPER_P_CONTROLLER.get(task, (float('nan'), float('nan')))
        cells, ok = [], True
        for result, ref, compare in ((exact, paper[0], True), (noisy, paper[1], comparable)):
            if result is None:
                cells += ['–', f'{ref:.0f}%']
                continue
            pct = 100 * result.success_rate
            ok &= within_band(pct, ref) or not compare
            cells += [f'{pct:.0f}% ({result.successes}/{result.episodes})', f'{ref:.0f}%']
        lines.append(f'| {task} | ' + ' | '.join(cells) + f' | {"yes" if ok else "**no**"} |')
    return '\n'.join(lines)


def plot_calibration(results: Sequence, path: str, noisy_mm: float = PAPER_NOISE_MM) -> None:
    """Grouped bar chart of measured vs paper P-controller success, saved to `path`."""
    table = calibration_rows(results)
    tasks = list(table)
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    series: Tuple[Tuple[str, float, int, str], ...] = (
        ('sim, exact goal', 0.0, 0, '#3b6ea8'),
        (f'sim, ±{noisy_mm:g} mm noise', noisy_mm, 1, '#e08a2c'),
    )
    width = 0.2
    for i, (label, noise, paper_idx, color) in enumerate(series):
        sim = [100 * table[t][noise].success_rate if noise in table[t] else np.nan for t in tasks]
        paper = [PAPER_P_CONTROLLER.get(t, (np.nan, np.nan))[paper_idx] for t in tasks]
        offset = (2 * i - 1.5) * width
        ax.bar(x + offset, sim, width, color=color, label=label)
        ax.bar(
            x + offset + width,
            paper,
            width,
            color=color,
            alpha=0.35,
            hatch='//',
            label=f'paper, {"exact goal" if noise == 0 else "±1 mm noise"}',
        )
        for xi, s in zip(x + offset, sim, strict=True):
            ax.text(xi, s + 1.5, f'{s:.0f}', ha='center', fontsize=7)
    ax.set_xticks(x, tasks)
    ax.set_ylim(0, 125)
    ax.set_ylabel('P-controller success (%)')
    ax.set_title('P-controller: simulator vs. paper (Schoettler, Nair et al.)')
    ax.legend(fontsize=7, ncol=2, loc='upper right')
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    plots.save_figure(fig, path, dpi=100)


def results_by_task(results: Iterable) -> Mapping[str, list]:
    out: Dict[str, list] = {}
    for r in results:
        out.setdefault(r.task, []).append(r.to_dict())
    return out
