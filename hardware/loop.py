"""One episode of a policy on a robot, through the safety layer.

`connector_observation(state, goal_m)` builds the connector tasks'
observation (`envs.connector_obs.OBS_SPEC`) from a robot reading, as the MJX
env builds it from its state: the tool point minus the goal the robot was
told, in mm, and the vertical contact force in N. `run_episode` then drives
one episode: read, check, call the policy, send, `horizon` times.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, List, Optional

import jax
import numpy as np

from hardware.robot import Robot, RobotState
from hardware.safety import SafetyConfig, SafetyLayer, SafetyStop
from insertion_jax.envs import controllers

DEFAULT_SAFETY = SafetyConfig()
_P_CONTROLLER = jax.jit(controllers.p_controller_action)

# obs (4,) float32 -> command (3,) metres: an exported policy, or the P-controller.
Policy = Callable[[np.ndarray], np.ndarray]


def p_controller(obs: np.ndarray) -> np.ndarray:
    """The connector P-controller (eq. 5) as a robot-loop `Policy`."""
    return np.asarray(_P_CONTROLLER(obs))


def connector_observation(state: RobotState, goal_m: np.ndarray) -> np.ndarray:
    """(4,) float32: tool point minus `goal_m` in mm (3), force z in N (0
    where the robot reports no wrench)."""
    force_z = 0.0 if state.force_n is None else float(state.force_n[2])
    rel_mm = (np.asarray(state.position_m) - np.asarray(goal_m)) * 1e3
    return np.concatenate([rel_mm, [force_z]]).astype(np.float32)


class WrenchZeroed:
    """`robot` with its wrench read relative to its reading now (the episode's
    start): the tool's weight and a sensor's drift drop out, as the
    simulator's reset removes them."""

    def __init__(self, robot: Robot):
        self.robot = robot
        wrench = robot.observe().wrench
        self.bias = None if wrench is None else np.array(wrench, np.float64)

    def observe(self) -> RobotState:
        state = self.robot.observe()
        if state.wrench is None or self.bias is None:
            return state
        return dataclasses.replace(state, wrench=state.wrench - self.bias)

    def command(self, delta_m: np.ndarray) -> None:
        self.robot.command(delta_m)

    def stop(self) -> None:
        self.robot.stop()


@dataclasses.dataclass
class EpisodeLog:
    """What one episode did: per step the observation, the command the
    policy asked for, what was sent, and the policy call's duration."""

    observations: List[np.ndarray] = dataclasses.field(default_factory=list)
    commands: List[np.ndarray] = dataclasses.field(default_factory=list)
    sent: List[np.ndarray] = dataclasses.field(default_factory=list)
    call_s: List[float] = dataclasses.field(default_factory=list)
    stopped: Optional[str] = None
    final_state: Optional[RobotState] = None
    final_observation: Optional[np.ndarray] = None


def run_episode(
    robot: Robot,
    policy: Policy,
    goal_m: np.ndarray,
    horizon: int,
    safety: SafetyConfig = DEFAULT_SAFETY,
    done: Callable[[], bool] = lambda: False,
) -> EpisodeLog:
    """`horizon` control steps of `policy` on `robot` toward `goal_m` (the
    goal the robot was told), or until `done()`; a safety stop ends it early
    (`EpisodeLog.stopped` says why)."""
    log = EpisodeLog()
    robot = WrenchZeroed(robot)
    layer = SafetyLayer(robot, goal_m, safety)

    def act(state: RobotState) -> np.ndarray:
        obs = connector_observation(state, goal_m)
        start = time.perf_counter()
        command = np.asarray(policy(obs), np.float64)
        log.call_s.append(time.perf_counter() - start)
        log.observations.append(obs)
        log.commands.append(command)
        return command

    with layer:
        try:
            for _ in range(horizon):
                log.sent.append(layer.step(act))
                if done():
                    break
        except SafetyStop as stop:
            log.stopped = str(stop)
    log.final_state = robot.observe()
    log.final_observation = connector_observation(log.final_state, goal_m)
    return log


def retract(
    robot: Robot, goal_m: np.ndarray, height_m: float, safety: SafetyConfig = DEFAULT_SAFETY
) -> None:
    """Brings the tool straight up to `height_m` above `goal_m` through the
    safety layer (between episodes on a real robot), at most 30 steps."""
    robot = WrenchZeroed(robot)
    layer = SafetyLayer(robot, goal_m, safety)
    with layer:
        for _ in range(30):
            state = robot.observe()
            to_go = goal_m[2] + height_m - state.position_m[2]
            if abs(to_go) < 1e-3:
                return
            layer.execute(np.array([0.0, 0.0, to_go]), state, 0.0)
