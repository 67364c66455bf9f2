"""The PC side of KUKA RSI: a 4 ms responder and the `Robot` it serves.

`Responder` owns the UDP socket. For every `<Rob>` packet it answers the
sender at once with a `<Sen>` reply that echoes the packet's IPOC and holds
this cycle's correction (RKorr, mm), and it never waits for the policy. The
policy runs apart, at 10 Hz: `KukaRSIRobot.command(delta)` sets a target,
the tool's actual position (RIst) plus `delta`, clipped to the workspace
box, and the responder moves the commanded pose (RSol, or RIst where the
packets carry no RSol) toward it over the following cycles, at most
`max_step_mm` per axis per cycle, until the next move sets a new target.

The target is taken from where the tool is, not from where it was sent,
as the simulator's action is (`InsertionEnv.step`: set-point = tool +
move): a tool held back by contact does not wind the commanded pose further
and further into the part, which under RSI's position control would press
harder every step.

A packet that does not parse (garbage, no IPOC, over the size limit) is
dropped and counted, and the next good one is answered. After the first
packet, silence longer than `robot_timeout_ms` marks the robot silent: the
next `observe` or `command` raises `RobotSilent` (`hardware.run_policy`
exits with status 3).

RSI carries no force by default; `observe` reads the wrench from the
packets' `<FTS>` element when the controller sends one, and reports None
otherwise (see `rsi_protocol`).
"""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
import time
from typing import List, Optional, Tuple

import numpy as np

from hardware import rsi_protocol
from hardware.robot import RobotState, Ticker


class RobotSilent(RuntimeError):
    """The controller stopped sending packets (or never started)."""


@dataclasses.dataclass(frozen=True)
class RSIConfig:
    """The responder's settings.

    Attributes:
      listen: (host, port) to receive the controller's packets on.
      sen_type: the `Type` attribute of the replies (the RSI context's).
      max_step_mm: the largest correction per axis per cycle.
      robot_timeout_ms: silence after which the robot counts as gone.
      connect_timeout_s: how long to wait for the first packet.
      control_hz: the policy's rate (`command` returns at its ticks).
    """

    listen: Tuple[str, int] = ('0.0.0.0', 49152)
    sen_type: str = 'ImFree'
    max_step_mm: float = 0.5
    robot_timeout_ms: float = 100.0
    connect_timeout_s: float = 10.0
    control_hz: float = 10.0

    def __post_init__(self):
        for name in ('max_step_mm', 'robot_timeout_ms', 'connect_timeout_s', 'control_hz'):
            if not getattr(self, name) > 0:
                raise ValueError(f'RSIConfig.{name}={getattr(self, name)!r} must be > 0.')


class Responder(threading.Thread):
    """Answers every RSI packet; see the module docstring."""

    def __init__(self, config: RSIConfig, box_mm: Optional[Tuple[np.ndarray, np.ndarray]] = None):
        super().__init__(name='rsi-responder', daemon=True)
        self.config = config
        self.box_mm = box_mm
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(config.listen)
        self.sock.settimeout(0.002)
        self.address = self.sock.getsockname()
        self._lock = threading.Lock()
        self._target: Optional[np.ndarray] = None  # mm; None: no correction
        self._stop_event = threading.Event()
        self.latest: Optional[rsi_protocol.RobPacket] = None
        self.latest_time: Optional[float] = None
        self.started_at = time.monotonic()
        self.silent: Optional[str] = None
        self.replies = 0
        self.dropped = 0
        self.reply_s: List[float] = []  # receive-to-send time of each reply
        self.corrections: List[np.ndarray] = []  # every RKorr sent (mm)

    def set_move(self, delta_mm: np.ndarray) -> None:
        """Targets the tool's latest actual position plus `delta_mm` (3,),
        within the box (see the module docstring)."""
        latest = self.latest
        if latest is None:
            return
        target = latest.pose[:3] + np.asarray(delta_mm, np.float64)
        if self.box_mm is not None:
            target = np.clip(target, *self.box_mm)
        with self._lock:
            self._target = target

    def hold(self) -> None:
        """Targets where the tool is."""
        self.set_move(np.zeros(3))

    def _correction(self, packet: rsi_protocol.RobPacket) -> np.ndarray:
        commanded = (packet.setpoint if packet.setpoint is not None else packet.pose)[:3]
        with self._lock:
            target = self._target
        if target is None:
            return np.zeros(3)
        limit = self.config.max_step_mm
        return np.clip(target - commanded, -limit, limit)

    def _silence(self) -> Optional[str]:
        """Why the robot counts as gone, or None. A packet already waiting
        means this thread was kept from running (another thread held the
        interpreter), not that the robot fell silent."""
        now = time.monotonic()
        if self.latest_time is not None:
            if now - self.latest_time <= self.config.robot_timeout_ms * 1e-3:
                return None
            reason = (
                f'no packet from the robot for {1e3 * (now - self.latest_time):.0f} ms '
                f'(--robot_timeout_ms={self.config.robot_timeout_ms:g})'
            )
        elif now - self.started_at > self.config.connect_timeout_s:
            reason = (
                f'no packet from the robot within {self.config.connect_timeout_s:g} s '
                f'on {self.address[0]}:{self.address[1]}'
            )
        else:
            return None
        return None if select.select([self.sock], [], [], 0.0)[0] else reason

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                data, peer = self.sock.recvfrom(rsi_protocol.MAX_PACKET_BYTES + 1)
            except socket.timeout:
                self.silent = self._silence()
                if self.silent:
                    return
                continue
            except OSError:
                return  # closed
            received = time.monotonic()
            try:
                packet = rsi_protocol.parse_rob(data)
            except rsi_protocol.PacketError:
                self.dropped += 1
                continue
            correction = self._correction(packet)
            reply = rsi_protocol.sen_reply(
                packet.ipoc, np.concatenate([correction, np.zeros(3)]), self.config.sen_type
            )
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                return
            self.reply_s.append(time.monotonic() - received)
            self.corrections.append(correction)
            self.replies += 1
            self.latest, self.latest_time = packet, received

    def close(self) -> None:
        self._stop_event.set()
        self.join(timeout=1.0)
        self.sock.close()


class KukaRSIRobot:
    """A KUKA arm over RSI behind the `Robot` protocol."""

    def __init__(self, config: RSIConfig, box_mm=None):
        self.config = config
        self.responder = Responder(config, box_mm)
        self.responder.start()
        self._ticker = Ticker(config.control_hz)

    def _check(self) -> None:
        if self.responder.silent:
            raise RobotSilent(self.responder.silent)

    def wait_for_robot(self) -> None:
        """Returns once the first packet has been answered."""
        while self.responder.latest is None:
            self._check()
            time.sleep(0.001)

    def observe(self) -> RobotState:
        self.wait_for_robot()
        self._check()
        packet, when = self.responder.latest, self.responder.latest_time
        return RobotState(
            position_m=packet.pose[:3] * 1e-3,
            orientation_wxyz=rsi_protocol.abc_to_quaternion(*packet.pose[3:]),
            wrench=packet.wrench,
            timestamp_s=when,
        )

    def command(self, delta_m: np.ndarray) -> None:
        self._check()
        self.responder.set_move(np.asarray(delta_m, np.float64) * 1e3)
        self._ticker.wait(self._check)

    def stop(self) -> None:
        self.responder.hold()

    def close(self) -> None:
        self.responder.hold()
        self.responder.close()
