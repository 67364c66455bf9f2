r"""A simulated KUKA controller speaking RSI, for tests and dry runs.

  python -m hardware.rsi_simulator --task=usb --target=127.0.0.1:49152

Every cycle (4 ms) it sends a `<Rob>` packet with the MuJoCo twin's tool
pose (mm, degrees) and wrench (`<FTS>`, N and N m) and a rising IPOC, waits
up to the rest of the cycle for the `<Sen>` reply with that IPOC, applies its
RKorr to the twin's set-point, and advances the twin's physics by one cycle.
Like a real controller it does not wait longer: a late or missing reply
means no correction this cycle (counted). Faults on demand: packet loss,
send jitter, malformed packets (garbage, no IPOC, oversized), and silence
after a given time. Prints a summary (JSON with --json) when it ends.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Optional, Tuple

import numpy as np

from hardware import rsi_protocol
from hardware.sim_robot import SimRobot

# The tool's orientation as RIst reports it: pointing down (A, B, C in degrees).
TOOL_DOWN_ABC = (180.0, 0.0, 180.0)


@dataclasses.dataclass(frozen=True)
class Faults:
    """What goes wrong, per cycle: `loss` and `malformed` are probabilities,
    `jitter_ms` the largest extra delay before a send, and `silent_after_s`
    when the controller stops sending (None: never)."""

    loss: float = 0.0
    jitter_ms: float = 0.0
    malformed: float = 0.0
    silent_after_s: Optional[float] = None


MALFORMED = (
    b'\x00\xffnot xml at all',
    b'<Rob TYPE="KUKA"><RIst X="1" Y="2" Z="3" A="0" B="0" C="0"/></Rob>',  # no IPOC
    b'<Rob TYPE="KUKA">' + b'<Pad/>' * 400 + b'<IPOC>1</IPOC></Rob>',  # oversized
    b'<Rob TYPE="KUKA"><RIst X="nan" Y="2" Z="3" A="0" B="0" C="0"/><IPOC>7</IPOC></Rob>',
)


class RSISimulator(threading.Thread):
    """The controller loop; `run` until `stop()` or `duration_s`."""

    def __init__(
        self,
        twin: SimRobot,
        target: Tuple[str, int],
        cycle_s: float = 0.004,
        faults: Faults = Faults(),
        seed: int = 0,
        duration_s: Optional[float] = None,
    ):
        super().__init__(name='rsi-simulator', daemon=True)
        self.twin = twin
        self.target = target
        self.cycle_s = cycle_s
        self.faults = faults
        self.duration_s = duration_s
        self.rng = np.random.default_rng(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self._stop_event = threading.Event()
        self.counts = {
            'cycles': 0,
            'sent': 0,
            'lost': 0,
            'malformed': 0,
            'answered': 0,
            'late_or_missing': 0,
            'late_replies': 0,
            'wrong_ipoc': 0,
        }
        self._sent_ipocs = set()
        self.max_correction_mm = np.zeros(3)

    def _pose_mm(self, position_m: np.ndarray) -> np.ndarray:
        return np.concatenate([position_m * 1e3, TOOL_DOWN_ABC])

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        start = time.monotonic()
        ipoc = 1000
        next_cycle = start
        while not self._stop_event.is_set():
            now = time.monotonic()
            if self.duration_s is not None and now - start > self.duration_s:
                break
            if self.faults.silent_after_s is not None and now - start > self.faults.silent_after_s:
                break
            self.counts['cycles'] += 1
            ipoc += 4
            f = self.faults
            if f.jitter_ms:
                time.sleep(self.rng.uniform(0.0, f.jitter_ms * 1e-3))
            expect = None
            if self.rng.random() < f.loss:
                self.counts['lost'] += 1
            elif self.rng.random() < f.malformed:
                self.sock.sendto(MALFORMED[self.rng.integers(len(MALFORMED))], self.target)
                self.counts['malformed'] += 1
            else:
                state = self.twin.observe()
                packet = rsi_protocol.rob_packet(
                    self._pose_mm(state.position_m),
                    ipoc,
                    state.wrench,
                    self._pose_mm(self.twin.set_point_m),
                )
                self.sock.sendto(packet, self.target)
                self.counts['sent'] += 1
                self._sent_ipocs.add(ipoc)
                expect = ipoc
            next_cycle += self.cycle_s
            self._receive(expect, next_cycle)
            self.twin.advance(self.cycle_s)
            delay = next_cycle - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_cycle = time.monotonic()  # fell behind: start the next cycle now
        self.sock.close()

    def _receive(self, expect: Optional[int], deadline: float) -> None:
        """Applies the reply to `expect` if it arrives before `deadline`."""
        answered = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(rsi_protocol.MAX_PACKET_BYTES + 1)
            except (socket.timeout, OSError):
                break
            try:
                korr, ipoc = rsi_protocol.parse_sen(data)
            except rsi_protocol.PacketError:
                continue
            if ipoc != expect:  # a reply to an earlier packet, or to none at all
                self.counts['late_replies' if ipoc in self._sent_ipocs else 'wrong_ipoc'] += 1
                continue
            self.max_correction_mm = np.maximum(self.max_correction_mm, np.abs(korr[:3]))
            self.twin.nudge(korr[:3] * 1e-3)
            answered = True
            break
        if expect is not None:
            self.counts['answered' if answered else 'late_or_missing'] += 1
