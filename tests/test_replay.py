"""The uniform ring buffer, n-step transitions, and the replays as the training loop
runs them."""

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax import types
from insertion_jax.agents import registry as agent_registry
from insertion_jax.replay import base, der, mixed, nstep, prioritized, registry, uniform
from insertion_jax.replay import demos as demos_lib

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


# ----------------------------------------------------------------- registry
def test_registry_names_bad_kinds_and_keys_and_round_trips_json():
    with pytest.raises(ValueError, match="Unknown replay 'bogus'; valid replays: uniform, prio"):
        registry.validate_kind('bogus')
    with pytest.raises(ValueError, match="'bogus'.*uniform, prioritized, der"):
        registry.config_from_dict({'kind': 'bogus'})
    with pytest.raises(ValueError, match="Unknown key 'dynamic'.*valid keys: num_buffers, .*der"):
        registry.config_from_dict({'kind': 'der', 'dynamic': True})
    with pytest.raises(ValueError, match="Unknown key 'alfa'.*priority.*valid keys: alpha, beta"):
        registry.config_from_dict({'kind': 'der', 'priority': {'alfa': 0.5}})
    with pytest.raises(TypeError, match='SPEC.*not a replay config|ReplaySpec is not a replay'):
        registry.kind_of(SPEC)
    configs = [
        uniform.UniformConfig(),
        prioritized.PrioritizedConfig(alpha=0.3, beta_steps=7, stratified=False),
        der.DERConfig(
            num_buffers=2,
            structure='one_shot_each',
            der=False,
            priority=prioritized.PrioritizedConfig(alpha=0.25),
        ),
    ]
    for config in configs:
        back = registry.config_from_dict(json.loads(json.dumps(registry.config_to_dict(config))))
        assert back == config and type(back) is type(config)
    assert registry.config_from_dict({'kind': 'der'}) == der.DERConfig()  # defaults fill in
    assert [registry.make_replay(c, SPEC).takes_demonstrations for c in configs] == [
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match='holds no whole episode'):
        registry.validate(der.DERConfig(zone_fraction=0.001), SPEC)
    with pytest.raises(ValueError, match='pool_episodes=1 must be >= num_envs=2'):
        registry.validate(der.DERConfig(pool_episodes=1), SPEC)


# -------------------------------------------------------------------- mixed
MIXED_SPEC = base.ReplaySpec(
    capacity=64, n_step=2, discount=0.5, episode_length=6, num_envs=2, updates_per_iteration=1
)
EXAMPLE = types.Step(
    obs=jnp.zeros(2),
    action=jnp.zeros(1),
    reward=jnp.zeros(()),
    terminal=jnp.zeros((), bool),
    next_obs=jnp.zeros(2),
)


def lfd_demos():
    """Episodes of lengths 3, 5, 2 (the second marked failed), padded to 6;
    obs[..., 0] = 100 * (episode + 1) + t, reward 1 per step."""
    ident = 100.0 * (np.arange(3)[:, None] + 1) + np.arange(6)[None, :]
    obs = np.stack([ident, np.zeros_like(ident)], axis=-1).astype(np.float32)
    steps = types.Step(
        obs=jnp.asarray(obs),
        action=jnp.ones((3, 6, 1)),
        reward=jnp.ones((3, 6)),
        terminal=jnp.zeros((3, 6), bool),
        next_obs=jnp.asarray(obs + 0.5),
    )
    return demos_lib.Demonstrations(
        steps=steps, lengths=jnp.asarray([3, 5, 2]), success=jnp.asarray([True, False, True])
    )


def test_mixed_batches_end_with_uniform_demonstration_draws():
    """B - d inner items drawn with the batch key, then d demonstration items
    drawn uniformly over the valid transitions of the successful episodes
    (episode-major) with fold_in(key, 1), is_demo 1, weight 1; the priorities
    of the first B - d items only reach the inner replay."""
    inner = registry.make_replay(prioritized.PrioritizedConfig(alpha=0.5), MIXED_SPEC)
    replay = mixed.make_mixed(inner, 0.25, MIXED_SPEC)
    assert replay.takes_demonstrations and replay.config == inner.config
    with pytest.raises(ValueError, match='needs demonstrations'):
        replay.init(EXAMPLE)
    # As the loop runs it: jitted and vmapped over seeds, the demonstrations broadcast.
    init = jax.jit(jax.vmap(lambda _, demos: replay.init(EXAMPLE, demos), in_axes=(0, None)))
    state = jax.tree.map(lambda x: x[1], init(jnp.zeros(2), lfd_demos()))
    assert int(state.demos.size) == 5  # 3 + 2 valid steps; the failed episode's 5 left out
    k = 5
    steps = types.Step(
        obs=jnp.arange(k * 2 * 2, dtype=jnp.float32).reshape(k, 2, 2),
        action=jnp.zeros((k, 2, 1)),
        reward=jnp.ones((k, 2)),
        terminal=jnp.zeros((k, 2), bool),
        next_obs=jnp.zeros((k, 2, 2)),
    )
    last = jnp.zeros((k, 2), bool)
    state = jax.jit(replay.add)(state, steps, last, last, jax.random.PRNGKey(0))
    key, b = jax.random.PRNGKey(3), 16
    d = 4  # round(0.25 * 16)
    batch, info = jax.jit(replay.sample, static_argnums=2)(state, key, b)
    agent, _ = jax.jit(inner.sample, static_argnums=2)(state.inner, key, b - d)
    for got, want in zip(jax.tree.leaves(batch), jax.tree.leaves(agent), strict=True):
        np.testing.assert_array_equal(got[: b - d], want)
    np.testing.assert_array_equal(batch.is_demo, [0] * (b - d) + [1] * d)
    np.testing.assert_array_equal(batch.weight[b - d :], 1.0)
    # The hand draw: uniform over the 5 valid transitions, episode-major.
    valid_obs = np.array([100, 101, 102, 300, 301], np.float32)
    n_step_return = np.array([1.5, 1.5, 1.0, 1.5, 1.0], np.float32)  # n=2, gamma 0.5
    drawn = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (d,), 0, 5))
    np.testing.assert_array_equal(batch.obs[b - d :, 0], valid_obs[drawn])
    np.testing.assert_array_equal(batch.reward[b - d :], n_step_return[drawn])
    # Priorities: the first B - d errors go to the inner replay; the demo ones
    # (huge here) never reach it.
    td = jnp.concatenate([jnp.linspace(1.0, 4.0, b - d), jnp.full((d,), 1e6)])
    set_priorities = jax.jit(replay.set_priorities, static_argnums=3)
    skipped = set_priorities(state, info, td, False)
    for got, want in zip(jax.tree.leaves(skipped), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(got, want)
    new = set_priorities(state, info, td, True)
    expected = jax.jit(inner.set_priorities, static_argnums=3)(state.inner, info, td[: b - d], True)
    for got, want in zip(jax.tree.leaves(new.inner), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(got, want)
    assert float(new.inner.max_priority) < 5.0
    for got, want in zip(jax.tree.leaves(new.demos), jax.tree.leaves(state.demos), strict=True):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------ demonstration files
def save_demos(path, success=(True, False, True), **changes):
    """Writes `lfd_demos()` (obs_dim 2, action_dim 1, L 6) with `changes` to the arrays."""
    demos = lfd_demos()
    demos_lib.save(str(path), demos, 'usb', {'task': 'usb'}, np.asarray(success))
    if changes:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        data.update(changes)
        np.savez_compressed(path, **data)
    return str(path)


def test_demonstration_files_keep_only_successful_episodes(tmp_path):
    path = save_demos(tmp_path / 'demos.npz')
    loaded, info = demos_lib.load(path, 'usb', 2, 1, 6)
    assert info['dropped_failed'] == 1 and info['env_config'] == {'task': 'usb'}
    np.testing.assert_array_equal(loaded.lengths, [3, 2])
    np.testing.assert_array_equal(loaded.steps.obs[:, 0, 0], [100, 300])
    np.testing.assert_array_equal(loaded.steps.obs[1, :, 0], [300, 301, 0, 0, 0, 0])


def test_malformed_demonstration_files_raise_one_line_errors_naming_the_file(tmp_path):
    good = save_demos(tmp_path / 'good.npz')
    raw = open(good, 'rb').read()
    with zipfile.ZipFile(good) as archive:  # a byte inside obs.npy's compressed data
        member = archive.getinfo('obs.npy')
    # The local header: 30 bytes, then the name and an extra field of its own
    # (numpy writes a ZIP64 one there, absent from the central directory).
    header = member.header_offset
    name_size = int.from_bytes(raw[header + 26 : header + 28], 'little')
    extra_size = int.from_bytes(raw[header + 28 : header + 30], 'little')
    start = header + 30 + name_size + extra_size
    for name, offset in (('flipped_block', 0), ('flipped_data', member.compress_size // 2)):
        flip = bytearray(raw)  # the deflate block header (zlib.error), a data byte (CRC)
        flip[start + offset] ^= 0xFF
        (tmp_path / f'{name}.npz').write_bytes(bytes(flip))
    (tmp_path / 'truncated.npz').write_bytes(raw[: len(raw) // 2])
    (tmp_path / 'empty.npz').write_bytes(b'')
    cases = {
        'truncated': 'not a readable',
        'flipped_block': 'not a readable .npz file \\(zlib.error: ',
        'flipped_data': 'not a readable .npz file \\(zipfile.BadZipFile: Bad CRC-32',
        'empty': 'not a readable',
        'version_text': "format_version='abc'.*not an integer",
        'version_float': 'format_version=1.5.*not an integer',
        'all_failed': 'all 3 episodes are marked failed',
        'lengths_float': 'episode_lengths has dtype float',
    }
    save_demos(tmp_path / 'version_text.npz', format_version=np.str_('abc'))
    save_demos(tmp_path / 'version_float.npz', format_version=np.float64(1.5))
    save_demos(tmp_path / 'all_failed.npz', success=(False, False, False))
    save_demos(tmp_path / 'lengths_float.npz', episode_lengths=np.array([3.0, 5.0, 2.0]))
    for name, message in cases.items():
        path = str(tmp_path / f'{name}.npz')
        with pytest.raises(demos_lib.DemoFormatError, match=message) as raised:
            demos_lib.load(path, 'usb', 2, 1, 6)
        text = str(raised.value)
        assert text.startswith(f'{path}: ') and '\n' not in text, text


# ------------------------------------------------------------ image observations
IMAGE_SPEC = base.ReplaySpec(
    capacity=64, n_step=1, discount=0.5, episode_length=4, num_envs=2, updates_per_iteration=4
)


def image_steps(ids):
    """Steps whose image observation (5x5x1 uint8) is filled with its id and
    whose controller vector starts with it; the next observation's id is +100."""
    ids = np.asarray(ids)

    def obs(i):
        image = np.broadcast_to(i[..., None, None, None], i.shape + (5, 5, 1)).astype(np.uint8)
        vector = np.repeat(i[..., None], 4, axis=-1).astype(np.float32)
        return {'image': jnp.asarray(image), 'controller': jnp.asarray(vector)}

    return types.Step(
        obs=obs(ids),
        action=jnp.zeros(ids.shape + (1,)),
        reward=jnp.ones(ids.shape),
        terminal=jnp.zeros(ids.shape, bool),
        next_obs=obs(ids + 100),
    )


@pytest.mark.parametrize('kind', ['uniform', 'prioritized', 'der', 'lfd'])
def test_image_observations_are_stored_and_sampled_as_uint8(kind):
    """Every replay kind keeps images uint8 on the device, and a sampled
    transition's image, state vector and next image belong together."""
    configs = {
        'uniform': uniform.UniformConfig(),
        'prioritized': prioritized.PrioritizedConfig(),
        'der': der.DERConfig(num_buffers=2, structure='none', zone_fraction=0.25, pool_episodes=4),
        'lfd': uniform.UniformConfig(),
    }
    replay = registry.make_replay(configs[kind], IMAGE_SPEC)
    example = jax.tree.map(lambda x: x[0, 0], image_steps(np.zeros((1, 1), int)))
    demos = None
    if kind == 'lfd':
        replay = mixed.make_mixed(replay, 0.25, IMAGE_SPEC)
        demos = demos_lib.Demonstrations(
            steps=image_steps(np.arange(8).reshape(2, 4) + 1),
            lengths=jnp.asarray([4, 4]),
            success=jnp.asarray([True, True]),
        )
    state = replay.init(example, demos)
    images = [x for x in jax.tree.leaves(state) if x.ndim >= 4 and x.shape[-3:] == (5, 5, 1)]
    assert images and all(x.dtype == np.uint8 for x in images)
    last = jnp.zeros((4, 2), bool).at[3].set(True)
    for chunk in range(3):  # ids 10..33: three episodes per env
        steps = image_steps(10 + 8 * chunk + np.arange(8).reshape(4, 2))
        state = replay.add(state, steps, last, last, jax.random.PRNGKey(chunk))
    batch, _ = jax.jit(replay.sample, static_argnums=2)(state, jax.random.PRNGKey(7), 32)
    assert batch.obs['image'].dtype == np.uint8 and batch.obs['image'].shape == (32, 5, 5, 1)
    ids = np.asarray(batch.obs['controller'][:, 0])
    np.testing.assert_array_equal(batch.obs['image'][:, 2, 2, 0], ids)
    np.testing.assert_array_equal(batch.next_obs['image'][:, 2, 2, 0], ids + 100)
    assert len(np.unique(ids)) > 8 and ids.min() >= 1 and ids.max() <= 33
