"""Behaviour-cloning loss on demonstration samples (RL + LfD).

The residual-RL paper's "RL + LfD" adds this loss to the TD3 actor loss, as
Nair et al. (2018) did for DDPG: the actor is pulled toward the demonstrator's
action on the demonstration samples of each batch. With the Q-filter the pull
applies only where the critic rates the demonstrated action above the actor's
own, Q(s, a_demo) > Q(s, pi(s)), so a policy that has surpassed a suboptimal
demonstrator is not dragged back to it.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp


def bc_loss(
    policy_action: jax.Array,
    demo_action: jax.Array,
    is_demo: jax.Array,
    q_policy: Optional[jax.Array] = None,
    q_demo: Optional[jax.Array] = None,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Squared error to the demonstrated actions, averaged over demonstration samples.

    Args:
      policy_action: (B, A) pi(s) (gradients flow into it).
      demo_action: (B, A) the action stored with the sample.
      is_demo: (B,) 1.0 on demonstration samples, 0.0 on the agent's own.
      q_policy, q_demo: (B,) Q(s, pi(s)) and Q(s, a_demo); when both are given
        the Q-filter keeps only the samples where q_demo > q_policy.

    Returns:
      (loss, aux): loss = sum_b m_b |pi(s_b) - a_b|^2 / max(1, sum_b is_demo_b)
      with m the (filtered) demo mask; aux 'bc_mse' (the same loss) and
      'q_filter_pass' (fraction of demo samples that pass the filter, 1.0
      without the filter).
    """
    mask = is_demo
    if (q_policy is None) != (q_demo is None):
        raise ValueError('bc_loss: pass both q_policy and q_demo for the Q-filter, or neither.')
    if q_policy is not None:
        passes = jax.lax.stop_gradient(q_demo > q_policy).astype(mask.dtype)
        mask = mask * passes
    num_demo = jnp.maximum(jnp.sum(is_demo), 1.0)
    squared_error = jnp.sum((policy_action - jax.lax.stop_gradient(demo_action)) ** 2, axis=-1)
    loss = jnp.sum(mask * squared_error) / num_demo
    return loss, {'bc_mse': loss, 'q_filter_pass': jnp.sum(mask) / num_demo}


def add_bc_loss(
    loss: jax.Array,
    aux: Dict[str, jax.Array],
    policy_action: jax.Array,
    batch,
    bc_weight: float,
    q_value: Optional[Callable[[jax.Array], jax.Array]] = None,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """An actor loss plus `bc_weight` times `bc_loss` on the batch's demo samples.

    Args:
      loss, aux: the actor's own loss and metrics.
      policy_action: (B, A) the actor's action on `batch.obs`.
      batch: a `Transition` (its action, is_demo and obs).
      bc_weight: weight of the BC term; 0 returns (loss, aux) unchanged.
      q_value: `actions (B, A) -> Q (B,)` on `batch.obs`, the critic reading
        the Q-filter compares; None turns the filter off.
    """
    if bc_weight <= 0:
        return loss, aux
    q_terms = {}
    if q_value is not None:
        q_terms = {'q_policy': q_value(policy_action), 'q_demo': q_value(batch.action)}
    loss_bc, aux_bc = bc_loss(policy_action, batch.action, batch.is_demo, **q_terms)
    return loss + bc_weight * loss_bc, {**aux, **aux_bc}
