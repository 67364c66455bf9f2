"""The vectorized MJX connector-insertion environment.

`InsertionEnv(config)` compiles the scene of one connector and implements the
task interface `base.Env`: pure functions such as `reset(key) -> State` and
`step(state, action) -> State`, jit- and vmap-able, keeping no Python state:
everything that changes lives in `base.State`.

Control loop (as on the paper's Sawyer): at `control_hz` the policy returns a
relative Cartesian move u of the end effector, in metres, clipped to
`max_action_m` per axis. The impedance set-point becomes the current flange
position plus u, held within `workspace_mm` of the goal the robot was told
horizontally (a robot's safety box; it also keeps the plug over the socket,
which lets the scene list only the contact pairs that can touch). The compliant
end effector (a spring-damper in each axis,
see `scene.py`) pulls the plug toward it for `substeps` physics steps. Contact
therefore pushes back: a plug that catches the socket rim stays there while the
set-point moves on, and the force grows with the gap.

Observation: `connector_obs.OBS_SPEC` (4 floats), the tool point relative
to the goal the robot was told (mm, 3) and the vertical contact force (N).
With the camera (`obs='image'` or `'state+image'`, see `observations.OBS_TYPES`)
it is a dict: 'image', the last `frame_stack` 32x32 grayscale frames (uint8
(R, R, F)) of a camera fixed to the socket (`camera.py`), and the state
vector, as 'state' (the policy sees it) or 'controller' (only the
P-controller reads it, as on the paper's robot, whose policy saw the image
alone).

Image reward (`reward='image'`, `rewards.image_reward`): -100 mean |I - I_goal|
over the pixels, intensities in [0, 1] (the mean pixel difference in percent
of the intensity range); I is the frame the policy observes (pixel noise
included) and I_goal the same camera's noiseless
frame with the plug seated at the true goal, under the episode's light and
camera pose, rendered once at reset. Goal noise moves only what the
controller is told, never the goal image.

Goal noise: with `goal_noise_mm = g`, each episode draws a horizontal offset
uniformly from [-g, g] mm per axis (x and y independently) and adds it to the
goal that the controller, the observation and the dense reward see. The socket
itself does not move, so success is judged against the true goal.

Per-episode variation: the start position (uniform +-`reset_xy_range_mm` per
horizontal axis, `reset_height_mm` above the goal) and the Coulomb friction of
every contact (uniform in the connector's `friction_range`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from insertion_jax import checks, observations
from insertion_jax.envs import base, camera, connectors, controllers, mjcf, rewards, scene
from insertion_jax.envs.base import State, mjx

# The observation layout, re-exported: it lives in `connector_obs` so that the
# P-controller reads it without importing this module.
from insertion_jax.envs.connector_obs import (  # noqa: F401
    OBS_DIM,
    OBS_FIELDS,
    OBS_SLICES,
    OBS_SPEC,
    obs_field,
)

# Typical magnitude of each observation field (the agents' fixed input scale):
# positions within about 10 mm of the goal matter most, contact forces reach
# tens of newtons.
OBS_SCALE: Tuple[float, ...] = (10.0, 10.0, 10.0, 10.0)
ACTION_DIM = 3


@dataclasses.dataclass(frozen=True)
class InsertionConfig:
    """Static configuration of one insertion environment.

    Attributes:
      task: connector name, see `connectors.task_names()`.
      control_hz: policy rate.
      substeps: physics steps per control step (timestep = 1/(hz * substeps)).
      horizon: control steps per episode.
      max_action_m: per-axis clip of the relative move u.
      reset_height_mm: start height of the tool point above the goal.
      reset_xy_range_mm: start offset range, uniform per horizontal axis.
      goal_noise_mm: half-width of the uniform goal perturbation per axis.
      workspace_mm: half-width of the horizontal box around the observed goal
        that the impedance set-point is clipped to, per axis. Must exceed
        `reset_xy_range_mm + goal_noise_mm` so that every start lies inside.
      max_contact_points: contacts MJX keeps per step, the deepest ones
        (`mjcf.MAX_CONTACT_POINTS`, which see); 0 keeps every contact the
        collision functions emit, which is exact but slower.
      reward: 'sparse' (eq. 1), 'dense' (eq. 2) or 'image' (the goal image's
        pixel L1 distance; see the module docstring).
      dense: coefficients of the dense reward.
      obs: 'state', 'image' or 'state+image' (`observations.OBS_TYPES`).
      camera: the camera of the image observation and reward.
      frame_stack: frames in an image observation (the newest last).
    """

    task: str = 'usb'
    control_hz: float = 10.0
    substeps: int = 50
    horizon: int = 30
    max_action_m: float = 0.01
    reset_height_mm: float = 50.0
    reset_xy_range_mm: float = 2.0
    goal_noise_mm: float = 0.0
    workspace_mm: float = 5.0
    max_contact_points: int = mjcf.MAX_CONTACT_POINTS
    reward: str = 'sparse'
    dense: rewards.DenseRewardConfig = rewards.DenseRewardConfig()
    obs: str = 'state'
    camera: camera.CameraConfig = camera.CameraConfig()
    frame_stack: int = 1

    def __post_init__(self):
        connectors.get_task(self.task)  # raises with the list of valid names
        rewards.validate_reward_type(self.reward)
        observations.observation_parts(self.obs)  # raises with the list of valid types
        if isinstance(self.camera, dict):  # read back from JSON
            object.__setattr__(self, 'camera', camera.CameraConfig(**self.camera))
        owner = 'InsertionConfig'
        checks.positive_int(owner, frame_stack=self.frame_stack)
        checks.positive(
            owner,
            control_hz=self.control_hz,
            max_action_m=self.max_action_m,
            reset_height_mm=self.reset_height_mm,
        )
        checks.positive_int(owner, substeps=self.substeps, horizon=self.horizon)
        checks.non_negative(
            owner, goal_noise_mm=self.goal_noise_mm, reset_xy_range_mm=self.reset_xy_range_mm
        )
        depth = connectors.get_task(self.task).insertion_depth_mm
        if not self.reset_height_mm > depth:
            raise ValueError(
                f'InsertionConfig.reset_height_mm={self.reset_height_mm!r} must exceed the '
                f"{self.task} socket's depth ({depth!r} mm): an episode starts with the plug "
                'clear of the socket.'
            )
        if not self.workspace_mm > self.reset_xy_range_mm + self.goal_noise_mm:
            raise ValueError(
                f'InsertionConfig.workspace_mm={self.workspace_mm!r} must exceed '
                f'reset_xy_range_mm + goal_noise_mm = '
                f'{self.reset_xy_range_mm + self.goal_noise_mm!r}, so every start is inside it.'
            )
        mjcf.validate_max_contact_points(self.max_contact_points, 'InsertionConfig')

    @property
    def timestep_s(self) -> float:
        return 1.0 / (self.control_hz * self.substeps)

    @property
    def renders(self) -> bool:
        """Whether the camera runs: an image observation or the image reward."""
        return self.obs != 'state' or self.reward == 'image'


def episode_draws(
    config: InsertionConfig, spec: connectors.ConnectorSpec, key: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    """`InsertionEnv.episode_draws` without an env: (start xy (2,) metres,
    friction ())."""
    key_xy, _, key_mu = jax.random.split(key, 3)
    reach = config.reset_xy_range_mm
    start_xy = jax.random.uniform(key_xy, (2,), minval=-reach, maxval=reach) * 1e-3
    low, high = spec.friction_range
    return start_xy, jax.random.uniform(key_mu, (), minval=low, maxval=high)


def success_bounds_m(spec: connectors.ConnectorSpec) -> Tuple[float, float]:
    """(how far above the goal the tool point may be, how far off-centre)
    for the plug to count as electrically connected (`InsertionEnv.connected`)."""
    return spec.success_tolerance_mm * 1e-3, (spec.clearance_mm / 2 + 1.0) * 1e-3


def goal_offset_draw(config: InsertionConfig, key: jax.Array) -> jax.Array:
    """The goal offset (2,) mm that `InsertionEnv.reset(key)` draws: uniform
    within `config.goal_noise_mm` per horizontal axis."""
    noise = config.goal_noise_mm
    key_goal = jax.random.split(key, 3)[1]
    return jax.random.uniform(key_goal, (2,), minval=-noise, maxval=noise)


class InsertionEnv(base.VectorTask):
    """One connector-insertion task on MJX; see the module docstring.

    It implements `base.Env`: agent actions in
    [-1, 1] scale to moves of `max_action_m` per axis, and the P-controller
    (eq. 5) is the hand-designed controller of residual RL.
    """

    obs_dim = OBS_DIM
    action_dim = ACTION_DIM
    obs_scale = OBS_SCALE
    obs_fields = OBS_FIELDS
    has_base_controller = True

    def __init__(
        self,
        config: InsertionConfig = InsertionConfig(),
        spec: connectors.ConnectorSpec | None = None,
        ee: scene.EndEffectorSpec | None = None,
    ):
        """Builds the scene of `config.task`, or of `spec` when given (calibration).

        `ee` overrides the robot's compliance (its timestep always follows
        `config`).
        """
        self.config = config
        self.spec = spec or connectors.get_task(config.task)
        self.ee_spec = dataclasses.replace(ee or scene.DEFAULT_EE, timestep_s=config.timestep_s)
        xml = scene.build_mjcf(self.spec, self.ee_spec, config.max_contact_points)
        self.mj_model = mujoco.MjModel.from_xml_string(xml)
        self.mjx_model = mjx.put_model(self.mj_model)
        # The camera's backend: None is `camera.render_depth` (ray casting).
        self._tracer = None
        if config.renders and config.camera.backend == 'warp':
            from insertion_jax.envs import warp_camera  # needs warp-lang

            self._tracer = warp_camera.WarpTracer(xml, config.camera)
        name2id = functools.partial(mujoco.mj_name2id, self.mj_model)
        self._tip_site = name2id(mujoco.mjtObj.mjOBJ_SITE, scene.TIP_SITE)
        self._slide_qpos = jnp.array(
            [
                self.mj_model.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, j)]
                for j in scene.SLIDE_JOINTS
            ]
        )
        sensor = name2id(mujoco.mjtObj.mjOBJ_SENSOR, scene.FT_SENSOR)
        adr = int(self.mj_model.sensor_adr[sensor])
        self._ft_slice = slice(adr, adr + 3)
        # Rigid-contact mask over geom pairs: the O-ring squeezes the plug by
        # design, so only rigid pairs count as interpenetration.
        soft = np.zeros((self.mj_model.ngeom, self.mj_model.ngeom), bool)
        for plug_geom, socket_geom, cls in scene.contact_pairs(self.spec):
            if cls != 'rigid':
                a, b = (
                    name2id(mujoco.mjtObj.mjOBJ_GEOM, plug_geom),
                    name2id(mujoco.mjtObj.mjOBJ_GEOM, socket_geom),
                )
                soft[a, b] = soft[b, a] = True
        self._rigid_pair = jnp.asarray(~soft)
        depth_m = self.spec.insertion_depth_mm * 1e-3
        self.goal = jnp.array([0.0, 0.0, -depth_m])
        self._tolerance_m, self._capture_m = success_bounds_m(self.spec)
        # The slide joints' positions that seat the tool point at the goal
        # (what the goal image shows).
        rest = mujoco.MjData(self.mj_model)
        mujoco.mj_kinematics(self.mj_model, rest)
        tip_at_rest = rest.site_xpos[self._tip_site] - rest.qpos[np.asarray(self._slide_qpos)]
        seated = mujoco.MjData(self.mj_model)
        seated.qpos[np.asarray(self._slide_qpos)] = np.asarray(self.goal) - tip_at_rest
        mujoco.mj_kinematics(self.mj_model, seated)
        # Every geom's pose with the plug seated: a constant, so that a reset
        # renders the goal image without running kinematics.
        self._seated_geom_pose = (
            jnp.asarray(seated.geom_xpos, jnp.float32),
            jnp.asarray(seated.geom_xmat.reshape(-1, 3, 3), jnp.float32),
        )

    @property
    def observation_spec(self):
        """One observation: the state vector (obs_dim,) float32, or with the
        camera a dict of it and 'image' (R, R, frame_stack) uint8."""
        size = self.config.camera.resolution
        image = jax.ShapeDtypeStruct((size, size, self.config.frame_stack), jnp.uint8)
        return observations.make_observation(self.config.obs, base.vector_spec(self.obs_dim), image)

    # ------------------------------------------------------- task interface
    @property
    def action_scale(self) -> jax.Array:
        return jnp.full((ACTION_DIM,), self.config.max_action_m, jnp.float32)

    def terminal(self, state: State) -> jax.Array:
        """Ended without bootstrap: only a diverged simulation (else a time limit)."""
        return state.done & (state.metrics['nonfinite'] > 0)

    def success(self, state: State) -> jax.Array:
        """bool (): electrically connected at this step (see `connected`)."""
        return state.info['success']

    def base_action(self, obs: Any) -> jax.Array:
        """The P-controller's move (eq. 5), metres, from the state vector of `obs`."""
        return controllers.p_controller_action(obs)

    # ----------------------------------------------------------------- helpers
    def _model(self, friction: jax.Array) -> mjx.Model:
        pair_friction = self.mjx_model.pair_friction.at[:, :2].set(friction)
        return self.mjx_model.replace(pair_friction=pair_friction)

    def tip_position(self, data: mjx.Data) -> jax.Array:
        """World position of the plug's tool point (mating-face centre), (3,)."""
        return data.site_xpos[self._tip_site]

    def _force(self, data: mjx.Data, bias: jax.Array) -> jax.Array:
        # The sensor reports the force the flange exerts on the plug; contact
        # pushing the plug up shows as the flange pulling down, hence the sign.
        return -(data.sensordata[self._ft_slice] - bias)

    def connected(self, data: mjx.Data, goal: jax.Array) -> jax.Array:
        """Electrically connected: seated within tolerance, inside the socket."""
        tip = self.tip_position(data)
        seated = tip[2] - goal[2] < self._tolerance_m
        inside = jnp.linalg.norm(tip[:2] - goal[:2]) < self._capture_m
        return seated & inside

    def _frame(self, data: mjx.Data, info: Dict[str, Any]) -> jax.Array | None:
        """The camera's frame (R, R) uint8 as the policy sees it (pixel noise
        of this step included), or None when the camera is off."""
        if not self.config.renders:
            return None
        image = self.render_image(data, info['camera_view'])
        return self._observed(image, info)

    def _observed(self, image: jax.Array, info: Dict[str, Any]) -> jax.Array:
        """A rendered image (R, R) float32 as the camera delivers it: with this
        step's pixel noise, uint8."""
        key = jax.random.fold_in(info['camera_key'], info['step'])
        return camera.to_uint8(camera.add_pixel_noise(image, self.config.camera, key))

    def _render_seated_and(self, data: mjx.Data, view: camera.View) -> Tuple[jax.Array, jax.Array]:
        """(the goal image's render, `data`'s render), both (R, R) float32 from
        `view`, in one batched ray cast (one copy of the camera's code)."""
        poses = jax.tree.map(
            lambda seated, now: jnp.stack([seated, now]),
            self._seated_geom_pose,
            (data.geom_xpos, data.geom_xmat),
        )

        def one(xpos, xmat):
            posed = data.replace(geom_xpos=xpos, geom_xmat=xmat)
            return self.render_image(posed, view)

        images = jax.vmap(one)(*poses)
        return images[0], images[1]

    def _observe(
        self, data: mjx.Data, info: Dict[str, Any], frame: jax.Array | None, frames: Any = None
    ) -> Tuple[Any, jax.Array]:
        """(observation, f_z): `frame` is appended to `frames`, the previous
        observation's frame stack (None at a reset: the first frame fills it)."""
        rel_mm = (self.tip_position(data) - info['goal_observed']) * 1e3
        f_z = self._force(data, info['ft_bias'])[2]
        vector = jnp.concatenate([rel_mm, f_z[None]]).astype(jnp.float32)
        if frame is None:
            return vector, f_z
        if frames is None:
            stack = jnp.repeat(frame[..., None], self.config.frame_stack, axis=-1)
        else:
            stack = jnp.concatenate([frames[..., 1:], frame[..., None]], axis=-1)
        return observations.make_observation(self.config.obs, vector, stack), f_z

    def _reward(self, data, info, f_z, connected, frame):
        if self.config.reward == 'sparse':
            return rewards.sparse_reward(connected)
        if self.config.reward == 'image':
            return rewards.image_reward(frame, info['goal_image'])
        return rewards.dense_reward(
            self.tip_position(data), info['goal_observed'], f_z, connected, self.config.dense
        )

    def goal_image(self, view: camera.View) -> jax.Array:
        """The noiseless frame (R, R) uint8 of the plug seated at the true goal,
        seen from `view` (the goal image of the image reward)."""
        xpos, xmat = self._seated_geom_pose
        data = mjx.make_data(self.mjx_model).replace(geom_xpos=xpos, geom_xmat=xmat)
        return camera.to_uint8(self.render_image(data, view))

    def render_image(self, data: mjx.Data, view: camera.View) -> jax.Array:
        """The camera's image (R, R) float32 of `data` from `view`."""
        return camera.render(
            self.mjx_model, data, self.goal, self.config.camera, view, self._tracer
        )

    # --------------------------------------------------------------- interface
    def reset_args(self, key: jax.Array) -> Dict[str, jax.Array]:
        """The goal perturbation `reset(key)` draws: 'goal_offset_mm' (2,),
        uniform within `config.goal_noise_mm` per horizontal axis."""
        return {'goal_offset_mm': goal_offset_draw(self.config, key)}

    def episode_draws(self, key: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """What `reset(key)` draws besides the goal offset: the start's
        horizontal position (2,) in metres and the friction coefficient ()
        (the MuJoCo twin, `hardware.sim_robot`, draws its episodes here too)."""
        return episode_draws(self.config, self.spec, key)

    def reset(self, key: jax.Array, goal_offset_mm: jax.Array | None = None) -> State:
        """Starts an episode and returns its initial `State`.

        Args:
          key: PRNG key.
          goal_offset_mm: (2,) horizontal goal offset in mm, used instead of one
            drawn with `config.goal_noise_mm` (the evaluation draws its own
            offsets so that one compiled rollout serves every noise level).
        """
        cfg = self.config
        start_xy, friction = self.episode_draws(key)
        start = jnp.concatenate([start_xy, self.goal[2:] + cfg.reset_height_mm * 1e-3])
        if goal_offset_mm is None:
            goal_offset_mm = self.reset_args(key)['goal_offset_mm']
        goal_offset = jnp.asarray(goal_offset_mm, jnp.float32) * 1e-3
        goal_observed = self.goal + jnp.concatenate([goal_offset, jnp.zeros(1)])

        data = mjx.make_data(self.mjx_model)
        qpos = data.qpos.at[self._slide_qpos].set(start)
        ctrl = data.ctrl.at[:3].set(start)
        data = data.replace(qpos=qpos, ctrl=ctrl)
        data = base.forward_at_rest(self._model(friction), data)
        info = {
            'goal': self.goal,
            'goal_observed': goal_observed,
            'friction': friction,
            'ft_bias': data.sensordata[self._ft_slice],
            'step': jnp.zeros((), jnp.int32),
            'success': jnp.zeros((), bool),
            'ever_success': jnp.zeros((), bool),
        }
        if cfg.renders:
            # Its own stream (fold_in), so the draws above stay as they were.
            key_view, key_noise = jax.random.split(jax.random.fold_in(key, 1))
            view = camera.draw_view(cfg.camera, key_view)
            goal_image, image = self._render_seated_and(data, view)
            info.update(
                camera_view=view, camera_key=key_noise, goal_image=camera.to_uint8(goal_image)
            )
            frame = self._observed(image, info)
        else:
            frame = None
        obs, f_z = self._observe(data, info, frame)
        reward, terms = self._reward(data, info, f_z, jnp.zeros((), bool), frame)
        metrics = self._metrics(data, info, f_z, terms, jnp.zeros(()))
        return State(
            data=data,
            obs=obs,
            reward=jnp.zeros(()),
            done=jnp.zeros((), bool),
            metrics=metrics,
            info=info,
        )

    def _metrics(self, data, info, f_z, terms, penetration_m, finite=True):
        tip = self.tip_position(data)
        return {
            'nonfinite': 1.0 - jnp.asarray(finite, jnp.float32),
            **{f'reward/{k}': v.astype(jnp.float32) for k, v in terms.items()},
            'f_z_n': f_z,
            'depth_to_go_mm': (tip[2] - info['goal'][2]) * 1e3,
            'distance_mm': jnp.linalg.norm(tip - info['goal']) * 1e3,
            'max_penetration_mm': penetration_m * 1e3,
            'success': info['success'].astype(jnp.float32),
        }

    def step(self, state: State, action: jax.Array) -> State:
        """Advances one control step with relative move `action` (3,), metres."""
        cfg = self.config
        action = jnp.clip(action, -cfg.max_action_m, cfg.max_action_m)
        model = self._model(state.info['friction'])
        data = state.data
        target = data.qpos[self._slide_qpos] + action
        goal_xy = state.info['goal_observed'][:2]
        reach = cfg.workspace_mm * 1e-3
        target = target.at[:2].set(jnp.clip(target[:2], goal_xy - reach, goal_xy + reach))
        data = data.replace(ctrl=data.ctrl.at[:3].set(target))
        # Penetration counts rigid contacts only (walls, floor, chamfers).
        data, penetration, finite = base.physics_step(model, data, cfg.substeps, self._rigid_pair)
        connected = self.connected(data, state.info['goal']) & finite
        step_count = state.info['step'] + 1
        info = {
            **state.info,
            'step': step_count,
            'success': connected,
            'ever_success': state.info['ever_success'] | connected,
        }
        frame = self._frame(data, info)
        frames = state.obs[observations.IMAGE] if observations.has_image(state.obs) else None
        obs, f_z = self._observe(data, info, frame, frames)
        reward, terms = self._reward(data, info, f_z, connected, frame)
        metrics = self._metrics(data, info, f_z, terms, penetration, finite)
        obs, reward, metrics = base.mask_nonfinite(finite, obs, reward, metrics, state.metrics)
        done = (step_count >= cfg.horizon) | ~finite
        return state.replace(
            data=data,
            obs=obs,
            reward=reward.astype(jnp.float32),
            done=done,
            metrics=metrics,
            info=info,
        )
