"""General MJCF helpers that the connector and assembly scenes share.

Geoms are built in Python (`Geom`, `capsule`, `wall_with_chamfer`) and written
as XML strings; `compliant_rig_xml` writes the joints and actuators of the
Cartesian spring-damper rig that holds the moving piece in both scenes. All
lengths are metres. Every geom has contype = conaffinity = 0: a scene lists
its contacts as explicit `<pair>` elements.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import mujoco
import numpy as np

# MJX sizes its contact and constraint arrays for every contact that the listed
# pairs could emit (4 per box pair), and its solver pays for every row, touching
# or not. It keeps only the deepest MAX_CONTACT_POINTS of them per step (the
# `max_contact_points` numeric that `mjx.put_model` reads). Eight holds a plug
# seated on the floor (4) and pressed against one wall (4); where more touch,
# the shallowest are dropped until they become the deepest. Success rates and
# worst penetration at 8 match those with no budget within sampling error
# (BUILD_NOTES.md), and the step is twice as fast as with USB's 36 slots.
MAX_CONTACT_POINTS = 8

# Geom group of the walls on the camera's side (-y), hidden in cut-away pictures.
CAMERA_SIDE_GROUP = 3

DEFAULT_RGBA = '0.25 0.27 0.32 1'  # a dark grey

UP = np.array([0.0, 0.0, 1.0])


@dataclasses.dataclass
class Geom:
    """One geom, positioned in its parent body's frame, in metres.

    Attributes:
      name: the geom's name.
      kind: 'box', 'capsule', 'sphere' or 'mesh' (a convex mesh: `vertices`).
      pos: (3,) centre (unused when `fromto` is given).
      size: MJCF size (half extents of a box; (radius,) of a capsule or a
        sphere; unused by a mesh).
      rot: (3, 3) rotation matrix of the geom's frame.
      rgba: colour, as MJCF writes it.
      group: visualisation group.
      fromto: a capsule's two end points (6,), or () for a positioned geom.
      vertices: a mesh's vertices (N, 3) in the geom's frame; MuJoCo collides
        their convex hull. The mesh asset is named '{name}_mesh' (`asset_xml`).
    """

    name: str
    kind: str  # 'box' | 'capsule' | 'sphere' | 'mesh'
    pos: np.ndarray
    size: Tuple[float, ...]
    rot: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    rgba: str = DEFAULT_RGBA
    group: int = 1
    fromto: Tuple[float, ...] = ()
    vertices: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def mesh_name(self) -> str:
        return f'{self.name}_mesh'

    def asset_xml(self) -> str:
        """The `<mesh .../>` asset of a mesh geom ('' for the other kinds)."""
        if self.kind != 'mesh':
            return ''
        vertex = ' '.join(f'{v:.9g}' for v in np.asarray(self.vertices, np.float64).reshape(-1))
        return f'<mesh name="{self.mesh_name}" vertex="{vertex}"/>'

    def xml(self) -> str:
        """The `<geom .../>` element of this geom."""
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.asarray(self.rot, dtype=np.float64).reshape(-1))
        attrs = [
            f'name="{self.name}"',
            f'type="{self.kind}"',
            f'group="{self.group}"',
            'contype="0" conaffinity="0"',
        ]
        if self.fromto:
            attrs.append('fromto="' + ' '.join(f'{v:.7g}' for v in self.fromto) + '"')
            attrs.append(f'size="{self.size[0]:.7g}"')
        else:
            attrs.append('pos="' + ' '.join(f'{v:.7g}' for v in self.pos) + '"')
            attrs.append('quat="' + ' '.join(f'{v:.7g}' for v in quat) + '"')
            if self.kind == 'mesh':
                attrs.append(f'mesh="{self.mesh_name}"')
            else:
                attrs.append('size="' + ' '.join(f'{v:.7g}' for v in self.size) + '"')
        attrs.append(f'rgba="{self.rgba}"')
        return '<geom ' + ' '.join(attrs) + '/>'


def capsule(name: str, fromto: Tuple[float, ...], radius: float, **kwargs) -> Geom:
    """A capsule geom between the two end points of `fromto` (6 floats, metres).

    `kwargs` are further `Geom` fields (rgba, group).
    """
    return Geom(name=name, kind='capsule', pos=np.zeros(3), size=(radius,), fromto=fromto, **kwargs)


def rotation(*axes: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) with the given orthogonal axes as columns.

    Each axis is a 3-vector, or a 2-vector in the horizontal plane; they are
    normalized, and the first is flipped if needed to make the frame
    right-handed. A box is symmetric, so the flip does not change its shape.
    """
    columns = [np.array([*axis, 0.0][:3], dtype=np.float64) for axis in axes]
    rot = np.stack([c / np.linalg.norm(c) for c in columns], axis=1)
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-9):
        raise ValueError(f'rotation: axes {[c.tolist() for c in columns]} are not orthogonal.')
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    return rot


def wall_with_chamfer(
    name: str,
    face_point: np.ndarray,
    tangent: np.ndarray,
    normal_in: np.ndarray,
    *,
    half_length: float,
    depth: float,
    chamfer: float,
    thickness: float,
    group: int = 1,
    chamfer_overhang: float = 0.0,
    rgba: str = DEFAULT_RGBA,
    chamfer_prism: bool = False,
) -> List[Geom]:
    """A wall of an opening whose top is at z = 0, plus its 45 degree lead-in chamfer.

    The wall's inner face passes through `face_point` (x, y), runs along
    `tangent` (2,) and faces the opening along `normal_in` (2,). The wall box
    runs from the floor (z = -depth) to z = -chamfer, `half_length` to each
    side of `face_point`, `thickness` thick. The chamfer is a box lying behind
    the 45 degree bevel that rises from the wall's inner edge at z = -chamfer
    to the top z = 0, `chamfer` outward of the opening; it runs
    `chamfer_overhang` past both ends of the wall to close the corners. No
    chamfer box when `chamfer` is 0. Lengths in metres.

    With `chamfer_prism`, the chamfer is instead a convex-mesh triangular
    prism: the same bevel, a vertical back face `chamfer` outward of the wall
    face, from the top z = 0 down to the wall's top, and a bottom face on the
    wall's top. MJX collides it with a box through its general convex
    collider (`convex_convex`), whose contacts at a tilted plug box resting on
    the prism's top edge match native MuJoCo's; its box-box collider reports
    phantom contacts there, tens of micrometres deep, against a box turned
    45 degrees (BUILD_NOTES.md). A flat top on the prism is worse: MJX then
    takes the tilted plug's face normal for an edge resting on the flat top and
    pushes the plug toward the opening.

    Returns:
      the geoms '{name}_wall' and (if chamfered) '{name}_chamfer'.
    """
    normal_in = normal_in / np.linalg.norm(normal_in)
    top = -chamfer
    wall_centre = np.array([*(face_point - normal_in * thickness / 2), (top - depth) / 2])
    geoms = [
        Geom(
            name=f'{name}_wall',
            kind='box',
            pos=wall_centre,
            size=(half_length, thickness / 2, (depth + top) / 2),
            rot=rotation(tangent, normal_in, UP),
            rgba=rgba,
            group=group,
        )
    ]
    if chamfer > 0 and chamfer_prism:
        half = half_length + chamfer_overhang
        # Cross-section (outward distance from the wall face, z), about its
        # centre: the wall's inner top edge, the bevel's top edge, the back foot.
        section = [(0.0, -chamfer), (chamfer, 0.0), (chamfer, -chamfer)]
        centre_out, centre_z = chamfer / 2, -chamfer / 2
        vertices = np.array(
            [(t, centre_out - o, z - centre_z) for t in (-half, half) for o, z in section]
        )
        geoms.append(
            Geom(
                name=f'{name}_chamfer',
                kind='mesh',
                pos=np.array([*(face_point - normal_in * centre_out), centre_z]),
                size=(),
                rot=rotation(tangent, normal_in, UP),
                rgba=rgba,
                group=group,
                vertices=vertices,
            )
        )
    elif chamfer > 0:
        out = np.array([*(-normal_in), 0.0])
        bevel = (out + UP) / math.sqrt(2)  # from inner edge up and outward
        material = (out - UP) / math.sqrt(2)  # into the socket material
        edge = np.array([*face_point, -chamfer])
        depth_into = chamfer / math.sqrt(2)
        centre = edge + bevel * chamfer / math.sqrt(2) + material * depth_into / 2
        geoms.append(
            Geom(
                name=f'{name}_chamfer',
                kind='box',
                pos=centre,
                size=(half_length + chamfer_overhang, chamfer / math.sqrt(2), depth_into / 2),
                rot=rotation(tangent, bevel, material),
                rgba=rgba,
                group=group,
            )
        )
    return geoms


def compliant_rig_xml(
    slide_joints: Tuple[str, ...],
    hinge_joints: Tuple[str, ...],
    stiffness: Tuple[float, ...],
    damping: Tuple[float, ...],
    rot_stiffness: float,
    rot_damping: float,
    hinge_pivots: Tuple[float, ...],
) -> Tuple[str, str]:
    """(joints XML, actuators XML) of a Cartesian spring-damper rig.

    Slide joints along x, y, z (each with its `stiffness` N/m and `damping`
    N s/m) and hinges about x, y, z (each about a point `hinge_pivots` metres
    above the body origin, with `rot_stiffness` N m/rad and `rot_damping`
    N m s/rad); every joint is driven by a position actuator with its
    stiffness and damped by the joint. Each tuple has three entries.
    """
    axes = ('1 0 0', '0 1 0', '0 0 1')
    joints = [
        f'<joint name="{n}" type="slide" axis="{ax}" damping="{d:.6g}"/>'
        for n, ax, d in zip(slide_joints, axes, damping, strict=True)
    ] + [
        f'<joint name="{n}" type="hinge" axis="{ax}" pos="0 0 {p:.6g}" damping="{rot_damping:.6g}"/>'
        for n, ax, p in zip(hinge_joints, axes, hinge_pivots, strict=True)
    ]
    actuators = [
        f'<position name="act_{n}" joint="{n}" kp="{k:.6g}"/>'
        for n, k in zip(slide_joints, stiffness, strict=True)
    ] + [f'<position name="act_{n}" joint="{n}" kp="{rot_stiffness:.6g}"/>' for n in hinge_joints]
    return '\n        '.join(joints), '\n    '.join(actuators)


def validate_max_contact_points(value: int, owner: str) -> None:
    """Raises naming `owner` unless `value` is a valid MJX contact budget."""
    if not (isinstance(value, int) and value >= 0):
        raise ValueError(
            f'{owner}.max_contact_points={value!r} must be an integer >= 0 (0 keeps every contact).'
        )


def contact_budget_xml(max_contact_points: int) -> str:
    """The `<numeric>` element that sets MJX's per-step contact budget ('' for 0: no budget)."""
    if not max_contact_points:
        return ''
    return f'<numeric name="max_contact_points" data="{max_contact_points}"/>'
