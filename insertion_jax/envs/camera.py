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

`render(model, data, origin, config, view)` is pure and works on one world:
batch it with `jax.vmap` (or `envs.base.batched`). Intensities are float32
in [0, 1]; `to_uint8` is what the replay stores.

Two backends find what each pixel sees (`CameraConfig.backend`): 'raycast',
`render_depth` here (pure JAX, every platform), and 'warp', MJX's Warp batch
renderer (`warp_camera.WarpTracer`, an optional install; CPU or NVIDIA GPU).
Both return the same hits, and `shade` turns them into the same image.

Per-episode randomization (`Randomization`, on by default): `draw_view`
turns the light up to `light_angle_deg` away from its direction, scales its
strength within `light_scale`, and moves the camera up to `eye_jitter_mm`
per axis (it keeps looking at its target); `add_pixel_noise` adds Gaussian
noise to each rendered frame. A `View` holds one episode's draw.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks
from insertion_jax.envs.base import mjx


@dataclasses.dataclass(frozen=True)
class Randomization:
    """What changes from one episode to the next (all zero: a fixed camera).

    Attributes:
      light_angle_deg: the light's direction turns by up to this angle.
      light_scale: (low, high) range of the light's strength (1 = the config's).
      eye_jitter_mm: the camera moves by up to this much per axis.
      pixel_noise: standard deviation of Gaussian noise on each pixel, in
        intensity units ([0, 1] is black to white), drawn every frame.
    """

    light_angle_deg: float = 25.0
    light_scale: Tuple[float, float] = (0.7, 1.3)
    eye_jitter_mm: float = 2.0
    pixel_noise: float = 0.01

    def __post_init__(self):
        owner = 'Randomization'
        checks.non_negative(
            owner,
            light_angle_deg=self.light_angle_deg,
            eye_jitter_mm=self.eye_jitter_mm,
            pixel_noise=self.pixel_noise,
        )
        low, high = self.light_scale
        if not 0.0 < low <= high:
            raise ValueError(
                f'{owner}.light_scale={self.light_scale!r} must be (low, high) with 0 < low <= high.'
            )


NO_RANDOMIZATION = Randomization(
    light_angle_deg=0.0, light_scale=(1.0, 1.0), eye_jitter_mm=0.0, pixel_noise=0.0
)


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """A pinhole camera fixed to a frame (the socket's: its origin is the goal).

    The default looks down at about 45 degrees from in front and a little to
    the side, 13 cm from the socket: the whole approach stays in view (the
    plug from 55 mm above the goal down to seated), the floor is behind the
    plug at every height (so the plug always shows against it, and the goal
    image's L1 distance falls as the plug comes down), and the socket's mouth
    and the plug's side faces are both visible, as from the paper's camera
    looking at the insertion.

    Attributes:
      resolution: image width and height in pixels.
      fovy_deg: vertical (and horizontal) field of view.
      eye_mm: the camera's position relative to the frame's origin.
      target_mm: the point it looks at, relative to the frame's origin.
      light: direction the light travels; its length is the light's strength.
      ambient: the share of the light that reaches every surface.
      randomize: the per-episode randomization (`Randomization`).
      backend: what casts the rays (`BACKENDS`): 'raycast', `mjx.ray` in
        pure JAX; 'warp', MJX's Warp batch renderer (`warp_camera`). The
        same image either way.
    """

    resolution: int = 32
    fovy_deg: float = 40.0
    eye_mm: Tuple[float, float, float] = (20.0, -75.0, 115.0)
    target_mm: Tuple[float, float, float] = (0.0, 0.0, 30.0)
    light: Tuple[float, float, float] = (0.3, 0.5, -1.0)
    ambient: float = 0.3
    randomize: Randomization = Randomization()
    backend: str = 'raycast'

    def __post_init__(self):
        checks.positive_int('CameraConfig', resolution=self.resolution)
        checks.one_of('CameraConfig', 'backend', self.backend, BACKENDS)
        if isinstance(self.randomize, dict):  # read back from JSON
            object.__setattr__(
                self, 'randomize', Randomization(**checks.tuples_from_json(self.randomize))
            )
        for name in ('eye_mm', 'target_mm', 'light'):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        checks.unit_interval('CameraConfig', ambient=self.ambient)
        if not 0.0 < self.fovy_deg < 180.0:
            raise ValueError(
                f'CameraConfig.fovy_deg={self.fovy_deg!r} must be in (0, 180) degrees.'
            )
        if self.eye_mm == self.target_mm:
            raise ValueError(
                f'CameraConfig.eye_mm={self.eye_mm} equals target_mm: the camera looks nowhere.'
            )


BACKENDS = ('raycast', 'warp')


@struct.dataclass
class View:
    """One episode's camera: `eye_offset` (3,) metres added to the eye, and
    `light` (3,), the light's direction scaled by its strength."""

    eye_offset: jax.Array
    light: jax.Array


def fixed_view(config: CameraConfig) -> View:
    """The configured camera and light, unperturbed."""
    return View(eye_offset=jnp.zeros(3), light=jnp.asarray(config.light, jnp.float32))


def draw_view(config: CameraConfig, key: jax.Array) -> View:
    """One episode's draw of `config.randomize` (see the module docstring)."""
    rand = config.randomize
    key_axis, key_angle, key_scale, key_eye = jax.random.split(key, 4)
    light = jnp.asarray(config.light, jnp.float32)
    strength = jnp.linalg.norm(light)
    direction = light / strength
    # Turn the direction about a random axis perpendicular to it.
    axis = jnp.cross(direction, jax.random.normal(key_axis, (3,)))
    axis = axis / jnp.maximum(jnp.linalg.norm(axis), 1e-9)
    angle = jnp.deg2rad(rand.light_angle_deg) * jax.random.uniform(key_angle, ())
    turned = direction * jnp.cos(angle) + jnp.cross(axis, direction) * jnp.sin(angle)
    low, high = rand.light_scale
    scale = jax.random.uniform(key_scale, (), minval=low, maxval=high)
    jitter = rand.eye_jitter_mm * 1e-3
    eye_offset = jax.random.uniform(key_eye, (3,), minval=-jitter, maxval=jitter)
    return View(eye_offset=eye_offset, light=turned * strength * scale)


def add_pixel_noise(image: jax.Array, config: CameraConfig, key: jax.Array) -> jax.Array:
    """`image` plus Gaussian noise of `config.randomize.pixel_noise`, kept in [0, 1]."""
    sigma = config.randomize.pixel_noise
    if sigma == 0.0:
        return image
    return jnp.clip(image + sigma * jax.random.normal(key, image.shape), 0.0, 1.0)


def camera_pose(
    config: CameraConfig, eye_offset: jax.Array | None = None
) -> Tuple[jax.Array, jax.Array]:
    """(eye (3,) in metres relative to the frame, moved by `eye_offset`;
    orientation (3, 3), whose columns are the image's right, its up, and the
    direction it looks in: the camera keeps looking at its target)."""
    eye = jnp.asarray(config.eye_mm, jnp.float32) * 1e-3
    if eye_offset is not None:
        eye = eye + eye_offset
    target = jnp.asarray(config.target_mm, jnp.float32) * 1e-3
    forward = (target - eye) / jnp.linalg.norm(target - eye)
    right = jnp.cross(forward, jnp.array([0.0, 0.0, 1.0]))
    right = right / jnp.linalg.norm(right)
    up = jnp.cross(right, forward)
    return eye, jnp.stack([right, up, forward], axis=1)


def ray_directions(
    config: CameraConfig, eye_offset: jax.Array | None = None
) -> Tuple[jax.Array, jax.Array]:
    """(eye (3,) in metres relative to the frame, moved by `eye_offset`; unit
    directions (R, R, 3) toward the target); row 0 is the top of the image."""
    eye, basis = camera_pose(config, eye_offset)
    right, up, forward = basis[:, 0], basis[:, 1], basis[:, 2]
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


# A backend: (model, data, origin, config, eye_offset) -> what `render_depth`
# returns.
Tracer = Callable[..., Tuple[jax.Array, jax.Array, jax.Array]]


def render_depth(
    model: mjx.Model,
    data: mjx.Data,
    origin: jax.Array,
    config: CameraConfig,
    eye_offset: jax.Array | None = None,
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """(distance (R, R) in metres, -1 where nothing is hit; geom id (R, R), -1
    for none; the rays' unit directions (R, R, 3)) of the camera fixed at
    `origin` (3,), its eye moved by `eye_offset` (3,) metres: the 'raycast'
    backend, one `mjx.ray` per pixel."""
    eye, dirs = ray_directions(config, eye_offset)
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
    view: View | None = None,
    tracer: Tracer | None = None,
) -> jax.Array:
    """The grayscale image (R, R), float32 in [0, 1]; black where no geom is hit.

    `view` is the episode's camera and light (`draw_view`); None is the
    configured one. `tracer` finds the hits (None: `render_depth`, the
    'raycast' backend; a `warp_camera.WarpTracer` for 'warp').
    """
    view = fixed_view(config) if view is None else view
    tracer = render_depth if tracer is None else tracer
    dist, geom, dirs = tracer(model, data, origin, config, view.eye_offset)
    return shade(model, dist, geom, dirs, config, view)


def shade(
    model: mjx.Model,
    dist: jax.Array,
    geom: jax.Array,
    dirs: jax.Array,
    config: CameraConfig,
    view: View,
) -> jax.Array:
    """The grayscale image (R, R) of a backend's hits (`render_depth`'s
    distances, geom ids and ray directions) under `view`'s light, whose length
    scales the diffuse term."""
    hit = geom >= 0
    points = dirs * jnp.where(hit, dist, 0.0)[..., None]
    # Normals from the hit points of each pixel's right and lower neighbours
    # (edge pixels use the left and upper ones), facing the camera.
    dx = jnp.concatenate([points[:, 1:] - points[:, :-1], points[:, -1:] - points[:, -2:-1]], 1)
    dy = jnp.concatenate([points[1:] - points[:-1], points[-1:] - points[-2:-1]], 0)
    normal = jnp.cross(dy, dx)
    normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    normal = jnp.where(jnp.sum(normal * dirs, -1, keepdims=True) > 0, -normal, normal)
    light = view.light
    strength = jnp.linalg.norm(light)
    diffuse = jnp.maximum(0.0, -(normal @ (light / strength))) * strength
    gray = geom_gray(model)[jnp.maximum(geom, 0)]
    shade = gray * (config.ambient + (1.0 - config.ambient) * diffuse)
    return jnp.clip(jnp.where(hit, shade, 0.0), 0.0, 1.0)


def to_uint8(image: jax.Array) -> jax.Array:
    """[0, 1] float32 -> uint8 (what the replay stores), rounded."""
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)
