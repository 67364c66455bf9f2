"""Prioritized experience replay (Schaul et al. 2016) on the device.

`make_prioritized_buffer(capacity, config)` binds the module's pure functions
over a `PrioritizedState` pytree into a `PrioritizedBuffer`:

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

`make_replay(PrioritizedConfig(...), spec)` is the prioritized replay of the
training loop (`base.Replay`), storing n-step transitions the same way as the
uniform one (`base.add_transitions`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks, types
from insertion_jax.replay import base, nstep, sumtree, uniform


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
    """The module's functions bound to one capacity and config (module docstring)."""

    capacity: int
    config: PrioritizedConfig
    init: Callable[[Any], PrioritizedState]
    add: Callable[[PrioritizedState, Any], PrioritizedState]
    sample: Callable[..., Tuple[Any, jax.Array, jax.Array]]
    set_priorities: Callable[[PrioritizedState, jax.Array, jax.Array], PrioritizedState]
    can_sample: Callable[..., jax.Array]


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


def init(capacity: int, example_item: Any) -> PrioritizedState:
    """An empty buffer of `capacity` items shaped like `example_item` (no batch axis)."""
    return PrioritizedState(
        storage=uniform.init(capacity, example_item),
        tree=sumtree.init(capacity)[0],
        max_priority=jnp.ones((), jnp.float32),
        updates=jnp.zeros((), jnp.int32),
    )


def add(config: PrioritizedConfig, state: PrioritizedState, items: Any) -> PrioritizedState:
    """Writes items (leading axis n <= capacity) at the ring cursor, each at the
    maximum priority so far."""
    n = jax.tree.leaves(items)[0].shape[0]
    slots = (state.storage.insert_pos + jnp.arange(n)) % state.storage.capacity
    storage = uniform.add(state.storage, items)
    tree = sumtree.update(
        state.tree[None],
        jnp.zeros((n,), jnp.int32),
        slots,
        jnp.full((n,), state.max_priority**config.alpha),
        unique=True,
    )[0]
    return state.replace(storage=storage, tree=tree)


def sample(
    config: PrioritizedConfig,
    state: PrioritizedState,
    key: jax.Array,
    batch_size: int,
    beta: Optional[jax.Array] = None,
) -> Tuple[Any, jax.Array, jax.Array]:
    """`batch_size` items drawn in proportion to p^alpha.

    Returns (items (batch_size, ...), indices (batch_size,) int32, importance
    weights (batch_size,)); `beta` defaults to the annealed one.
    """
    indices, probs = draw(
        state.tree[None], jnp.zeros((), jnp.int32), key, batch_size, config.stratified
    )
    beta = config.beta_at(state.updates) if beta is None else beta
    weights = importance_weights(probs, state.size, beta)
    return uniform.gather(state.storage, indices), indices, weights


def set_priorities(
    config: PrioritizedConfig,
    state: PrioritizedState,
    indices: jax.Array,
    priorities: jax.Array,
) -> PrioritizedState:
    """Priorities (n,) of the items at `indices` (n,) (negative: skipped); one update."""
    p = leaf_priority(priorities, state.max_priority, config.eps)
    tree = sumtree.update(state.tree[None], jnp.zeros_like(indices), indices, p**config.alpha)[0]
    return state.replace(
        tree=tree,
        max_priority=jnp.maximum(state.max_priority, jnp.max(p)),
        updates=state.updates + 1,
    )


def make_prioritized_buffer(
    capacity: int, config: Optional[PrioritizedConfig] = None
) -> PrioritizedBuffer:
    """A prioritized ring buffer of `capacity` items (see the module docstring).

    Args:
      capacity: items stored; once full, new items overwrite the oldest.
      config: sampling settings (None: `PrioritizedConfig()`).
    """
    checks.positive_int('make_prioritized_buffer', capacity=capacity)
    config = PrioritizedConfig() if config is None else config
    return PrioritizedBuffer(
        capacity=capacity,
        config=config,
        init=functools.partial(init, capacity),
        add=functools.partial(add, config),
        sample=functools.partial(sample, config),
        set_priorities=functools.partial(set_priorities, config),
        can_sample=uniform.can_sample,
    )


# ---------------------------------------------------------------- replay
def replay_init(capacity: int, example_step: types.Step, demos: Optional[Any] = None):
    """`Replay.init`: an empty buffer of `capacity` n-step transitions of `example_step`."""
    if demos is not None:
        raise ValueError(
            'Prioritized replay takes no demonstrations (LfD mixes them in: mixed.py).'
        )
    return init(capacity, nstep.transition_like(example_step))


def replay_sample(
    config: PrioritizedConfig, state: PrioritizedState, key: jax.Array, batch_size: int
) -> Tuple[types.Transition, jax.Array]:
    """`Replay.sample`: a batch with its importance weights in `weight`, and its slots."""
    batch, indices, weights = sample(config, state, key, batch_size)
    return batch.replace(weight=weights), indices


def replay_set_priorities(
    config: PrioritizedConfig,
    state: PrioritizedState,
    indices: jax.Array,
    td_error: jax.Array,
    apply: jax.Array,
) -> PrioritizedState:
    """`Replay.set_priorities`: |TD| priorities written only where `apply` holds
    (masked indices; the counters kept otherwise)."""
    new = set_priorities(config, state, jnp.where(apply, indices, -1), td_error)
    return base.masked_counters(new, state, apply)


def validate(config: PrioritizedConfig, spec: base.ReplaySpec) -> None:
    """Nothing to check beyond the configs' own checks."""
    del config, spec


def make_replay(config: PrioritizedConfig, spec: base.ReplaySpec) -> base.Replay:
    """Prioritized replay of `spec.capacity` n-step transitions (`base.Replay`)."""
    checks.positive_int('make_replay', capacity=spec.capacity)
    return base.Replay(
        config=config,
        takes_demonstrations=False,
        init=functools.partial(replay_init, spec.capacity),
        add=functools.partial(
            base.add_transitions, functools.partial(add, config), spec.n_step, spec.discount
        ),
        sample=functools.partial(replay_sample, config),
        set_priorities=functools.partial(replay_set_priorities, config),
        after_updates=base.keep_state,
        metrics=uniform.size_metrics,
    )
