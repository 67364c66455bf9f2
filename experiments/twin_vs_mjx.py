r"""The MuJoCo twin against MJX: the P-controller on the same episodes in both.

  python -m experiments.twin_vs_mjx --task=usb --episodes=100 --json

For each condition (the exact goal, and goals told up to --goal_noise_mm
off), MJX runs the P-controller's evaluation rollout (`evaluate`, batches of
--batch episodes), and the native-MuJoCo twin (`hardware.sim_robot`) replays
the very same episodes (starts, friction, goal offsets) through the robot
loop and its safety layer. Prints each condition's success rate in both
engines and the share of episodes with the same outcome, and with --json
one JSON object on the last line.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from experiments import common
from hardware import twin_check
from insertion_jax.envs import insertion

_TASK = flags.DEFINE_enum('task', 'usb', list(common.CONNECTORS), 'Connector task.')
_EPISODES = flags.DEFINE_integer('episodes', 100, 'Episodes per condition.', lower_bound=1)
_BATCH = flags.DEFINE_integer('batch', 50, 'MJX episodes per rollout call.', lower_bound=1)
_GOAL_NOISE_MM = flags.DEFINE_float(
    'goal_noise_mm', 1.0, 'The noisy condition: goal offset half-width, mm.', lower_bound=0.0
)
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.enable_compilation_cache()
    result = {'task': _TASK.value, 'episodes': _EPISODES.value, 'seed': _SEED.value}
    for condition, noise in (('exact', 0.0), ('noisy', _GOAL_NOISE_MM.value)):
        outcome = twin_check.paired_outcomes(
            insertion.InsertionConfig(task=_TASK.value),
            _EPISODES.value,
            noise,
            _SEED.value,
            _BATCH.value,
        )
        mjx_rate, twin_rate = outcome['mjx'].mean(), outcome['twin'].mean()
        same = float(np.mean(outcome['mjx'] == outcome['twin']))
        result[condition] = {
            'goal_noise_mm': noise,
            'mjx_success': float(mjx_rate),
            'twin_success': float(twin_rate),
            'same_outcome': same,
        }
        print(
            f'{_TASK.value}, {condition} (+-{noise:g} mm): MJX {100 * mjx_rate:.0f}%, '
            f'twin {100 * twin_rate:.0f}%, same outcome in {100 * same:.0f}% of '
            f'{_EPISODES.value} episodes',
            flush=True,
        )
    if _JSON.value:
        print(json.dumps(result))


if __name__ == '__main__':
    app.run(main)
