"""One interface over the three replay kinds, as the training loop uses them.

`make_replay(kind, ...)` returns a `Replay` of pure functions:

  init(example_step, demos=None, demo_lengths=None) -> state
  store(state, steps, last, success, key) -> state   # a (K, E) chunk of steps
  sample(state, key, batch_size) -> (batch, info)     # batch.weight: IS weights
  update(state, info, td_error, apply) -> state       # new priorities
  after_updates(state, key) -> state                  # DER zone refreshes
  metrics(state) -> dict of scalars

Kinds:
  'uniform'      the ring buffer; n-step returns per collected chunk
                 (`nstep.n_step_transitions`); update is a no-op.
  'prioritized'  the same storage drawn in proportion to |TD error|^alpha.
  'der'          Dynamic Experience Replay (`der.py`): whole episodes, K
                 buffers with demonstration zones, a success pool.

`update(..., apply)` takes a traced bool: priorities are written only where
it holds (masked scatters, never a select over the storage), so the loop can
compute updates before `learning_starts` and drop them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp

from insertion_jax.replay import der, nstep, prioritized, uniform

REPLAYS = ('uniform', 'prioritized', 'der')


def validate_replay(kind: str) -> str:
    if kind not in REPLAYS:
        raise ValueError(f'Unknown replay {kind!r}; valid replays: {", ".join(REPLAYS)}.')
    return kind


@dataclasses.dataclass(frozen=True)
class Replay:
    kind: str
    init: Callable[..., Any]
    store: Callable[..., Any]
    sample: Callable[..., Any]
    update: Callable[..., Any]
    after_updates: Callable[..., Any]
    metrics: Callable[[Any], Dict[str, jax.Array]]


def _chunk_store(add, n_step, discount):
    """`store` for the transition buffers: a chunk's n-step transitions, flattened."""

    def store(state, steps, last, success, key):
        del success, key
        transitions = nstep.step_transitions(steps, last, n_step, discount)
        return add(state, jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), transitions))

    return store


def _masked_counters(new, old, apply):
    """`new` with its max priority and update count kept from `old` unless `apply`
    (the tree itself was left alone by masked indices)."""
    return new.replace(
        max_priority=jnp.where(apply, new.max_priority, old.max_priority),
        updates=jnp.where(apply, new.updates, old.updates),
    )


def make_replay(
    kind: str,
    capacity: int,
    n_step: int,
    discount: float,
    priority: Optional[prioritized.PrioritizedConfig] = None,
    der_config: Optional[der.DERConfig] = None,
    episode_length: int = 1,
    num_envs: int = 1,
    updates_per_iteration: int = 1,
) -> Replay:
    """The replay of `kind` (see the module docstring).

    Args:
      kind: 'uniform', 'prioritized' or 'der'.
      capacity: transitions per buffer (DER: per each of its K buffers).
      n_step, discount: stored return length and per-step discount.
      priority: prioritized sampling ('prioritized'; DER uses its own); None:
        `PrioritizedConfig()`.
      der_config: DER settings ('der').
      episode_length, num_envs: episode limit and environments ('der').
      updates_per_iteration: bounds the DER refreshes due per iteration.
    """
    validate_replay(kind)
    ignore = lambda state, *args: state  # noqa: E731

    if kind in ('uniform', 'prioritized'):
        if kind == 'uniform':
            buffer = uniform.make_uniform_buffer(capacity)

            def sample(state, key, batch_size):
                return buffer.sample(state, key, batch_size), None

            update = ignore
        else:
            buffer = prioritized.make_prioritized_buffer(
                capacity, **dataclasses.asdict(priority or prioritized.PrioritizedConfig())
            )

            def sample(state, key, batch_size):
                batch, indices, weights = buffer.sample(state, key, batch_size)
                return batch.replace(weight=weights), indices

            def update(state, indices, td_error, apply):
                new = buffer.set_priorities(state, jnp.where(apply, indices, -1), td_error)
                return _masked_counters(new, state, apply)

        return Replay(
            kind=kind,
            init=lambda example_step, *demos: buffer.init(nstep.transition_like(example_step)),
            store=_chunk_store(buffer.add, n_step, discount),
            sample=sample,
            update=update,
            after_updates=ignore,
            metrics=lambda state: {'buffer_size': state.size},
        )

    buffer = der.make_der_buffer(
        der_config or der.DERConfig(), capacity, episode_length, num_envs, n_step, discount
    )
    max_refreshes = updates_per_iteration // buffer.config.refresh_every + 1

    def update(state, info, td_error, apply):
        masked = info.replace(indices=jnp.where(apply, info.indices, -1))
        return _masked_counters(buffer.set_priorities(state, masked, td_error), state, apply)

    return Replay(
        kind=kind,
        init=buffer.init,
        store=buffer.add_chunk,
        sample=buffer.sample,
        update=update,
        after_updates=lambda state, key: buffer.after_updates(state, key, max_refreshes),
        metrics=buffer.metrics,
    )
