r"""Evaluates the P-controller or a trained policy on any registered task.

  python -m experiments.evaluate --task=usb --policy=p_controller \
      --goal_noise_mm=1 --episodes=25 --seed=0 --json
  python -m experiments.evaluate --policy=runs/usb_residual_sac --goal_noise_mm=1
  python -m experiments.evaluate --policy=runs/peg_apex --json

--policy is 'p_controller' (connector tasks) or the directory of a training
run (its task and action composition come from the run's config.json, so
--task is ignored, and its demonstrations are not needed). Connector tasks run
the residual-RL paper's protocol at --goal_noise_mm (0: the exact goal); the
other tasks run N episodes with their own randomization (goal_noise_mm is
null in the output). Prints a one-line summary and, with --json, one JSON
object on the last line with task, policy, goal_noise_mm, episodes,
success_rate, successes, mean_final_distance_mm and seed (for a run: the mean
over its seeds, and 'per_seed' with each seed's success rate).
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import common
from insertion_jax.training import evaluate, run_dir, runner

POLICIES = ('p_controller',)

_TASK = flags.DEFINE_enum(
    'task', 'usb', list(common.TASKS), 'Task (p_controller: a connector; a run: its own).'
)
_POLICY = flags.DEFINE_string(
    'policy', 'p_controller', f'Policy to evaluate; one of: {", ".join(POLICIES)}, or a run dir.'
)
_GOAL_NOISE_MM = flags.DEFINE_float(
    'goal_noise_mm',
    0.0,
    'Goal perturbation half-width per horizontal axis, mm (connector tasks).',
    lower_bound=0.0,
)
_EPISODES = flags.DEFINE_integer('episodes', 25, 'Number of executions.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    is_run = os.path.isfile(os.path.join(_POLICY.value, 'config.json'))
    if _POLICY.value not in POLICIES and not is_run:
        raise app.UsageError(
            f'--policy={_POLICY.value!r} is not available; valid policies: '
            f'{", ".join(POLICIES)}, or the directory of a training run.'
        )
    if not is_run and _TASK.value not in common.CONNECTORS:
        raise app.UsageError(
            f'--policy=p_controller needs a connector task ({", ".join(common.CONNECTORS)}); '
            f'task {_TASK.value!r} has no P-controller: evaluate a training run instead.'
        )
    common.enable_compilation_cache()
    if is_run:
        result = evaluate_run(_POLICY.value)
    else:
        (result,) = evaluate.evaluate_p_controller(
            _TASK.value, _EPISODES.value, (_GOAL_NOISE_MM.value,), seed=_SEED.value
        )
        result = result.to_dict()
    noise = result['goal_noise_mm']
    condition = 'its own randomization' if noise is None else f'+-{noise:g} mm goal noise'
    distance = result['mean_final_distance_mm']
    print(
        f'{result["task"]}: {result["policy"]} with {condition}: '
        f'{result["successes"]}/{result["episodes"]} successful '
        f'({100 * result["success_rate"]:.0f}%)'
        + ('' if distance is None else f', mean final distance {distance:.2f} mm')
    )
    if _JSON.value:
        print(run_dir.dumps(result))


def evaluate_run(path: str) -> dict:
    """Evaluates every seed's policy of a training run; returns the JSON summary.

    A connector run is evaluated at --goal_noise_mm (0: the exact goal), any
    other task at its own randomization."""
    try:
        env_config = runner.read_config(os.path.join(path, 'config.json'))[0].env
        connector = evaluate.config_has_goal_noise(env_config)
        if flags.FLAGS['goal_noise_mm'].present and not connector:
            raise app.UsageError(
                f'--goal_noise_mm applies to the connector tasks; task '
                f'{env_config.task!r} is evaluated with its own randomization.'
            )
        noise = _GOAL_NOISE_MM.value if connector else None
        (result,) = runner.evaluate_run(path, _EPISODES.value, _SEED.value, noise).values()
    except (OSError, ValueError, KeyError) as e:
        raise app.UsageError(f'--policy={path!r} could not be loaded: {e}') from e
    return result


if __name__ == '__main__':
    app.run(main)
