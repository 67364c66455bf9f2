"""Prioritized replay: the sum tree and the buffer, against NumPy and by statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from insertion_jax.replay import prioritized, sumtree

ITEM = {'x': jnp.zeros(()), 'v': jnp.zeros((3,))}


def items(values):
    values = jnp.asarray(values, jnp.float32)
    return {'x': values, 'v': jnp.stack([values, -values, 2 * values], axis=-1)}


@functools.lru_cache(maxsize=None)
def jitted(capacity, alpha=0.6, beta=0.4, stratified=True, beta_steps=0):
    buffer = prioritized.make_prioritized_buffer(
        capacity,
        prioritized.PrioritizedConfig(
            alpha=alpha, beta=beta, stratified=stratified, beta_steps=beta_steps
        ),
    )
    return (
        buffer,
        jax.jit(buffer.add),
        jax.jit(buffer.sample, static_argnums=2),
        jax.jit(buffer.set_priorities),
    )


def filled(capacity, priorities, **kw):
    buffer, add, _, set_priorities = jitted(capacity, **kw)
    n = len(priorities)
    state = add(buffer.init(ITEM), items(np.arange(n)))
    return set_priorities(state, jnp.arange(n), jnp.asarray(priorities, jnp.float32))


# ----------------------------------------------------------------- sum tree
@pytest.mark.parametrize('capacity', [1, 20, 37])  # 0, 5 (odd) and 6 tree levels
def test_find_and_sample_match_numpy_searchsorted(capacity):
    rng = np.random.default_rng(capacity)
    values = rng.exponential(size=capacity).astype(np.float32)
    values[[3, 4, 19] if capacity > 19 else []] = 0.0  # zero leaves are never found
    tree = sumtree.update(
        sumtree.init(capacity), jnp.zeros(capacity, int), jnp.arange(capacity), jnp.asarray(values)
    )
    u = rng.uniform(0, float(values.sum()), size=5000).astype(np.float32)
    found = np.asarray(sumtree.find(tree, jnp.zeros(5000, int), jnp.asarray(u)))
    cumsum = np.cumsum(values.astype(np.float64))
    expected = np.searchsorted(cumsum, u, side='right')
    # Away from the bucket edges (float32 vs float64 sums) the slot is the same.
    edge = np.min(np.abs(u[:, None] - cumsum[None, :]), axis=1) < 1e-4 * cumsum[-1]
    np.testing.assert_array_equal(found[~edge], expected[~edge])
    assert np.all(values[found] > 0)
    # `sample` takes fractions of the total and also returns leaf / total.
    drawn, probs = sumtree.sample(tree, jnp.zeros(5000, int), jnp.asarray(u / values.sum()))
    drawn = np.asarray(drawn)
    np.testing.assert_array_equal(drawn[~edge], expected[~edge])
    np.testing.assert_allclose(probs, values[drawn] / values.sum(), rtol=1e-5)


def test_update_dedupes_masks_and_keeps_rows_apart():
    tree = sumtree.init(6, rows=2)
    tree = sumtree.update(
        tree,
        jnp.array([0, 0, 1, 0, 1]),
        jnp.array([3, 1, 3, 3, -1]),  # -1: skipped
        jnp.array([5.0, 2.0, 4.0, 7.0, 100.0]),
    )
    leaves = np.asarray(sumtree.leaves(tree, 6))
    np.testing.assert_array_equal(leaves[0], [0, 2, 0, 7, 0, 0])  # the larger (0, 3) wins
    np.testing.assert_array_equal(leaves[1], [0, 0, 0, 4, 0, 0])
    np.testing.assert_array_equal(sumtree.total(tree), [9.0, 4.0])
    np.testing.assert_array_equal(tree, sumtree.rebuild(tree))


def test_ten_million_updates_do_not_drift():
    """A sum tree must not drift after millions of float32 updates: every node stays
    exactly the sum of its children and no zero leaf is ever drawn."""
    capacity, batch, steps = 10_000, 512, 20_000  # 10.24 M leaf updates
    rows = jnp.zeros((batch,), jnp.int32)

    @jax.jit
    def run(key):
        def step(tree, key):
            k_idx, k_val, k_zero = jax.random.split(key, 3)
            idx = jax.random.randint(k_idx, (batch,), 0, capacity)
            # priorities over nine decades, a fifth of them exactly zero
            val = 10.0 ** jax.random.uniform(k_val, (batch,), minval=-6, maxval=3)
            val = jnp.where(jax.random.uniform(k_zero, (batch,)) < 0.2, 0.0, val)
            return sumtree.update(tree, rows, idx, val), None

        tree, _ = jax.lax.scan(step, sumtree.init(capacity), jax.random.split(key, steps))
        draws = sumtree.find(
            tree,
            jnp.zeros((200_000,), jnp.int32),
            jax.random.uniform(key, (200_000,)) * sumtree.total(tree)[0],
        )
        return tree, draws

    tree, draws = run(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(tree, sumtree.rebuild(tree))  # bit for bit
    leaves = np.asarray(sumtree.leaves(tree, capacity), np.float64)[0]
    assert (leaves == 0).sum() > 1000  # the zero leaves are really there
    np.testing.assert_allclose(float(sumtree.total(tree)[0]), leaves.sum(), rtol=1e-5)
    assert np.all(leaves[np.asarray(draws)] > 0)


# ------------------------------------------------------------------ buffer
def test_sampling_frequencies_match_priorities_chi_square():
    rng = np.random.default_rng(1)
    priorities = rng.lognormal(sigma=1.5, size=50)
    alpha = 0.6
    expected = (priorities + 1e-6) ** alpha
    expected /= expected.sum()
    for stratified in (False, True):
        state = filled(64, priorities, alpha=alpha, stratified=stratified)
        _, _, sample, _ = jitted(64, alpha=alpha, stratified=stratified)
        counts = np.zeros(64)
        for i in range(40):
            _, idx, _ = sample(state, jax.random.PRNGKey(i), 1000)
            counts += np.bincount(np.asarray(idx), minlength=64)
        assert counts[50:].sum() == 0  # empty slots never drawn
        p_value = stats.chisquare(counts[:50], expected * counts.sum()).pvalue
        assert p_value > 1e-3, (stratified, p_value)
    # The test has power: the same counts reject the priorities without alpha.
    wrong = priorities / priorities.sum()
    assert stats.chisquare(counts[:50], wrong * counts.sum()).pvalue < 1e-6


def test_sample_and_weights_match_numpy_reference():
    priorities = np.array([1.0, 2.0, 3.0, 0.5, 10.0, 0.0, 4.0])
    alpha, beta, eps = 0.5, 0.7, 1e-6
    state = filled(8, priorities, alpha=alpha, beta=beta)
    _, _, sample, _ = jitted(8, alpha=alpha, beta=beta)
    batch, idx, weights = sample(state, jax.random.PRNGKey(3), 64)
    idx = np.asarray(idx)
    p = (priorities + eps) ** alpha
    probs = p / p.sum()
    w = (len(priorities) * probs[idx]) ** -beta
    np.testing.assert_allclose(weights, w / w.max(), rtol=1e-5)
    np.testing.assert_array_equal(batch['x'], idx)  # the items at the drawn slots
    np.testing.assert_array_equal(batch['v'][:, 2], 2 * idx)
    np.testing.assert_allclose(sumtree.leaves(state.tree, 8), np.append(p, 0.0), rtol=1e-6)
    assert float(state.max_priority) == pytest.approx(10.0 + eps)


def test_new_items_get_the_max_priority_and_wrap_around():
    buffer, add, _, set_priorities = jitted(5, alpha=1.0)
    state = add(buffer.init(ITEM), items([0, 1, 2]))
    np.testing.assert_allclose(sumtree.leaves(state.tree, 5), [1, 1, 1, 0, 0])
    state = set_priorities(state, jnp.array([0, 1, 2]), jnp.array([0.5, 8.0, 0.25]))
    state = add(state, items([3, 4, 5, 6]))  # 5, 6 overwrite slots 0, 1
    np.testing.assert_array_equal(state.storage.data['x'], [5, 6, 2, 3, 4])
    leaves = np.asarray(sumtree.leaves(state.tree, 5))
    np.testing.assert_allclose(leaves, [8, 8, 0.25, 8, 8], atol=1e-5)
    assert int(state.size) == 5 and int(state.storage.insert_pos) == 2


def test_duplicate_indices_largest_wins_and_nan_is_replaced():
    buffer, add, _, set_priorities = jitted(4, alpha=1.0)
    state = add(buffer.init(ITEM), items([0, 1, 2, 3]))
    state = set_priorities(state, jnp.array([2, 1, 2, 2]), jnp.array([5.0, 3.0, 9.0, 7.0]))
    leaves = np.asarray(sumtree.leaves(state.tree, 4))
    np.testing.assert_allclose(leaves, [1, 3, 9, 1], atol=1e-5)
    # Lowering a priority works too (the old leaf does not count in the max).
    state = set_priorities(state, jnp.array([2, 2]), jnp.array([0.5, 0.25]))
    assert float(sumtree.leaves(state.tree, 4)[2]) == pytest.approx(0.5, abs=1e-5)
    assert float(state.max_priority) == pytest.approx(9.0)  # all values count for the max
    state = set_priorities(state, jnp.array([0]), jnp.array([jnp.nan]))
    assert float(sumtree.leaves(state.tree, 4)[0]) == pytest.approx(9.0)
    np.testing.assert_array_equal(state.tree, sumtree.rebuild(state.tree[None])[0])


def test_beta_anneals_and_empty_buffer_is_safe():
    buffer, add, sample, set_priorities = jitted(4, beta=0.4, beta_steps=10)
    state = buffer.init(ITEM)
    _, _, weights = sample(state, jax.random.PRNGKey(0), 8)
    np.testing.assert_array_equal(weights, 1.0)  # nothing stored: no NaN
    assert not bool(buffer.can_sample(state, 1))
    assert float(buffer.config.beta_at(state.updates)) == pytest.approx(0.4)
    state = add(state, items([0, 1]))
    for _ in range(5):
        state = set_priorities(state, jnp.array([0]), jnp.array([2.0]))
    assert float(buffer.config.beta_at(state.updates)) == pytest.approx(0.7)
    for _ in range(10):
        state = set_priorities(state, jnp.array([0]), jnp.array([2.0]))
    assert float(buffer.config.beta_at(state.updates)) == pytest.approx(1.0)


def test_vmapped_over_seeds_equals_each_seed_alone():
    buffer, _, sample, set_priorities = jitted(16)
    states = [filled(16, np.arange(1.0, 11.0) * (s + 1) ** 2) for s in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    _, idx, w = jax.jit(jax.vmap(buffer.sample, in_axes=(0, 0, None)), static_argnums=2)(
        stacked, keys, 32
    )
    for s in range(3):
        _, idx_s, w_s = sample(states[s], keys[s], 32)
        np.testing.assert_array_equal(idx[s], idx_s)
        np.testing.assert_allclose(w[s], w_s, rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='alpha=1.5 must be in'):
        prioritized.PrioritizedConfig(alpha=1.5)
    with pytest.raises(ValueError, match='capacity=0 must be'):
        prioritized.make_prioritized_buffer(0)
    with pytest.raises(ValueError, match='eps=0 must be'):
        prioritized.PrioritizedConfig(eps=0)
