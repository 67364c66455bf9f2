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
