"""The safety layer: every command to a robot passes through `SafetyLayer`.

Rules, each with its setting in `SafetyConfig`:
  workspace     the set-point stays in a box around the goal the robot was
                told: +-`workspace_mm` horizontally (the simulator's
                `workspace_mm`, so a policy meets the box it trained in), and
                from `floor_mm` below the goal to `ceiling_mm` above it.
  move limit    at most `max_step_mm` per axis per control step (the
                simulator's `max_action_m`).
  force         a force above `max_force_n` on the tool: retract
                `retract_mm` straight up, then stop.
  deadline      a policy call later than `deadline_s` is not executed: the
                arm holds its position; `max_late` late calls in a row stop.
  non-finite    a NaN or infinite command: hold, then stop.
  signals       SIGINT or SIGTERM: no further motion, then a clean stop.

A stop raises `SafetyStop` with the reason after `robot.stop()` has run; the
robot loop catches it and ends the run.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Callable, Optional

import numpy as np

from hardware.robot import Robot, RobotState
from insertion_jax import checks


class SafetyStop(RuntimeError):
    """The safety layer stopped the robot; the message says why."""


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    workspace_mm: float = 5.0
    floor_mm: float = 15.0
    ceiling_mm: float = 80.0
    max_step_mm: float = 10.0
    max_force_n: float = 60.0
    retract_mm: float = 10.0
    deadline_s: float = 0.1
    max_late: int = 3

    def __post_init__(self):
        owner = 'SafetyConfig'
        checks.non_negative(
            owner,
            workspace_mm=self.workspace_mm,
            floor_mm=self.floor_mm,
            ceiling_mm=self.ceiling_mm,
            max_step_mm=self.max_step_mm,
            retract_mm=self.retract_mm,
        )
        checks.positive(owner, max_force_n=self.max_force_n, deadline_s=self.deadline_s)
        checks.positive_int(owner, max_late=self.max_late)


def box_m(goal_m: np.ndarray, config: SafetyConfig):
    """(low (3,), high (3,)) of the set-point around `goal_m`, metres."""
    c = config
    low = np.asarray(goal_m) + np.array([-c.workspace_mm, -c.workspace_mm, -c.floor_mm]) * 1e-3
    high = np.asarray(goal_m) + np.array([c.workspace_mm, c.workspace_mm, c.ceiling_mm]) * 1e-3
    return low, high


class SafetyLayer:
    """Guards `robot` around `goal_m` (3,), the goal the robot was told."""

    def __init__(self, robot: Robot, goal_m: np.ndarray, config: Optional[SafetyConfig] = None):
        self.robot = robot
        self.goal_m = np.asarray(goal_m, np.float64)
        self.config = config or SafetyConfig()
        self.late_in_row = 0
        self.counts = {'clipped_step': 0, 'clipped_workspace': 0, 'late': 0}
        self._signal: Optional[str] = None
        self._previous = {}

    # ------------------------------------------------------------ the box
    @property
    def box_m(self):
        """(low (3,), high (3,)) of the set-point, metres (`box_m`)."""
        return box_m(self.goal_m, self.config)

    def safe_delta(self, delta_m: np.ndarray, state: RobotState) -> np.ndarray:
        """`delta_m` within the move limit and the box (from `state`'s position)."""
        limit = self.config.max_step_mm * 1e-3
        clipped = np.clip(delta_m, -limit, limit)
        if not np.array_equal(clipped, delta_m):
            self.counts['clipped_step'] += 1
        low, high = self.box_m
        target = np.clip(state.position_m + clipped, low, high)
        boxed = target - state.position_m
        if not np.allclose(boxed, clipped, atol=1e-12):
            self.counts['clipped_workspace'] += 1
        return boxed

    # ------------------------------------------------------------ stops
    def _stop(self, reason: str):
        self.robot.stop()
        raise SafetyStop(reason)

    def check_state(self, state: RobotState) -> None:
        """The force rule (and a pending signal) on a fresh reading."""
        self.check_signal()
        if state.force_n is None:
            return
        force = float(np.linalg.norm(state.force_n))
        if not np.isfinite(force) or force > self.config.max_force_n:
            self.robot.command(np.array([0.0, 0.0, self.config.retract_mm * 1e-3]))
            self._stop(
                f'force {force:.1f} N above the limit of {self.config.max_force_n:g} N: '
                f'retracted {self.config.retract_mm:g} mm and stopped'
            )

    def check_signal(self) -> None:
        if self._signal is not None:
            self._stop(f'{self._signal} received: stopped')

    def execute(self, delta_m: np.ndarray, state: RobotState, call_s: float) -> np.ndarray:
        """Sends the policy's `delta_m`, computed in `call_s` seconds from
        `state`, through the rules; returns what was sent."""
        self.check_signal()
        delta_m = np.asarray(delta_m, np.float64)
        if delta_m.shape != (3,) or not np.all(np.isfinite(delta_m)):
            self.robot.command(np.zeros(3))
            self._stop(f'non-finite or malformed command {delta_m!r}: held and stopped')
        if call_s > self.config.deadline_s:
            self.late_in_row += 1
            self.counts['late'] += 1
            if self.late_in_row >= self.config.max_late:
                self._stop(
                    f'{self.late_in_row} policy calls in a row over the '
                    f'{self.config.deadline_s * 1e3:g} ms deadline (the last '
                    f'{call_s * 1e3:.0f} ms): stopped'
                )
            sent = np.zeros(3)
        else:
            self.late_in_row = 0
            sent = self.safe_delta(delta_m, state)
        self.robot.command(sent)
        self.check_signal()
        return sent

    def step(self, policy: Callable[[RobotState], np.ndarray]) -> np.ndarray:
        """One control step: read the arm, check it, call `policy` on the
        reading (timed against the deadline), execute."""
        state = self.robot.observe()
        self.check_state(state)
        start = time.perf_counter()
        delta = policy(state)
        return self.execute(delta, state, time.perf_counter() - start)

    # ------------------------------------------------------------ signals
    def __enter__(self) -> 'SafetyLayer':
        """Catches SIGINT and SIGTERM while the layer is in use (main thread
        only): the next check stops the robot instead of the process dying
        mid-command."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        self._signal = signal.Signals(signum).name
