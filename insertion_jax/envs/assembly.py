"""The DER paper's assembly tasks on MJX: chamfered peg-in-hole and lap joint.

`AssemblyEnv(config)` implements the task interface `base.Env`.

Control (robot-less, Cartesian): at `control_hz` the agent sends a 6-D
command, the linear velocity (m/s) and angular velocity (rad/s) of the held
piece, each within `max_speed_mm_s` / `max_rate_deg_s` (`action_scale` maps
the agent's [-1, 1] to them). The rig's set-point integrates the command over
the control period, held within `max_lead_mm` / `max_lead_deg` of the piece's
actual pose (so a blocked piece presses with a bounded force, as an
admittance controller's safety limit does) and within the workspace box; tilt
set-points stay within `max_tilt_deg`. The compliant rig (`assembly_scene.py`)
pulls the piece toward the set-point for `substeps` physics steps.

Observation (13 floats, the paper's): the tip position minus the nominal
goal (mm, 3), the held piece's orientation quaternion (w, x, y, z; 4) and the
force (N, 3) and torque (N m, 3) at the wrist sensor in the piece's frame,
with the reading at reset removed.

Reward (`rewards.der_reward`): -|g - x| in `distance_unit_m` (centimetres by
default) plus R (`bonus`: 1000 peg, 100 lap joint) once the tip is within
`success_tolerance_mm` of the goal g, which ends the episode (a terminal
transition); otherwise episodes end at `horizon`.

Per-episode variation (the paper's):
  peg_in_hole  the peg's yaw, uniform in [0, 360) degrees; the rest is fixed.
  lap_joint    the ground beam's yaw in [-2, 0] degrees and x, y in
               [-2, 2] mm; the held beam starts at the nominal pose, so the
               agent finds the notch by feel (the goal is not observed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import mujoco

from insertion_jax import checks
from insertion_jax.envs import assembly_scene, base, mjcf, rewards
from insertion_jax.envs.base import State, mjx

OBS_DIM = 13
ACTION_DIM = 6
OBS_SCALE: Tuple[float, ...] = (10.0,) * 3 + (1.0,) * 4 + (10.0,) * 3 + (0.5,) * 3
TASK_BONUS = {'peg_in_hole': 1000.0, 'lap_joint': 100.0}


@dataclasses.dataclass(frozen=True)
class AssemblyConfig:
    """Static configuration of one assembly environment.

    Attributes:
      task: 'peg_in_hole' or 'lap_joint'.
      control_hz: command rate.
      substeps: physics steps per control step.
      horizon: control steps per episode (at most).
      max_speed_mm_s: linear speed limit per axis.
      max_rate_deg_s: (tilt x, tilt y, yaw) angular speed limits.
      max_lead_mm, max_lead_deg: how far the set-point may run ahead of the
        piece (bounds the pressing force and torque).
      max_tilt_deg: tilt set-point limit about x and y.
      start_height_mm: tip height at reset above the fixed part's top.
      workspace_mm: half-width of the horizontal set-point box around the
        nominal goal.
      yaw_range_deg: peg start yaw (peg_in_hole) or ground beam yaw
        (lap_joint), uniform.
      ground_xy_mm: lap joint: ground beam offset range per horizontal axis.
      success_tolerance_mm: eps, the goal distance that counts as assembled.
      distance_unit_m: the unit of |g - x| in the reward.
      bonus: R; None takes the paper's (1000 peg, 100 lap joint).
      friction: Coulomb friction of every contact.
      max_contact_points: MJX's per-step contact budget (see `mjcf.py`).
    """

    task: str = 'peg_in_hole'
    control_hz: float = 10.0
    substeps: int = 50
    horizon: int = 100
    max_speed_mm_s: float = 25.0
    max_rate_deg_s: Tuple[float, float, float] = (10.0, 10.0, 60.0)
    max_lead_mm: float = 4.0
    max_lead_deg: float = 5.0
    max_tilt_deg: float = 3.0
    start_height_mm: float = 10.0
    workspace_mm: float = 15.0
    yaw_range_deg: Optional[Tuple[float, float]] = None
    ground_xy_mm: float = 2.0
    success_tolerance_mm: float = 2.0
    distance_unit_m: float = 0.01
    bonus: Optional[float] = None
    friction: float = 0.3
    max_contact_points: int = mjcf.MAX_CONTACT_POINTS

    def __post_init__(self):
        owner = 'AssemblyConfig'
        if self.task not in assembly_scene.TASKS:
            raise ValueError(
                f'{owner}.task={self.task!r} is unknown; valid tasks: '
                f'{", ".join(assembly_scene.TASKS)}.'
            )
        checks.positive(
            owner,
            control_hz=self.control_hz,
            max_speed_mm_s=self.max_speed_mm_s,
            max_lead_mm=self.max_lead_mm,
            max_lead_deg=self.max_lead_deg,
            start_height_mm=self.start_height_mm,
            workspace_mm=self.workspace_mm,
            success_tolerance_mm=self.success_tolerance_mm,
            distance_unit_m=self.distance_unit_m,
        )
        checks.positive_int(owner, substeps=self.substeps, horizon=self.horizon)
        checks.non_negative(
            owner,
            ground_xy_mm=self.ground_xy_mm,
            friction=self.friction,
            max_tilt_deg=self.max_tilt_deg,
        )
        if len(self.max_rate_deg_s) != 3 or min(self.max_rate_deg_s) <= 0:
            raise ValueError(
                f'{owner}.max_rate_deg_s={self.max_rate_deg_s!r} must be three positive rates.'
            )
        if self.yaw_range_deg is not None and not (
            len(self.yaw_range_deg) == 2 and self.yaw_range_deg[0] <= self.yaw_range_deg[1]
        ):
            raise ValueError(
                f'{owner}.yaw_range_deg={self.yaw_range_deg!r} must be (low, high) with low <= high.'
            )
        mjcf.validate_max_contact_points(self.max_contact_points, owner)

    @property
    def yaw_range(self) -> Tuple[float, float]:
        if self.yaw_range_deg is not None:
            return self.yaw_range_deg
        return (0.0, 360.0) if self.task == 'peg_in_hole' else (-2.0, 0.0)

    @property
    def reward_bonus(self) -> float:
        return TASK_BONUS[self.task] if self.bonus is None else self.bonus

    @property
    def timestep_s(self) -> float:
        return 1.0 / (self.control_hz * self.substeps)


def yaw_quat(yaw: jax.Array) -> jax.Array:
    """(w, x, y, z) of a rotation by `yaw` radians about z."""
    return jnp.stack([jnp.cos(yaw / 2), 0.0 * yaw, 0.0 * yaw, jnp.sin(yaw / 2)], axis=-1)


def peg_yaw_error(yaw: jax.Array) -> jax.Array:
    """Signed distance (rad) of `yaw` to the nearest multiple of 90 degrees."""
    quarter = math.pi / 2
    return yaw - quarter * jnp.round(yaw / quarter)


class AssemblyEnv(base.VectorTask):
    """One assembly task on MJX (a `base.Env`); see the module docstring."""

    obs_dim = OBS_DIM
    obs_fields = (
        ('tip_rel_goal_mm', 3, 'mm'),
        ('orientation_wxyz', 4, 'unit quaternion'),
        ('force_n', 3, 'N'),
        ('torque_nm', 3, 'N m'),
    )
    action_dim = ACTION_DIM
    obs_scale = OBS_SCALE
    has_base_controller = False

    def __init__(self, config: AssemblyConfig = AssemblyConfig()):
        self.config = config
        rig = dataclasses.replace(assembly_scene.RigSpec(), timestep_s=config.timestep_s)
        self.peg, self.lap = assembly_scene.PegSpec(), assembly_scene.LapSpec()
        self.mj_model = assembly_scene.build_model(
            config.task,
            rig=rig,
            max_contact_points=config.max_contact_points,
            friction=config.friction,
        )
        self.mjx_model = mjx.put_model(self.mj_model)
        name2id = functools.partial(mujoco.mj_name2id, self.mj_model)
        joints = assembly_scene.SLIDE_JOINTS + assembly_scene.HINGE_JOINTS
        self._qpos = jnp.array(
            [self.mj_model.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, j)] for j in joints]
        )
        self._tip_site = name2id(mujoco.mjtObj.mjOBJ_SITE, assembly_scene.TIP_SITE)
        self._held_body = name2id(mujoco.mjtObj.mjOBJ_BODY, assembly_scene.HELD_BODY)
        adr = self.mj_model.sensor_adr
        self._force = int(adr[name2id(mujoco.mjtObj.mjOBJ_SENSOR, assembly_scene.FT_FORCE)])
        self._torque = int(adr[name2id(mujoco.mjtObj.mjOBJ_SENSOR, assembly_scene.FT_TORQUE)])
        if config.task == 'peg_in_hole':
            self.nominal_goal = jnp.array([0.0, 0.0, -self.peg.depth_mm * 1e-3])
            self._start_z = config.start_height_mm * 1e-3
        else:
            self.nominal_goal = jnp.zeros(3)
            self._start_z = (self.lap.section_mm + config.start_height_mm) * 1e-3
        rate = jnp.deg2rad(jnp.asarray(config.max_rate_deg_s, jnp.float32))
        speed = config.max_speed_mm_s * 1e-3
        self.action_scale = jnp.concatenate([jnp.full((3,), speed, jnp.float32), rate])

    # ------------------------------------------------------- task interface
    def terminal(self, state: State) -> jax.Array:
        """Assembled (the episode ends with the bonus) or diverged."""
        return state.done & (state.info['success'] | (state.metrics['nonfinite'] > 0))

    def success(self, state: State) -> jax.Array:
        """bool (): the tip within `success_tolerance_mm` of the goal at this step."""
        return state.info['success']

    def base_action(self, obs: jax.Array) -> jax.Array:
        raise ValueError(f'{self.config.task} has no hand-designed controller for residual RL.')

    # -------------------------------------------------------------- helpers
    def tip_position(self, data: mjx.Data) -> jax.Array:
        return data.site_xpos[self._tip_site]

    def held_quat(self, data: mjx.Data) -> jax.Array:
        return data.xquat[self._held_body]

    def _ft(self, data: mjx.Data) -> jax.Array:
        force = data.sensordata[self._force : self._force + 3]
        torque = data.sensordata[self._torque : self._torque + 3]
        return jnp.concatenate([force, torque])

    def _observe(self, data, info) -> jax.Array:
        rel_mm = (self.tip_position(data) - self.nominal_goal) * 1e3
        ft = self._ft(data) - info['ft_bias']
        return jnp.concatenate([rel_mm, self.held_quat(data), ft]).astype(jnp.float32)

    def _distance(self, data, info) -> jax.Array:
        return jnp.linalg.norm(self.tip_position(data) - info['goal'])

    def yaw_error(self, data: mjx.Data, info: Dict[str, Any]) -> jax.Array:
        """The held piece's yaw misalignment, radians (peg: to the nearest quarter turn)."""
        yaw = data.qpos[self._qpos[5]]
        if self.config.task == 'peg_in_hole':
            return peg_yaw_error(yaw)
        return yaw - info['ground_yaw']

    # ------------------------------------------------------------ interface
    def reset_args(self, key: jax.Array) -> Dict[str, jax.Array]:
        """The start pose `reset(key)` draws: 'yaw_deg' () (the peg's yaw or the
        ground beam's) and 'ground_xy_mm' (2,) (the ground beam's offset; the
        peg-in-hole task ignores it)."""
        cfg = self.config
        key_yaw, key_xy = jax.random.split(key)
        low, high = cfg.yaw_range
        return {
            'yaw_deg': jax.random.uniform(key_yaw, (), minval=low, maxval=high),
            'ground_xy_mm': jax.random.uniform(
                key_xy, (2,), minval=-cfg.ground_xy_mm, maxval=cfg.ground_xy_mm
            ),
        }

    def reset(
        self,
        key: jax.Array,
        yaw_deg: Optional[jax.Array] = None,
        ground_xy_mm: Optional[jax.Array] = None,
    ) -> State:
        """Starts an episode (see the module docstring for what varies).

        Args:
          key: PRNG key.
          yaw_deg: the peg's start yaw / the ground beam's yaw, used instead of
            a draw from `yaw_range_deg`.
          ground_xy_mm: (2,) the ground beam's offset (lap joint), instead of a draw.
        """
        cfg = self.config
        drawn = self.reset_args(key)
        if yaw_deg is None:
            yaw_deg = drawn['yaw_deg']
        yaw = jnp.deg2rad(jnp.asarray(yaw_deg, jnp.float32))
        data = mjx.make_data(self.mjx_model)
        start = jnp.array([0.0, 0.0, self._start_z, 0.0, 0.0, 0.0])
        if cfg.task == 'peg_in_hole':
            start = start.at[5].set(yaw)
            goal, ground_yaw = self.nominal_goal, jnp.zeros(())
        else:
            if ground_xy_mm is None:
                ground_xy_mm = drawn['ground_xy_mm']
            xy = jnp.asarray(ground_xy_mm, jnp.float32) * 1e-3
            goal = jnp.concatenate([xy, jnp.zeros(1)])
            ground_yaw = yaw
            data = data.replace(
                mocap_pos=data.mocap_pos.at[0].set(goal),
                mocap_quat=data.mocap_quat.at[0].set(yaw_quat(yaw)),
            )
        data = data.replace(qpos=data.qpos.at[self._qpos].set(start), ctrl=start)
        data = base.forward_at_rest(self.mjx_model, data)
        info = {
            'goal': goal,
            'ground_yaw': ground_yaw,
            'ft_bias': self._ft(data),
            'step': jnp.zeros((), jnp.int32),
            'success': jnp.zeros((), bool),
            'ever_success': jnp.zeros((), bool),
        }
        return State(
            data=data,
            obs=self._observe(data, info),
            reward=jnp.zeros(()),
            done=jnp.zeros((), bool),
            metrics=self._metrics(data, info, jnp.zeros(()), {}),
            info=info,
        )

    def _metrics(self, data, info, penetration_m, terms, finite=True):
        ft = self._ft(data) - info['ft_bias']
        zero = jnp.zeros(())
        return {
            'nonfinite': 1.0 - jnp.asarray(finite, jnp.float32),
            'distance_mm': self._distance(data, info) * 1e3,
            'height_mm': (self.tip_position(data)[2] - info['goal'][2]) * 1e3,
            'yaw_error_deg': jnp.rad2deg(self.yaw_error(data, info)),
            'force_n': jnp.linalg.norm(ft[:3]),
            'torque_nm': jnp.linalg.norm(ft[3:]),
            'max_penetration_mm': penetration_m * 1e3,
            'success': info['success'].astype(jnp.float32),
            'reward/distance': terms.get('distance', zero),
            'reward/bonus': terms.get('bonus', zero),
        }

    def set_point(self, data: mjx.Data, command: jax.Array) -> jax.Array:
        """The rig's next set-point (6,) for a velocity command (6,) (see module docstring)."""
        cfg = self.config
        command = jnp.clip(command, -self.action_scale, self.action_scale)
        target = data.ctrl + command / cfg.control_hz
        pose = data.qpos[self._qpos]
        lead = jnp.array([cfg.max_lead_mm * 1e-3] * 3 + [math.radians(cfg.max_lead_deg)] * 3)
        target = jnp.clip(target, pose - lead, pose + lead)
        reach, g = cfg.workspace_mm * 1e-3, self.nominal_goal
        low = jnp.array([g[0] - reach, g[1] - reach, g[2] - 5e-3])
        high = jnp.array([g[0] + reach, g[1] + reach, self._start_z + 20e-3])
        tilt = math.radians(cfg.max_tilt_deg)
        target = target.at[:3].set(jnp.clip(target[:3], low, high))
        return target.at[3:5].set(jnp.clip(target[3:5], -tilt, tilt))

    def step(self, state: State, command: jax.Array) -> State:
        """Advances one control step with the velocity command (6,)."""
        cfg = self.config
        data = state.data.replace(ctrl=self.set_point(state.data, command))
        data, penetration, finite = base.physics_step(self.mjx_model, data, cfg.substeps)
        distance = self._distance(data, state.info)
        success = (distance < cfg.success_tolerance_mm * 1e-3) & finite
        step_count = state.info['step'] + 1
        info = {
            **state.info,
            'step': step_count,
            'success': success,
            'ever_success': state.info['ever_success'] | success,
        }
        reward, terms = rewards.der_reward(
            distance / cfg.distance_unit_m, success, cfg.reward_bonus
        )
        obs, reward, metrics = base.mask_nonfinite(
            finite,
            self._observe(data, info),
            reward,
            self._metrics(data, info, penetration, terms, finite),
            state.metrics,
        )
        done = (step_count >= cfg.horizon) | success | ~finite
        return state.replace(
            data=data,
            obs=obs,
            reward=reward.astype(jnp.float32),
            done=done,
            metrics=metrics,
            info=info,
        )
