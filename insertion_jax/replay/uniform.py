"""A uniform ring buffer on the device, as pure functions over a pytree state.

`make_uniform_buffer(capacity)` returns a `UniformBuffer` of four functions:

  init(example_item) -> BufferState        # storage shaped like the item, x capacity
  add(state, items) -> BufferState         # items with a leading batch axis
  sample(state, key, batch_size) -> items  # uniform over the items stored
  can_sample(state, min_size) -> bool ()

Once full, new items overwrite the oldest (ring order). The functions jit and
vmap (over seeds); pass the state with `donate_argnums` so XLA writes in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct


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
    capacity: int
    init: Callable[[Any], BufferState]
    add: Callable[[BufferState, Any], BufferState]
    sample: Callable[[BufferState, jax.Array, int], Any]
    can_sample: Callable[[BufferState, int], jax.Array]


def init_storage(example_item: Any, capacity: int) -> BufferState:
    """Zero storage for `capacity` items shaped like `example_item` (no batch axis)."""
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_item
    )
    return BufferState(
        data=data, insert_pos=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32)
    )


def write(state: BufferState, items: Any) -> BufferState:
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


def make_uniform_buffer(capacity: int) -> UniformBuffer:
    """A ring buffer of `capacity` items sampled uniformly with replacement."""
    if not (isinstance(capacity, int) and capacity > 0):
        raise ValueError(f'capacity={capacity!r} must be a positive integer.')

    def init(example_item):
        return init_storage(example_item, capacity)

    def can_sample(state: BufferState, min_size: int = 1):
        return state.size >= min_size

    return UniformBuffer(capacity, init, write, sample, can_sample)
