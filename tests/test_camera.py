"""The ray-cast camera (`envs.camera`): what it sees follows the scene.

Rendered from native MuJoCo states put on the device (`mjx.put_data`), so
no MJX step is compiled here: the camera's own program compiles in about a
second.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from insertion_jax.envs import camera, insertion, registry
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


@jax.jit
def _render(model, data, origin):
    return camera.render(model, data, origin, CAMERA)


@jax.jit
def geom_ids(model, data, origin):
    """(R, R) the geom each pixel's ray hits, -1 for none."""
    return camera.render_depth(model, data, origin, CAMERA)[1]


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
