"""The replay interface the training loop uses, whatever the kind of replay.

A `Replay` is a frozen dataclass of pure functions built from static
configuration (`registry.make_replay(config, spec)`):

  init(example_step, demos=None) -> state
  add(state, steps, last, success, key) -> state      # a (K, E) chunk of steps
  sample(state, key, batch_size) -> (batch, info)     # batch.weight: importance weights
  set_priorities(state, info, td_error, apply) -> state
  after_updates(state, key) -> state                  # DER zone refreshes
  metrics(state) -> dict of scalars

`set_priorities` takes the |TD errors| of the whole batch and a traced bool
`apply`: priorities are written only where it holds (masked scatters, never a
select over the storage), so the loop can compute updates before
`learning_starts` and drop them without copying the buffers.

Every function jits and vmaps over seeds; pass the state with
`donate_argnums` so XLA updates the storage in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp

from insertion_jax import checks, types
from insertion_jax.replay import nstep


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """What a training run tells its replay.

    Attributes:
      capacity: transitions per buffer (DER: per each of its K buffers).
      n_step: return length of the stored transitions.
      discount: per-step discount of the n-step returns.
      episode_length: the environment's horizon (DER's episode slots).
      num_envs: environments stepped in parallel per seed.
      updates_per_iteration: gradient updates per iteration (bounds the DER
        zone refreshes that can come due at once).
    """

    capacity: int
    n_step: int
    discount: float
    episode_length: int
    num_envs: int
    updates_per_iteration: int

    def __post_init__(self):
        checks.positive_int(
            'ReplaySpec',
            capacity=self.capacity,
            n_step=self.n_step,
            episode_length=self.episode_length,
            num_envs=self.num_envs,
            updates_per_iteration=self.updates_per_iteration,
        )
        checks.unit_interval('ReplaySpec', discount=self.discount)


@dataclasses.dataclass(frozen=True)
class Replay:
    """A replay as the training loop uses it (see the module docstring).

    Attributes:
      config: the replay's own config object (`UniformConfig`,
        `PrioritizedConfig` or `DERConfig`; a mixed replay has its inner one).
      takes_demonstrations: `init` places demonstrations (DER with a structure
        other than 'none'; the mixed replay of LfD).
      init: `(example_step: types.Step, demos: Optional[Demonstrations]) -> state`.
      add: `(state, steps: Step leaves (K, E, ...), last (K, E) bool,
        success (K, E) bool, key) -> state`.
      sample: `(state, key, batch_size) -> (types.Transition (batch_size, ...), info)`,
        `weight` the importance weights (1 for uniform draws).
      set_priorities: `(state, info, td_error (batch_size,), apply () bool) -> state`.
      after_updates: `(state, key) -> state` (zone refreshes; identity otherwise).
      metrics: `state -> dict of scalar arrays`.
    """

    config: Any
    takes_demonstrations: bool
    init: Callable[..., Any]
    add: Callable[..., Any]
    sample: Callable[..., Any]
    set_priorities: Callable[..., Any]
    after_updates: Callable[..., Any]
    metrics: Callable[[Any], Dict[str, jax.Array]]


def add_transitions(
    add: Callable[[Any, types.Transition], Any],
    n_step: int,
    discount: float,
    state: Any,
    steps: types.Step,
    last: jax.Array,
    success: jax.Array,
    key: jax.Array,
) -> Any:
    """`Replay.add` of a transition buffer: the chunk's n-step transitions, flattened.

    Args:
      add: the buffer's `add(state, items)`, items with a leading axis K * E.
      n_step, discount: return length and per-step discount.
      state: the buffer's state.
      steps: `types.Step` leaves (K, E, ...), time-major.
      last: (K, E) bool, the step ended its episode.
      success, key: unused (the episode buffers need them).
    """
    del success, key
    transitions = nstep.step_transitions(steps, last, n_step, discount)
    return add(state, jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), transitions))


def keep_state(state: Any, *args: Any) -> Any:
    """`set_priorities` / `after_updates` of a replay that has nothing to update."""
    del args
    return state


def masked_counters(new: Any, old: Any, apply: jax.Array) -> Any:
    """`new` with its `max_priority` and `updates` kept from `old` unless `apply`
    (the sum tree itself was left alone by masked indices)."""
    return new.replace(
        max_priority=jnp.where(apply, new.max_priority, old.max_priority),
        updates=jnp.where(apply, new.updates, old.updates),
    )
