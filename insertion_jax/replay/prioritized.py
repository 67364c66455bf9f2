"""Prioritized experience replay (Schaul et al. 2016) on the device.

`make_prioritized_buffer(capacity, alpha, beta, ...)` returns a
`PrioritizedBuffer` of pure functions over a `PrioritizedState` pytree:

  init(example_item) -> state
  add(state, items) -> state              # new items get the maximum priority so far
  sample(state, key, batch_size, beta=None) -> (items, indices, importance_weights)
  set_priorities(state, indices, priorities) -> state
  can_sample(state, min_size) -> bool ()

Item i is drawn with probability P(i) = p_i^alpha / sum_j p_j^alpha, where
p_i = priority_i + eps (so nothing stored is ever impossible to draw). The
importance weights are w_i = (N P(i))^-beta divided by the largest weight of
the batch (N: items stored), with beta annealed linearly from `beta` to
`beta_final` over `beta_steps` calls of `set_priorities` (one per gradient
update). Sampling is stratified by default: the total mass is cut into
`batch_size` equal segments and one point is drawn in each, which keeps
every draw's marginal distribution P and lowers the variance of a batch.

Priorities live in a float32 sum tree (`sumtree.py`) updated without drift.
Non-finite priorities (a NaN TD error) are replaced by the maximum priority
so far, so one bad update cannot poison the tree. With duplicate indices in
one `set_priorities` call, the largest priority wins (deterministic on every
backend; a batch that draws an item twice gives it the same TD error anyway).

Everything jits and vmaps (over seeds); pass the state with `donate_argnums`
so XLA updates the storage in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks
from insertion_jax.replay import sumtree, uniform


@struct.dataclass
class PrioritizedState:
    """Storage, priorities and counters of a prioritized buffer.

    Attributes:
      storage: the ring buffer of items (`uniform.BufferState`).
      tree: (2P,) sum tree of p_i^alpha per slot (0 for empty slots); the sum
        tree functions see it as one row, `tree[None]`. (A stored row axis of
        size 1 made XLA copy the tree on every update under `vmap`, to change
        the layout of that axis.)
      max_priority: float32 (), the largest p_i so far (1 at the start).
      updates: int32 (), `set_priorities` calls so far (drives beta).
    """

    storage: uniform.BufferState
    tree: jax.Array
    max_priority: jax.Array
    updates: jax.Array

    @property
    def size(self) -> jax.Array:
        return self.storage.size


@dataclasses.dataclass(frozen=True)
class PrioritizedConfig:
    """Hyperparameters of prioritized sampling (see the module docstring).

    Attributes:
      alpha: priority exponent (0: uniform).
      beta: importance-sampling exponent at the start.
      beta_final: beta after `beta_steps` updates.
      beta_steps: annealing length in `set_priorities` calls (0: constant beta).
      eps: added to every priority.
      stratified: stratified (True) or independent draws.
    """

    alpha: float = 0.6
    beta: float = 0.4
    beta_final: float = 1.0
    beta_steps: int = 0
    eps: float = 1e-6
    stratified: bool = True

    def __post_init__(self):
        owner = type(self).__name__
        checks.unit_interval(owner, alpha=self.alpha, beta=self.beta, beta_final=self.beta_final)
        checks.positive(owner, eps=self.eps)
        if not (isinstance(self.beta_steps, int) and self.beta_steps >= 0):
            raise ValueError(f'{owner}.beta_steps={self.beta_steps!r} must be an int >= 0.')

    def beta_at(self, updates: jax.Array) -> jax.Array:
        """beta moved linearly to beta_final over beta_steps updates (constant if 0)."""
        if self.beta_steps <= 0:
            return jnp.asarray(self.beta, jnp.float32)
        frac = jnp.minimum(updates.astype(jnp.float32) / self.beta_steps, 1.0)
        return self.beta + (self.beta_final - self.beta) * frac


@dataclasses.dataclass(frozen=True)
class PrioritizedBuffer:
    capacity: int
    config: PrioritizedConfig
    init: Callable[[Any], PrioritizedState]
    add: Callable[[PrioritizedState, Any], PrioritizedState]
    sample: Callable[..., Tuple[Any, jax.Array, jax.Array]]
    set_priorities: Callable[[PrioritizedState, jax.Array, jax.Array], PrioritizedState]
    can_sample: Callable[[PrioritizedState, int], jax.Array]

    def beta_at(self, updates: jax.Array) -> jax.Array:
        """The annealed beta after `updates` calls of `set_priorities`."""
        return self.config.beta_at(updates)


def draw(
    tree: jax.Array,
    rows: jax.Array,
    key: jax.Array,
    batch_size: int,
    stratified: bool,
) -> Tuple[jax.Array, jax.Array]:
    """Slots drawn in proportion to the leaves of `tree[rows]` and their probabilities.

    Args:
      tree: (R, 2P) sum trees.
      rows: int (), the tree to draw from.
      key: PRNG key.
      batch_size: number of draws (static).
      stratified: one draw per equal segment of the total mass.

    Returns:
      (indices (batch_size,) int32, probabilities (batch_size,)); probabilities
      are 0 when the tree is empty.
    """
    rows = jnp.broadcast_to(rows, (batch_size,))
    u = jax.random.uniform(key, (batch_size,))
    if stratified:
        u = (jnp.arange(batch_size) + u) / batch_size
    indices, probs = sumtree.sample(tree, rows, u)
    return indices, probs


def importance_weights(probs: jax.Array, size: jax.Array, beta: jax.Array) -> jax.Array:
    """(N P(i))^-beta over its batch maximum; 1 where P(i) is 0 (empty buffer)."""
    safe = jnp.where(probs > 0, probs, 1.0)
    log_w = -beta * jnp.log(jnp.maximum(size, 1).astype(jnp.float32) * safe)
    log_w = jnp.where(probs > 0, log_w, -jnp.inf)
    w = jnp.exp(log_w - jnp.max(log_w))
    return jnp.where(probs > 0, w, 1.0)


def leaf_priority(priorities: jax.Array, max_priority: jax.Array, eps: float) -> jax.Array:
    """|priority| + eps, with non-finite values replaced by `max_priority`."""
    p = jnp.abs(priorities) + eps
    return jnp.where(jnp.isfinite(p), p, max_priority)


def make_prioritized_buffer(
    capacity: int,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-6,
    beta_final: float = 1.0,
    beta_steps: int = 0,
    stratified: bool = True,
) -> PrioritizedBuffer:
    """A prioritized ring buffer of `capacity` items (see the module docstring).

    Args:
      capacity: items stored; once full, new items overwrite the oldest.
      alpha, beta, eps, beta_final, beta_steps, stratified: see `PrioritizedConfig`.
    """
    checks.positive_int('make_prioritized_buffer', capacity=capacity)
    config = PrioritizedConfig(
        alpha=alpha,
        beta=beta,
        beta_final=beta_final,
        beta_steps=beta_steps,
        eps=eps,
        stratified=stratified,
    )

    def init(example_item):
        return PrioritizedState(
            storage=uniform.init_storage(example_item, capacity),
            tree=sumtree.init(capacity)[0],
            max_priority=jnp.ones((), jnp.float32),
            updates=jnp.zeros((), jnp.int32),
        )

    def add(state: PrioritizedState, items):
        n = jax.tree.leaves(items)[0].shape[0]
        slots = (state.storage.insert_pos + jnp.arange(n)) % capacity
        storage = uniform.write(state.storage, items)
        tree = sumtree.update(
            state.tree[None],
            jnp.zeros((n,), jnp.int32),
            slots,
            jnp.full((n,), state.max_priority**alpha),
            unique=True,
        )[0]
        return state.replace(storage=storage, tree=tree)

    def sample(state: PrioritizedState, key: jax.Array, batch_size: int, beta=None):
        indices, probs = draw(
            state.tree[None], jnp.zeros((), jnp.int32), key, batch_size, stratified
        )
        beta = config.beta_at(state.updates) if beta is None else beta
        weights = importance_weights(probs, state.size, beta)
        return uniform.gather(state.storage, indices), indices, weights

    def set_priorities(state: PrioritizedState, indices: jax.Array, priorities: jax.Array):
        p = leaf_priority(priorities, state.max_priority, eps)
        tree = sumtree.update(state.tree[None], jnp.zeros_like(indices), indices, p**alpha)[0]
        return state.replace(
            tree=tree,
            max_priority=jnp.maximum(state.max_priority, jnp.max(p)),
            updates=state.updates + 1,
        )

    def can_sample(state: PrioritizedState, min_size: int = 1):
        return state.size >= min_size

    return PrioritizedBuffer(
        capacity=capacity,
        config=config,
        init=init,
        add=add,
        sample=sample,
        set_priorities=set_priorities,
        can_sample=can_sample,
    )
