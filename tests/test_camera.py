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
    _, geom, _ = jax.jit(camera.render_depth, static_argnums=3)(env.mjx_model, data, origin, CAMERA)
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
