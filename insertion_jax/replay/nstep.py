"""n-step transitions from a chunk of collected steps, computed on the device.

The collector steps E environments K times and returns a time-major trajectory
(K, E). `n_step_transitions` turns it into K * E transitions whose reward is
the discounted sum of the next (up to) n rewards and whose bootstrap state is
the observation after the last of them:

  R_t = sum_{k=0}^{m-1} gamma^k r_{t+k},  discount_t = gamma^m (0 if terminal),
  next_obs_t = s'_{t+m-1},

where m <= n stops early at the end of an episode (time limit or terminal) and
at the end of the chunk. Stopping at the chunk's end keeps collection free of
state carried between iterations; those few transitions use a shorter return,
which is still an unbiased target for Q. With n = 1 this is the ordinary
one-step transition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from insertion_jax.types import Step, Transition, make_transition


def n_step_transitions(
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    terminal: jax.Array,
    last: jax.Array,
    next_obs: jax.Array,
    n: int,
    gamma: float,
) -> Transition:
    """n-step returns along the time axis of a (K, E) trajectory chunk.

    Args:
      obs: (K, E, obs_dim) s_t.
      action: (K, E, A) a_t as the agent chose it.
      reward: (K, E) r_t.
      terminal: (K, E) bool, the episode terminated at step t (no bootstrap).
      last: (K, E) bool, step t ended its episode (terminal or time limit).
      next_obs: (K, E, obs_dim) s'_t, the observation after a_t (before any
        reset), so a time-limit end bootstraps from the true final state.
      n: return length, >= 1 (static).
      gamma: discount per step.

    Returns:
      `Transition` with leaves (K, E, ...).
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f'n={n!r} must be a positive integer.')
    num_steps = reward.shape[0]
    # alive[k] for offset k: steps t..t+k-1 did not end the episode, t+k < K.
    ret = jnp.zeros_like(reward)
    disc = jnp.ones_like(reward)
    alive = jnp.ones_like(reward, dtype=bool)
    end_index = jnp.broadcast_to(jnp.arange(num_steps)[:, None], reward.shape)
    for k in range(n):
        shifted = jnp.arange(num_steps) + k
        in_chunk = (shifted < num_steps)[:, None]
        idx = jnp.minimum(shifted, num_steps - 1)
        use = alive & in_chunk
        ret = ret + jnp.where(use, disc * reward[idx], 0.0)
        disc = jnp.where(use, disc * gamma * (1.0 - terminal[idx]), disc)
        end_index = jnp.where(use, idx[:, None], end_index)
        alive = use & ~last[idx]
    env_index = jnp.arange(reward.shape[1])[None, :]
    return make_transition(
        obs=obs,
        action=action,
        reward=ret,
        discount=disc,
        next_obs=jax.tree.map(lambda x: x[end_index, env_index], next_obs),
    )


def step_transitions(steps: Step, last: jax.Array, n_step: int, discount: float):
    """`n_step_transitions` of a time-major `Step` trajectory (K, E, ...)."""
    return n_step_transitions(
        steps.obs,
        steps.action,
        steps.reward,
        steps.terminal,
        last,
        steps.next_obs,
        n_step,
        discount,
    )


def episode_transitions(
    steps: Step, lengths: jax.Array, n_step: int, discount: float
) -> Transition:
    """n-step transitions of whole episodes.

    Args:
      steps: `Step` leaves (L, E, ...), episode e in steps [0, lengths[e]).
      lengths: (E,) episode lengths.
      n_step, discount: return length and per-step discount.

    Returns:
      `Transition` leaves (L, E, ...); entries at t >= lengths[e] are padding.
    """
    t = jnp.arange(steps.reward.shape[0])[:, None]
    return step_transitions(steps, t >= lengths[None, :] - 1, n_step, discount)


def transition_like(example_step: Step) -> Transition:
    """A zero `Transition` with the shapes and dtypes stored for `example_step`
    (one step, no batch axes)."""
    batched = jax.tree.map(
        lambda x: jnp.zeros((1, 1) + jnp.shape(x), jnp.asarray(x).dtype), example_step
    )
    transitions = episode_transitions(batched, jnp.ones((1,), jnp.int32), 1, 1.0)
    return jax.tree.map(lambda x: x[0, 0], transitions)
