"""The uniform ring buffer, n-step transitions, and the replays as the training loop
runs them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax import types
from insertion_jax.agents import registry as agent_registry
from insertion_jax.replay import base, der, nstep, prioritized, registry, uniform

SPEC = base.ReplaySpec(
    capacity=4096, n_step=1, discount=0.9, episode_length=8, num_envs=2, updates_per_iteration=1
)


def items(values):
    values = jnp.asarray(values, jnp.float32)
    return {'x': values, 'pair': jnp.stack([values, -values], axis=-1)}


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buffer = uniform.make_uniform_buffer(5)
    state = buffer.init({'x': jnp.zeros(()), 'pair': jnp.zeros((2,))})
    add = jax.jit(buffer.add, donate_argnums=0)
    state = add(state, items([0, 1, 2]))
    assert int(state.size) == 3 and int(state.insert_pos) == 3
    state = add(state, items([3, 4, 5, 6]))
    np.testing.assert_array_equal(state.data['x'], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(state.data['pair'][:, 1], [-5, -6, -2, -3, -4])
    assert int(state.size) == 5 and int(state.insert_pos) == 2
    state = add(state, items([7, 8, 9, 10, 11]))  # a whole lap
    np.testing.assert_array_equal(state.data['x'], [10, 11, 7, 8, 9])


def test_sampling_is_uniform_over_stored_items_only():
    buffer = uniform.make_uniform_buffer(10)
    state = buffer.add(buffer.init({'x': jnp.zeros(()), 'pair': jnp.zeros((2,))}), items([0, 1, 2]))
    batch = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.PRNGKey(0), 6000)
    counts = np.bincount(np.asarray(batch['x'], int), minlength=10)
    assert counts[3:].sum() == 0  # empty slots are never drawn
    np.testing.assert_allclose(counts[:3] / 6000, 1 / 3, atol=0.03)
    np.testing.assert_array_equal(batch['pair'][:, 1], -batch['x'])  # rows stay together
    assert bool(buffer.can_sample(state, 3)) and not bool(buffer.can_sample(state, 4))


def test_add_rejects_mismatched_items():
    buffer = uniform.make_uniform_buffer(4)
    state = buffer.init({'x': jnp.zeros(()), 'pair': jnp.zeros((2,))})
    with pytest.raises(ValueError):
        buffer.add(state, {'x': jnp.zeros((2,)), 'pair': jnp.zeros((2, 3))})
    with pytest.raises(ValueError, match='Cannot add 5 items at once to a buffer of capacity 4'):
        buffer.add(state, items([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match='capacity=0 must be a positive integer'):
        uniform.make_uniform_buffer(0)


def chunk(rewards, terminal, last):
    """A (K, 1) trajectory whose observation at step t is t (next_obs t + 0.5)."""
    k = len(rewards)
    t = jnp.arange(k, dtype=jnp.float32)[:, None, None]
    return dict(
        obs=t,
        action=t,
        reward=jnp.asarray(rewards, jnp.float32)[:, None],
        terminal=jnp.asarray(terminal, bool)[:, None],
        last=jnp.asarray(last, bool)[:, None],
        next_obs=t + 0.5,
    )


def test_n_step_returns_by_hand():
    g = 0.9
    # Episode boundary (time limit) after step 1, terminal at step 4.
    c = chunk([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0])
    out = nstep.n_step_transitions(**c, n=3, gamma=g)
    want_return = [
        1 + g * 2,  # stops at the time limit after step 1
        2,
        3 + g * 4 + g**2 * 5,
        4 + g * 5,  # stops at the terminal step 4
        5,
        6,  # the chunk ends
    ]
    want_discount = [g**2, g, 0.0, 0.0, 0.0, g]
    want_next = [1.5, 1.5, 4.5, 4.5, 4.5, 5.5]
    np.testing.assert_allclose(out.reward[:, 0], want_return, rtol=1e-6)
    np.testing.assert_allclose(out.discount[:, 0], want_discount, rtol=1e-6)
    np.testing.assert_allclose(out.next_obs[:, 0, 0], want_next)
    np.testing.assert_allclose(out.obs[:, 0, 0], np.arange(6))


def test_one_step_transitions_are_the_ordinary_ones():
    c = chunk([1, 2, 3], [0, 1, 0], [0, 1, 0])
    out = nstep.n_step_transitions(**c, n=1, gamma=0.99)
    np.testing.assert_allclose(out.reward[:, 0], [1, 2, 3])
    np.testing.assert_allclose(out.discount[:, 0], [0.99, 0.0, 0.99])
    np.testing.assert_allclose(out.next_obs[:, 0, 0], [0.5, 1.5, 2.5])


@pytest.mark.parametrize('kind', ['prioritized', 'der'])
def test_the_update_loop_writes_the_sum_tree_in_place(kind):
    """Sampling, an Ape-X DDPG update weighted by the importance weights and the
    priority write-back, scanned as the training loop does and vmapped over 2
    seeds: the compiled loop must update the sum tree in place. XLA otherwise
    copies the whole tree on every update, silently (megabytes at the paper's
    capacity): when something computed from the tree is fused into a consumer
    that runs after the write-back, or to change the layout of a size-1 axis
    under vmap (BUILD_NOTES.md, pitfalls)."""
    config = {
        'prioritized': prioritized.PrioritizedConfig(),
        'der': der.DERConfig(num_buffers=3, zone_fraction=0.05),
    }[kind]
    replay = registry.make_replay(config, SPEC)
    example = types.Step(
        obs=jnp.zeros(2),
        action=jnp.zeros(1),
        reward=jnp.zeros(()),
        terminal=jnp.zeros((), bool),
        next_obs=jnp.zeros(2),
    )
    agent = agent_registry.make_agent(
        'apex_ddpg', agent_registry.config_class('apex_ddpg')(hidden=(8,)), 1
    )
    spec = lambda n: jax.ShapeDtypeStruct((2, n), jnp.float32)  # noqa: E731
    keys = jax.ShapeDtypeStruct((2, 2), jnp.uint32)
    agent_state = jax.eval_shape(jax.vmap(agent.init), keys, spec(2), spec(1))
    replay_state = jax.eval_shape(jax.vmap(lambda _: replay.init(example)), keys)

    def updates(carry, key):
        def body(carry, k):
            a, s = carry
            k1, k2 = jax.random.split(k)
            batch, info = replay.sample(s, k1, 16)
            a, metrics = agent.update(a, batch, k2)
            return (a, replay.set_priorities(s, info, jnp.abs(metrics['td_error']), True)), None

        return jax.lax.scan(body, carry, jax.random.split(key, 4))[0]

    lowered = jax.jit(jax.vmap(updates), donate_argnums=0).lower((agent_state, replay_state), keys)
    tree = 'f32[%s]' % ','.join(map(str, replay_state.tree.shape))
    copies = [
        line.strip()
        for line in lowered.compile().as_text().splitlines()
        if ' copy(' in line and tree in line
    ]
    assert not copies, copies
