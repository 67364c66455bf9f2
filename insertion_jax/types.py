"""Types that envs, agents, replay and training share.

They sit at the bottom of the package: this module imports only jax and flax,
so `replay/` and `agents/` can both use a `Transition` without importing each
other.
"""

from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
from flax import struct

Params = Any
Metrics = Dict[str, jax.Array]

# ------------------------------------------------------------ observations
# An observation is a float32 vector (obs_dim,) or, when a camera is on, a
# dict of named parts:
#   'image'       uint8 (R, R, F): the last F grayscale frames, oldest first;
#   'state'       float32 (obs_dim,): the state vector the policy also sees;
#   'controller'  float32 (obs_dim,): what the hand-designed controller reads
#                 (the state vector) when the policy must not see it.
# The networks read 'image' and 'state'; the P-controller reads 'controller'
# or else 'state'; the normalizer scales 'state' only.
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


@struct.dataclass
class Step:
    """One-step experience as collected (any leading axes).

    Attributes:
      obs: (..., obs_dim) observation s_t.
      action: (..., A) the agent's own action in [-1, 1] (u_RL under residual RL).
      reward: (...,) r_t.
      terminal: (...,) bool: no bootstrap after this step.
      next_obs: (..., obs_dim) observation s_{t+1}.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    next_obs: jax.Array


@struct.dataclass
class Transition:
    """A batch of (possibly n-step) transitions; leading axis B (or none).

    Attributes:
      obs: (B, obs_dim) observation s_t.
      action: (B, A) the agent's own action in [-1, 1] (under residual RL the
        RL part u_RL only, never the executed sum).
      reward: (B,) return over the n steps, sum_k gamma^k r_{t+k}.
      discount: (B,) multiplier of the bootstrap value: gamma^n, or 0 when the
        episode terminated inside the n steps (a time-limit end bootstraps).
      next_obs: (B, obs_dim) observation s_{t+n} to bootstrap from.
      is_demo: (B,) 1.0 for demonstration samples (behaviour cloning), else 0.
      weight: (B,) per-sample loss weight (importance weights of prioritized
        replay; 1.0 for uniform replay).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array
    is_demo: jax.Array
    weight: jax.Array


def make_transition(obs, action, reward, discount, next_obs, is_demo=None, weight=None):
    """Builds a `Transition`, filling `is_demo` with 0 and `weight` with 1 when omitted."""
    ones = jnp.ones(jnp.shape(reward), jnp.float32)
    return Transition(
        obs=obs,
        action=action,
        reward=reward,
        discount=discount,
        next_obs=next_obs,
        is_demo=jnp.zeros_like(ones) if is_demo is None else is_demo,
        weight=ones if weight is None else weight,
    )
