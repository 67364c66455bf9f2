"""The `Robot` protocol: what the robot loop reads from an arm and sends to it.

SI units throughout. Every robot, simulated (`sim_robot.SimRobot`) or real
(KUKA over RSI, a Sawyer through Intera), implements these three methods;
`safety.SafetyLayer` stands between the policy and `command`.

Frames: positions are the tool point (the plug's mating-face centre) in the
robot's base frame, z up. The wrench is what the environment exerts on the
tool, in the base frame: contact pushing the plug up reads as a positive
force z, as the simulator's `f_z_n` observation does. A robot reports it as
its sensor reads it (the tool's weight included); `loop.run_episode` removes
the reading at the episode's start, as the simulator removes its own at reset.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class RobotState:
    """One reading of the arm.

    Attributes:
      position_m: (3,) tool point, metres.
      orientation_wxyz: (4,) the tool's orientation, a unit quaternion.
      wrench: (6,) force (N, 3) and torque (N m, 3) on the tool, or None
        where the robot reports none.
      timestamp_s: when it was read, seconds (the robot's clock).
    """

    position_m: np.ndarray
    orientation_wxyz: np.ndarray
    wrench: Optional[np.ndarray]
    timestamp_s: float

    @property
    def force_n(self) -> Optional[np.ndarray]:
        return None if self.wrench is None else self.wrench[:3]


@runtime_checkable
class Robot(Protocol):
    """An arm under Cartesian impedance control, driven at the policy's rate."""

    def observe(self) -> RobotState:
        """The arm's current state."""

    def command(self, delta_m: np.ndarray) -> None:
        """Moves the impedance set-point by `delta_m` (3,) metres, relative to
        the tool's current position (the simulator's action), and returns
        after one control period."""

    def stop(self) -> None:
        """Holds the current position and ends motion; safe to call twice."""


class Ticker:
    """The policy's clock: `wait()` returns at the next tick of `hz`, a period
    after the last one (or now, after a pause longer than a period), calling
    `check()` while it waits (a robot that can fail mid-wait raises there)."""

    def __init__(self, hz: float):
        self.period_s = 1.0 / hz
        self._next: Optional[float] = None

    def reset(self) -> None:
        self._next = None

    def wait(self, check: Callable[[], None] = lambda: None) -> None:
        now = time.monotonic()
        self._next = max((self._next or now) + self.period_s, now)
        while (left := self._next - time.monotonic()) > 0:
            check()
            time.sleep(min(0.002, left))
