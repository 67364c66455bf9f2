r"""Trains an agent on a connector task, many seeds at once.

  python -m experiments.train --task=usb --algo=sac --mode=residual \
      --reward=sparse --obs=state --total_steps=20000 --num_seeds=2 --seed=0 \
      --out=runs/usb_residual_sac

Modes: residual (the policy adds its move to the P-controller's), pure (the
policy alone), lfd (pure RL plus a behaviour-cloning loss on scripted
demonstrations). --replay picks the buffer for any algo: uniform,
prioritized, or der (Dynamic Experience Replay: --structure, --der). With
--algo=apex_ddpg the flags left unset take the DER paper's settings (3-step
returns, batch 512, running observation filter, DER replay, Adam 1e-3). The
assembly tasks (peg_in_hole, lap_joint) run through experiments.reproduce_der. Writes config.json, metrics.jsonl, learning_curve.png,
summary.json, summary.md, policy/ and checkpoints/ into --out; the same command
resumes a stopped run from its last checkpoint. `experiments.evaluate
--policy=DIR` evaluates the result again.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags

from experiments import common
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import connectors, insertion, rewards
from insertion_jax.replay import der, interface, prioritized

MODES = ('residual', 'pure', 'lfd')

_TASK = flags.DEFINE_enum('task', 'usb', list(connectors.task_names()), 'Connector task.')
_ALGO = flags.DEFINE_enum('algo', 'sac', list(agent_registry.ALGOS), 'Agent.')
_MODE = flags.DEFINE_enum('mode', 'residual', list(MODES), 'Residual, pure RL, or RL + LfD.')
_REWARD = flags.DEFINE_enum('reward', 'sparse', list(rewards.REWARD_TYPES), 'Reward.')
_OBS = flags.DEFINE_enum('obs', 'state', ['state', 'image'], 'Observation type.')
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
_LR = flags.DEFINE_float('lr', 3e-4, 'Learning rate of every optimizer.', lower_bound=1e-12)
_GOAL_NOISE = flags.DEFINE_float(
    'goal_noise_mm', 1.0, 'Goal noise during training (per horizontal axis), mm.', lower_bound=0.0
)
_EVAL_EVERY = flags.DEFINE_integer(
    'eval_every', 4_000, 'Environment steps between evaluations.', lower_bound=1
)
_EVAL_EPISODES = flags.DEFINE_integer(
    'eval_episodes', 25, 'Executions per evaluation condition.', lower_bound=1
)
_LEARNING_STARTS = flags.DEFINE_integer(
    'learning_starts', 960, 'Environment steps before updates start.', lower_bound=0
)
_BUFFER = flags.DEFINE_integer('buffer_capacity', 100_000, 'Replay capacity.', lower_bound=1)
_N_STEP = flags.DEFINE_integer('n_step', 1, 'Return length of stored transitions.', lower_bound=1)
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 20, 'Demonstrations (lfd).', lower_bound=1)
_BC_WEIGHT = flags.DEFINE_float(
    'bc_weight', 1.0, 'Behaviour-cloning weight (lfd mode only).', lower_bound=0.0
)
_ITERS_PER_CALL = flags.DEFINE_integer(
    'iterations_per_call', 1, 'Training iterations per device call.', lower_bound=1
)
_OBS_NORMALIZER = flags.DEFINE_enum(
    'obs_normalizer', 'fixed', ['fixed', 'running'], 'Observation normalization.'
)
_REPLAY = flags.DEFINE_enum('replay', 'uniform', list(interface.REPLAYS), 'Replay buffer.')
_ALPHA = flags.DEFINE_float('alpha', 0.6, 'Priority exponent (prioritized; der uses 0.5).')
_STRUCTURE = flags.DEFINE_enum(
    'structure', 'none', list(der.STRUCTURES), 'DER buffer structure (replay=der).'
)
_DER_ON = flags.DEFINE_bool('der', True, 'Refresh the demonstration zones (replay=der).')
_NUM_BUFFERS = flags.DEFINE_integer('num_buffers', 6, 'DER buffers.', lower_bound=1)


def flag_value(holder, presets):
    """The flag's value, or the algo preset's (`loop.ALGO_PRESETS`) where the
    flag was left unset."""
    preset = presets.get(_ALGO.value, {})
    if not flags.FLAGS[holder.name].present and holder.name in preset:
        return preset[holder.name]
    return holder.value


def build_configs():
    """The run's (TrainConfig, RunConfig) from the flags; the one place flags are read."""
    from insertion_jax.training import loop, runner  # pylint: disable=import-outside-toplevel

    try:
        hidden = tuple(int(h) for h in _HIDDEN.value)
    except ValueError as e:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)} must be integers: {e}') from e
    if not hidden or min(hidden) <= 0:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)}: widths must be positive.')
    if _OBS.value == 'image':
        raise app.UsageError(
            '--obs=image is not available yet: the 32x32 camera is not built; use --obs=state.'
        )
    agent_cls = agent_registry.config_class(_ALGO.value)
    fields = {f.name for f in dataclasses.fields(agent_cls)}
    agent_kwargs = {'hidden': hidden}
    if _ALGO.value != 'apex_ddpg' or flags.FLAGS['lr'].present:
        agent_kwargs.update(actor_lr=_LR.value, critic_lr=_LR.value)
    if 'alpha_lr' in fields:
        agent_kwargs['alpha_lr'] = _LR.value
    agent_kwargs['bc_weight'] = _BC_WEIGHT.value if _MODE.value == 'lfd' else 0.0
    env = insertion.InsertionConfig(
        task=_TASK.value, reward=_REWARD.value, goal_noise_mm=_GOAL_NOISE.value
    )
    train_config = loop.TrainConfig(
        env=env,
        algo=_ALGO.value,
        agent=agent_cls(**agent_kwargs),
        mode=_MODE.value,
        obs=_OBS.value,
        num_envs=_NUM_ENVS.value,
        unroll_length=_UNROLL.value,
        utd=_UTD.value,
        batch_size=flag_value(_BATCH, loop.ALGO_PRESETS),
        buffer_capacity=_BUFFER.value,
        learning_starts=_LEARNING_STARTS.value,
        n_step=flag_value(_N_STEP, loop.ALGO_PRESETS),
        num_demos=_NUM_DEMOS.value,
        obs_normalizer=flag_value(_OBS_NORMALIZER, loop.ALGO_PRESETS),
        replay=flag_value(_REPLAY, loop.ALGO_PRESETS),
        priority=prioritized.PrioritizedConfig(alpha=_ALPHA.value),
        der=der.DERConfig(
            num_buffers=_NUM_BUFFERS.value, structure=_STRUCTURE.value, dynamic=_DER_ON.value
        ),
    )
    run_config = runner.RunConfig(
        total_steps=_TOTAL_STEPS.value,
        num_seeds=_NUM_SEEDS.value,
        seed=_SEED.value,
        eval_every=_EVAL_EVERY.value,
        eval_episodes=_EVAL_EPISODES.value,
        iterations_per_call=_ITERS_PER_CALL.value,
    )
    return train_config, run_config


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    try:
        train_config, run_config = build_configs()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    common.enable_compilation_cache()
    from insertion_jax.training import runner  # pylint: disable=import-outside-toplevel

    try:
        runner.train(train_config, run_config, _OUT.value)
    except runner.ConfigMismatchError as e:
        raise app.UsageError(str(e)) from e


if __name__ == '__main__':
    app.run(main)
