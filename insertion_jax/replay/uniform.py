"""A uniform ring buffer on the device, as pure functions over a pytree state.

`make_uniform_buffer(capacity)` binds the module's functions into a
`UniformBuffer`:

  init(example_item) -> BufferState        # storage shaped like the item, x capacity
  add(state, items) -> BufferState         # items with a leading batch axis
  sample(state, key, batch_size) -> items  # uniform over the items stored
  can_sample(state, min_size) -> bool ()

Once full, new items overwrite the oldest (ring order). The functions jit and
vmap (over seeds); pass the state with `donate_argnums` so XLA writes in place.

`make_replay(UniformConfig(), spec)` is the uniform replay of the training
loop (`base.Replay`): n-step transitions of each collected chunk, drawn
uniformly, importance weights 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks, types
from insertion_jax.replay import base, nstep


@dataclasses.dataclass(frozen=True)
class UniformConfig:
    """Uniform replay has no settings beyond the run's `base.ReplaySpec`."""


@struct.dataclass
class BufferState:
    """Storage and cursor of a ring buffer.

    Attributes:
      data: pytree like the item, each leaf with a leading axis `capacity`.
      insert_pos: int32 (), the slot the next item goes into.
      size: int32 (), items stored (at most capacity).
    """

    data: Any
    insert_pos: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


@dataclasses.dataclass(frozen=True)
class UniformBuffer:
    """The module's functions bound to one capacity (see the module docstring)."""

    capacity: int
    init: Callable[[Any], BufferState]
    add: Callable[[BufferState, Any], BufferState]
    sample: Callable[[BufferState, jax.Array, int], Any]
    can_sample: Callable[..., jax.Array]


def init(capacity: int, example_item: Any) -> BufferState:
    """Zero storage for `capacity` items shaped like `example_item` (no batch axis)."""
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_item
    )
    return BufferState(
        data=data, insert_pos=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32)
    )


def add(state: BufferState, items: Any) -> BufferState:
    """Writes a batch of items (leading axis n <= capacity) at the ring cursor."""
    capacity = state.capacity
    n = jax.tree.leaves(items)[0].shape[0]
    if n > capacity:
        raise ValueError(f'Cannot add {n} items at once to a buffer of capacity {capacity}.')
    check_items(items, state.data, n)
    slots = (state.insert_pos + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda s, x: s.at[slots].set(x.astype(s.dtype)), state.data, items)
    return state.replace(
        data=data,
        insert_pos=(state.insert_pos + n) % capacity,
        size=jnp.minimum(state.size + n, capacity),
    )


def check_items(items: Any, storage: Any, n: int) -> None:
    """Raises ValueError unless `items` is a batch of n items shaped like the storage's."""
    if jax.tree.structure(items) != jax.tree.structure(storage):
        raise ValueError(
            f'Items have structure {jax.tree.structure(items)}, the buffer stores '
            f'{jax.tree.structure(storage)}.'
        )
    for path, x, s in zip(
        jax.tree_util.tree_leaves_with_path(items),
        jax.tree.leaves(items),
        jax.tree.leaves(storage),
        strict=True,
    ):
        if x.shape != (n,) + s.shape[1:]:
            raise ValueError(
                f'Item field {jax.tree_util.keystr(path[0])} has shape {x.shape}; '
                f'expected {(n,) + s.shape[1:]} (batch of {n}).'
            )


def gather(state: BufferState, indices: jax.Array) -> Any:
    """Items at `indices` (any shape), each leaf (*indices.shape, ...)."""
    return jax.tree.map(lambda s: s[indices], state.data)


def sample(state: BufferState, key: jax.Array, batch_size: int) -> Any:
    """`batch_size` items drawn uniformly with replacement from those stored.

    With nothing stored this returns the zero-filled slot 0; callers gate
    learning on `can_sample`.
    """
    indices = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return gather(state, indices)


def can_sample(state: BufferState, min_size: int = 1) -> jax.Array:
    """bool (): at least `min_size` items are stored."""
    return state.size >= min_size


def make_uniform_buffer(capacity: int) -> UniformBuffer:
    """A ring buffer of `capacity` items sampled uniformly with replacement."""
    if not (isinstance(capacity, int) and capacity > 0):
        raise ValueError(f'capacity={capacity!r} must be a positive integer.')
    return UniformBuffer(
        capacity=capacity,
        init=functools.partial(init, capacity),
        add=add,
        sample=sample,
        can_sample=can_sample,
    )


# ---------------------------------------------------------------- replay
def replay_init(capacity: int, example_step: types.Step, demos: Optional[Any] = None):
    """`Replay.init`: an empty buffer of `capacity` n-step transitions of `example_step`."""
    if demos is not None:
        raise ValueError('Uniform replay takes no demonstrations (LfD mixes them in: mixed.py).')
    return init(capacity, nstep.transition_like(example_step))


def replay_sample(
    state: BufferState, key: jax.Array, batch_size: int
) -> Tuple[types.Transition, None]:
    """`Replay.sample`: a uniform batch (weight 1, as stored) and no sample info."""
    return sample(state, key, batch_size), None


def size_metrics(state: Any) -> dict:
    """`Replay.metrics` of a transition buffer: the items stored."""
    return {'buffer_size': state.size}


def validate(config: UniformConfig, spec: base.ReplaySpec) -> None:
    """Nothing to check beyond `base.ReplaySpec`'s own checks."""
    del config, spec


def make_replay(config: UniformConfig, spec: base.ReplaySpec) -> base.Replay:
    """The uniform replay of `spec.capacity` n-step transitions (`base.Replay`)."""
    checks.positive_int('make_replay', capacity=spec.capacity)
    return base.Replay(
        config=config,
        takes_demonstrations=False,
        init=functools.partial(replay_init, spec.capacity),
        add=functools.partial(base.add_transitions, add, spec.n_step, spec.discount),
        sample=replay_sample,
        set_priorities=base.keep_state,
        after_updates=base.keep_state,
        metrics=size_metrics,
    )
