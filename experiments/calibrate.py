r"""Calibration of the baseline against the paper.

Evaluates the hand-designed P-controller (eq. 5 of the residual-RL paper) on
every connector, with the exact goal and with +-1 mm goal noise, and compares
it with the paper's P-controller row.

  python -m experiments.calibrate [--episodes=100] [--out=runs/p_controller]

Writes to --out: results.json (every condition), calibration.md (the table)
and calibration.png (a bar chart), and prints the table.
"""

from __future__ import annotations

import os
import time

from absl import app, flags

from experiments import common
from insertion_jax.envs import connectors
from insertion_jax.training import evaluate, report, run_dir

_EPISODES = flags.DEFINE_integer('episodes', 100, 'Executions per condition.', lower_bound=1)
_TASKS = flags.DEFINE_list('tasks', list(connectors.task_names()), 'Connector tasks to run.')
_GOAL_NOISE_MM = flags.DEFINE_float(
    'goal_noise_mm', 1.0, 'Goal noise of the noisy condition, mm.', lower_bound=0.0
)
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_OUT = flags.DEFINE_string('out', 'runs/p_controller', 'Output directory.')


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    for task in _TASKS.value:
        if task not in connectors.task_names():
            raise app.UsageError(
                f'--tasks contains unknown task {task!r}; valid tasks: {", ".join(connectors.task_names())}.'
            )
    common.enable_compilation_cache()
    os.makedirs(_OUT.value, exist_ok=True)
    results, start = [], time.time()
    for i, task in enumerate(_TASKS.value):
        print(
            f'[{i + 1}/{len(_TASKS.value)}] {task}: {_EPISODES.value} episodes x 2 goal conditions '
            '(the first call compiles the rollout)...',
            flush=True,
        )
        task_results = evaluate.evaluate_p_controller(
            task, _EPISODES.value, (0.0, _GOAL_NOISE_MM.value), seed=_SEED.value
        )
        results += task_results
        elapsed = time.time() - start
        eta = run_dir.format_duration(elapsed / (i + 1) * (len(_TASKS.value) - i - 1))
        summary = ', '.join(
            f'±{r.goal_noise_mm:g} mm: {100 * r.success_rate:.0f}%' for r in task_results
        )
        print(f'    {summary}   [elapsed {elapsed:.0f} s, eta {eta}]', flush=True)

    table = report.calibration_markdown(results, _GOAL_NOISE_MM.value)
    run_dir.write_json(os.path.join(_OUT.value, 'results.json'), report.results_by_task(results))
    run_dir.write_text(os.path.join(_OUT.value, 'calibration.md'), table + '\n')
    report.plot_calibration(
        results, os.path.join(_OUT.value, 'calibration.png'), _GOAL_NOISE_MM.value
    )
    print('\nP-controller success over', _EPISODES.value, 'episodes per condition:\n')
    print(table)
    print(f'\nWrote {_OUT.value}/results.json, calibration.md, calibration.png')


if __name__ == '__main__':
    app.run(main)
