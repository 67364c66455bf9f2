r"""Reproduces the DER paper's ablation on an assembly task.

  python -m experiments.reproduce_der --task=peg_in_hole --seeds=3 --out=runs/der_peg

Trains Ape-X DDPG with DER replay in the 8 configurations (4 buffer
structures x DER on/off), all seeds and configurations vmapped in one compiled
program, and writes results.csv, der_study.png (the paper's figure layout),
summary.md/json and checkpoints/ into --out; the same command resumes a
stopped study. The defaults are a CPU-sized study; the paper's scale
(200,000 steps per iteration) needs a GPU: raise --steps_per_iteration,
--iterations, --num_envs and --target_every together.
"""

from __future__ import annotations

from absl import app, flags

from experiments import common
from insertion_jax.training import demonstrations, der_study

_TASK = flags.DEFINE_string(
    'task',
    'peg_in_hole',
    'Assembly task: peg_in_hole or lap_joint; point_reach checks the pipeline in seconds.',
)
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per configuration.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'First seed.')
_OUT = flags.DEFINE_string('out', 'runs/der_peg_in_hole', 'Output directory.')
_DEMOS = flags.DEFINE_string('demos', None, 'Demonstrations file (default: record them).')
_STRUCTURES = flags.DEFINE_list(
    'structures', ['none', 'one_shot_all', 'all_shots_all', 'one_shot_each'], 'Structures.'
)
_DER = flags.DEFINE_enum('der', 'both', ['both', 'on', 'off'], 'DER on, off, or both.')
_ITERATIONS = flags.DEFINE_integer('iterations', 30, 'Reported iterations.', lower_bound=1)
_STEPS = flags.DEFINE_integer(
    'steps_per_iteration', 4_000, 'Environment steps per run per iteration.', lower_bound=1
)
_NUM_ENVS = flags.DEFINE_integer('num_envs', 8, 'Environments per run.', lower_bound=1)
_UNROLL = flags.DEFINE_integer('unroll_length', 25, 'Steps per loop iteration.', lower_bound=1)
_UTD = flags.DEFINE_float('utd', 0.25, 'Updates per environment step.', lower_bound=1e-6)
_BATCH = flags.DEFINE_integer('batch_size', 512, 'Train batch.', lower_bound=1)
_BUFFER = flags.DEFINE_integer('buffer_capacity', 100_000, 'Transitions per buffer.', lower_bound=1)
_ZONE = flags.DEFINE_float('zone_fraction', 0.01, 'Demonstration zone share of a buffer.')
_REFRESH = flags.DEFINE_integer(
    'refresh_every', 500, 'Updates between zone refreshes.', lower_bound=1
)
_TARGET = flags.DEFINE_integer(
    'target_every', 2_000, 'Updates between target copies.', lower_bound=1
)
_HIDDEN = flags.DEFINE_list('hidden', None, "Network widths (default: the paper's per task).")
_STARTS = flags.DEFINE_integer('learning_starts', 2_000, 'Steps before updates.', lower_bound=0)
_YAW = flags.DEFINE_list(
    'yaw_range_deg', None, "Start yaw low,high, degrees: a scaled task (default: the paper's)."
)


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    modes = {'both': (False, True), 'on': (True,), 'off': (False,)}[_DER.value]
    try:
        hidden = tuple(int(h) for h in _HIDDEN.value) if _HIDDEN.value else None
    except ValueError as e:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)} must be integers.') from e
    try:
        yaw = tuple(float(v) for v in _YAW.value) if _YAW.value else None
    except ValueError as e:
        raise app.UsageError(f'--yaw_range_deg={",".join(_YAW.value)}: two numbers.') from e
    try:
        config = der_study.StudyConfig(
            task=_TASK.value,
            structures=tuple(_STRUCTURES.value),
            der_modes=modes,
            num_seeds=_SEEDS.value,
            seed=_SEED.value,
            iterations=_ITERATIONS.value,
            steps_per_iteration=_STEPS.value,
            num_envs=_NUM_ENVS.value,
            unroll_length=_UNROLL.value,
            utd=_UTD.value,
            batch_size=_BATCH.value,
            buffer_capacity=_BUFFER.value,
            zone_fraction=_ZONE.value,
            refresh_every=_REFRESH.value,
            target_every=_TARGET.value,
            hidden=hidden,
            learning_starts=_STARTS.value,
            yaw_range_deg=yaw,
        )
        config.train_config()  # checks the sizes before any compile
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    common.enable_compilation_cache()
    try:
        der_study.run_study(config, _OUT.value, _DEMOS.value)
    except (ValueError, FileNotFoundError, demonstrations.DemonstratorError) as e:
        # DemoFormatError and ConfigMismatchError are ValueErrors: one line each.
        raise app.UsageError(str(e)) from e


if __name__ == '__main__':
    app.run(main)
