r"""Pictures of the contact model, with MuJoCo's own renderer.

  MUJOCO_GL=egl python -m experiments.render --task=usb --out=docs/images
  MUJOCO_GL=egl python -m experiments.render --task=all --out=docs/images

For each task writes:
  TASK_closeup.png   the aligned plug just above its socket
  TASK_cutaway.png   the socket's front wall removed, plug half inserted
  TASK_exact.gif     one P-controller episode with the exact goal (cut-away)
  TASK_noisy.gif     the same start with the goal off by --noisy_offset_mm

The episodes are simulated by the MJX environment (the same compiled rollout
the evaluation uses); frames are rendered from its joint positions.
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend when it is imported: EGL renders without a
# display (CPU-only machines included), unless the caller chose another.
os.environ.setdefault('MUJOCO_GL', 'egl')

import imageio.v2 as imageio  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import common  # noqa: E402
from insertion_jax.envs import connectors, insertion, mjcf, scene  # noqa: E402
from insertion_jax.training import evaluate  # noqa: E402

_TASK = flags.DEFINE_enum('task', 'all', ['all', *connectors.task_names()], 'Connector task.')
_OUT = flags.DEFINE_string('out', 'docs/images', 'Output directory.')
_NOISY_OFFSET_MM = flags.DEFINE_list(
    'noisy_offset_mm', ['0.9', '0.6'], 'Goal offset (x, y) of the noisy episode, mm.'
)
_WIDTH = flags.DEFINE_integer('width', 480, 'Image width, pixels.', lower_bound=64)
_HEIGHT = flags.DEFINE_integer('height', 360, 'Image height, pixels.', lower_bound=64)
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed of the episodes.')

PLUG_ALPHA_IN_CUTAWAY = 0.35


def _camera(spec, view: str):
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    depth = spec.insertion_depth_mm * 1e-3
    if view == 'closeup':
        cam.lookat[:] = (0.0, 0.0, -0.004)
        cam.distance, cam.azimuth, cam.elevation = 0.07, 120.0, -30.0
    else:  # cut-away: straight at the socket's open front
        cam.lookat[:] = (0.0, 0.0, -depth / 2 + 0.003)
        cam.distance, cam.azimuth, cam.elevation = 0.045, 90.0, -6.0
    return cam


def _options(cutaway: bool):
    """Close-up: everything but the O-ring; cut-away: camera-side walls hidden."""
    opt = mujoco.MjvOption()
    opt.geomgroup[:] = 1
    opt.geomgroup[mjcf.CAMERA_SIDE_GROUP if cutaway else scene.SEAL_GROUP] = 0
    return opt


def render_task(task: str, out_dir: str, noisy_offset_mm, width: int, height: int, seed: int):
    """Writes the two stills and the two GIFs of `task`; returns their paths."""
    env = insertion.InsertionEnv(insertion.InsertionConfig(task=task))
    spec = env.spec
    model = scene.build_model(spec, env.ee_spec)  # a copy whose colours we may change
    data = mujoco.MjData(model)
    plug_geoms = model.geom_bodyid == mujoco.mj_name2id(
        model, mujoco.mjtObj.mjOBJ_BODY, scene.PLUG_BODY
    )
    opaque = model.geom_rgba[:, 3].copy()
    renderer = mujoco.Renderer(model, height, width)
    paths = []

    def frame(qpos, view):
        cutaway = view != 'closeup'
        # In the cut-away the plug is see-through, so pins, rib and seal show.
        model.geom_rgba[:, 3] = np.where(plug_geoms & cutaway, PLUG_ALPHA_IN_CUTAWAY, opaque)
        data.qpos[:] = qpos
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=_camera(spec, view), scene_option=_options(cutaway))
        return renderer.render().copy()

    depth_m = spec.insertion_depth_mm * 1e-3
    for view, height_above_goal_m in (('closeup', depth_m + 0.004), ('cutaway', depth_m / 2)):
        qpos = np.zeros(model.nq)
        qpos[2] = -depth_m + height_above_goal_m
        path = os.path.join(out_dir, f'{task}_{view}.png')
        imageio.imwrite(path, frame(qpos, view))
        paths.append(path)

    run = evaluate.make_rollout_fn(env, evaluate.p_controller_policy)
    offsets = jnp.array([[0.0, 0.0], [float(v) for v in noisy_offset_mm]])
    result = run(evaluate.p_controller_params(), jax.random.PRNGKey(seed), offsets)
    qpos_traj = np.asarray(result.qpos)  # (T + 1, 2, nq)
    for episode, name in enumerate(('exact', 'noisy')):
        frames = [frame(q, 'cutaway') for q in qpos_traj[:, episode]]
        frames += [frames[-1]] * 5  # hold the last frame
        path = os.path.join(out_dir, f'{task}_{name}.gif')
        imageio.mimsave(path, frames, duration=1000 / env.config.control_hz, loop=0)
        paths.append(path)
        print(
            f'  {task} {name}: connected={bool(result.success[episode])}, '
            f'final distance {float(result.final_distance_mm[episode]):.2f} mm',
            flush=True,
        )
    renderer.close()
    return paths


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if len(_NOISY_OFFSET_MM.value) != 2:
        raise app.UsageError(
            f'--noisy_offset_mm={",".join(_NOISY_OFFSET_MM.value)} must be two numbers: x,y in mm.'
        )
    common.enable_compilation_cache()
    os.makedirs(_OUT.value, exist_ok=True)
    tasks = connectors.task_names() if _TASK.value == 'all' else (_TASK.value,)
    for i, task in enumerate(tasks):
        print(f'[{i + 1}/{len(tasks)}] rendering {task}...', flush=True)
        for path in render_task(
            task, _OUT.value, _NOISY_OFFSET_MM.value, _WIDTH.value, _HEIGHT.value, _SEED.value
        ):
            print('  wrote', path)


if __name__ == '__main__':
    app.run(main)
