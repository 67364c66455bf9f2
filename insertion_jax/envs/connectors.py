"""Connector specifications: the geometry and contact parameters of each task.

A `ConnectorSpec` is a frozen description of one plug/socket pair, in
millimetres and SI units. `scene.build_mjcf` turns it into a MuJoCo model;
nothing else in the simulator knows connector-specific numbers.

Coordinates: the socket's mating face is the plane z = 0, its opening is
centred on the z axis, and the plug is inserted along -z. "Width" is the plug's
extent along x, "thickness" its extent along y.

The three registered connectors follow the residual-RL paper (USB, D-Sub,
Model-E), in that order of difficulty. Their difficulty comes from geometry and
contact alone: clearance, lead-in chamfer, keys and pins that must line up,
and a radial seal whose friction the controller has to push through.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class PinSpec:
    """One contact pin on the plug's mating face.

    Attributes:
      x_mm: pin axis position along x, relative to the plug axis.
      y_mm: pin axis position along y, relative to the plug axis.
    """

    x_mm: float
    y_mm: float


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """A rounded key rib on the plug's +y face and the groove that receives it.

    Attributes:
      x_mm: rib centre along x (off-centre ribs polarize the connector).
      width_mm: rib extent along x (the diameter of its rounded profile).
      protrusion_mm: how far the rib stands out of the plug's +y face.
      groove_clearance_mm: total gap between rib and groove flanks.
      lead_in_mm: radius of the round-topped posts that flank the groove mouth.
    """

    x_mm: float
    width_mm: float
    protrusion_mm: float
    groove_clearance_mm: float
    lead_in_mm: float = 0.6


@dataclasses.dataclass(frozen=True)
class ConnectorSpec:
    """Geometry, contact and success parameters of one insertion task.

    Attributes:
      name: registry name.
      description: one line for humans.
      plug_width_mm: plug body extent along x (the long side, for a trapezoid).
      plug_thickness_mm: plug body extent along y.
      plug_length_mm: plug body extent along z.
      taper_deg: angle of the trapezoid's short sides against the y axis;
        0 gives a rectangle. The plug is narrower at -y (D-Sub shape).
      clearance_mm: total gap between plug body and socket opening, per axis
        (half of it on each side when centred).
      chamfer_mm: leg of the 45 degree lead-in chamfer on the socket rim.
      chamfer_prism: build each chamfer as a convex-mesh triangular prism
        instead of a box turned 45 degrees (`mjcf.wall_with_chamfer`): MJX's
        box-box collider reports phantom contacts between a tilted plug box
        and the turned box's top ridge, where native MuJoCo's do not.
      insertion_depth_mm: travel from the mating face to fully seated.
      success_tolerance_mm: the plug counts as electrically connected when it is
        within this distance of fully seated (and past any keyed section).
      friction_range: (low, high) Coulomb friction coefficient, drawn uniformly
        per episode: parts wear, and lubrication and temperature vary.
      wall_timeconst_s: MuJoCo contact time constant of rigid socket walls.
      seal_interference_mm: radial interference of a rubber seal near the bottom
        of the socket (0 for none). The seal presses on the plug's x faces.
      seal_height_mm: height of the seal (O-ring axis) above the socket floor.
      seal_radius_mm: O-ring cross-section radius; larger is a gentler lead-in.
      seal_timeconst_s: contact time constant of the seal (softer than walls).
      pins: contact pins that must enter holes below the socket floor.
      pin_radius_mm: pin radius (pins are capsules: round tips act as lead-in).
      pin_length_mm: how far the pins stand out of the plug's mating face.
      pin_clearance_mm: total gap between pin and its socket hole, per axis.
      keys: key ribs on the plug and their grooves.
    """

    name: str
    description: str
    plug_width_mm: float
    plug_thickness_mm: float
    plug_length_mm: float
    clearance_mm: float
    chamfer_mm: float
    insertion_depth_mm: float
    success_tolerance_mm: float
    friction_range: Tuple[float, float]
    taper_deg: float = 0.0
    wall_timeconst_s: float = 0.004
    seal_interference_mm: float = 0.0
    seal_height_mm: float = 0.0
    seal_radius_mm: float = 2.0
    seal_timeconst_s: float = 0.02
    pins: Tuple[PinSpec, ...] = ()
    pin_radius_mm: float = 0.5
    pin_length_mm: float = 0.0
    pin_clearance_mm: float = 0.0
    keys: Tuple[KeySpec, ...] = ()
    chamfer_prism: bool = False

    def __post_init__(self):
        positive = (
            'plug_width_mm',
            'plug_thickness_mm',
            'plug_length_mm',
            'clearance_mm',
            'insertion_depth_mm',
            'success_tolerance_mm',
            'wall_timeconst_s',
        )
        for field in positive:
            value = getattr(self, field)
            if not value > 0:
                raise ValueError(f'ConnectorSpec {self.name!r}: {field}={value!r} must be > 0.')
        low, high = self.friction_range
        if not 0 < low <= high:
            raise ValueError(
                f'ConnectorSpec {self.name!r}: friction_range={self.friction_range!r} must satisfy '
                '0 < low <= high.'
            )
        if self.chamfer_mm < 0 or not 0 <= self.taper_deg < 45:
            raise ValueError(
                f'ConnectorSpec {self.name!r}: chamfer_mm={self.chamfer_mm!r} must be >= 0 and '
                f'taper_deg={self.taper_deg!r} in [0, 45).'
            )
        if self.plug_length_mm <= self.insertion_depth_mm:
            raise ValueError(
                f'ConnectorSpec {self.name!r}: plug_length_mm={self.plug_length_mm!r} must exceed '
                f'insertion_depth_mm={self.insertion_depth_mm!r}.'
            )
        if self.pins and not (self.pin_length_mm > 0 and self.pin_clearance_mm > 0):
            raise ValueError(
                f'ConnectorSpec {self.name!r}: pins need pin_length_mm > 0 and pin_clearance_mm > 0.'
            )
        if self.seal_interference_mm > 0 and not 0 < self.seal_height_mm < self.insertion_depth_mm:
            raise ValueError(
                f'ConnectorSpec {self.name!r}: seal_height_mm={self.seal_height_mm!r} must be in '
                f'(0, insertion_depth_mm={self.insertion_depth_mm!r}).'
            )


USB = ConnectorSpec(
    name='usb',
    description='USB-A plug into its receptacle shell: one rectangular body, flared lead-in.',
    plug_width_mm=12.0,
    plug_thickness_mm=4.5,
    plug_length_mm=16.0,
    clearance_mm=0.3,
    chamfer_mm=0.4,
    insertion_depth_mm=10.0,
    success_tolerance_mm=1.0,
    friction_range=(0.25, 0.45),
)

DSUB = ConnectorSpec(
    name='dsub',
    description='D-Sub (DE-9): trapezoidal shell, tight fit, two pins that must find their sockets.',
    plug_width_mm=16.0,
    plug_thickness_mm=6.0,
    plug_length_mm=14.0,
    taper_deg=10.0,
    clearance_mm=0.2,
    # 0.35 mm with the prism chamfers puts the P-controller at about 40% at +-1 mm
    # (0.3 mm: 32%; 0.4 mm: 54%), in the paper's band (44%).
    chamfer_mm=0.35,
    insertion_depth_mm=8.0,
    success_tolerance_mm=1.0,
    friction_range=(0.3, 0.5),
    pins=(PinSpec(x_mm=-5.5, y_mm=1.2), PinSpec(x_mm=5.5, y_mm=1.2)),
    pin_radius_mm=0.5,
    pin_length_mm=4.0,
    pin_clearance_mm=0.3,
    chamfer_prism=True,
)

MODEL_E = ConnectorSpec(
    name='model_e',
    description='Waterproof Model-E housing: an off-centre key rib and a radial seal.',
    plug_width_mm=10.0,
    plug_thickness_mm=8.0,
    plug_length_mm=18.0,
    clearance_mm=0.3,
    chamfer_mm=0.8,
    insertion_depth_mm=12.0,
    success_tolerance_mm=1.0,
    friction_range=(0.2, 0.8),
    seal_interference_mm=0.25,
    seal_timeconst_s=0.012,
    seal_radius_mm=4.0,
    seal_height_mm=4.0,
    keys=(KeySpec(x_mm=2.0, width_mm=1.6, protrusion_mm=1.0, groove_clearance_mm=0.3),),
)

_REGISTRY = {spec.name: spec for spec in (USB, DSUB, MODEL_E)}


def task_names() -> Tuple[str, ...]:
    """Names of the registered connector tasks, easiest first."""
    return tuple(_REGISTRY)


def get_task(name: str) -> ConnectorSpec:
    """Returns the registered `ConnectorSpec` called `name`.

    Raises:
      ValueError: `name` is not registered; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f'Unknown connector task {name!r}; valid tasks: {", ".join(task_names())}.'
        ) from None
