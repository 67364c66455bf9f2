"""A MuJoCo twin of the connector task behind the `Robot` protocol, for dry runs.

`SimRobot(config)` runs the task's own MJCF (`envs.scene.build_mjcf`, the
scene the MJX env compiles) in native MuJoCo, one world, float64, every
contact kept. `reset` draws an episode as `InsertionEnv.reset` does: the start
within `reset_xy_range_mm` at `reset_height_mm` above the goal, a friction
coefficient in the connector's range, and the goal offset that the robot is
told (`goal_noise_mm`; the socket itself never moves). `command` moves the
impedance set-point and runs one control period of physics (`substeps`
steps), as fast as it goes or, with `real_time=True`, at `control_hz`.

What it leaves to the safety layer, as a real arm would: the workspace box
and the per-step move limit (the MJX env applies both inside its step; the
twin applies whatever it is sent). So a P-controller through
`safety.SafetyLayer` on the twin runs what the MJX evaluation runs, through
another physics engine (tests/test_hardware.py compares their success).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import mujoco
import numpy as np

from hardware.robot import RobotState, Ticker
from insertion_jax.envs import connectors, insertion, scene


@dataclasses.dataclass(frozen=True)
class Episode:
    """What `reset` drew: the goal the robot is told (m), the true goal (m), friction."""

    goal_observed_m: np.ndarray
    goal_m: np.ndarray
    friction: float


class SimRobot:
    """The twin; see the module docstring."""

    def __init__(
        self,
        config: Optional[insertion.InsertionConfig] = None,
        seed: int = 0,
        real_time: bool = False,
    ):
        self.config = config = config or insertion.InsertionConfig()
        self.spec = connectors.get_task(config.task)
        ee = dataclasses.replace(scene.DEFAULT_EE, timestep_s=config.timestep_s)
        self.model = mujoco.MjModel.from_xml_string(
            scene.build_mjcf(self.spec, ee, config.max_contact_points)
        )
        self.data = mujoco.MjData(self.model)
        name2id = lambda kind, name: mujoco.mj_name2id(self.model, kind, name)  # noqa: E731
        self._slide = np.array(
            [
                self.model.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, j)]
                for j in scene.SLIDE_JOINTS
            ]
        )
        self._tip = name2id(mujoco.mjtObj.mjOBJ_SITE, scene.TIP_SITE)
        self._plug_body = self.model.site_bodyid[self._tip]
        adr = int(self.model.sensor_adr[name2id(mujoco.mjtObj.mjOBJ_SENSOR, scene.FT_SENSOR)])
        self._ft = slice(adr, adr + 3)
        self.goal_m = np.array([0.0, 0.0, -self.spec.insertion_depth_mm * 1e-3])
        self._rng = np.random.default_rng(seed)
        self._bias = np.zeros(3)
        self._ticker = Ticker(config.control_hz)
        self.real_time = real_time
        self.episode: Optional[Episode] = None

    # ------------------------------------------------------------ episodes
    def reset(
        self, key: Optional[jax.Array] = None, goal_offset_mm: Optional[np.ndarray] = None
    ) -> Episode:
        """A new episode (see the module docstring). `key`, a JAX PRNG key,
        draws it as `InsertionEnv.reset(key)` does (the same start, friction and
        goal offset: an MJX episode replayed); None draws a fresh one.
        `goal_offset_mm` (2,) replaces the goal offset."""
        cfg = self.config
        if key is None:
            key = jax.random.PRNGKey(int(self._rng.integers(2**31)))
        start_xy, friction = (
            np.asarray(x, np.float64) for x in insertion.episode_draws(cfg, self.spec, key)
        )
        if goal_offset_mm is None:
            goal_offset_mm = insertion.goal_offset_draw(cfg, key)
        friction = float(friction)
        self.model.pair_friction[:, :2] = friction
        mujoco.mj_resetData(self.model, self.data)
        start = np.concatenate([start_xy, self.goal_m[2:] + cfg.reset_height_mm * 1e-3])
        self.data.qpos[self._slide] = start
        self.data.ctrl[:3] = start
        mujoco.mj_forward(self.model, self.data)
        self._bias = self.data.sensordata[self._ft].copy()
        observed = self.goal_m + np.concatenate([np.asarray(goal_offset_mm) * 1e-3, [0.0]])
        self.episode = Episode(
            goal_observed_m=observed, goal_m=self.goal_m.copy(), friction=friction
        )
        self._ticker.reset()
        return self.episode

    def connected(self) -> bool:
        """Electrically connected, as `InsertionEnv.connected` judges it."""
        tip = self.data.site_xpos[self._tip]
        tolerance_m, capture_m = insertion.success_bounds_m(self.spec)
        seated = tip[2] - self.goal_m[2] < tolerance_m
        inside = np.linalg.norm(tip[:2] - self.goal_m[:2]) < capture_m
        return bool(seated and inside)

    # ------------------------------------------------------------ Robot
    def observe(self) -> RobotState:
        force = -(self.data.sensordata[self._ft] - self._bias)
        return RobotState(
            position_m=self.data.site_xpos[self._tip].copy(),
            orientation_wxyz=self.data.xquat[self._plug_body].copy(),
            wrench=np.concatenate([force, np.zeros(3)]),
            timestamp_s=float(self.data.time),
        )

    def command(self, delta_m: np.ndarray) -> None:
        delta_m = np.asarray(delta_m, np.float64)
        if delta_m.shape != (3,) or not np.all(np.isfinite(delta_m)):
            raise ValueError(f'command: delta_m={delta_m!r} must be 3 finite numbers (metres).')
        self.data.ctrl[:3] = self.data.qpos[self._slide] + delta_m
        for _ in range(self.config.substeps):
            mujoco.mj_step(self.model, self.data)
        if self.real_time:
            self._ticker.wait()

    def stop(self) -> None:
        self.data.ctrl[:3] = self.data.qpos[self._slide]

    # ------------------------------------------------------------ RSI cycles
    @property
    def set_point_m(self) -> np.ndarray:
        """(3,) the impedance set-point, as the tool point it commands."""
        offset = self.data.site_xpos[self._tip] - self.data.qpos[self._slide]
        return self.data.ctrl[:3] + offset

    def nudge(self, delta_m: np.ndarray) -> None:
        """Moves the set-point by `delta_m` (3,) from where it is (a KUKA
        RSI correction), without advancing time."""
        self.data.ctrl[:3] += np.asarray(delta_m, np.float64)

    def advance(self, seconds: float) -> None:
        """Runs the physics for `seconds` (whole timesteps)."""
        for _ in range(max(1, round(seconds / self.model.opt.timestep))):
            mujoco.mj_step(self.model, self.data)
