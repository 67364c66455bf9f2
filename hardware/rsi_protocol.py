"""KUKA RobotSensorInterface (RSI) packets: the strict parser and the reply.

Every RSI cycle (4 ms, or 12 ms) the robot controller sends the PC one XML
packet over UDP and stops the motion unless the PC answers it in time,
echoing its IPOC counter:

  <Rob TYPE="KUKA">
    <RIst X="412.3" Y="-12.0" Z="250.1" A="180.0" B="0.0" C="180.0"/>
    <FTS Fx="0.1" Fy="-0.2" Fz="3.5" Tx="0.0" Ty="0.0" Tz="0.0"/>   (optional)
    <IPOC>4208116</IPOC>
  </Rob>

  <Sen Type="ImFree">
    <RKorr X="0.1000" Y="0.0000" Z="-0.2500" A="0.0000" B="0.0000" C="0.0000"/>
    <IPOC>4208116</IPOC>
  </Sen>

RIst is the tool's actual Cartesian pose (mm; A, B, C in degrees, the
rotations about z, y and x), RSol the commanded one (optional here); RKorr
the correction of the commanded pose for this cycle (mm, degrees). RSI carries no force unless its context is configured to send it:
`FTS` is the element this package reads the wrench from (N, N m), to be
added to the RSI context's sent data (README, "Deploying to a robot").

The parser reads only these fields, with fixed patterns (no XML library, so
no entity expansion or nesting to exploit), and refuses a packet larger than
`MAX_PACKET_BYTES`, one without `<Rob`, a complete RIst or an IPOC, and any
non-finite number.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional, Tuple

import numpy as np

# A real packet with RIst, FTS, IPOC and a few more tags is about 400-900
# bytes; anything much larger is not one.
MAX_PACKET_BYTES = 2048
AXES = ('X', 'Y', 'Z', 'A', 'B', 'C')
FTS_AXES = ('Fx', 'Fy', 'Fz', 'Tx', 'Ty', 'Tz')

_NUMBER = r'(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)'
_IPOC = re.compile(rb'<IPOC>\s*(\d{1,20})\s*</IPOC>')


def _element(tag: str) -> re.Pattern:
    return re.compile(rf'<{tag}\s+([^<>]{{0,400}}?)/?>'.encode())


_RIST = _element('RIst')
_RSOL = _element('RSol')
_FTS = _element('FTS')
_ATTRIBUTE = re.compile(rb'([A-Za-z]{1,3})\s*=\s*"' + _NUMBER.encode() + rb'"')


class PacketError(ValueError):
    """A packet that is not a usable RSI packet; the message says why."""


@dataclasses.dataclass(frozen=True)
class RobPacket:
    """One parsed `<Rob>` packet: the actual pose (6,) (mm, mm, mm, deg,
    deg, deg), the wrench (6,) (N, N m) or None, the IPOC counter, and the
    commanded pose (6,) or None."""

    pose: np.ndarray
    wrench: Optional[np.ndarray]
    ipoc: int
    setpoint: Optional[np.ndarray] = None


def _attributes(match: re.Match, names: Tuple[str, ...], what: str) -> np.ndarray:
    found = {k.decode(): float(v) for k, v in _ATTRIBUTE.findall(match.group(1))}
    missing = [n for n in names if n not in found]
    if missing:
        raise PacketError(f'{what} lacks {", ".join(missing)}')
    values = np.array([found[n] for n in names])
    if not np.all(np.isfinite(values)):
        raise PacketError(f'{what} has a non-finite value')
    return values


def parse_rob(data: bytes) -> RobPacket:
    """The `RobPacket` in `data`; PacketError if it is not one."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError(f'{len(data)} bytes, over the {MAX_PACKET_BYTES}-byte limit')
    if b'<Rob' not in data:
        raise PacketError('no <Rob> element')
    ipoc = _IPOC.search(data)
    if ipoc is None:
        raise PacketError('no IPOC')
    rist = _RIST.search(data)
    if rist is None:
        raise PacketError('no RIst element')
    pose = _attributes(rist, AXES, 'RIst')
    fts = _FTS.search(data)
    wrench = None if fts is None else _attributes(fts, FTS_AXES, 'FTS')
    rsol = _RSOL.search(data)
    setpoint = None if rsol is None else _attributes(rsol, AXES, 'RSol')
    return RobPacket(pose=pose, wrench=wrench, ipoc=int(ipoc.group(1)), setpoint=setpoint)


def _attrs(names: Tuple[str, ...], values: np.ndarray) -> str:
    """`name="value"` pairs, four decimals (what a KUKA controller writes)."""
    return ' '.join(f'{name}="{value:.4f}"' for name, value in zip(names, values, strict=True))


def sen_reply(ipoc: int, correction: np.ndarray, sen_type: str = 'ImFree') -> bytes:
    """The `<Sen>` answer: `correction` (6,) RKorr (mm, degrees) and `ipoc` echoed."""
    korr = _attrs(AXES, correction)
    return f'<Sen Type="{sen_type}"><RKorr {korr}/><IPOC>{ipoc}</IPOC></Sen>'.encode()


def rob_packet(
    pose: np.ndarray,
    ipoc: int,
    wrench: Optional[np.ndarray] = None,
    setpoint: Optional[np.ndarray] = None,
) -> bytes:
    """A `<Rob>` packet as a KUKA controller sends it (the RSI simulator's):
    RIst `pose`, RSol `setpoint` (default: `pose`)."""
    rist = _attrs(AXES, pose)
    rsol = _attrs(AXES, pose if setpoint is None else setpoint)
    fts = '' if wrench is None else f'<FTS {_attrs(FTS_AXES, wrench)}/>'
    return (
        f'<Rob TYPE="KUKA"><RIst {rist}/><RSol {rsol}/>{fts}<Delay D="0"/><IPOC>{ipoc}</IPOC></Rob>'
    ).encode()


def parse_sen(data: bytes) -> Tuple[np.ndarray, int]:
    """(RKorr (6,), IPOC) of a `<Sen>` reply (what the RSI simulator reads)."""
    if len(data) > MAX_PACKET_BYTES or b'<Sen' not in data:
        raise PacketError('not a <Sen> reply')
    ipoc = _IPOC.search(data)
    korr = _element('RKorr').search(data)
    if ipoc is None or korr is None:
        raise PacketError('a <Sen> reply without RKorr or IPOC')
    return _attributes(korr, AXES, 'RKorr'), int(ipoc.group(1))


def abc_to_quaternion(a_deg: float, b_deg: float, c_deg: float) -> np.ndarray:
    """KUKA's A, B, C (rotations about z, then y, then x; degrees) as a unit
    quaternion (w, x, y, z)."""
    half = [math.radians(v) / 2 for v in (a_deg, b_deg, c_deg)]
    (ca, sa), (cb, sb), (cc, sc) = ((math.cos(h), math.sin(h)) for h in half)
    return np.array(
        [
            ca * cb * cc + sa * sb * sc,
            ca * cb * sc - sa * sb * cc,
            ca * sb * cc + sa * cb * sc,
            sa * cb * cc - ca * sb * sc,
        ]
    )
