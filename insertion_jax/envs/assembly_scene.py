"""MJCF scenes of the DER paper's two assembly tasks, built from their dimensions.

Both scenes share the *held-piece rig*: a body `driver` with three slide and
three hinge joints, each driven by a position actuator and damped, so the held
piece follows a Cartesian set-point through a spring-damper (the "robot-less"
mode of the paper: the piece floats, driven in Cartesian space; on the peg
task the rig stands for the arm's compliant wrist). The yaw hinge is
unlimited. The piece is the child body `held`; a force/torque sensor sits at
the site `ft` between them and the site `tip` is the piece's reference point
(the peg's bottom centre; the timber's bottom centre under its notch), which
the observation reports and the goal refers to.

* `peg_in_hole`: a square peg (a keyed section: it enters only at yaw
  multiples of 90 degrees) over a square hole with a 45 degree chamfer on
  every edge, made of four walls, four chamfer boxes and a floor.
* `lap_joint`: two timber beams with half notches, 1 mm total tolerance and
  no chamfer. The ground beam is a mocap body (its pose is drawn at every
  reset); each beam is three boxes: two full-height ends and the half-height
  middle under (ground) or over (held) the notch.

Contacts are explicit `<pair>`s between held and fixed geoms only, as in
the connector scene (`scene.py`); the geoms and the rig come from `mjcf.py`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import mujoco
import numpy as np

from insertion_jax.envs import mjcf

_MM = 1e-3

DRIVER_BODY = 'driver'
HELD_BODY = 'held'
GROUND_BODY = 'ground'
TIP_SITE = 'tip'
FT_FORCE = 'ft_force'
FT_TORQUE = 'ft_torque'
SLIDE_JOINTS = ('drv_x', 'drv_y', 'drv_z')
HINGE_JOINTS = ('drv_rx', 'drv_ry', 'drv_rz')
TASKS = ('peg_in_hole', 'lap_joint')

_FIXED_RGBA = '0.55 0.42 0.28 1'
_HELD_RGBA = '0.78 0.62 0.42 1'
_PEG_RGBA = '0.62 0.64 0.7 1'
_HOLE_RGBA = '0.3 0.32 0.36 1'


@dataclasses.dataclass(frozen=True)
class PegSpec:
    """The chamfered square peg-in-hole, millimetres.

    Attributes:
      side_mm: the peg's square section.
      length_mm: the peg's length.
      clearance_mm: total clearance (hole side minus peg side).
      depth_mm: hole depth (the goal is the peg tip on the floor).
      chamfer_mm: 45 degree chamfer on each hole edge; its outer edge must
        clear the half-diagonal of the peg so a peg at any yaw lands on it.
      wall_mm: wall thickness.
    """

    side_mm: float = 20.0
    length_mm: float = 60.0
    clearance_mm: float = 0.5
    depth_mm: float = 20.0
    chamfer_mm: float = 4.5
    wall_mm: float = 8.0


@dataclasses.dataclass(frozen=True)
class LapSpec:
    """The lap joint: two beams of square section with half notches, millimetres.

    Attributes:
      section_mm: width and height of each beam.
      length_mm: beam length.
      tolerance_mm: each notch is `section + tolerance` wide.
    """

    section_mm: float = 40.0
    length_mm: float = 200.0
    tolerance_mm: float = 1.0


@dataclasses.dataclass(frozen=True)
class RigSpec:
    """The held-piece rig's impedance.

    Attributes:
      mass_kg: moving mass of the driver (the held piece adds its own).
      stiffness_n_per_m: translational stiffness, each axis.
      rot_stiffness_nm_per_rad: rotational stiffness, each axis.
      damping_ratio: relative to critical, translation and rotation.
      rot_inertia_kgm2: rotational inertia of the driver about each axis.
      pivot_mm: height of the tilt pivot above the tip.
      timestep_s: physics timestep.
    """

    mass_kg: float = 0.5
    stiffness_n_per_m: float = 3000.0
    rot_stiffness_nm_per_rad: float = 20.0
    damping_ratio: float = 1.0
    rot_inertia_kgm2: float = 5e-4
    pivot_mm: float = 30.0
    timestep_s: float = 0.002

    @property
    def damping(self) -> float:
        return 2.0 * self.damping_ratio * math.sqrt(self.stiffness_n_per_m * self.mass_kg)

    def rot_damping(self, held_inertia_kgm2: float) -> float:
        """Rotational damping for the driver plus a held piece of that inertia."""
        inertia = self.rot_inertia_kgm2 + held_inertia_kgm2
        return 2.0 * self.damping_ratio * math.sqrt(self.rot_stiffness_nm_per_rad * inertia)


def held_inertia(task: str, peg: 'PegSpec', lap: 'LapSpec') -> Tuple[float, Tuple[float, ...]]:
    """(mass kg, diagonal inertia kg m^2) of the held piece: a steel peg of 0.1 kg or a
    timber beam of 0.3 kg, each a solid block of its outer dimensions."""
    if task == 'peg_in_hole':
        mass, dims = 0.1, (peg.side_mm, peg.side_mm, peg.length_mm)
    else:
        mass, dims = 0.3, (lap.section_mm, lap.length_mm, lap.section_mm)
    x, y, z = (d * _MM for d in dims)
    return mass, (
        mass * (y * y + z * z) / 12,
        mass * (x * x + z * z) / 12,
        mass * (x * x + y * y) / 12,
    )


def _box(name, centre_mm, half_mm, rgba, group=1, rot=None) -> mjcf.Geom:
    return mjcf.Geom(
        name=name,
        kind='box',
        pos=np.asarray(centre_mm, float) * _MM,
        size=tuple(float(h) * _MM for h in half_mm),
        rgba=rgba,
        group=group,
        rot=np.eye(3) if rot is None else rot,
    )


def peg_geoms(spec: PegSpec) -> Tuple[List[mjcf.Geom], List[mjcf.Geom]]:
    """(hole geoms in the world, peg geoms in the held-body frame, tip at origin)."""
    half = (spec.side_mm + spec.clearance_mm) / 2 * _MM
    depth, chamfer = spec.depth_mm * _MM, spec.chamfer_mm * _MM
    hole: List[mjcf.Geom] = []
    for side, face, tangent, normal_in in (
        ('px', (half, 0.0), (0.0, 1.0), (-1.0, 0.0)),
        ('nx', (-half, 0.0), (0.0, 1.0), (1.0, 0.0)),
        ('py', (0.0, half), (1.0, 0.0), (0.0, -1.0)),
        ('ny', (0.0, -half), (1.0, 0.0), (0.0, 1.0)),
    ):
        # y walls span past the x walls to close the corners.
        reach = half + (spec.wall_mm * _MM if side in ('py', 'ny') else 0.0)
        hole += mjcf.wall_with_chamfer(
            side,
            np.asarray(face),
            np.asarray(tangent),
            np.asarray(normal_in),
            half_length=reach,
            depth=depth,
            chamfer=chamfer,
            thickness=spec.wall_mm * _MM,
            group=mjcf.CAMERA_SIDE_GROUP if side == 'ny' else 1,
            chamfer_overhang=chamfer,
            rgba=_HOLE_RGBA,
        )
    s = spec.side_mm / 2
    peg = [_box('peg', (0, 0, spec.length_mm / 2), (s, s, spec.length_mm / 2), _PEG_RGBA, 2)]
    return hole, peg


def lap_geoms(spec: LapSpec) -> Tuple[List[mjcf.Geom], List[mjcf.Geom]]:
    """(ground beam geoms in its body frame, held beam geoms in the held frame).

    The ground beam runs along x with its notch across the top at x = 0; the
    held beam runs along y with its notch underneath. Both frames have their
    origin at the floor under the notch centre, so the goal is the two frames
    coinciding.
    """
    w, h, length = spec.section_mm, spec.section_mm, spec.length_mm
    notch = w + spec.tolerance_mm
    end = (length - notch) / 2
    ground = [
        _box('ground_lo', (-(notch / 2 + end / 2), 0, h / 2), (end / 2, w / 2, h / 2), _FIXED_RGBA),
        _box('ground_hi', (notch / 2 + end / 2, 0, h / 2), (end / 2, w / 2, h / 2), _FIXED_RGBA),
        _box('ground_mid', (0, 0, h / 4), (notch / 2, w / 2, h / 4), _FIXED_RGBA),
    ]
    held = [
        _box('held_lo', (0, -(notch / 2 + end / 2), h / 2), (w / 2, end / 2, h / 2), _HELD_RGBA, 2),
        _box('held_hi', (0, notch / 2 + end / 2, h / 2), (w / 2, end / 2, h / 2), _HELD_RGBA, 2),
        _box('held_mid', (0, 0, 3 * h / 4), (w / 2, notch / 2, h / 4), _HELD_RGBA, 2),
    ]
    return ground, held


def contact_pairs(task: str) -> List[Tuple[str, str]]:
    """Explicit (held geom, fixed geom) pairs of `task`."""
    if task == 'peg_in_hole':
        hole, peg = peg_geoms(PegSpec())
        return [('peg', 'floor')] + [('peg', g.name) for g in hole]
    ground, held = lap_geoms(LapSpec())
    pairs = [(a.name, b.name) for a in held for b in ground]
    # Only the held beam's ends reach the floor (the middle sits on the ground beam).
    return pairs + [('held_lo', 'floor'), ('held_hi', 'floor')]


def build_mjcf(
    task: str,
    peg: PegSpec = PegSpec(),
    lap: LapSpec = LapSpec(),
    rig: RigSpec = RigSpec(),
    max_contact_points: int = mjcf.MAX_CONTACT_POINTS,
    friction: float = 0.3,
) -> str:
    """The MJCF XML of `task` ('peg_in_hole' or 'lap_joint').

    The tip starts at the world origin (joint positions are displacements from
    it); the environment sets the start pose at reset.
    """
    if task not in TASKS:
        raise ValueError(f'Unknown assembly task {task!r}; valid tasks: {", ".join(TASKS)}.')
    mjcf.validate_max_contact_points(max_contact_points, 'assembly_scene.build_mjcf')
    budget = mjcf.contact_budget_xml(max_contact_points)
    if task == 'peg_in_hole':
        fixed, held = peg_geoms(peg)
        floor_z = -peg.depth_mm * _MM
        ft_height = peg.length_mm * _MM
        fixed_xml = '\n    '.join(g.xml() for g in fixed)
        ground_xml = ''
    else:
        ground, held = lap_geoms(lap)
        floor_z = 0.0
        ft_height = lap.section_mm * _MM
        fixed_xml = ''
        ground_xml = (
            f'<body name="{GROUND_BODY}" mocap="true" pos="0 0 0">\n      '
            + '\n      '.join(g.xml() for g in ground)
            + '\n    </body>'
        )
    pivot = rig.pivot_mm * _MM
    held_mass, held_diag = held_inertia(task, peg, lap)
    k, d = rig.stiffness_n_per_m, rig.damping
    kr, dr = rig.rot_stiffness_nm_per_rad, rig.rot_damping(max(held_diag))
    inertia = rig.rot_inertia_kgm2
    joints, actuators = mjcf.compliant_rig_xml(
        SLIDE_JOINTS,
        HINGE_JOINTS,
        (k, k, k),
        (d, d, d),
        kr,
        dr,
        (pivot, pivot, 0.0),  # yaw about the tip's vertical axis
    )
    pair_xml = '\n    '.join(
        f'<pair geom1="{a}" geom2="{b}" condim="3" friction="{friction:.3g} {friction:.3g} '
        '0.005 0.0001 0.0001" solref="0.002 1" solimp="0.9 0.95 0.001 0.5 2"/>'
        for a, b in contact_pairs(task)
    )
    held_xml = '\n        '.join(g.xml() for g in held)
    return f"""<mujoco model="assembly_{task}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{rig.timestep_s}" integrator="Euler" cone="pyramidal" impratio="1"
          iterations="6" ls_iterations="4"/>
  <custom>{budget}</custom>
  <visual>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.4 0.4 0.4" specular="0.1 0.1 0.1"/>
  </visual>
  <worldbody>
    <light name="key" pos="0.1 -0.15 0.3" dir="-0.3 0.5 -1" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" pos="0 0 {floor_z:.6g}" size="0.3 0.3 0.01"
          rgba="0.2 0.3 0.25 1" contype="0" conaffinity="0" group="0"/>
    {fixed_xml}
    {ground_xml}
    <body name="{DRIVER_BODY}" pos="0 0 0" gravcomp="1">
      {joints}
      <inertial pos="0 0 {pivot:.6g}" mass="{rig.mass_kg:.6g}"
                diaginertia="{inertia:.3g} {inertia:.3g} {inertia:.3g}"/>
      <body name="{HELD_BODY}" pos="0 0 0" gravcomp="1">
        <inertial pos="0 0 {ft_height / 2:.6g}" mass="{held_mass:.6g}"
                  diaginertia="{held_diag[0]:.4g} {held_diag[1]:.4g} {held_diag[2]:.4g}"/>
        <site name="ft" pos="0 0 {ft_height:.6g}" size="0.002"/>
        <site name="{TIP_SITE}" pos="0 0 0" size="0.001" rgba="1 0 0 1"/>
        {held_xml}
      </body>
    </body>
  </worldbody>
  <contact>
    {pair_xml}
  </contact>
  <actuator>
    {actuators}
  </actuator>
  <sensor>
    <force name="{FT_FORCE}" site="ft"/>
    <torque name="{FT_TORQUE}" site="ft"/>
  </sensor>
</mujoco>
"""


def build_model(task: str, **kwargs) -> mujoco.MjModel:
    """Compiles `build_mjcf(task, **kwargs)`."""
    return mujoco.MjModel.from_xml_string(build_mjcf(task, **kwargs))
