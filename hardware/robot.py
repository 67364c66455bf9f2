"""The `Robot` protocol: what the robot loop reads from an arm and sends to it.

SI units throughout. Every robot, simulated (`sim_robot.SimRobot`) or real
(KUKA over RSI, a Sawyer through Intera), implements these three methods;
`safety.SafetyLayer` stands between the policy and `command`.

Frames: positions are the tool point (the plug's mating-face centre) in the
robot's base frame, z up. The wrench is what the environment exerts on the
tool, in the base frame, with the reading at the episode's start removed:
contact pushing the plug up reads as a positive force z, as the simulator's
`f_z_n` observation does.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, runtime_checkable

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
