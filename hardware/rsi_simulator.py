r"""A simulated KUKA controller speaking RSI, for tests and dry runs.

  python -m hardware.rsi_simulator --task=usb --target=127.0.0.1:49152

Every cycle (4 ms) it sends a `<Rob>` packet with the MuJoCo twin's tool
pose (mm, degrees) and wrench (`<FTS>`, N and N m; --nofts leaves it out, as
a context without a force sensor does) and a rising IPOC, waits
up to the rest of the cycle for the `<Sen>` reply with that IPOC, applies its
RKorr to the twin's set-point, and advances the twin's physics by one cycle.
Like a real controller it does not wait longer: a late or missing reply
means no correction this cycle (counted). Faults on demand: packet loss,
send jitter, malformed packets (garbage, no IPOC, oversized), and silence
after a given time. Prints a summary (JSON with --json) when it ends.
"""

from __future__ import annotations

import dataclasses
import json
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
        send_force: bool = True,
    ):
        super().__init__(name='rsi-simulator', daemon=True)
        self.send_force = send_force
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
                    state.wrench if self.send_force else None,
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


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    host, _, port = _TARGET.value.rpartition(':')
    if not host or not port.isdigit():
        raise app.UsageError(f'--target={_TARGET.value!r} must be HOST:PORT.')
    for name, value in (('loss', _LOSS.value), ('malformed', _MALFORMED.value)):
        if not 0.0 <= value <= 1.0:
            raise app.UsageError(f'--{name}={value!r} must be a probability in [0, 1].')
    from insertion_jax.envs import connectors, insertion

    if _TASK.value not in connectors.task_names():
        raise app.UsageError(
            f'--task={_TASK.value!r}: one of {", ".join(connectors.task_names())}.'
        )
    twin = SimRobot(insertion.InsertionConfig(task=_TASK.value), seed=_SEED.value)
    twin.reset(goal_offset_mm=np.zeros(2))
    faults = Faults(
        loss=_LOSS.value,
        jitter_ms=_JITTER_MS.value,
        malformed=_MALFORMED.value,
        silent_after_s=_SILENT_AFTER_S.value,
    )
    simulator = RSISimulator(
        twin,
        (host, int(port)),
        cycle_s=_CYCLE_MS.value * 1e-3,
        faults=faults,
        seed=_SEED.value,
        duration_s=_DURATION_S.value,
        send_force=_FTS.value,
    )
    print(
        f'RSI simulator: {_TASK.value} twin, a packet every {_CYCLE_MS.value:g} ms to '
        f'{_TARGET.value}; goal (the socket) at {np.round(twin.goal_m * 1e3, 3).tolist()} mm',
        flush=True,
    )
    simulator.start()
    try:
        simulator.join()
    except KeyboardInterrupt:
        simulator.stop()
        simulator.join()
    result = {
        **simulator.counts,
        'max_correction_mm': simulator.max_correction_mm.round(4).tolist(),
        'connected': twin.connected(),
    }
    print(json.dumps(result) if _JSON.value else result, flush=True)


if __name__ == '__main__':
    # The flags exist only when this module runs as the program: the tests
    # import it next to programs with a --task of their own.
    from absl import app, flags

    _TASK = flags.DEFINE_string('task', 'usb', 'Connector task of the twin.')
    _TARGET = flags.DEFINE_string('target', '127.0.0.1:49152', 'HOST:PORT of the RSI responder.')
    _CYCLE_MS = flags.DEFINE_float('cycle_ms', 4.0, 'RSI cycle, ms (4 or 12 on a KUKA).')
    _DURATION_S = flags.DEFINE_float('duration_s', None, 'Stop after this long (default: Ctrl-C).')
    _LOSS = flags.DEFINE_float('loss', 0.0, 'Probability that a cycle sends nothing.')
    _JITTER_MS = flags.DEFINE_float('jitter_ms', 0.0, 'Largest extra delay before a send, ms.')
    _MALFORMED = flags.DEFINE_float('malformed', 0.0, 'Probability of a malformed packet.')
    _SILENT_AFTER_S = flags.DEFINE_float('silent_after_s', None, 'Fall silent after this long.')
    _SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
    _JSON = flags.DEFINE_bool('json', False, 'Print the counts as JSON at the end.')
    _FTS = flags.DEFINE_bool(
        'fts', True, 'Send the wrench (<FTS>), as a context with a sensor does.'
    )
    app.run(main)
