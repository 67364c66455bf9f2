r"""Evaluates the P-controller or a trained policy on one connector task.

  python -m experiments.evaluate --task=usb --policy=p_controller \
      --goal_noise_mm=1 --episodes=25 --seed=0 --json
  python -m experiments.evaluate --policy=runs/usb_residual_sac --goal_noise_mm=1

--policy is 'p_controller' or the directory of a training run (its task and
action composition come from the run's config.json, so --task is ignored).
Prints a one-line summary per policy and, with --json, one JSON object on the
last line with task, policy, goal_noise_mm, episodes, success_rate, successes,
mean_final_distance_mm and seed (for a run: the mean over its seeds, and
'per_seed' with each seed's success rate).
"""

from __future__ import annotations

import json
import os

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
    is_run = os.path.isfile(os.path.join(_POLICY.value, 'config.json'))
    if _POLICY.value not in POLICIES and not is_run:
        raise app.UsageError(
            f'--policy={_POLICY.value!r} is not available; valid policies: '
            f'{", ".join(POLICIES)}, or the directory of a training run.'
        )
    common.enable_compilation_cache()
    from insertion_jax.training import evaluate  # pylint: disable=import-outside-toplevel

    if is_run:
        result = evaluate_run(_POLICY.value)
    else:
        (result,) = evaluate.evaluate_p_controller(
            _TASK.value, _EPISODES.value, (_GOAL_NOISE_MM.value,), seed=_SEED.value
        )
        result = result.to_dict()
    print(
        f'{result["task"]}: {result["policy"]} with +-{result["goal_noise_mm"]:g} mm goal noise: '
        f'{result["successes"]}/{result["episodes"]} connected '
        f'({100 * result["success_rate"]:.0f}%), '
        f'mean final distance {result["mean_final_distance_mm"]:.2f} mm'
    )
    if _JSON.value:
        print(json.dumps(result))


def evaluate_run(run_dir: str) -> dict:
    """Evaluates every seed's policy of a training run; returns the JSON summary."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from insertion_jax.training import runner  # pylint: disable=import-outside-toplevel

    try:
        components, params, config = runner.load_run(run_dir)
    except (OSError, ValueError, KeyError) as e:
        raise app.UsageError(f'--policy={run_dir!r} could not be loaded: {e}') from e
    condition = 'noisy' if _GOAL_NOISE_MM.value > 0 else 'exact'
    evaluator = runner.Evaluator(
        components, _EPISODES.value, _SEED.value, {condition: _GOAL_NOISE_MM.value}
    )
    out = evaluator(params)
    per_seed = [float(x) for x in out[condition]]
    seeds = list(range(config['run']['seed'], config['run']['seed'] + len(per_seed)))
    successes = int(round(sum(per_seed) * _EPISODES.value))
    return {
        'task': components.config.env.task,
        'policy': run_dir,
        'goal_noise_mm': _GOAL_NOISE_MM.value,
        'episodes': _EPISODES.value * len(per_seed),
        'success_rate': float(np.mean(per_seed)),
        'successes': successes,
        'mean_final_distance_mm': float(np.mean(out[f'distance_{condition}_mm'])),
        'seed': _SEED.value,
        'per_seed': dict(zip(map(str, seeds), per_seed, strict=True)),
    }


if __name__ == '__main__':
    app.run(main)
