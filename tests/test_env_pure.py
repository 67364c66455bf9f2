"""The environment's functions are pure: jit once, vmap-consistent, validated config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax.envs import connector_obs, controllers, insertion, mjcf, rewards
from insertion_jax.envs.base import mjx


@pytest.fixture(scope='module')
def env(usb_rig):
    return usb_rig.env


def test_step_compiles_once_over_many_calls(env):
    traces = []

    def counted_step(state, action):
        traces.append(1)  # runs only while tracing
        return env.step(state, action)

    step = jax.jit(counted_step)
    reset = jax.jit(env.reset)
    state = reset(jax.random.PRNGKey(0))
    for i in range(6):
        action = controllers.p_controller_action(state.obs) + 0.001 * i
        state = step(state, action)
    assert len(traces) == 1
    assert int(state.info['step']) == 6


def test_vmapped_and_unvmapped_agree(env):
    """Identical to float rounding in free motion; in contact within a physical tolerance.

    Batched and single-world XLA programs round differently, and a plug jammed on
    a chamfer amplifies that (the contact solver runs a fixed number of Newton
    iterations), so after contact the two may drift by up to about 0.1 mm and
    0.1 N: far below the clearance, and the outcome must be the same.
    """
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    offsets = jnp.array([[0.0, 0.0], [0.8, -0.4], [2.0, 0.0]])  # inserts, jams, misses
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    vreset, vstep = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))

    batched = vreset(keys, goal_offset_mm=offsets)
    singles = [reset(k, goal_offset_mm=o) for k, o in zip(keys, offsets, strict=True)]
    for t in range(14):
        batched = vstep(batched, controllers.p_controller_action(batched.obs))
        singles = [step(s, controllers.p_controller_action(s.obs)) for s in singles]
        for i, single in enumerate(singles):
            if t < 4:  # still in free air, about 10 mm above the rim
                np.testing.assert_allclose(
                    batched.data.qpos[i], single.data.qpos, rtol=1e-5, atol=1e-9
                )
            np.testing.assert_allclose(batched.obs[i, :3], single.obs[:3], atol=0.25)  # mm
            np.testing.assert_allclose(batched.obs[i, 3], single.obs[3], atol=0.5)  # N
    for i, single in enumerate(singles):
        assert bool(batched.info['success'][i]) == bool(single.info['success'])
    assert [bool(v) for v in batched.info['success']] == [True, False, False]


def test_reset_is_deterministic_and_varies_with_key(env):
    reset = jax.jit(env.reset)
    a, b, c = (
        reset(jax.random.PRNGKey(5)),
        reset(jax.random.PRNGKey(5)),
        reset(jax.random.PRNGKey(6)),
    )
    np.testing.assert_array_equal(a.obs, b.obs)
    assert not np.allclose(a.obs, c.obs)
    # Start: about 5 cm above the goal, within the horizontal reset range, no force.
    rel = np.asarray(connector_obs.obs_field(a.obs, 'ee_pos_rel_goal_mm'))
    assert rel[2] == pytest.approx(env.config.reset_height_mm, abs=0.01)
    assert np.all(np.abs(rel[:2]) <= env.config.reset_xy_range_mm)
    assert abs(float(connector_obs.obs_field(a.obs, 'f_z_n')[0])) < 1e-3


def test_config_goal_noise_is_uniform_within_its_bound():
    noisy = insertion.InsertionEnv(insertion.InsertionConfig(task='usb', goal_noise_mm=1.0))
    states = jax.jit(jax.vmap(noisy.reset))(jax.random.split(jax.random.PRNGKey(2), 512))
    offset_mm = np.asarray(states.info['goal_observed'] - states.info['goal']) * 1e3
    assert np.all(np.abs(offset_mm[:, :2]) <= 1.0 + 1e-4)
    assert np.all(offset_mm[:, 2] == 0.0)  # only the horizontal goal is perturbed
    assert abs(offset_mm[:, :2].std() - 1 / np.sqrt(3)) < 0.05  # uniform on [-1, 1]
    # The observation is relative to the perturbed goal, the socket did not move.
    rel = np.asarray(connector_obs.obs_field(states.obs, 'ee_pos_rel_goal_mm'))
    tip = np.asarray(jax.vmap(noisy.tip_position)(states.data)) * 1e3
    np.testing.assert_allclose(rel, tip - np.asarray(states.info['goal_observed']) * 1e3, atol=1e-3)


@pytest.mark.parametrize(
    'kwargs, message',
    [
        ({'task': 'hdmi'}, 'valid tasks: usb, dsub, model_e'),
        ({'reward': 'shaped'}, 'valid rewards: sparse, dense'),
        ({'horizon': 0}, 'horizon=0 must be a positive integer'),
        ({'goal_noise_mm': -1.0}, 'goal_noise_mm=-1.0 must be >= 0'),
        ({'max_action_m': 0.0}, 'max_action_m=0.0 must be > 0'),
        ({'workspace_mm': 2.0}, r'workspace_mm=2.0 must exceed reset_xy_range_mm \+ goal_noise_mm'),
        ({'max_contact_points': -1}, 'max_contact_points=-1 must be an integer >= 0'),
    ],
)
def test_bad_config_is_rejected_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        insertion.InsertionConfig(**kwargs)


def test_mjx_keeps_the_contact_budget(env):
    """MJX reads the scene's budget: its contact arrays hold exactly that many."""
    data = mjx.make_data(env.mjx_model)
    assert data._impl.contact.dist.shape == (env.config.max_contact_points,)
    assert env.config.max_contact_points == mjcf.MAX_CONTACT_POINTS


def test_obs_field_names_are_checked():
    with pytest.raises(ValueError, match='fields: ee_pos_rel_goal_mm, f_z_n'):
        connector_obs.obs_field(jnp.zeros(connector_obs.OBS_DIM), 'torque')


def test_p_controller_is_eq5():
    obs = jnp.array([10.0, -4.0, 50.0, 3.0])  # mm relative to goal, then f_z
    np.testing.assert_allclose(
        controllers.p_controller_action(obs), [-0.010, 0.004, -0.015], rtol=1e-6
    )


def test_dense_reward_terms_match_eq2_by_hand():
    x = jnp.array([0.001, -0.002, 0.003])
    goal = jnp.zeros(3)
    reward, terms = rewards.dense_reward(x, goal, jnp.float32(2.0), jnp.bool_(False))
    l1, l2 = 0.006, np.sqrt(1e-6 + 4e-6 + 9e-6)
    assert float(terms['distance_l1']) == pytest.approx(-100 * l1, rel=1e-5)
    assert float(terms['distance_inverse']) == pytest.approx(-0.002 / (l2 + 1e-3), rel=1e-5)
    assert float(terms['force']) == pytest.approx(-0.1 * 2.0, rel=1e-6)
    assert float(reward) == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-6)
    _, inserted = rewards.dense_reward(x, goal, jnp.float32(2.0), jnp.bool_(True))
    assert float(inserted['force']) == pytest.approx(+0.2, rel=1e-6)  # sign flips once inserted


def test_sparse_reward_is_eq1():
    reward, terms = rewards.sparse_reward(jnp.array([True, False]))
    np.testing.assert_array_equal(reward, [1.0, 0.0])
    assert set(terms) == {'connected'}
