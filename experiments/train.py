r"""Trains an agent on any registered task, many seeds at once.

  python -m experiments.train --task=usb --algo=sac --mode=residual \
      --reward=sparse --obs=state --total_steps=20000 --num_seeds=2 --seed=0 \
      --out=runs/usb_residual_sac
  python -m experiments.train --task=peg_in_hole --algo=apex_ddpg --mode=pure \
      --structure=one_shot_all --total_steps=20000 --out=runs/peg_apex

Tasks: the connectors (usb, dsub, model_e; residual RL over the P-controller
is possible there), the assembly tasks (peg_in_hole, lap_joint) and
point_reach (a diagnostic). Modes: residual (the policy adds its move to the
P-controller's), pure (the policy alone), lfd (pure RL plus a
behaviour-cloning loss on scripted demonstrations). --replay picks the buffer
for any algo: uniform, prioritized, or der (Dynamic Experience Replay:
--structure, --der). With --obs=image (or state+image) --batch_size defaults to 128
(`training.config.IMAGE_PRESETS`). With --algo=apex_ddpg the flags left unset take the DER
paper's loop settings (`training.config.ALGO_PRESETS`: 3-step returns, batch
512, running observation filter, DER replay) and its agent settings
(`ddpg.ApeXDDPGConfig`). Writes config.json, metrics.jsonl,
learning_curve.png, summary.json, summary.md, policy/, checkpoints/ (the last
--keep) and tensorboard/ (unless --notensorboard) into --out; the same command
resumes a stopped run (even one killed with SIGKILL) from its last checkpoint
(one at every evaluation, and every --checkpoint_every steps), and with a
larger --total_steps (or another --eval_every or --checkpoint_every)
continues a run, finished or not.

The seeds lie over every local device (one compiled program; the run prints
the layout). Over several processes or hosts, start the same command in each
with --coordinator_address=HOST:PORT --num_processes=N --process_id=I (under
Slurm or on a TPU pod, JAX finds them by itself):

  python -m experiments.train --num_seeds=8 --coordinator_address=node0:1234 \
      --num_processes=2 --process_id=0 --out=runs/usb_8seeds   # and process_id=1
`experiments.evaluate --policy=DIR` evaluates the result again.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags

from experiments import common
from insertion_jax import observations
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import camera, rewards
from insertion_jax.envs import registry as env_registry
from insertion_jax.replay import der, prioritized
from insertion_jax.replay import registry as replay_registry
from insertion_jax.training import config as config_lib
from insertion_jax.training import demonstrations, distributed, runner

_TASK = flags.DEFINE_enum('task', 'usb', list(common.TASKS), 'Task.')
_ALGO = flags.DEFINE_enum('algo', 'sac', list(agent_registry.ALGOS), 'Agent.')
_MODE = flags.DEFINE_enum(
    'mode',
    None,
    list(config_lib.MODES),
    'Residual, pure, RL + LfD (default: residual where the task has a hand-designed '
    'controller, else pure).',
)
_REWARD = flags.DEFINE_enum(
    'reward', 'sparse', list(rewards.REWARD_TYPES), 'Reward (connector tasks).'
)
_OBS = flags.DEFINE_enum(
    'obs',
    'state',
    list(observations.OBS_TYPES),
    'What the policy observes: the state vector, the 32x32 camera image alone, or both '
    '(connector tasks).',
)
_FRAME_STACK = flags.DEFINE_integer(
    'frame_stack', 1, 'Camera frames in an image observation.', lower_bound=1
)
_RANDOMIZE_CAMERA = flags.DEFINE_bool(
    'randomize_camera',
    True,
    "Draw each episode's light and camera pose and add pixel noise (image runs).",
)
_CAMERA_BACKEND = flags.DEFINE_enum(
    'camera_backend',
    'raycast',
    list(camera.BACKENDS),
    "What renders the camera: 'raycast' (mjx.ray, pure JAX) or 'warp' (MJX's Warp "
    "renderer; needs pip install -e '.[warp]'). The same image either way.",
)
_IMAGE_SHIFT = flags.DEFINE_integer(
    'image_shift_px',
    2,
    'Random-shift augmentation of training images, pixels (0 turns it off).',
    lower_bound=0,
)
_TOTAL_STEPS = flags.DEFINE_integer(
    'total_steps', 24_000, 'Environment steps per seed.', lower_bound=1
)
_NUM_SEEDS = flags.DEFINE_integer('num_seeds', 2, 'Seeds trained at once.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'First seed; the others follow it.')
_OUT = flags.DEFINE_string('out', 'runs/usb_residual_sac', 'Output directory.')
_NUM_ENVS = flags.DEFINE_integer('num_envs', 16, 'Environments per seed.', lower_bound=1)
_UNROLL = flags.DEFINE_integer(
    'unroll_length', 30, 'Control steps per environment per iteration.', lower_bound=1
)
_UTD = flags.DEFINE_float('utd', 0.5, 'Gradient updates per environment step.', lower_bound=1e-6)
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Transitions per update.', lower_bound=1)
_HIDDEN = flags.DEFINE_list('hidden', ['64', '64'], 'Hidden layer widths of every network.')
_LR = flags.DEFINE_float(
    'lr', None, "Learning rate of every optimizer (default: the algo's own).", lower_bound=1e-12
)
_TRAIN_GOAL_NOISE = flags.DEFINE_float(
    'train_goal_noise_mm',
    1.0,
    'Goal noise of the training episodes, per horizontal axis, mm (connector tasks).',
    lower_bound=0.0,
)
_EVAL_GOAL_NOISE = flags.DEFINE_float(
    'eval_goal_noise_mm',
    1.0,
    "Goal noise of the evaluation's noisy condition, mm (connector tasks).",
    lower_bound=0.0,
)
_EVAL_EVERY = flags.DEFINE_integer(
    'eval_every', 4_000, 'Environment steps between evaluations.', lower_bound=1
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    'checkpoint_every',
    None,
    'Environment steps between checkpoints besides those at evaluations (default: at '
    'evaluations only): what a hard kill can lose.',
    lower_bound=1,
)
_EVAL_EPISODES = flags.DEFINE_integer(
    'eval_episodes', 25, 'Executions per evaluation condition.', lower_bound=1
)
_LEARNING_STARTS = flags.DEFINE_integer(
    'learning_starts', 960, 'Environment steps before updates start.', lower_bound=0
)
_BUFFER = flags.DEFINE_integer('buffer_capacity', 100_000, 'Replay capacity.', lower_bound=1)
_N_STEP = flags.DEFINE_integer('n_step', 1, 'Return length of stored transitions.', lower_bound=1)
_NUM_DEMOS = flags.DEFINE_integer(
    'num_demos', 20, 'Demonstrations (lfd; der with a structure).', lower_bound=1
)
_BC_WEIGHT = flags.DEFINE_float(
    'bc_weight', 1.0, 'Behaviour-cloning weight (lfd mode only).', lower_bound=0.0
)
_ITERS_PER_CALL = flags.DEFINE_integer(
    'iterations_per_call', 1, 'Training iterations per device call.', lower_bound=1
)
_OBS_NORMALIZER = flags.DEFINE_enum(
    'obs_normalizer', 'fixed', ['fixed', 'running'], 'Observation normalization.'
)
_REPLAY = flags.DEFINE_enum('replay', 'uniform', list(replay_registry.KINDS), 'Replay buffer.')
_ALPHA = flags.DEFINE_float('alpha', 0.6, 'Priority exponent (replay=prioritized).')
_STRUCTURE = flags.DEFINE_enum(
    'structure', 'none', list(der.STRUCTURES), 'DER buffer structure (replay=der).'
)
_DER_ON = flags.DEFINE_bool('der', True, 'Refresh the demonstration zones (replay=der).')
_NUM_BUFFERS = flags.DEFINE_integer('num_buffers', 6, 'DER buffers.', lower_bound=1)
common.define_run_flags(__name__)
common.define_process_flags(__name__)

# Flags an algo's preset may fill when they are left unset (`ALGO_PRESETS`).
_PRESETTABLE = (_BATCH, _N_STEP, _OBS_NORMALIZER, _REPLAY)


def _replay_config(kind: str):
    """The replay's config object from the replay flags."""
    if kind == 'prioritized':
        return prioritized.PrioritizedConfig(alpha=_ALPHA.value)
    if kind == 'der':
        return der.DERConfig(
            num_buffers=_NUM_BUFFERS.value, structure=_STRUCTURE.value, der=_DER_ON.value
        )
    return replay_registry.config_class(kind)()


def build_configs():
    """The run's (TrainConfig, RunConfig) from the flags; the one place flags are read.

    Raises app.UsageError (a one-line message, no traceback) for bad values.
    """
    try:
        hidden = tuple(int(h) for h in _HIDDEN.value)
    except ValueError as e:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)} must be integers: {e}') from e
    if not hidden or min(hidden) <= 0:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)}: widths must be positive.')
    if _TASK.value not in common.CONNECTORS and flags.FLAGS['reward'].present:
        raise app.UsageError(
            f'--reward applies to the connector tasks ({", ".join(common.CONNECTORS)}); '
            f'task {_TASK.value!r} has its own reward.'
        )
    try:
        env = common.env_config(
            _TASK.value,
            _REWARD.value,
            _TRAIN_GOAL_NOISE.value,
            _OBS.value,
            _FRAME_STACK.value,
            _RANDOMIZE_CAMERA.value,
            _CAMERA_BACKEND.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    has_controller = env_registry.env_class(env).has_base_controller
    mode = _MODE.value or ('residual' if has_controller else 'pure')
    agent_cls = agent_registry.config_class(_ALGO.value)
    fields = {f.name for f in dataclasses.fields(agent_cls)}
    agent_kwargs = {
        'hidden': hidden,
        'bc_weight': _BC_WEIGHT.value if mode == 'lfd' else 0.0,
    }
    if _LR.value is not None:
        agent_kwargs.update(
            {name: _LR.value for name in ('actor_lr', 'critic_lr', 'alpha_lr') if name in fields}
        )
    given = {holder.name for holder in _PRESETTABLE if flags.FLAGS[holder.name].present}
    loop_values = config_lib.apply_presets(
        _ALGO.value, {holder.name: holder.value for holder in _PRESETTABLE}, given, _OBS.value
    )
    try:
        train_config = config_lib.TrainConfig(
            env=env,
            algo=_ALGO.value,
            agent=agent_cls(**agent_kwargs),
            mode=mode,
            num_envs=_NUM_ENVS.value,
            unroll_length=_UNROLL.value,
            utd=_UTD.value,
            batch_size=loop_values['batch_size'],
            buffer_capacity=_BUFFER.value,
            learning_starts=_LEARNING_STARTS.value,
            n_step=loop_values['n_step'],
            num_demos=_NUM_DEMOS.value,
            obs_normalizer=loop_values['obs_normalizer'],
            replay=_replay_config(loop_values['replay']),
            image_shift_px=_IMAGE_SHIFT.value,
        )
        run_config = runner.RunConfig(
            total_steps=_TOTAL_STEPS.value,
            num_seeds=_NUM_SEEDS.value,
            seed=_SEED.value,
            eval_every=_EVAL_EVERY.value,
            eval_episodes=_EVAL_EPISODES.value,
            eval_noise_mm=_EVAL_GOAL_NOISE.value,
            iterations_per_call=_ITERS_PER_CALL.value,
            checkpoint_every=_CHECKPOINT_EVERY.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    return train_config, run_config


def train_kwargs():
    """`runner.train`'s keyword arguments beyond the configs, from the flags."""
    return common.run_kwargs()


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.join_processes()  # before anything starts JAX's backend (building configs does)
    train_config, run_config = build_configs()
    common.enable_compilation_cache()
    try:
        runner.train(train_config, run_config, _OUT.value, **train_kwargs())
    except (
        runner.ConfigMismatchError,
        demonstrations.DemonstratorError,
        distributed.LayoutError,
    ) as e:
        raise app.UsageError(str(e)) from e


if __name__ == '__main__':
    app.run(main)
