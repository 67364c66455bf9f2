"""Sum trees on the device: O(log n) proportional sampling and priority updates.

A tree over `capacity` leaves is one float32 array of length 2P, P the
smallest power of two >= capacity: the root is at index 1, node i has the
children 2i and 2i + 1, and leaf j sits at P + j (index 0 is unused). Several
trees of the same capacity are stacked as rows of a (R, 2P) array, so that a
batch of R buffers (DER's K buffers) is one array and a query names its row.

Numerical robustness. A float32 sum tree that is updated by adding the
change of a leaf to each ancestor (`node += new - old`) accumulates a
rounding error per update; after millions of updates internal sums drift
from the sums of their leaves, a subtree can read zero (or negative) while
it holds positive leaves, and sampling then returns items of zero
probability or empty slots. Here an update never adds deltas: it writes the
new leaves and then *recomputes* every touched ancestor, level by level from
the bottom, as the float32 sum of its two children. Each internal node is
therefore always exactly fl(left + right) of the current leaves, whatever
the history of updates, so there is nothing to drift (tests/test_prioritized
checks this bit-for-bit after ten million updates). The descent in `find`
moves right only into a subtree whose sum is > 0 and left only when the left
sum is > 0 (or both are 0), so it never ends on a zero leaf while the total
is positive, even when rounding puts the query point past the last leaf.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp


def num_leaves(capacity: int) -> int:
    """P: the number of leaf slots, the smallest power of two >= capacity."""
    if not (isinstance(capacity, int) and capacity > 0):
        raise ValueError(f'capacity={capacity!r} must be a positive integer.')
    return 1 << (capacity - 1).bit_length()


def init(capacity: int, rows: int = 1) -> jax.Array:
    """A (rows, 2P) array of empty trees (every priority 0)."""
    return jnp.zeros((rows, 2 * num_leaves(capacity)), jnp.float32)


def total(tree: jax.Array) -> jax.Array:
    """Sum of the leaves of each row: (rows,)."""
    return tree[..., 1]


def leaves(tree: jax.Array, capacity: int) -> jax.Array:
    """The leaf values: (..., 2P) trees give (..., capacity)."""
    p = tree.shape[-1] // 2
    return tree[..., p : p + capacity]


def update(
    tree: jax.Array,
    rows: jax.Array,
    indices: jax.Array,
    values: jax.Array,
    unique: bool = False,
) -> jax.Array:
    """Sets leaves and recomputes their ancestors.

    Args:
      tree: (R, 2P) trees.
      rows: (B,) int, the tree of each update.
      indices: (B,) int leaf index in [0, capacity); a negative index skips
        that update (a masked write).
      values: (B,) new leaf values, >= 0 and finite.
      unique: the caller guarantees no (row, index) pair repeats (one scatter
        instead of two). Otherwise, when a pair repeats, the largest value
        wins: the leaves are cleared, then written with a scatter-max, which
        is deterministic on every backend (a plain scatter of colliding
        indices is not) and costs O(B), unlike a sort.

    Returns:
      the updated (R, 2P) trees.
    """
    num_rows, width = tree.shape
    p = width // 2
    valid = indices >= 0
    flat = tree.reshape(-1)
    base = rows * width
    oob = num_rows * width  # dropped by mode='drop'
    node = jnp.where(valid, p + indices, 0)
    leaf = jnp.where(valid, base + node, oob)
    values = values.astype(flat.dtype)
    if unique:
        flat = flat.at[leaf].set(values, mode='drop')
    else:
        flat = flat.at[leaf].set(0.0, mode='drop').at[leaf].max(values, mode='drop')

    def level(_, carry):  # log2(P) levels, the leaves' parents first
        flat, node = carry
        node = node // 2
        left = flat[base + 2 * node]
        right = flat[base + 2 * node + 1]
        flat = flat.at[jnp.where(valid, base + node, oob)].set(left + right, mode='drop')
        return flat, node

    # A rolled loop: on CPU, XLA runs it several times faster than the
    # unrolled chain of small gathers and scatters.
    flat, _ = jax.lax.fori_loop(0, p.bit_length() - 1, level, (flat, node))
    return flat.reshape(num_rows, width)


def _descend(tree: jax.Array, rows: jax.Array, u: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """(leaf indices, leaf / row total) of the queries `u`, both outputs of the
    descent loop (see `sample`).

    The descent takes two levels per step: the four grandchildren 4n .. 4n + 3
    of node n are adjacent, so one gather of four values gives both levels'
    sums (a child's sum is recomputed as the float32 sum of its two children,
    which is exactly the stored value, see the module docstring). With an odd
    number of levels, one binary level comes first."""
    num_rows, width = tree.shape
    p = width // 2
    levels = p.bit_length() - 1
    mass = total(tree)[rows]
    safe_mass = jnp.where(mass > 0, mass, 1.0)

    def choose(u, left, right):
        go_right = (right > 0) & ((u >= left) | (left <= 0))
        return go_right.astype(jnp.int32), jnp.where(go_right, u - left, u), go_right

    node = jnp.ones(u.shape, jnp.int32)
    share = (mass > 0).astype(tree.dtype)  # the root holds all of the mass
    if levels % 2:
        pair = tree.reshape(num_rows * p, 2)[rows * p + node]
        go, u, go_right = choose(u, pair[..., 0], pair[..., 1])
        node, share = 2 * node + go, jnp.where(go_right, pair[..., 1], pair[..., 0]) / safe_mass
    if levels >= 2:
        quads = tree.reshape(num_rows * p // 2, 4)

        def two_levels(_, carry):
            node, u, _ = carry
            g = quads[rows * (p // 2) + node]
            go, u, first = choose(u, g[..., 0] + g[..., 1], g[..., 2] + g[..., 3])
            left = jnp.where(first, g[..., 2], g[..., 0])
            right = jnp.where(first, g[..., 3], g[..., 1])
            go_second, u, second = choose(u, left, right)
            share = jnp.where(second, right, left) / safe_mass
            return 4 * node + 2 * go + go_second, u, share

        node, _, share = jax.lax.fori_loop(0, levels // 2, two_levels, (node, u, share))
    return node - p, share


def find(tree: jax.Array, rows: jax.Array, u: jax.Array) -> jax.Array:
    """Leaf index j with cumsum(leaves)[j-1] <= u < cumsum(leaves)[j], per query.

    Args:
      tree: (R, 2P) trees.
      rows: (B,) int, the tree each query descends.
      u: (B,) float in [0, total(row)).

    Returns:
      (B,) int32 leaf indices. Never a zero leaf while the row's total is > 0
      (see the module docstring); with an empty row, leaf 0.
    """
    return _descend(tree, rows, u)[0]


def sample(tree: jax.Array, rows: jax.Array, fractions: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Leaves drawn at `fractions` of their row's total mass, with their probabilities.

    Args:
      tree: (R, 2P) trees.
      rows: (B,) int, the tree each query descends.
      fractions: (B,) float in [0, 1).

    Returns:
      (indices (B,) int32, probabilities leaf / total (B,), 0 for an empty row).
      Both come out of the descent loop, so nothing downstream reads the tree:
      XLA cannot fuse a gather of the tree into the consumers of the
      probabilities (the importance weights and, through them, the loss
      gradients), which could then run after the same step's priority update
      and force a copy of the whole tree per update instead of an in-place write.
    """
    return _descend(tree, rows, fractions * total(tree)[rows])


def rebuild(tree: jax.Array) -> jax.Array:
    """The trees recomputed from their leaves alone (a reference for tests)."""
    p = tree.shape[-1] // 2
    level = tree[:, p:]
    parts = [level]
    while level.shape[-1] > 1:
        level = level[:, 0::2] + level[:, 1::2]
        parts.append(level)
    return jnp.concatenate([jnp.zeros_like(tree[:, :1])] + parts[::-1], axis=-1)
