"""A grayscale camera rendered inside the jitted step: one `mjx.ray` per pixel.

The residual-RL paper's vision setting gives the policy a 32x32 grayscale
image of the insertion. This module renders it in pure JAX, on CPU and GPU
alike: a pinhole camera fixed to the socket's frame casts one ray per pixel
with `mjx.ray` (planes, spheres, capsules, ellipsoids, boxes and meshes; not
cylinders, so what the camera must see is not a cylinder), and each hit is
shaded with its geom's colour under Lambertian light plus ambient. Surface
normals come from the image's own hit points (the cross product of the
neighbouring pixels' 3-D points), so every geom type is shaded alike and
edges, walls and the socket mouth show as the shading changes.

`render(model, data, origin, config, light)` is pure and works on one world:
batch it with `jax.vmap` (or `envs.base.batched`). Intensities are float32
in [0, 1]; `to_uint8` is what the replay stores.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp

from insertion_jax import checks
from insertion_jax.envs.base import mjx


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """A pinhole camera fixed to a frame (the socket's: its origin is the goal).

    Attributes:
      resolution: image width and height in pixels.
      fovy_deg: vertical (and horizontal) field of view.
      eye_mm: the camera's position relative to the frame's origin.
      target_mm: the point it looks at, relative to the frame's origin.
      light: direction the light travels (need not be unit length).
      ambient: the share of the light that reaches every surface.
    """

    resolution: int = 32
    fovy_deg: float = 40.0
    eye_mm: Tuple[float, float, float] = (0.0, -60.0, 50.0)
    target_mm: Tuple[float, float, float] = (0.0, 0.0, 10.0)
    light: Tuple[float, float, float] = (0.3, 0.5, -1.0)
    ambient: float = 0.3

    def __post_init__(self):
        checks.positive_int('CameraConfig', resolution=self.resolution)
        checks.unit_interval('CameraConfig', ambient=self.ambient)
        if not 0.0 < self.fovy_deg < 180.0:
            raise ValueError(
                f'CameraConfig.fovy_deg={self.fovy_deg!r} must be in (0, 180) degrees.'
            )
        if self.eye_mm == self.target_mm:
            raise ValueError(
                f'CameraConfig.eye_mm={self.eye_mm} equals target_mm: the camera looks nowhere.'
            )


def ray_directions(config: CameraConfig) -> Tuple[jax.Array, jax.Array]:
    """(eye (3,) in metres relative to the frame, unit directions (R, R, 3));
    row 0 is the top of the image."""
    eye = jnp.asarray(config.eye_mm, jnp.float32) * 1e-3
    target = jnp.asarray(config.target_mm, jnp.float32) * 1e-3
    forward = (target - eye) / jnp.linalg.norm(target - eye)
    right = jnp.cross(forward, jnp.array([0.0, 0.0, 1.0]))
    right = right / jnp.linalg.norm(right)
    up = jnp.cross(right, forward)
    # Pixel centres, as OpenGL samples them: MuJoCo's renderer with the same
    # pose and field of view sees the same scene (tests/test_camera.py).
    half = jnp.tan(jnp.deg2rad(config.fovy_deg) / 2)
    u = ((jnp.arange(config.resolution) + 0.5) / config.resolution * 2.0 - 1.0) * half
    dirs = forward + u[None, :, None] * right - u[:, None, None] * up
    return eye, dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)


def geom_gray(model: mjx.Model) -> jax.Array:
    """(ngeom,) each geom's luminance: its material's colour where it has one."""
    rgba = model.geom_rgba
    if model.mat_rgba.shape[0]:
        matid = model.geom_matid
        rgba = jnp.where((matid >= 0)[:, None], model.mat_rgba[jnp.maximum(matid, 0)], rgba)
    return rgba[:, :3] @ jnp.array([0.299, 0.587, 0.114], jnp.float32)


def render_depth(
    model: mjx.Model, data: mjx.Data, origin: jax.Array, config: CameraConfig
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """(distance (R, R) in metres, -1 where nothing is hit; geom id (R, R), -1
    for none; the rays' unit directions (R, R, 3)) of the camera fixed at
    `origin` (3,)."""
    eye, dirs = ray_directions(config)
    eye = eye + origin
    flat = dirs.reshape(-1, 3)
    dist, geom = jax.vmap(lambda v: mjx.ray(model, data, eye, v))(flat)
    shape = dirs.shape[:2]
    return dist.reshape(shape), geom.reshape(shape), dirs


def render(
    model: mjx.Model,
    data: mjx.Data,
    origin: jax.Array,
    config: CameraConfig,
    light: jax.Array | None = None,
) -> jax.Array:
    """The grayscale image (R, R), float32 in [0, 1]; black where no geom is hit.

    `light` (3,) overrides the config's light direction (per-episode
    randomization scales and turns it); its length scales the diffuse term.
    """
    dist, geom, dirs = render_depth(model, data, origin, config)
    hit = geom >= 0
    points = dirs * jnp.where(hit, dist, 0.0)[..., None]
    # Normals from the hit points of each pixel's right and lower neighbours
    # (edge pixels use the left and upper ones), facing the camera.
    dx = jnp.concatenate([points[:, 1:] - points[:, :-1], points[:, -1:] - points[:, -2:-1]], 1)
    dy = jnp.concatenate([points[1:] - points[:-1], points[-1:] - points[-2:-1]], 0)
    normal = jnp.cross(dy, dx)
    normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    normal = jnp.where(jnp.sum(normal * dirs, -1, keepdims=True) > 0, -normal, normal)
    light = jnp.asarray(config.light if light is None else light, jnp.float32)
    strength = jnp.linalg.norm(light)
    diffuse = jnp.maximum(0.0, -(normal @ (light / strength))) * strength
    gray = geom_gray(model)[jnp.maximum(geom, 0)]
    shade = gray * (config.ambient + (1.0 - config.ambient) * diffuse)
    return jnp.clip(jnp.where(hit, shade, 0.0), 0.0, 1.0)


def to_uint8(image: jax.Array) -> jax.Array:
    """[0, 1] float32 -> uint8 (what the replay stores), rounded."""
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)
