"""Dynamic Experience Replay buffers: structures, episode routing, pool, refresh, sampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax import types
from insertion_jax.replay import demos as demos_lib
from insertion_jax.replay import der, prioritized, sumtree

L = 8  # episode slot length
EXAMPLE = types.Step(
    obs=jnp.zeros(2),
    action=jnp.zeros(1),
    reward=jnp.zeros(()),
    terminal=jnp.zeros((), bool),
    next_obs=jnp.zeros(2),
)
DEMO_LENGTHS = np.array([5, 7, 3])


@functools.lru_cache(maxsize=None)  # one buffer (and its compiled functions) per setting
def make(structure='all_shots_all', der_on=True, num_envs=2, n_step=1, capacity=200, **kw):
    cfg = dict(
        num_buffers=3,
        zone_fraction=0.2,  # 40 of 200: 5 episode slots of 8
        structure=structure,
        der=der_on,
        refresh_every=2,
        pool_episodes=4,
        priority=prioritized.PrioritizedConfig(alpha=1.0),
    )
    cfg.update(kw)
    return der.make_der_buffer(der.DERConfig(**cfg), capacity, L, num_envs, n_step, 0.5)


def demos(success=None):
    """Three demonstrations; obs[..., 0] = 100 * (demo + 1) + t, reward 1 per step."""
    t = np.arange(L)[None, :]
    ident = 100.0 * (np.arange(3)[:, None] + 1) + t
    obs = np.stack([ident, np.zeros_like(ident)], axis=-1)
    steps = types.Step(
        obs=jnp.asarray(obs, jnp.float32),
        action=jnp.ones((3, L, 1)),
        reward=jnp.ones((3, L)),
        terminal=jnp.zeros((3, L), bool),
        next_obs=jnp.asarray(obs + 0.5, jnp.float32),
    )
    return demos_lib.Demonstrations(
        steps=steps,
        lengths=jnp.asarray(DEMO_LENGTHS),
        success=None if success is None else jnp.asarray(success),
    )


def chunk(lengths_per_env, success_per_env):
    """Steps of E environments that end episodes of the given lengths in turn.

    obs[..., 0] = 1000 * env + 100 * episode + t; reward t + 1.
    Returns (Step leaves (K, E), last, success, K).
    """
    num_envs = len(lengths_per_env)
    k = max(sum(ls) for ls in lengths_per_env) + 2
    obs = np.zeros((k, num_envs, 2), np.float32)
    reward = np.zeros((k, num_envs), np.float32)
    last = np.zeros((k, num_envs), bool)
    success = np.zeros((k, num_envs), bool)
    for e, (lengths, successes) in enumerate(zip(lengths_per_env, success_per_env, strict=True)):
        step = 0
        for episode, (n, ok) in enumerate(zip(lengths, successes, strict=True)):
            for t in range(n):
                obs[step, e, 0] = 1000 * e + 100 * episode + t
                reward[step, e] = t + 1
                step += 1
            last[step - 1, e], success[step - 1, e] = True, ok
        for t in range(k - step):  # a running episode, not finished
            obs[step + t, e, 0] = 1000 * e + 100 * len(lengths) + t
    steps = types.Step(
        obs=jnp.asarray(obs),
        action=jnp.zeros((k, num_envs, 1)),
        reward=jnp.asarray(reward),
        terminal=jnp.zeros((k, num_envs), bool),
        next_obs=jnp.asarray(obs + 0.5),
    )
    return steps, jnp.asarray(last), jnp.asarray(success)


@functools.lru_cache(maxsize=None)
def jitted(buffer):
    return (
        jax.jit(buffer.add),
        jax.jit(buffer.sample, static_argnums=2),
        jax.jit(buffer.set_priorities),
        jax.jit(buffer.after_updates, static_argnums=2),
    )


def zone_ids(state, buffer):
    """Demo ids (obs // 100 - 1) and lengths in each zone slot of `buffer`."""
    obs = np.asarray(state.data.obs[buffer, :40, 0]).reshape(5, L)
    return [int(o[0] // 100) - 1 for o in obs], list(np.asarray(state.zone_length[buffer]))


@pytest.mark.parametrize(
    'structure, expected',
    [
        ('none', [[], [], []]),
        ('one_shot_all', [[0], [0], [0]]),
        ('all_shots_all', [[0, 1, 2], [0, 1, 2], [0, 1, 2]]),
        ('one_shot_each', [[0], [1], [2]]),
    ],
)
def test_structures_load_the_right_demonstrations(structure, expected):
    buffer = make(structure)
    state = jax.jit(buffer.init)(EXAMPLE, demos())
    leaves = np.asarray(sumtree.leaves(state.tree, 200))
    for k, ids in enumerate(expected):
        got_ids, lengths = zone_ids(state, k)
        assert got_ids[: len(ids)] == ids
        assert lengths == [int(DEMO_LENGTHS[d]) for d in ids] + [0] * (5 - len(ids))
        for slot, d in enumerate(ids):  # the demo's steps at top priority, padding at 0
            n = DEMO_LENGTHS[d]
            np.testing.assert_array_equal(leaves[k, slot * L : slot * L + n], 1.0)
            np.testing.assert_array_equal(leaves[k, slot * L + n : (slot + 1) * L], 0.0)
        assert leaves[k, len(ids) * L :].sum() == 0
        assert int(state.zone_next[k]) == len(ids)
    if expected[0]:
        assert float(state.data.is_demo[0, 0]) == 1.0


def test_finished_episodes_go_whole_to_one_random_buffer_with_nstep_returns():
    buffer = make('none', n_step=2)
    add, *_ = jitted(buffer)
    steps, last, success = chunk([[3, 5, 2], [7]], [[False, True, False], [True]])
    state = add(buffer.init(EXAMPLE), steps, last, success, jax.random.PRNGKey(0))
    assert int(state.ring_size.sum()) == 3 + 5 + 2 + 7
    np.testing.assert_array_equal(state.staging_length, [len(steps.reward) - 10, 5])
    obs = np.asarray(state.data.obs[:, :, 0])
    leaves = np.asarray(sumtree.leaves(state.tree, 200))
    found = {}
    for k in range(3):
        ring = slice(buffer.layout.zone_size, buffer.layout.zone_size + int(state.ring_size[k]))
        for pos, o in zip(range(ring.start, ring.stop), obs[k, ring], strict=True):
            found.setdefault(int(o) // 100, []).append((k, pos, int(o) % 100))
        assert np.all(leaves[k, ring] == 1.0) and leaves[k, ring.stop :].sum() == 0
    assert sorted(found) == [0, 1, 2, 10]  # env*10 + episode; the running ones staged
    for rows in found.values():
        ks, positions, ts = zip(*rows, strict=True)
        assert len(set(ks)) == 1  # one buffer per episode
        assert list(ts) == list(range(len(ts)))  # in order, contiguous
        assert np.all(np.diff(positions) == 1)
    # n-step (n=2, gamma=0.5) return of the 7-step episode: r_t + 0.5 r_{t+1}, cut at its end.
    k, positions, _ = zip(*found[10], strict=True)
    rewards = np.asarray(state.data.reward[k[0], list(positions)])
    np.testing.assert_allclose(rewards, [1 + 1, 2 + 1.5, 3 + 2, 4 + 2.5, 5 + 3, 6 + 3.5, 7])
    discounts = np.asarray(state.data.discount[k[0], list(positions)])
    np.testing.assert_allclose(discounts, [0.25] * 6 + [0.5])
    next_obs = np.asarray(state.data.next_obs[k[0], list(positions), 0])
    np.testing.assert_allclose(next_obs, 1000 + np.array([1, 2, 3, 4, 5, 6, 6]) + 0.5)
    # The success pool holds the two successful episodes, whole.
    assert int(state.pool_count) == 2
    assert sorted(np.asarray(state.pool_length[:2])) == [5, 7]
    pool_ids = sorted(int(o) // 100 for o in np.asarray(state.pool.obs[:2, 0, 0]))
    assert pool_ids == [1, 10]


def test_episodes_route_to_every_buffer_and_the_ring_wraps():
    buffer = make('none', num_envs=2, capacity=96, zone_fraction=0.1)  # ring of 88
    add, *_ = jitted(buffer)
    state = buffer.init(EXAMPLE)
    counts = np.zeros(3)
    for i in range(8):
        steps, last, success = chunk([[4, 4, 4], [6, 6]], [[False] * 3, [False] * 2])
        before = np.asarray(state.ring_size).copy()
        state = add(state, steps, last, success, jax.random.PRNGKey(i))
        counts += np.asarray(state.ring_size) > before
    assert np.all(counts > 0)  # all buffers receive episodes
    assert np.all(np.asarray(state.ring_size) <= buffer.layout.ring_capacity)
    assert int(state.ring_size.max()) == buffer.layout.ring_capacity  # at least one wrapped
    leaves = np.asarray(sumtree.leaves(state.tree, 96))
    np.testing.assert_array_equal((leaves > 0).sum(axis=1), state.ring_size)


def test_refresh_replaces_the_oldest_zone_episode_from_the_pool():
    buffer = make('all_shots_all', der_on=True)
    add, sample, set_priorities, after_updates = jitted(buffer)
    state = buffer.init(EXAMPLE, demos())
    key = jax.random.PRNGKey(0)
    state = after_updates(state, key, 1)  # 0 updates: nothing due
    assert int(state.refreshes) == 0
    _, info = sample(state, key, 4)
    for _ in range(2):
        state = set_priorities(state, info, jnp.ones(4))
    empty_pool = after_updates(state, key, 1)  # due, but the pool is empty
    assert int(empty_pool.refreshes) == 1
    np.testing.assert_array_equal(empty_pool.zone_length, state.zone_length)
    steps, last, success = chunk([[6], [4]], [[True], [False]])
    state = add(state, steps, last, success, key)
    for _ in range(4):
        state = set_priorities(state, info, jnp.ones(4))  # 6 updates: 3 refreshes due
    assert int(after_updates(state, key, 1).refreshes) == 1  # at most one per call here
    state = after_updates(state, key, 3)
    assert int(state.refreshes) == 3
    for k in range(3):
        ids, lengths = zone_ids(state, k)
        # slots 3, 4 (empty) then 0 (demo 0, the oldest) hold the agent's episode (env 0)
        assert lengths == [6, 7, 3, 6, 6]
        assert ids[1:3] == [1, 2] and ids[0] == ids[3] == ids[4] == -1  # obs 0..5 -> -1
        assert int(state.zone_next[k]) == 1
        leaves = np.asarray(sumtree.leaves(state.tree, 200)[k, :8])
        assert np.all(leaves[:6] > 0) and np.all(leaves[6:] == 0)


def test_without_der_the_demonstrations_stay():
    buffer = make('all_shots_all', der_on=False)
    add, sample, set_priorities, after_updates = jitted(buffer)
    state = buffer.init(EXAMPLE, demos())
    steps, last, success = chunk([[6], [4]], [[True], [True]])
    state = add(state, steps, last, success, jax.random.PRNGKey(0))
    _, info = sample(state, jax.random.PRNGKey(1), 4)
    for _ in range(10):
        state = set_priorities(state, info, jnp.ones(4))
    state = after_updates(state, jax.random.PRNGKey(2), 5)
    assert int(state.refreshes) == 0
    for k in range(3):
        assert zone_ids(state, k)[0][:3] == [0, 1, 2]


def test_sampling_uses_non_empty_buffers_and_zone_items_keep_top_priority():
    buffer = make('one_shot_each', der_on=False)
    add, sample, set_priorities, _ = jitted(buffer)
    state = buffer.init(EXAMPLE, demos())
    # buffer 0 also gets agent episodes; all buffers hold their demonstration
    steps, last, success = chunk([[5, 5], [3]], [[False, False], [False]])
    state = add(state, steps, last, success, jax.random.PRNGKey(0))
    seen = np.zeros(3)
    for i in range(60):
        batch, info = sample(state, jax.random.PRNGKey(i), 32)
        b, idx = int(info.buffer), np.asarray(info.indices)
        seen[b] += 1
        np.testing.assert_array_equal(batch.obs, state.data.obs[b, idx])
        leaves = np.asarray(sumtree.leaves(state.tree, 200)[b])
        assert np.all(leaves[idx] > 0)  # no padding, no empty slot
    assert np.all(seen > 10)  # each buffer chosen about a third of the time
    batch, info = sample(state, jax.random.PRNGKey(99), 64)
    b, idx = int(info.buffer), np.asarray(info.indices)
    td = np.linspace(0.1, 50.0, 64).astype(np.float32)
    state = set_priorities(state, info, jnp.asarray(td))
    leaves = np.asarray(sumtree.leaves(state.tree, 200)[b])
    top = float(state.max_priority[b])
    assert top == pytest.approx(50.0, rel=1e-5)
    zone = idx < buffer.layout.zone_size
    np.testing.assert_allclose(leaves[idx[zone]], top, rtol=1e-6)
    largest = {}  # the largest value wins for repeated slots
    for i, t in zip(idx, td, strict=True):
        largest[i] = max(largest.get(i, 0.0), t)
    for i in idx[~zone]:
        assert leaves[i] == pytest.approx(largest[i] + 1e-6, rel=1e-5)
    # zone_share: the chance that a draw comes from a zone, the zones' share
    # of each buffer's priority mass (every buffer holds its demonstration).
    mass = np.asarray(sumtree.leaves(state.tree, 200))
    expected = np.mean(mass[:, : buffer.layout.zone_size].sum(1) / mass.sum(1))
    assert 0 < expected < 1
    assert float(buffer.metrics(state)['zone_share']) == pytest.approx(expected, rel=1e-5)


def test_without_top_priority_zone_items_take_their_td_error():
    buffer = make('one_shot_each', der_on=False, zone_top_priority=False)
    _, sample, set_priorities, _ = jitted(buffer)
    state = buffer.init(EXAMPLE, demos())  # the zones hold everything there is
    _, info = sample(state, jax.random.PRNGKey(99), 64)
    b, idx = int(info.buffer), np.asarray(info.indices)
    assert np.all(idx < buffer.layout.zone_size)
    td = np.linspace(0.1, 50.0, 64).astype(np.float32)
    state = set_priorities(state, info, jnp.asarray(td))
    leaves = np.asarray(sumtree.leaves(state.tree, 200)[b])
    largest = {}  # the largest value wins for repeated slots
    for i, t in zip(idx, td, strict=True):
        largest[i] = max(largest.get(i, 0.0), t)
    for i, t in largest.items():
        assert leaves[i] == pytest.approx(t + 1e-6, rel=1e-5)
    with pytest.raises(ValueError, match='zone_top_priority=1 must be a bool'):
        der.DERConfig(zone_top_priority=1)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="structure='two_shots' is unknown"):
        der.DERConfig(structure='two_shots')
    with pytest.raises(ValueError, match='holds no whole episode'):
        make(capacity=200, zone_fraction=0.02)
    with pytest.raises(ValueError, match='pool_episodes=1 must be >= num_envs=2'):
        make(pool_episodes=1)
    with pytest.raises(ValueError, match='needs at least one demonstration'):
        make('one_shot_all').init(EXAMPLE)
    with pytest.raises(ValueError, match='puts 3 demonstrations in a zone of 2'):
        make(zone_fraction=0.08, capacity=200).init(EXAMPLE, demos())


def test_only_successful_demonstrations_enter_a_zone():
    state = make('one_shot_each').init(EXAMPLE, demos(success=[True, False, True]))
    leaves = np.asarray(sumtree.leaves(state.tree, 200))
    assert [zone_ids(state, k)[0][0] for k in (0, 2)] == [0, 2]
    np.testing.assert_array_equal(state.zone_length[:, 0], [5, 0, 3])  # buffer 1's stays empty
    assert leaves[1].sum() == 0 and leaves[0].sum() > 0 and leaves[2].sum() > 0


ALPHA = 0.5
EPS = prioritized.PrioritizedConfig().eps


def test_priorities_are_written_to_the_power_alpha_for_agent_and_zone_items():
    """alpha = 0.5 and priorities far from 1, on a batch that holds agent and zone
    items: agent leaves (|td| + eps)^alpha, zone leaves top^alpha (top: the
    buffer's largest priority, this batch included), new ring items and
    refreshed zone episodes at top^alpha, importance weights from the leaves."""
    buffer = make(
        'one_shot_each', der_on=False, priority=prioritized.PrioritizedConfig(alpha=ALPHA)
    )
    add, sample, set_priorities, after_updates = jitted(buffer)
    zone = buffer.layout.zone_size
    state = buffer.init(EXAMPLE, demos())
    steps, last, success = chunk([[8, 8, 8], [8, 8]], [[True, False, False], [False, True]])
    state = add(state, steps, last, success, jax.random.PRNGKey(0))
    for i in range(50):  # a batch with both kinds of items (deterministic keys)
        batch, info = sample(state, jax.random.PRNGKey(i), 32)
        idx = np.asarray(info.indices)
        if (idx < zone).any() and (idx >= zone).sum() >= 4:
            break
    assert (idx < zone).any() and (idx >= zone).sum() >= 4
    b = int(info.buffer)
    # Importance weights: P(i) = leaf / total, N = the items stored in buffer b.
    leaves = np.asarray(sumtree.leaves(state.tree, 200)[b], np.float64)
    size = int(state.ring_size[b]) + int(state.zone_length[b].sum())
    w = (size * leaves[idx] / leaves.sum()) ** -0.4
    np.testing.assert_allclose(batch.weight, w / w.max(), rtol=1e-5)

    td = np.linspace(-4.0, 9.0, 32).astype(np.float32)  # |td| + eps up to 9, far from 1
    state = set_priorities(state, info, jnp.asarray(td))
    top = max(1.0, np.abs(td).max() + EPS)
    assert float(state.max_priority[b]) == pytest.approx(top, rel=1e-6)  # p, not p^alpha
    leaves = np.asarray(sumtree.leaves(state.tree, 200)[b], np.float64)
    largest = {}
    for i, t in zip(idx, np.abs(td), strict=True):
        largest[i] = max(largest.get(i, 0.0), t)
    for i in idx:
        want = top**ALPHA if i < zone else (largest[i] + EPS) ** ALPHA
        assert leaves[i] == pytest.approx(want, rel=1e-5), (i, leaves[i], want)
    untouched = [i for i in range(zone) if i not in largest and i < DEMO_LENGTHS[b]]
    np.testing.assert_allclose(leaves[untouched], 1.0)  # written at the old top, 1^alpha

    # New agent items enter at each buffer's top^alpha.
    before = np.asarray(state.ring_size).copy()
    steps, last, success = chunk([[8], [8]], [[True], [True]])
    state = add(state, steps, last, success, jax.random.PRNGKey(7))
    tops = np.asarray(state.max_priority, np.float64)
    leaves = np.asarray(sumtree.leaves(state.tree, 200), np.float64)
    grew = np.asarray(state.ring_size) - before
    assert grew.sum() == 16
    for k in range(3):
        new = slice(zone + before[k], zone + before[k] + grew[k])
        np.testing.assert_allclose(leaves[k, new], tops[k] ** ALPHA, rtol=1e-6)

    # A refresh (DER switched on in the state) writes the pool episode at top^alpha.
    state = set_priorities(state, info, jnp.asarray(td))  # 2 updates: one refresh due
    slot = np.asarray(state.zone_next)
    state = after_updates(state.replace(der=jnp.asarray(True)), jax.random.PRNGKey(3), 1)
    assert int(state.refreshes) == 1
    leaves = np.asarray(sumtree.leaves(state.tree, 200), np.float64)
    for k in range(3):
        n = int(state.zone_length[k, slot[k]])
        assert n == 8
        got = leaves[k, slot[k] * L : slot[k] * L + n]
        np.testing.assert_allclose(got, float(state.max_priority[k]) ** ALPHA, rtol=1e-6)
