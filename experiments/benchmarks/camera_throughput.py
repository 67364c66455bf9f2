r"""What the camera costs: images rendered per second, and the env's control
steps per second with state and with image observations.

  python -m experiments.benchmarks.camera_throughput --task=usb --json

images_per_s: the camera (`InsertionEnv.render_image`, 32x32 by default,
--camera_backend=raycast or warp) on B worlds at once, vmapped and jitted, each world a different reset of the
task under its own randomized view; compile excluded, repeated until
--min_seconds have been timed.

state_steps_per_s and image_steps_per_s: control steps per second of the
same whole P-controller episodes (the evaluation's compiled rollout, goal off
by up to +-1 mm) on --env_batch environments, with state observations and
with image observations and the image reward (a frame rendered at every step
and at every reset, with the goal image). image_step_cost_ratio is state
rate / image rate: what a step with the camera costs relative to one
without.

Prints progress, then (with --json) one JSON object on the last line.
"""

from __future__ import annotations

import dataclasses
import platform
import time

import jax
from absl import app, flags

from experiments import common
from insertion_jax.envs import base, camera, connectors, insertion
from insertion_jax.training import evaluate, run_dir

_TASK = flags.DEFINE_enum('task', 'usb', list(connectors.task_names()), 'Connector task.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '64', '512'], 'Worlds rendered at once.')
_ENV_BATCH = flags.DEFINE_integer(
    'env_batch', 64, 'Environments stepped at once (state vs image).', lower_bound=1
)
_RESOLUTION = flags.DEFINE_integer('resolution', 32, 'Image width and height.', lower_bound=1)
_MIN_SECONDS = flags.DEFINE_float(
    'min_seconds', 3.0, 'Minimum timed work per measurement.', lower_bound=0.1
)
_BACKEND = flags.DEFINE_enum(
    'camera_backend',
    'raycast',
    list(camera.BACKENDS),
    "The camera's backend ('warp' needs warp-lang).",
)
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def timed_rate(fn, args_for, work_per_call: float, min_seconds: float) -> float:
    """Work per second of `fn` (compiled before timing), called with
    `args_for(i)` until `min_seconds` have passed (at least once)."""
    jax.block_until_ready(fn(*args_for(0)))  # compile and warm up
    calls, elapsed = 0, 0.0
    while elapsed < min_seconds:
        args = args_for(calls + 1)
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        elapsed += time.perf_counter() - start
        calls += 1
    return calls * work_per_call / elapsed


def images_per_s(env: insertion.InsertionEnv, batch: int, min_seconds: float) -> float:
    """Frames per second of `batch` worlds rendered at once."""
    states = jax.jit(base.batched(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))

    @jax.jit
    def render(data, view):
        return jax.vmap(env.render_image)(data, view)

    view = states.info['camera_view']
    return timed_rate(render, lambda i: (states.data, view), batch, min_seconds)


def control_steps_per_s(env: insertion.InsertionEnv, batch: int, min_seconds: float) -> float:
    """Control steps per second of whole P-controller episodes of `batch` envs."""
    key_env, key_goal = jax.random.split(jax.random.PRNGKey(0))
    offsets = evaluate.goal_offsets_mm(key_goal, batch, 1.0)
    params = evaluate.p_controller_params()
    run = evaluate.make_rollout_fn(env, evaluate.p_controller_policy)
    return timed_rate(
        run,
        lambda i: (params, jax.random.fold_in(key_env, i), offsets),
        batch * env.config.horizon,
        min_seconds,
    )


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    batches = common.batch_sizes(_BATCHES.value)
    common.enable_compilation_cache()
    try:
        base_config = common.env_config(_TASK.value, obs='image', camera_backend=_BACKEND.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    cam = dataclasses.replace(base_config.camera, resolution=_RESOLUTION.value)
    state_config = insertion.InsertionConfig(task=_TASK.value, camera=cam)
    image_config = dataclasses.replace(state_config, obs='image', reward='image')
    image_env = insertion.InsertionEnv(image_config)

    rendered = {}
    for batch in batches:
        rendered[str(batch)] = images_per_s(image_env, batch, _MIN_SECONDS.value)
        print(f'render batch {batch:4d}: {rendered[str(batch)]:,.0f} images/s', flush=True)
    rates = {}
    for name, config in (('state', state_config), ('image', image_config)):
        env = image_env if config is image_config else insertion.InsertionEnv(config)
        rates[name] = control_steps_per_s(env, _ENV_BATCH.value, _MIN_SECONDS.value)
        print(
            f'{name:5s} observations, {_ENV_BATCH.value} envs: {rates[name]:,.0f} control steps/s',
            flush=True,
        )
    result = {
        'task': _TASK.value,
        'device': str(jax.devices()[0].device_kind),
        'platform': jax.default_backend(),
        'cpu': platform.processor() or platform.machine(),
        'camera_backend': _BACKEND.value,
        'resolution': _RESOLUTION.value,
        'images_per_s': {k: round(v) for k, v in rendered.items()},
        'env_batch': _ENV_BATCH.value,
        'state_steps_per_s': round(rates['state'], 1),
        'image_steps_per_s': round(rates['image'], 1),
        'image_step_cost_ratio': round(rates['state'] / rates['image'], 3),
    }
    if _JSON.value:
        print(run_dir.dumps(result))


if __name__ == '__main__':
    app.run(main)
