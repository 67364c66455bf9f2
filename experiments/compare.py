r"""Compares training runs: success against environment steps, one curve per run.

  python -m experiments.compare --runs=runs/usb_residual_sac,runs/usb_lfd_td3,runs/usb_pure_sac \
      --out=runs/usb_modes.png

Draws, per run, the mean over its seeds (95% band) of the evaluation success
with the exact goal (left) and under +-1 mm goal noise (right), and prints a
Markdown table: final success, and the environment steps and wall-clock
seconds at which the mean first reached --threshold (exact goal).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from experiments import common

_RUNS = flags.DEFINE_list('runs', None, 'Run directories to compare.', required=True)
_OUT = flags.DEFINE_string('out', 'runs/comparison.png', 'Output PNG.')
_THRESHOLD = flags.DEFINE_float('threshold', 0.9, 'Success that counts as learned.')


def load(run_dir: str):
    from insertion_jax.training import logging  # pylint: disable=import-outside-toplevel

    for name in ('config.json', 'metrics.jsonl'):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise app.UsageError(f'{run_dir!r} has no {name}: is it a training run directory?')
    with open(os.path.join(run_dir, 'config.json')) as f:
        config = json.load(f)
    return config, logging.read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))


def label(config) -> str:
    train = config['train']
    return f'{train["mode"]} {train["algo"].upper()}'


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    runs = [(path, *load(path)) for path in _RUNS.value]
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    from insertion_jax.training import logging  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    rows = [
        f'| run | final exact | final ±1 mm | env steps to {100 * _THRESHOLD.value:.0f}% exact '
        '| seconds to it |',
        '|---|---|---|---|---|',
    ]
    for path, config, records in runs:
        num_seeds = config['run']['num_seeds']
        finals = []
        for ax, key in zip(axes, logging.EVAL_KEYS, strict=True):
            steps, values = logging.curves(records, key, num_seeds)
            mean, band = logging.mean_and_band(100 * values)
            (line,) = ax.plot(steps, mean, marker='o', ms=3, label=label(config))
            ax.fill_between(
                steps, *logging.band_limits(mean, band), color=line.get_color(), alpha=0.2
            )
            finals.append(f'{mean[-1]:.0f}%' if len(mean) else '–')
        steps_to, seconds_to = logging.first_reaching(
            records, logging.EVAL_KEYS[0], _THRESHOLD.value, num_seeds
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
    reward = runs[0][1]['train']['env']['reward']
    fig.suptitle(f'{task}, {reward} reward')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    fig.savefig(_OUT.value, dpi=120)
    plt.close(fig)
    print('\n'.join(rows))
    print(f'\nWrote {_OUT.value}')


if __name__ == '__main__':
    app.run(main)
