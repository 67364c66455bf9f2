"""MJCF scene built from a `ConnectorSpec`: a pure function, no XML copies.

The scene has two parts:

* The socket, static in the world: four walls around the opening (the two x
  walls turned by the taper angle for a trapezoidal shell), a 45 degree lead-in
  chamfer along each wall's inner top edge (a box, or a convex-mesh prism with
  `ConnectorSpec.chamfer_prism`), the floor as a plane at
  z = -insertion_depth, and, per connector, key grooves cut into the +y wall,
  an O-ring seal (two soft spheres, one on each x face) near the floor, and pin sockets below the
  floor.
* The compliant end effector: a body `ee` (the robot flange) with three slide
  and three hinge joints, each driven by a position actuator and damped, so
  the flange behaves as a Cartesian spring-damper (impedance) about its
  commanded pose. The plug is a child body `plug` rigidly attached to the
  flange; a force/torque sensor sits at the site `ft` between them. The plug's
  mating-face centre is the site `tip`, the tool point that the observation
  reports and the goal refers to.

Contacts are listed explicitly as `<pair>` elements (all geoms have
contype = conaffinity = 0): plug geoms against socket geoms only, pins only
against their own hole. This keeps the collision work of MJX, which checks
every listed pair every step, to what can actually touch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import mujoco
import numpy as np

from insertion_jax.envs import mjcf
from insertion_jax.envs.connectors import ConnectorSpec

_MM = 1e-3


@dataclasses.dataclass(frozen=True)
class EndEffectorSpec:
    """The robot side of the scene: flange mass and Cartesian compliance.

    Attributes:
      mass_kg: moving mass of flange plus plug (the arm's apparent mass).
      plug_mass_kg: part of `mass_kg` carried by the plug below the sensor.
      stiffness_n_per_m: vertical (z) impedance stiffness.
      lateral_stiffness_n_per_m: horizontal (x, y) impedance stiffness; softer
        than z, as a remote-centre-compliance wrist is, so that a plug pressed
        sideways by a chamfer or a seal yields instead of jamming.
      damping_ratio: translational and rotational damping, relative to critical.
      rot_stiffness_nm_per_rad: rotational stiffness of the wrist, each axis.
      pivot_height_mm: height of the wrist's rotation centre above the tip.
      timestep_s: physics timestep.
    """

    mass_kg: float = 0.5
    plug_mass_kg: float = 0.05
    stiffness_n_per_m: float = 4000.0
    lateral_stiffness_n_per_m: float = 1000.0
    damping_ratio: float = 1.0
    rot_stiffness_nm_per_rad: float = 2.0
    pivot_height_mm: float = 40.0
    timestep_s: float = 0.002

    @property
    def rot_inertia_kgm2(self) -> float:
        """Rotational inertia of the flange about its pivot (a 4 cm box)."""
        return 2e-4

    def damping_n_s_per_m(self, stiffness_n_per_m: float) -> float:
        """Damping that gives `damping_ratio` for `stiffness_n_per_m` and the mass."""
        return 2.0 * self.damping_ratio * math.sqrt(stiffness_n_per_m * self.mass_kg)

    @property
    def rot_damping_nms_per_rad(self) -> float:
        return (
            2.0
            * self.damping_ratio
            * math.sqrt(self.rot_stiffness_nm_per_rad * self.rot_inertia_kgm2)
        )


DEFAULT_EE = EndEffectorSpec()

# Names shared with the environment.
EE_BODY = 'ee'
PLUG_BODY = 'plug'
TIP_SITE = 'tip'
FT_SENSOR = 'ft_force'
SLIDE_JOINTS = ('ee_x', 'ee_y', 'ee_z')
HINGE_JOINTS = ('ee_rx', 'ee_ry', 'ee_rz')

# Geom groups, for pictures: the socket's -y (camera-side) walls, hidden in
# cut-aways (the group every scene uses for them); the O-ring, which bulges
# through the walls' outer faces and is shown only in cut-aways.
SEAL_GROUP = 4

_WALL_THICKNESS_MM = 4.0
_PIN_POST_RADIUS_MM = 0.75
_PLUG_RGBA = '0.62 0.64 0.7 1'


def _plug_half_width_at(spec: ConnectorSpec, y: float) -> float:
    """Half width (x) of the plug cross-section at height y, in metres."""
    taper = math.tan(math.radians(spec.taper_deg))
    return (spec.plug_width_mm / 2 - (spec.plug_thickness_mm / 2 - y / _MM) * taper) * _MM


def socket_geoms(spec: ConnectorSpec) -> Tuple[List[mjcf.Geom], List[mjcf.Geom], List[mjcf.Geom]]:
    """Socket geoms: (shell walls, chamfers and key posts; seal spheres; pin-socket walls)."""
    depth = spec.insertion_depth_mm * _MM
    chamfer = spec.chamfer_mm * _MM
    gap = spec.clearance_mm * _MM / 2
    thick = _WALL_THICKNESS_MM * _MM
    half_t = spec.plug_thickness_mm * _MM / 2 + gap  # opening half thickness
    theta = math.radians(spec.taper_deg)
    # Opening half width at y = 0, measured along x; the x walls lean by theta.
    half_w0 = _plug_half_width_at(spec, 0.0) + gap / math.cos(theta)
    shell: List[mjcf.Geom] = []

    # x walls (slanted for a trapezoid): the long side of the shell is at +y.
    for sign, side in ((1, 'px'), (-1, 'nx')):
        tangent = np.array([sign * math.sin(theta), math.cos(theta)])
        normal_in = np.array([-sign * math.cos(theta), math.sin(theta)])
        shell += mjcf.wall_with_chamfer(
            side,
            np.array([sign * half_w0, 0.0]),
            tangent,
            normal_in,
            half_length=half_t / math.cos(theta),
            depth=depth,
            chamfer=chamfer,
            thickness=thick,
            chamfer_prism=spec.chamfer_prism,
            group=1,
            chamfer_overhang=chamfer,
        )

    # y walls span past the x walls to close the corners. The +y wall is split
    # where a key groove cuts through it; each groove is flanked by two vertical
    # posts whose round tops flare the groove mouth (capsule-capsule contact with
    # the rounded rib: exact and cheap in MJX).
    reach = _plug_half_width_at(spec, half_t) + gap + thick / math.cos(theta) + chamfer
    cuts = []
    for k, key in enumerate(spec.keys):
        rib_r, post_r = key.width_mm * _MM / 2, key.lead_in_mm * _MM
        rib_y = spec.plug_thickness_mm * _MM / 2 + key.protrusion_mm * _MM - rib_r
        post_y = half_t + post_r  # post surface flush with the wall face
        reach_xy = rib_r + post_r + key.groove_clearance_mm * _MM / 2
        half_slot = math.sqrt(reach_xy**2 - (post_y - rib_y) ** 2)
        x = key.x_mm * _MM
        cuts.append((x - half_slot, x + half_slot))
        for side, post_x in (('lo', x - half_slot), ('hi', x + half_slot)):
            shell.append(
                mjcf.capsule(
                    f'key{k}_post_{side}', (post_x, post_y, -depth, post_x, post_y, -post_r), post_r
                )
            )
        back_y = (
            spec.plug_thickness_mm * _MM / 2
            + (key.protrusion_mm + key.groove_clearance_mm / 2) * _MM
        )
        shell.append(
            mjcf.Geom(
                name=f'key{k}_back',
                kind='box',
                pos=np.array([x, back_y + thick / 2, -depth / 2]),
                size=(half_slot, thick / 2, depth / 2),
            )
        )
    for sign, side in ((1, 'py'), (-1, 'ny')):
        group = 1 if sign > 0 else mjcf.CAMERA_SIDE_GROUP
        edges = [-reach] + [v for cut in sorted(cuts) for v in cut] * (sign > 0) + [reach]
        for i in range(0, len(edges), 2):
            x0, x1 = edges[i], edges[i + 1]
            shell += mjcf.wall_with_chamfer(
                f'{side}{i // 2}',
                np.array([(x0 + x1) / 2, sign * half_t]),
                np.array([1.0, 0.0]),
                np.array([0.0, -sign * 1.0]),
                half_length=(x1 - x0) / 2,
                depth=depth,
                chamfer=chamfer,
                thickness=thick,
                chamfer_prism=spec.chamfer_prism,
                group=group,
            )

    seals: List[mjcf.Geom] = []
    if spec.seal_interference_mm > 0:
        radius = spec.seal_radius_mm * _MM  # a large cross-section gives a gentle lead-in
        z = -depth + spec.seal_height_mm * _MM
        for sign, side in ((1, 'px'), (-1, 'nx')):
            x = sign * (_plug_half_width_at(spec, 0.0) - spec.seal_interference_mm * _MM + radius)
            # A sphere, not a capsule along the face: sphere-box contact is
            # exact in both MJX and native MuJoCo, where MJX's capsule-box
            # misses a capsule's rounded top (BUILD_NOTES, pitfalls).
            seals.append(
                mjcf.Geom(
                    name=f'seal_{side}',
                    kind='sphere',
                    pos=np.array([x, 0.0, z]),
                    size=(radius,),
                    rgba='0.1 0.1 0.1 1',
                    group=SEAL_GROUP,
                )
            )

    # Each pin socket is four vertical posts around the hole, their round tops
    # flush with the floor: a square hole with a rounded lead-in, and
    # capsule-capsule contacts with the pin (one exact contact each in MJX,
    # where boxes cost a clipped four-point manifold).
    holes: List[mjcf.Geom] = []
    pin_r = spec.pin_radius_mm * _MM
    post_r = _PIN_POST_RADIUS_MM * _MM
    for p, pin in enumerate(spec.pins):
        px, py = pin.x_mm * _MM, pin.y_mm * _MM
        reach = pin_r + spec.pin_clearance_mm * _MM / 2 + post_r  # axis to post axis
        bottom = -depth - (spec.pin_length_mm + 2.0) * _MM
        for dx, dy, tag in ((1, 0, 'px'), (-1, 0, 'nx'), (0, 1, 'py'), (0, -1, 'ny')):
            x, y = px + dx * reach, py + dy * reach
            holes.append(
                mjcf.capsule(
                    f'pin{p}_hole_{tag}',
                    (x, y, bottom, x, y, -depth - post_r),
                    post_r,
                    group=mjcf.CAMERA_SIDE_GROUP if tag == 'ny' else 1,
                )
            )
    return shell, seals, holes


def plug_geoms(spec: ConnectorSpec) -> Tuple[List[mjcf.Geom], List[mjcf.Geom]]:
    """Plug geoms in the plug body frame (tip at the origin): (body, pins)."""
    length = spec.plug_length_mm * _MM
    half_t = spec.plug_thickness_mm * _MM / 2
    theta = math.radians(spec.taper_deg)
    short_half = _plug_half_width_at(spec, -half_t)
    body = [
        mjcf.Geom(
            name='plug_core',
            kind='box',
            pos=np.array([0.0, 0.0, length / 2]),
            size=(short_half, half_t, length / 2),
            rgba=_PLUG_RGBA,
            group=2,
        )
    ]
    if spec.taper_deg > 0:
        # The two slanted ends of the trapezoid: boxes whose outer face is the
        # slanted side, reaching inward into the core. The outer face runs from
        # the narrow (-y) side's corner, which it shares with the core, to just
        # short of the wide (+y) side, where it stops so that the ear's inner
        # corner lands on the +y face instead of standing out of it. The ears
        # thus add only the slanted faces to the core's outline.
        ear = 1.0 * _MM
        for sign, side in ((1, 'px'), (-1, 'nx')):
            tangent = np.array([sign * math.sin(theta), math.cos(theta), 0.0])
            normal_in = np.array([-sign * math.cos(theta), math.sin(theta), 0.0])
            mid = np.array([sign * _plug_half_width_at(spec, 0.0), 0.0, 0.0])
            start, end = -half_t / math.cos(theta), half_t / math.cos(theta) - ear * math.tan(theta)
            half_len = (end - start) / 2
            centre = (
                mid
                + tangent * (start + end) / 2
                + normal_in * ear / 2
                + np.array([0, 0, length / 2])
            )
            rot = mjcf.rotation(tangent, normal_in, mjcf.UP)
            body.append(
                mjcf.Geom(
                    name=f'plug_ear_{side}',
                    kind='box',
                    pos=centre,
                    size=(half_len, ear / 2, length / 2),
                    rot=rot,
                    rgba=_PLUG_RGBA,
                    group=2,
                )
            )
    for k, key in enumerate(spec.keys):
        # A rounded rib: a vertical capsule whose round bottom is its own lead-in.
        radius = key.width_mm * _MM / 2
        x, y = key.x_mm * _MM, half_t + key.protrusion_mm * _MM - radius
        body.append(
            mjcf.capsule(
                f'plug_key{k}',
                (x, y, radius, x, y, length - radius),
                radius,
                rgba=_PLUG_RGBA,
                group=2,
            )
        )
    pins = []
    pin_r = spec.pin_radius_mm * _MM
    for p, pin in enumerate(spec.pins):
        x, y = pin.x_mm * _MM, pin.y_mm * _MM
        pins.append(
            mjcf.capsule(
                f'pin{p}',
                (x, y, 0.0, x, y, -(spec.pin_length_mm * _MM - pin_r)),
                pin_r,
                rgba='0.85 0.7 0.3 1',
                group=2,
            )
        )
    return body, pins


def contact_pairs(spec: ConnectorSpec) -> List[Tuple[str, str, str]]:
    """Explicit contact pairs: (plug geom, socket geom, contact class).

    MJX runs the collision function of every listed pair every step (a box
    pair costs about as much as the rest of the step), so a pair is listed only
    if it can touch and no listed pair touches at the same place. The
    environment keeps the plug over the socket (its set-point is clipped to a
    few millimetres around the goal, `InsertionConfig.workspace_mm`); there:

    * only the plug core meets the floor: every plug geom ends at the mating
      face or above it, and the core spans that face;
    * a trapezoid's slanted ends (the ears) meet only their own side's x wall
      and chamfer: the opposite wall is a plug width away, and the ears reach
      the plug's +y and -y faces only at points on the core's edges;
    * the core of a trapezoid meets the x walls only through its bottom
      corners on the chamfers: its end faces lie inside the ears;
    * a key rib, on the +y side and above the mating face, meets only the +y
      wall pieces and chamfers, its groove's posts and back;
    * the core never meets a groove's posts (they are flush with the wall face);
    * the O-ring squeezes only the core, and each pin meets only its own hole.

    With every plug-socket pair listed, native MuJoCo P-controller episodes
    (200 per connector) put no contact on a pair dropped here that a listed
    pair did not also carry at the same place (BUILD_NOTES.md).
    """
    body, pins = plug_geoms(spec)
    shell, seals, holes = socket_geoms(spec)
    has_ears = any(g.name.startswith('plug_ear_') for g in body)

    def reachable(plug: str, socket: str) -> bool:
        side = socket.split('_')[0]  # px, nx, py0, ny0, key0, ...
        if plug == 'plug_core':
            end_face_in_ear = has_ears and side in ('px', 'nx') and socket.endswith('_wall')
            return '_post_' not in socket and not end_face_in_ear
        if plug.startswith('plug_ear_'):
            return side == plug[len('plug_ear_') :]
        if plug.startswith('plug_key'):
            return side.startswith('py') or side == plug[len('plug_') :]
        raise ValueError(f'plug geom {plug!r} has no contact rule')

    pairs = [('plug_core', 'floor', 'rigid')]
    pairs += [(g.name, s.name, 'rigid') for g in body for s in shell if reachable(g.name, s.name)]
    pairs += [('plug_core', s.name, 'seal') for s in seals]
    for p, pin in enumerate(pins):
        pairs += [(pin.name, h.name, 'rigid') for h in holes if h.name.startswith(f'pin{p}_')]
    return pairs


def build_mjcf(
    spec: ConnectorSpec,
    ee: EndEffectorSpec = DEFAULT_EE,
    max_contact_points: int = mjcf.MAX_CONTACT_POINTS,
) -> str:
    """Returns the MJCF XML of the insertion scene for `spec`.

    The plug tip starts at the world origin (joint positions are displacements
    from it); the environment sets the initial joint positions at reset.
    `max_contact_points` is MJX's per-step contact budget (0: no budget); native
    MuJoCo ignores it.
    """
    mjcf.validate_max_contact_points(max_contact_points, 'build_mjcf')
    budget = mjcf.contact_budget_xml(max_contact_points)
    depth = spec.insertion_depth_mm * _MM
    shell, seals, holes = socket_geoms(spec)
    body, pins = plug_geoms(spec)
    pivot = ee.pivot_height_mm * _MM
    stiffness = (ee.lateral_stiffness_n_per_m, ee.lateral_stiffness_n_per_m, ee.stiffness_n_per_m)
    kr, dr = ee.rot_stiffness_nm_per_rad, ee.rot_damping_nms_per_rad
    flange_mass = ee.mass_kg - ee.plug_mass_kg
    inertia = ee.rot_inertia_kgm2
    solref = {
        'rigid': f'{spec.wall_timeconst_s} 1',
        'seal': f'{spec.seal_timeconst_s} 1',
    }
    friction_mid = sum(spec.friction_range) / 2
    pair_xml = '\n    '.join(
        f'<pair geom1="{a}" geom2="{b}" condim="3" friction="{friction_mid:.4g} {friction_mid:.4g} '
        f'0.005 0.0001 0.0001" solref="{solref[cls]}" solimp="0.9 0.95 0.001 0.5 2"/>'
        for a, b, cls in contact_pairs(spec)
    )
    joints, actuators = mjcf.compliant_rig_xml(
        SLIDE_JOINTS,
        HINGE_JOINTS,
        stiffness,
        tuple(ee.damping_n_s_per_m(k) for k in stiffness),
        kr,
        dr,
        (pivot, pivot, pivot),
    )
    socket_xml = '\n    '.join(g.xml() for g in shell + seals + holes)
    mesh_xml = '\n    '.join(a for a in (g.asset_xml() for g in shell) if a)
    plug_xml = '\n          '.join(g.xml() for g in body + pins)
    return f"""<mujoco model="insertion_{spec.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{ee.timestep_s}" integrator="Euler" cone="pyramidal" impratio="1"
          iterations="6" ls_iterations="4"/>
  <custom>{budget}</custom>
  <visual>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.25 0.25 0.25" diffuse="0.35 0.35 0.35" specular="0.1 0.1 0.1"/>
    <quality shadowsize="2048"/>
  </visual>
  <asset>
    <texture name="board" type="2d" builtin="checker" rgb1="0.16 0.34 0.22" rgb2="0.13 0.29 0.19"
             width="256" height="256"/>
    <material name="board" texture="board" texrepeat="40 40" reflectance="0.05"/>
    <material name="metal" rgba="0.78 0.78 0.82 1" specular="0.6" shininess="0.6"/>
    {mesh_xml}
  </asset>
  <worldbody>
    <light name="key" pos="0.05 -0.08 0.15" dir="-0.3 0.5 -1" diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" pos="0 0 {-depth:.6g}" size="0.1 0.1 0.01" material="board"
          contype="0" conaffinity="0" group="0"/>
    {socket_xml}
    <body name="{EE_BODY}" pos="0 0 0" gravcomp="1">
      {joints}
      <inertial pos="0 0 {pivot:.6g}" mass="{flange_mass:.6g}"
                diaginertia="{inertia:.3g} {inertia:.3g} {inertia:.3g}"/>
      <geom name="flange" type="cylinder" pos="0 0 {pivot:.6g}" size="0.012 0.006"
            contype="0" conaffinity="0" rgba="0.55 0.57 0.62 1" group="2" mass="0"/>
      <body name="{PLUG_BODY}" pos="0 0 0" gravcomp="1">
        <inertial pos="0 0 {spec.plug_length_mm * _MM / 2:.6g}" mass="{ee.plug_mass_kg:.6g}"
                  diaginertia="1e-6 1e-6 1e-6"/>
        <site name="ft" pos="0 0 {spec.plug_length_mm * _MM:.6g}" size="0.001"/>
        <site name="{TIP_SITE}" pos="0 0 0" size="0.0005" rgba="1 0 0 1"/>
        {plug_xml}
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
    <force name="{FT_SENSOR}" site="ft"/>
  </sensor>
</mujoco>
"""


def build_model(
    spec: ConnectorSpec,
    ee: EndEffectorSpec = DEFAULT_EE,
    max_contact_points: int = mjcf.MAX_CONTACT_POINTS,
) -> mujoco.MjModel:
    """Compiles `build_mjcf(spec, ee, max_contact_points)` into a `mujoco.MjModel`."""
    return mujoco.MjModel.from_xml_string(build_mjcf(spec, ee, max_contact_points))
