r"""Records demonstrations of an assembly task with the human-like demonstrator.

  python -m experiments.record_demos --task=peg_in_hole --num=6 --out=demos/peg.npz

The demonstrator (`insertion_jax.replay.demos.HumanDemonstrator`) drives the
task as a person with a game controller would: it sees where the parts are,
shakes, hesitates, and goes down once they look aligned. Only successful
episodes are kept. The file format is documented in
`insertion_jax/replay/demos.py`; `experiments.reproduce_der --demos=FILE` reads it.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from experiments import common
from insertion_jax.envs import assembly
from insertion_jax.envs import registry as env_registry
from insertion_jax.replay import demos
from insertion_jax.training import demonstrations

TASKS = common.ASSEMBLY

_TASK = flags.DEFINE_string('task', 'peg_in_hole', f'Assembly task: {", ".join(TASKS)}.')
_NUM = flags.DEFINE_integer('num', 6, 'Successful demonstrations to record.', lower_bound=1)
_OUT = flags.DEFINE_string('out', None, 'Output .npz file.', required=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Episodes recorded in parallel.', lower_bound=1)


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if _TASK.value not in TASKS:
        raise app.UsageError(
            f'--task={_TASK.value!r} is not an assembly task; valid: {", ".join(TASKS)}.'
        )
    common.enable_compilation_cache()
    env = assembly.AssemblyEnv(assembly.AssemblyConfig(task=_TASK.value))
    print(f'Recording {_NUM.value} demonstrations of {_TASK.value} ({_BATCH.value} at a time)...')
    try:
        recorded, info = demonstrations.record(
            env, _NUM.value, jax.random.PRNGKey(_SEED.value), batch=_BATCH.value
        )
    except demonstrations.DemonstratorError as e:
        raise app.UsageError(str(e)) from e
    demos.save(
        _OUT.value,
        recorded,
        _TASK.value,
        env_registry.config_to_dict(env.config),
        np.ones(recorded.count, bool),
    )
    lengths = np.asarray(recorded.lengths)
    print(
        f'Wrote {_OUT.value}: {recorded.count} episodes, {int(lengths.sum())} steps '
        f'(lengths {lengths.min()}-{lengths.max()}, mean {lengths.mean():.0f}); the demonstrator '
        f'succeeded in {100 * info["demonstrator_success_rate"]:.0f}% of its attempts.'
    )


if __name__ == '__main__':
    app.run(main)
