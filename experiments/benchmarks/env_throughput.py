r"""Physics throughput of the MJX insertion env vs. native MuJoCo, same MjModel.

  python -m experiments.benchmarks.env_throughput --task=usb --json

Workload (identical on both sides): whole P-controller episodes (reset, then
30 control steps of 50 physics steps) with the goal off by up to +-1 mm, so
free motion (about a third of each episode), contact, jamming and seating all
occur in their natural proportions. MJX: the jitted, vmapped rollout that the
evaluation uses, at each batch size, compile excluded, repeated until
--min_seconds have been timed (at least one batch of episodes). Native:
`mujoco.mj_step` on one thread, the same model, control law, friction and
start distribution. One physics step is one `mj_step` of one world.

Prints progress, then (with --json) one JSON object on the last line:
mjx_steps_per_s {batch: steps/s}, native_steps_per_s, ratio_best.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import jax
import mujoco
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments import common
from insertion_jax.envs import connectors, controllers, insertion, scene
from insertion_jax.training import evaluate, run_dir

_TASK = flags.DEFINE_enum('task', 'usb', list(connectors.task_names()), 'Connector task.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '64', '512', '4096'], 'Vmapped batch sizes.')
_MIN_SECONDS = flags.DEFINE_float(
    'min_seconds', 3.0, 'Minimum timed stepping per batch size.', lower_bound=0.1
)
_NATIVE_EPISODES = flags.DEFINE_integer(
    'native_episodes', 20, 'Native episodes to time.', lower_bound=1
)
_HOST_DEVICES = flags.DEFINE_integer(
    'host_devices',
    os.cpu_count() or 1,
    'On a CPU: XLA host devices to split the batch over (one per core).',
    lower_bound=1,
)
_MAX_CONTACTS = flags.DEFINE_integer(
    'max_contact_points',
    None,
    "MJX contact budget per step (0: keep every contact); default: the scene's.",
    lower_bound=0,
)
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def mjx_steps_per_s(env, batch: int, min_seconds: float) -> float:
    """Physics steps/s of whole vmapped episodes (the evaluation's compiled rollout).

    The batch is split over all local devices (on a CPU, over the host devices
    made by `--host_devices`), so every core steps its own share of worlds.
    """

    key_env, key_goal = jax.random.split(jax.random.PRNGKey(0))
    offsets = evaluate.goal_offsets_mm(key_goal, batch, 1.0)
    devices = jax.devices()
    if batch % len(devices) == 0:
        mesh = Mesh(np.array(devices), ('batch',))
        offsets = jax.device_put(offsets, NamedSharding(mesh, PartitionSpec('batch')))
    params = evaluate.p_controller_params()
    run = evaluate.make_rollout_fn(env, evaluate.p_controller_policy)
    compiled = run.lower(params, key_env, offsets).compile()  # compile only, no run
    episodes, elapsed = 0, 0.0
    while elapsed < min_seconds:
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, jax.random.fold_in(key_env, episodes), offsets))
        elapsed += time.perf_counter() - start
        episodes += 1
    return batch * episodes * env.config.horizon * env.config.substeps / elapsed


def native_steps_per_s(env, episodes: int) -> float:

    cfg, spec = env.config, env.spec
    model = scene.build_model(spec, env.ee_spec, cfg.max_contact_points)
    data = mujoco.MjData(model)
    tip = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, scene.TIP_SITE)
    kp = np.asarray(controllers.DEFAULT_KP)
    goal = np.asarray(env.goal)
    reach = cfg.workspace_mm * 1e-3
    rng = np.random.default_rng(0)
    steps, elapsed = 0, 0.0
    for _ in range(episodes):
        mujoco.mj_resetData(model, data)
        model.pair_friction[:, :2] = rng.uniform(*spec.friction_range)
        start = np.array(
            [
                *rng.uniform(-1, 1, 2) * cfg.reset_xy_range_mm * 1e-3,
                goal[2] + cfg.reset_height_mm * 1e-3,
            ]
        )
        data.qpos[:3] = start
        data.ctrl[:3] = start
        goal_observed = goal + np.array([*rng.uniform(-1e-3, 1e-3, 2), 0.0])
        mujoco.mj_forward(model, data)
        t0 = time.perf_counter()
        for _ in range(cfg.horizon):
            action = np.clip(
                -kp * (data.site_xpos[tip] - goal_observed), -cfg.max_action_m, cfg.max_action_m
            )
            target = data.qpos[:3] + action
            target[:2] = np.clip(target[:2], goal_observed[:2] - reach, goal_observed[:2] + reach)
            data.ctrl[:3] = target
            mujoco.mj_step(model, data, nstep=cfg.substeps)
        elapsed += time.perf_counter() - t0
        steps += cfg.horizon * cfg.substeps
    return steps / elapsed


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    batches = common.batch_sizes(_BATCHES.value)
    # Read when the CPU backend starts (the first computation, not `import jax`);
    # ignored on GPU/TPU.
    os.environ['XLA_FLAGS'] = (
        os.environ.get('XLA_FLAGS', '')
        + f' --xla_force_host_platform_device_count={_HOST_DEVICES.value}'
    )
    common.enable_compilation_cache()

    config = insertion.InsertionConfig(task=_TASK.value)
    if _MAX_CONTACTS.value is not None:
        config = dataclasses.replace(config, max_contact_points=_MAX_CONTACTS.value)
    env = insertion.InsertionEnv(config)
    native = native_steps_per_s(env, _NATIVE_EPISODES.value)
    print(f'native MuJoCo (1 thread): {native:,.0f} physics steps/s', flush=True)
    mjx_rates = {}
    for batch in batches:
        mjx_rates[str(batch)] = mjx_steps_per_s(env, batch, _MIN_SECONDS.value)
        print(
            f'MJX batch {batch:5d}: {mjx_rates[str(batch)]:,.0f} physics steps/s '
            f'({mjx_rates[str(batch)] / native:.2f} x native)',
            flush=True,
        )
    result = {
        'task': _TASK.value,
        'device': str(jax.devices()[0].device_kind),
        'devices': len(jax.devices()),
        'platform': jax.default_backend(),
        'cpu': platform.processor() or platform.machine(),
        'substeps_per_control_step': env.config.substeps,
        'max_contact_points': env.config.max_contact_points,
        'timestep_s': env.config.timestep_s,
        'mjx_steps_per_s': {k: round(v) for k, v in mjx_rates.items()},
        'native_steps_per_s': round(native),
        'ratio_best': round(max(mjx_rates.values()) / native, 3),
    }
    if _JSON.value:
        print(run_dir.dumps(result))


if __name__ == '__main__':
    app.run(main)
