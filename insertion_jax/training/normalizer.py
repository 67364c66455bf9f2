"""Observation normalization kept in the training state.

Two kinds, one pytree (`ObsNormalizer`):
  * 'fixed': divide each field by the environment's typical magnitude
    (`insertion.OBS_SCALE`); nothing to learn, identical across seeds.
  * 'running': a running mean/std over every observation collected (Chan et
    al.'s parallel update), as Ape-X DDPG's observation filter. Until the first
    update it falls back to the fixed scale.
Observations are stored raw in the replay buffer and normalized when used, so
the statistics can move without rewriting the buffer.

The pytree and `normalize` live in `insertion_jax.agents.policy` (the
inference policy applies them without the training stack); this module keeps
what training does with them, `init_normalizer` and `update`, and re-exports
the rest.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from insertion_jax import observations
from insertion_jax.agents.policy import CLIP, MIN_STD, ObsNormalizer, normalize

NORMALIZERS = ('fixed', 'running')

__all__ = [
    'CLIP',
    'MIN_STD',
    'NORMALIZERS',
    'ObsNormalizer',
    'init_normalizer',
    'normalize',
    'update',
]


def init_normalizer(kind: str, scale: jax.Array) -> ObsNormalizer:
    """Normalizer of `kind` ('fixed' or 'running') with prior scale `scale` (obs_dim,)."""
    if kind not in NORMALIZERS:
        raise ValueError(f'Unknown obs normalizer {kind!r}; valid kinds: {", ".join(NORMALIZERS)}.')
    scale = jnp.asarray(scale, jnp.float32)
    return ObsNormalizer(
        mean=jnp.zeros_like(scale),
        var=scale**2,
        count=jnp.zeros((), jnp.float32),
        running=kind == 'running',
    )


def update(norm: ObsNormalizer, obs: Any) -> ObsNormalizer:
    """Merges a batch of observations (..., obs_dim) into the running statistics
    (of the policy's state vector; an image-only observation has none)."""
    if not norm.running:
        return norm
    if isinstance(obs, dict):
        if observations.STATE not in obs:
            return norm
        obs = obs[observations.STATE]
    obs = obs.reshape(-1, obs.shape[-1])
    n = jnp.asarray(obs.shape[0], jnp.float32)
    batch_mean = jnp.mean(obs, axis=0)
    batch_var = jnp.var(obs, axis=0)
    total = norm.count + n
    delta = batch_mean - norm.mean
    mean = norm.mean + delta * n / total
    m2 = norm.var * norm.count + batch_var * n + delta**2 * norm.count * n / total
    # The first update replaces the prior entirely (count 0 gives it no weight).
    return norm.replace(mean=mean, var=m2 / total, count=total)
