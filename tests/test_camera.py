"""The camera (`envs.camera`): what it sees follows the scene.

Rendered from native MuJoCo states put on the device (`mjx.put_data`), so
no MJX step is compiled here: the camera's own program compiles in about a
second. The Warp backend's tests run where warp-lang is installed
(`make test-warp`); they compare it with the ray caster.
"""

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from insertion_jax.envs import base, camera, insertion, registry, rewards, scene, warp_camera
from insertion_jax.envs.base import mjx

CAMERA = camera.CameraConfig()


def world(task, plug_mm):
    """The task's MJX model and data with the tool point at `plug_mm` (x, y, z)
    from the socket mouth (the goal), at rest."""
    env = registry.make_env(insertion.InsertionConfig(task=task))
    model, data = env.mj_model, mujoco.MjData(env.mj_model)
    mujoco.mj_forward(model, data)
    tip = np.asarray(env.tip_position(mjx.put_data(model, data)))
    goal = np.asarray(env.goal, np.float64)
    data.qpos[:3] += goal + np.asarray(plug_mm) * 1e-3 - tip
    mujoco.mj_forward(model, data)
    return env, mjx.put_data(model, data), jnp.asarray(goal, jnp.float32)


def scene_xml(env):
    return scene.build_mjcf(env.spec, env.ee_spec, env.config.max_contact_points)


@jax.jit
def _render(model, data, origin):
    return camera.render(model, data, origin, CAMERA)


@jax.jit
def geom_ids(model, data, origin):
    """(R, R) the geom each pixel's ray hits, -1 for none."""
    return camera.render_depth(model, data, origin, CAMERA)[1]


@pytest.fixture(scope='module')
def image_env():
    """USB with image observations and the image reward (randomized views):
    (env, jitted batched reset(keys, goal_offset_mm), jitted batched step)."""
    env = registry.make_env(insertion.InsertionConfig(task='usb', obs='image', reward='image'))
    reset = jax.jit(base.batched(lambda key, offset: env.reset(key, goal_offset_mm=offset)))
    return env, reset, jax.jit(base.batched(env.step))


def image(task, plug_mm):
    env, data, origin = world(task, plug_mm)
    return np.asarray(_render(env.mjx_model, data, origin))


def test_the_image_follows_the_plug_down_and_differs_between_connectors():
    high, low, seated = (image('usb', (0.0, 0.0, z)) for z in (30.0, 10.0, 0.0))
    assert high.shape == (32, 32) and high.dtype == np.float32
    assert 0.0 <= high.min() and high.max() <= 1.0
    # The plug moves through the picture: each step down changes pixels.
    assert np.mean(np.abs(high - low)) > 0.01 and np.mean(np.abs(low - seated)) > 0.005
    assert np.mean(np.abs(seated - image('dsub', (0.0, 0.0, 0.0)))) > 0.01


def test_the_camera_sees_floor_socket_and_plug():
    env, data, origin = world('usb', (0.0, 0.0, 10.0))
    geom = geom_ids(env.mjx_model, data, origin)
    names = {
        mujoco.mj_id2name(env.mj_model, mujoco.mjtObj.mjOBJ_GEOM, int(g))
        for g in np.unique(np.asarray(geom))
        if g >= 0
    }
    assert 'floor' in names and 'plug_core' in names
    assert any(name.endswith('_wall') or name.endswith('_chamfer') for name in names), names


def test_uint8_round_trip_and_bad_configs():
    x = jnp.array([0.0, 0.5, 1.0, 1.2])
    np.testing.assert_array_equal(camera.to_uint8(x), [0, 128, 255, 255])
    with pytest.raises(ValueError, match='CameraConfig.resolution=0'):
        camera.CameraConfig(resolution=0)
    with pytest.raises(ValueError, match='fovy_deg=180'):
        camera.CameraConfig(fovy_deg=180)
    with pytest.raises(ValueError, match="backend='opengl' is not allowed; choose one of: raycast"):
        camera.CameraConfig(backend='opengl')


def native_segmentation(env, data, origin):
    """Geom id per pixel from MuJoCo's own renderer (OpenGL), the camera placed
    as `CAMERA` is (a free camera: look-at point, distance, azimuth, elevation)."""
    model = env.mj_model
    native = mujoco.MjData(model)
    native.qpos[:] = np.asarray(data.qpos)
    mujoco.mj_forward(model, native)
    model.vis.global_.fovy = CAMERA.fovy_deg
    eye = np.asarray(CAMERA.eye_mm) * 1e-3 + np.asarray(origin)
    target = np.asarray(CAMERA.target_mm) * 1e-3 + np.asarray(origin)
    view = mujoco.MjvCamera()
    view.type = mujoco.mjtCamera.mjCAMERA_FREE
    view.lookat[:] = target
    offset = eye - target
    view.distance = np.linalg.norm(offset)
    view.azimuth = np.degrees(np.arctan2(offset[1], offset[0])) + 180.0
    view.elevation = -np.degrees(np.arcsin(offset[2] / view.distance))
    renderer = mujoco.Renderer(model, CAMERA.resolution, CAMERA.resolution)
    try:
        renderer.enable_segmentation_rendering()
        option = mujoco.MjvOption()
        option.geomgroup[:] = 1  # the camera-side walls too (hidden in cut-away pictures)
        renderer.update_scene(native, camera=view, scene_option=option)
        return renderer.render()[..., 0]
    finally:
        renderer.close()


@pytest.mark.parametrize('task', ['usb', 'dsub'])
def test_ray_backend_and_mujoco_renderer_agree_on_plug_and_socket_pixels(task):
    """Intersection over union of the plug's pixels and of the socket's, the
    ray backend against MuJoCo's OpenGL renderer, on three poses."""
    for plug_mm in ((0.0, 0.0, 25.0), (1.5, -1.0, 18.0), (0.0, 0.0, 0.0)):
        env, data, origin = world(task, plug_mm)
        geom = geom_ids(env.mjx_model, data, origin)
        ours, theirs = np.asarray(geom), native_segmentation(env, data, origin)
        names = [
            mujoco.mj_id2name(env.mj_model, mujoco.mjtObj.mjOBJ_GEOM, i) or ''
            for i in range(env.mj_model.ngeom)
        ]
        plug = [i for i, n in enumerate(names) if n.startswith('plug')]
        socket = [i for i, n in enumerate(names) if n.endswith(('_wall', '_chamfer'))]
        for part in (plug, socket):
            a, b = np.isin(ours, part), np.isin(theirs, part)
            iou = (a & b).sum() / max((a | b).sum(), 1)
            assert iou >= 0.9, (task, plug_mm, names[part[0]], iou)


def test_a_rim_stuck_or_hovering_plug_scores_worse_than_a_seated_one():
    """The image reward cannot be gamed: under 8 randomized views (light,
    camera pose, pixel noise), a plug resting on the socket rim 1 mm off the
    goal, or hovering centred 3 mm above the mouth, is further from the goal
    image than a seated plug."""
    env = registry.make_env(insertion.InsertionConfig(task='usb', obs='image', reward='image'))
    cam = env.config.camera
    depth = env.spec.insertion_depth_mm
    poses = {'seated': (0.0, 0.0, 0.0), 'rim': (1.0, 0.0, depth + 0.3), 'hover': (0, 0, depth + 3)}
    worlds = {name: world('usb', pose)[1] for name, pose in poses.items()}

    @jax.jit
    def reward(data, key):
        view = camera.draw_view(cam, key)
        image = camera.render(env.mjx_model, data, env.goal, cam, view)
        frame = camera.to_uint8(camera.add_pixel_noise(image, cam, jax.random.fold_in(key, 1)))
        return rewards.image_reward(frame, env.goal_image(view))[0]

    for seed in range(8):
        key = jax.random.PRNGKey(seed)
        r = {name: float(reward(data, key)) for name, data in worlds.items()}
        assert r['seated'] > r['rim'] + 0.1 and r['seated'] > r['hover'] + 0.1, r
        assert -2.0 < r['seated'] < 0.0, r  # pixel noise and rounding only


def test_image_env_reward_rises_along_an_approach_and_its_step_compiles_once(image_env):
    """A P-controller approach to the exact goal: the image reward of the mean
    of 8 episodes rises step after step (to rounding) until seated; the
    goal image ignores the goal noise; one program serves every step."""
    env, reset, step = image_env
    keys = jax.random.split(jax.random.PRNGKey(3), 8)
    state = reset(keys, jnp.zeros((8, 2)))
    noisy = reset(keys, jnp.full((8, 2), 1.0))
    spec = env.observation_spec
    assert set(state.obs) == {'image', 'controller'}
    assert (
        state.obs['image'].shape == (8,) + spec['image'].shape and spec['image'].dtype == np.uint8
    )
    # Goal noise moves what the controller is told, not the goal image.
    np.testing.assert_array_equal(state.info['goal_image'], noisy.info['goal_image'])
    assert not np.array_equal(state.obs['controller'], noisy.obs['controller'])
    # Each episode has its own view: the goal images differ.
    assert len({np.asarray(g).tobytes() for g in state.info['goal_image']}) == 8
    rewards_per_step = []
    for _ in range(env.horizon // 2):
        state = step(state, jax.vmap(env.base_action)(state.obs))
        rewards_per_step.append(float(jnp.mean(state.reward)))
    assert np.all(np.diff(rewards_per_step) > -0.2), np.round(rewards_per_step, 3)
    assert rewards_per_step[-1] > 0.3 * rewards_per_step[0] > rewards_per_step[0]
    assert bool(jnp.all(state.info['success']))
    np.testing.assert_array_equal(state.metrics['reward/image_l1'], state.reward)
    assert step._cache_size() == 1


WARP_OK, WARP_MISSING = warp_camera.warp_available()
needs_warp = pytest.mark.skipif(not WARP_OK, reason=WARP_MISSING)


@needs_warp
@pytest.mark.parametrize('task', ['usb', 'dsub'])
def test_warp_backend_sees_what_the_ray_caster_sees(task):
    """MJX's Warp renderer against `mjx.ray`, on three poses under 4
    randomized views each: the same geom in at least 99% of the pixels (rays
    that graze an edge may differ), the same distance to 0.1 mm where both
    hit the same geom, and images within 3 grey levels in 99% of the pixels."""
    cam = insertion.InsertionConfig().camera
    env0 = world(task, (0.0, 0.0, 0.0))[0]
    tracer = warp_camera.WarpTracer(scene_xml(env0), cam)

    @jax.jit
    def both(data, origin, key):
        view = camera.draw_view(cam, key)
        out = []
        for trace in (camera.render_depth, tracer):
            dist, geom, _ = trace(env0.mjx_model, data, origin, cam, view.eye_offset)
            image = camera.render(env0.mjx_model, data, origin, cam, view, trace)
            out.append((dist, geom, camera.to_uint8(image)))
        return out

    for plug_mm in ((0.0, 0.0, 25.0), (1.5, -1.0, 18.0), (0.0, 0.0, 0.0)):
        _, data, origin = world(task, plug_mm)
        for seed in range(4):
            (d_ray, g_ray, i_ray), (d_warp, g_warp, i_warp) = jax.device_get(
                both(data, origin, jax.random.PRNGKey(seed))
            )
            same = g_ray == g_warp
            assert same.mean() >= 0.99, (task, plug_mm, seed, same.mean())
            assert np.abs(d_ray - d_warp)[same & (g_ray >= 0)].max() < 1e-4
            close = np.abs(i_ray.astype(int) - i_warp.astype(int)) <= 3
            assert close.mean() >= 0.99, (task, plug_mm, seed, close.mean())


@needs_warp
def test_warp_env_renders_like_the_ray_cast_env_under_nested_vmaps(image_env):
    """The Warp-backed env, reset and stepped as the training loop runs it
    (2 seeds x 4 environments, vmaps merged into one batch of worlds by
    `base.batched`), observes the frames and goal images the ray-cast env does."""
    env, reset, step = image_env
    cfg = env.config
    warp_env = registry.make_env(
        dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, backend='warp'))
    )
    keys = jax.random.split(jax.random.PRNGKey(5), 8)
    offsets = jnp.zeros((8, 2))
    warp_reset = jax.jit(
        jax.vmap(base.batched(lambda key, offset: warp_env.reset(key, goal_offset_mm=offset)))
    )
    warp_step = jax.jit(jax.vmap(base.batched(warp_env.step)))
    ours = reset(keys, offsets)
    theirs = warp_reset(keys.reshape(2, 4, -1), offsets.reshape(2, 4, 2))
    for _ in range(3):
        ours = step(ours, jax.vmap(env.base_action)(ours.obs))
        action = jax.vmap(jax.vmap(warp_env.base_action))(theirs.obs)
        theirs = warp_step(theirs, action)
    for name, a in (('goal', ours.info['goal_image']), ('frame', ours.obs['image'])):
        b = theirs.info['goal_image'] if name == 'goal' else theirs.obs['image']
        diff = np.abs(np.asarray(a, int) - np.asarray(b, int).reshape(np.shape(a)))
        assert (diff <= 3).mean() >= 0.99, (name, (diff <= 3).mean())
