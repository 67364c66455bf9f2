"""The camera's second backend: MJX's Warp batch renderer (`CameraConfig.backend='warp'`).

`WarpTracer` finds what each pixel sees with MuJoCo Warp's ray tracer (a
BVH over the scene, one kernel launch for every world and pixel) instead of
one `mjx.ray` per pixel, and hands back what `camera.render_depth` does
(distance, geom id, ray direction), so `camera.shade` makes the same image
of it. It needs warp-lang (`pip install -e '.[warp]'`), and runs on an
NVIDIA GPU or, through Warp's LLVM backend, on the CPU.

What it takes from MJX's renderer, and what it leaves:
- Only depth and segmentation are rendered. The shading, the light and its
  per-episode draw stay in `camera.shade`, one piece of code for both
  backends.
- The physics stays on MJX's JAX implementation. The renderer reads only the
  geoms' poses and the camera's, so each render copies them into a Warp
  `Data` made once.
- MuJoCo Warp's context has a fixed number of worlds and cannot sit under
  `jax.vmap`. So the per-world call is merged with every vmap around it
  (`base.merge_outer_vmaps`), and each traced call site gets a context
  sized to its whole batch. No two call sites share one, so their refits
  cannot race.
- The scene is the one `mjx.ray` sees: geom types that `mjx.ray` cannot hit
  (cylinders, height fields) are moved to a geom group that is not rendered,
  so the backends agree pixel for pixel (tests/test_camera.py).
"""

from __future__ import annotations

import contextlib
import io
from typing import List, Tuple

import jax
import jax.numpy as jnp
import mujoco

from insertion_jax.envs import base, camera
from insertion_jax.envs.base import mjx

# The geom types `mjx.ray` hits: what the camera shows with either backend.
RAY_GEOM_TYPES = frozenset(
    int(t)
    for t in (
        mujoco.mjtGeom.mjGEOM_PLANE,
        mujoco.mjtGeom.mjGEOM_SPHERE,
        mujoco.mjtGeom.mjGEOM_CAPSULE,
        mujoco.mjtGeom.mjGEOM_ELLIPSOID,
        mujoco.mjtGeom.mjGEOM_BOX,
        mujoco.mjtGeom.mjGEOM_MESH,
    )
)
NUM_GEOM_GROUPS = 6  # mjNGROUP


def warp_available() -> Tuple[bool, str]:
    """(whether the Warp backend can run here, why not when it cannot)."""
    with contextlib.redirect_stdout(io.StringIO()):  # MJX prints its failed import
        import mujoco.mjx.warp as mjx_warp
    if not mjx_warp.WARP_INSTALLED:
        return False, "warp-lang is not installed: pip install -e '.[warp]'"
    return True, ''


def render_model(xml: str, fovy_deg: float) -> Tuple[mujoco.MjModel, List[int]]:
    """(the scene of `xml` with one camera added, the geom groups to render).

    Geoms that `mjx.ray` cannot hit go to a group that is not rendered.
    """
    spec = mujoco.MjSpec.from_string(xml)
    spec.worldbody.add_camera(name='agent_view', fovy=fovy_deg)
    shown = {g.group for g in spec.geoms if int(g.type) in RAY_GEOM_TYPES}
    hidden = [g for g in range(NUM_GEOM_GROUPS) if g not in shown]
    unseen = [g for g in spec.geoms if int(g.type) not in RAY_GEOM_TYPES]
    if unseen and not hidden:
        raise ValueError(
            'the Warp camera hides the geoms that mjx.ray cannot hit in an unused geom '
            f'group, but the scene uses all {NUM_GEOM_GROUPS}.'
        )
    for geom in unseen:
        geom.group = hidden[0]
    return spec.compile(), sorted(shown)


class WarpTracer:
    """The 'warp' backend: called like `camera.render_depth` (one world's
    model, data, origin, config and eye offset), it returns the same hits.

    `xml` is the scene's MJCF (the physics model compiled from it is what
    the calls pass; only its geom colours are read, by `camera.shade`).
    """

    def __init__(self, xml: str, config: camera.CameraConfig):
        ok, why = warp_available()
        if not ok:
            raise ValueError(f"CameraConfig.backend='warp' cannot run: {why}.")
        self.config = config
        self.mj_model, self.groups = render_model(xml, config.fovy_deg)
        self._model = mjx.put_model(self.mj_model, impl='warp')
        self._template = mjx.make_data(self.mj_model, impl='warp')
        self._contexts = []  # kept alive: the compiled programs refer to them
        self._trace = base.merge_outer_vmaps(self._trace_batch)

    def _context(self, nworld: int):
        ctx = mjx.create_render_context(
            mjm=self.mj_model,
            nworld=nworld,
            cam_res=(self.config.resolution, self.config.resolution),
            render_rgb=False,
            render_depth=True,
            render_seg=True,
            use_textures=False,
            use_shadows=False,
            enabled_geom_groups=self.groups,
        )
        self._contexts.append(ctx)
        return ctx.pytree()

    def _trace_batch(self, geom_xpos, geom_xmat, cam_xpos, cam_xmat):
        """(z-depth (N, R, R) in metres, geom id (N, R, R), -1 for none) of N
        worlds; each argument has the leading world axis."""
        handle = self._context(geom_xpos.shape[0])
        size = self.config.resolution

        def one(xpos, xmat, eye, orientation):
            data = self._template.replace(
                geom_xpos=xpos,
                geom_xmat=xmat,
                cam_xpos=eye[None],
                cam_xmat=orientation[None],
            )
            data = mjx.refit_bvh(self._model, data, handle)
            _, depth, seg, _ = mjx.render_with_segmentation(self._model, data, handle)
            is_geom = seg[:, 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
            geom = jnp.where(is_geom, seg[:, 0], -1)
            return depth.reshape(size, size), geom.reshape(size, size)

        return jax.vmap(one)(geom_xpos, geom_xmat, cam_xpos, cam_xmat)

    def __call__(
        self,
        model: mjx.Model,
        data: mjx.Data,
        origin: jax.Array,
        config: camera.CameraConfig,
        eye_offset: jax.Array | None = None,
    ) -> Tuple[jax.Array, jax.Array, jax.Array]:
        """What `camera.render_depth` returns, from the Warp renderer."""
        del model  # the poses come from `data`; the render model is fixed
        if config != self.config:
            raise ValueError('WarpTracer was built for another CameraConfig.')
        eye, basis = camera.camera_pose(config, eye_offset)
        _, dirs = camera.ray_directions(config, eye_offset)
        # A MuJoCo camera looks along its -z axis, with y up the image.
        orientation = basis * jnp.array([1.0, 1.0, -1.0])
        depth, geom = self._trace(
            data.geom_xpos[None],
            data.geom_xmat.reshape(-1, 3, 3)[None],
            (eye + origin)[None],
            orientation[None],
        )
        depth, geom = depth[0], geom[0]
        # The renderer's depth is along the view axis; `mjx.ray`'s along the ray.
        dist = jnp.where(geom >= 0, depth / (dirs @ basis[:, 2]), -1.0)
        return dist, geom, dirs
