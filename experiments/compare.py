r"""Compares training runs: success against environment steps, one curve per run.

  python -m experiments.compare --runs=runs/usb_residual_sac,runs/usb_lfd_td3,runs/usb_pure_sac \
      --out=runs/usb_modes.png

Draws, per run, the mean over its seeds (95% band) of the evaluation success
with the exact goal (left) and under +-1 mm goal noise (right), and prints a
Markdown table: final success, and the environment steps and wall-clock
seconds at which the mean first reached --threshold (exact goal).
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import common
from insertion_jax.training import plots, run_dir

_RUNS = flags.DEFINE_list('runs', None, 'Run directories to compare.', required=True)
_OUT = flags.DEFINE_string('out', 'runs/comparison.png', 'Output PNG.')
EVAL_KEYS = ('eval/success_exact', 'eval/success_noisy')
_THRESHOLD = flags.DEFINE_float('threshold', 0.9, 'Success that counts as learned.')


def load(path: str):
    for name in ('config.json', 'metrics.jsonl'):
        if not os.path.isfile(os.path.join(path, name)):
            raise app.UsageError(f'{path!r} has no {name}: is it a training run directory?')
    config = run_dir.read_json(os.path.join(path, 'config.json'))
    return config, run_dir.Records(os.path.join(path, 'metrics.jsonl')).read()


def label(config) -> str:
    train = config['train']
    return f'{train["mode"]} {train["algo"].upper()}'


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    runs = [(path, *load(path)) for path in _RUNS.value]
    fig, axes = plots.plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    rows = [
        f'| run | final exact | final ±1 mm | env steps to {100 * _THRESHOLD.value:.0f}% exact '
        '| seconds to it |',
        '|---|---|---|---|---|',
    ]
    for path, config, records in runs:
        num_seeds = config['run']['num_seeds']
        finals = []
        for ax, key in zip(axes, EVAL_KEYS, strict=True):
            steps, values = plots.curves(records, key, num_seeds)
            mean, lower, upper = plots.mean_and_band(100 * values)
            (line,) = ax.plot(steps, mean, marker='o', ms=3, label=label(config))
            ax.fill_between(steps, lower, upper, color=line.get_color(), alpha=0.2)
            finals.append(f'{mean[-1]:.0f}%' if len(mean) else '–')
        steps_to, seconds_to = plots.first_reaching(
            records, EVAL_KEYS[0], _THRESHOLD.value, num_seeds
        )
        reached = f'{steps_to}' if steps_to is not None else 'not reached'
        seconds = f'{seconds_to:.0f}' if seconds_to is not None else '–'
        rows.append(
            f'| {label(config)} (`{path}`) | {finals[0]} | {finals[1]} | {reached} | {seconds} |'
        )
    for ax, title in zip(axes, ('exact goal', '±1 mm goal noise'), strict=True):
        ax.set_title(f'evaluation success, {title}')
        ax.set_xlabel('environment steps per seed')
        ax.grid(alpha=0.3)
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel('success (%) (mean and 95% band over seeds)')
    axes[0].legend(loc='center right', fontsize=8)
    task = runs[0][1]['train']['env']['task']
    reward = runs[0][1]['train']['env'].get('reward', 'task')
    fig.suptitle(f'{task}, {reward} reward')
    fig.tight_layout()
    plots.save_figure(fig, _OUT.value, dpi=120)
    print('\n'.join(rows))
    print(f'\nWrote {_OUT.value}')


if __name__ == '__main__':
    app.run(main)
