"""The connector tasks' observation layout, in pure JAX (no MJX).

The P-controller (`controllers.py`), the insertion environment and the robot
loop's exported policy all read observations laid out as `OBS_SPEC`; this
module holds the layout alone so that each can import it without the others.

Observation (`OBS_SPEC`, 4 floats):
  ee_pos_rel_goal_mm (3): tool-point position x minus the goal x* the robot
    was told (the perturbed goal under goal noise), in millimetres.
  f_z_n (1): vertical force on the end effector from the F/T sensor, newtons,
    positive when contact pushes the plug up; the sensor bias (the plug's
    weight) is removed at reset.
"""

from __future__ import annotations

from typing import Dict, Tuple

import jax

OBS_SPEC: Tuple[Tuple[str, int], ...] = (('ee_pos_rel_goal_mm', 3), ('f_z_n', 1))
OBS_DIM = sum(size for _, size in OBS_SPEC)
OBS_UNITS = {'ee_pos_rel_goal_mm': 'mm', 'f_z_n': 'N'}
OBS_FIELDS = tuple((name, size, OBS_UNITS[name]) for name, size in OBS_SPEC)


def _obs_slices() -> Dict[str, slice]:
    slices, start = {}, 0
    for name, size in OBS_SPEC:
        slices[name] = slice(start, start + size)
        start += size
    return slices


OBS_SLICES = _obs_slices()


def obs_field(obs: jax.Array, name: str) -> jax.Array:
    """Field `name` of `OBS_SPEC` from observation(s) of shape (..., OBS_DIM).

    Returns an array of shape (..., size of the field).
    """
    if name not in OBS_SLICES:
        raise ValueError(f'Unknown observation field {name!r}; fields: {", ".join(OBS_SLICES)}.')
    return obs[..., OBS_SLICES[name]]
