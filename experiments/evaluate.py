r"""Evaluates a policy or controller on one connector task.

  python -m experiments.evaluate --task=usb --policy=p_controller \
      --goal_noise_mm=1 --episodes=25 --seed=0 --json

Prints a one-line summary and, with --json, one JSON object on the last line
with task, policy, goal_noise_mm, episodes, success_rate, successes,
mean_final_distance_mm and seed.
"""

from __future__ import annotations

import json

from absl import app, flags

from experiments import common
from insertion_jax.envs import connectors

POLICIES = ('p_controller',)

_TASK = flags.DEFINE_enum('task', 'usb', list(connectors.task_names()), 'Connector task.')
_POLICY = flags.DEFINE_string(
    'policy', 'p_controller', f'Policy to evaluate; one of: {", ".join(POLICIES)}.'
)
_GOAL_NOISE_MM = flags.DEFINE_float(
    'goal_noise_mm', 0.0, 'Goal perturbation half-width per horizontal axis, mm.', lower_bound=0.0
)
_EPISODES = flags.DEFINE_integer('episodes', 25, 'Number of executions.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if _POLICY.value not in POLICIES:
        raise app.UsageError(
            f'--policy={_POLICY.value!r} is not available; valid policies: {", ".join(POLICIES)}.'
        )
    common.enable_compilation_cache()
    from insertion_jax.training import evaluate  # pylint: disable=import-outside-toplevel

    (result,) = evaluate.evaluate_p_controller(
        _TASK.value, _EPISODES.value, (_GOAL_NOISE_MM.value,), seed=_SEED.value
    )
    print(
        f'{result.task}: {result.policy} with +-{result.goal_noise_mm:g} mm goal noise: '
        f'{result.successes}/{result.episodes} connected ({100 * result.success_rate:.0f}%), '
        f'mean final distance {result.mean_final_distance_mm:.2f} mm'
    )
    if _JSON.value:
        print(json.dumps(result.to_dict()))


if __name__ == '__main__':
    app.run(main)
