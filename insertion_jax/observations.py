"""The observation layout that envs, agents, replay and the exported policy share.

An observation is a float32 vector (obs_dim,) or, when a camera is on, a
dict of named parts:
  'image'       uint8 (R, R, F): the last F grayscale frames, oldest first;
  'state'       float32 (obs_dim,): the state vector the policy also sees;
  'controller'  float32 (obs_dim,): what the hand-designed controller reads
                (the state vector) when the policy must not see it.
The networks read 'image' and 'state'; the P-controller reads 'controller'
or else 'state'; the normalizer scales 'state' only.

This module imports only jax, so the P-controller and the exported policy
read observations without the training stack.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

IMAGE = 'image'
STATE = 'state'
CONTROLLER = 'controller'
OBS_TYPES = ('state', 'image', 'state+image')


def observation_parts(obs_type: str) -> tuple:
    """The dict keys of an observation of `obs_type` (empty for 'state', a
    plain vector); raises ValueError for an unknown type."""
    if obs_type not in OBS_TYPES:
        raise ValueError(
            f'Unknown observation type {obs_type!r}; valid types: {", ".join(OBS_TYPES)}.'
        )
    return {'state': (), 'image': (IMAGE, CONTROLLER), 'state+image': (IMAGE, STATE)}[obs_type]


def make_observation(obs_type: str, vector: Any, image: Any = None) -> Any:
    """The observation of `obs_type` from its state vector and image (arrays
    or their specs): the vector alone for 'state' (the image is not read),
    else the dict of `observation_parts(obs_type)`."""
    parts = observation_parts(obs_type)
    if not parts:
        return vector
    return {part: image if part == IMAGE else vector for part in parts}


def has_image(obs: Any) -> bool:
    """Whether an observation (or its spec) holds an image."""
    return isinstance(obs, dict) and IMAGE in obs


def state_vector(obs: Any) -> jax.Array:
    """The state vector (..., obs_dim) inside any observation: the vector itself,
    else its 'controller' or 'state' part (what a hand-designed controller reads)."""
    if not isinstance(obs, dict):
        return obs
    return obs[CONTROLLER] if CONTROLLER in obs else obs[STATE]


def zeros_like_spec(spec: Any) -> Any:
    """Zeros shaped like a (pytree of) `jax.ShapeDtypeStruct`."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec)
