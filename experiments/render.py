r"""Pictures of the contact model, with MuJoCo's own renderer.

  MUJOCO_GL=egl python -m experiments.render --task=usb --out=docs/images
  MUJOCO_GL=egl python -m experiments.render --task=all --out=docs/images
  MUJOCO_GL=egl python -m experiments.render --task=all --camera --out=docs/images

For each task writes:
  TASK_closeup.png   the aligned plug just above its socket
  TASK_cutaway.png   the socket's front wall removed, plug half inserted
  TASK_exact.gif     one P-controller episode with the exact goal (cut-away)
  TASK_noisy.gif     the same start with the goal off by --noisy_offset_mm

With --camera, instead, for each task:
  TASK_camera.gif    one P-controller episode with the exact goal, as the
                     image agents see it: MuJoCo's own view of the scene, the
                     32x32 camera frame the policy observes (enlarged), the
                     goal image, and the image reward step by step

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
_CAMERA = flags.DEFINE_bool(
    'camera', False, "Write TASK_camera.gif (the image agents' view and reward) instead."
)

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


def camera_episode(task: str, seed: int):
    """One P-controller episode of `task` with image observations and the
    image reward (randomized view): (qpos (T + 1, nq), frames (T + 1, R, R),
    goal image (R, R), rewards (T,), connected at the end, the env)."""
    config = insertion.InsertionConfig(task=task, obs='image', reward='image')
    env = insertion.InsertionEnv(config)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(jax.random.PRNGKey(seed))
    qpos, frames, rewards = [state.data.qpos], [state.obs['image'][..., -1]], []
    for _ in range(env.horizon):
        state = step(state, env.base_action(state.obs))
        qpos.append(state.data.qpos)
        frames.append(state.obs['image'][..., -1])
        rewards.append(state.reward)
    return (
        np.asarray(qpos),
        np.asarray(frames),
        np.asarray(state.info['goal_image']),
        np.asarray(rewards),
        bool(state.info['success']),
        env,
    )


def camera_gif(task: str, out_dir: str, width: int, height: int, seed: int) -> str:
    """Writes TASK_camera.gif (see the module docstring); returns its path."""
    import matplotlib  # noqa: PLC0415 (only this picture needs it)

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415

    qpos, frames, goal, rewards, connected, env = camera_episode(task, seed)
    model = env.mj_model
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    option = _options(cutaway=False)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={'width_ratios': [4, 3, 3, 4]})
    pictures = []
    for t in range(len(qpos)):
        data.qpos[:] = qpos[t]
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=_camera(env.spec, 'closeup'), scene_option=option)
        for ax in axes:
            ax.clear()
        axes[0].imshow(renderer.render())
        axes[0].set_title('MuJoCo view')
        axes[1].imshow(frames[t], cmap='gray', vmin=0, vmax=255, interpolation='nearest')
        axes[1].set_title(f'agent view {frames.shape[1]}x{frames.shape[2]}')
        axes[2].imshow(goal, cmap='gray', vmin=0, vmax=255, interpolation='nearest')
        axes[2].set_title('goal image')
        for ax in axes[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        steps = np.arange(1, len(rewards) + 1)
        axes[3].plot(steps[:t], rewards[:t], 'o-', color='tab:blue', markersize=3)
        axes[3].set_xlim(0, len(rewards) + 1)
        axes[3].set_ylim(min(rewards.min() * 1.1, -0.01), 0.0)
        axes[3].set_xlabel('control step')
        axes[3].set_title('image reward  -100 mean|I - I_goal|')
        fig.suptitle(f'{task}: P-controller, exact goal, step {t}/{len(rewards)}')
        fig.tight_layout()
        fig.canvas.draw()
        pictures.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    renderer.close()
    pictures += [pictures[-1]] * 5  # hold the last frame
    path = os.path.join(out_dir, f'{task}_camera.gif')
    imageio.mimsave(path, pictures, duration=1000 / env.config.control_hz, loop=0)
    print(
        f'  {task}: connected={connected}, image reward {rewards[0]:.4f} at the first step, '
        f'{rewards[-1]:.4f} at the last',
        flush=True,
    )
    return path


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
        if _CAMERA.value:
            paths = [camera_gif(task, _OUT.value, _WIDTH.value, _HEIGHT.value, _SEED.value)]
        else:
            paths = render_task(
                task, _OUT.value, _NOISY_OFFSET_MM.value, _WIDTH.value, _HEIGHT.value, _SEED.value
            )
        for path in paths:
            print('  wrote', path)


if __name__ == '__main__':
    app.run(main)
