"""The environment's functions are pure: jit once, vmap-consistent, validated config;
its reward and metrics are what the papers and the evaluation read.

Every test here shares one USB environment and three compiled programs (`Sim`):
one step, the batched step, and a batched reset of 512 worlds with their goal
offsets given (drawn by `env.reset_args`, as `reset(key)` draws them, except
for the three starts below).
"""

import dataclasses
import re
import subprocess
import sys
from typing import Callable, List

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax.envs import (
    base,
    connector_obs,
    connectors,
    controllers,
    insertion,
    mjcf,
    registry,
    rewards,
    scene,
)
from insertion_jax.envs.base import mjx
from tests import conftest

# Starts of the batched reset every test shares (goal offsets in mm): inserts
# without touching a wall; caught on the chamfer, where it slides slowly (it
# drops in after about 15 steps); misses the opening and rests on the rim.
OFFSETS_MM = ((0.0, 0.0), (0.8, -0.4), (2.0, 0.0))
INSERTS, CHAMFER, MISSES = range(3)
RESETS = 512  # worlds per batched reset: the three starts, then 509 drawn ones


@dataclasses.dataclass
class Sim:
    """The module's environment and its compiled functions."""

    env: insertion.InsertionEnv
    step: Callable  # one world; counts its traces in `traces`
    vstep: Callable
    vreset: Callable  # (keys (RESETS,), goal_offset_mm (RESETS, 2))
    traces: List[int]
    resets: base.State  # vreset of the starts' keys and OFFSETS_MM, then drawn ones
    starts: base.State  # its first three worlds

    def drawn_offsets(self, keys) -> jax.Array:
        return _drawn_offsets(self.env, keys)

    def start(self, i: int) -> base.State:
        return _take(self.starts, i)


# Jitted: eagerly, each of a state's hundred-odd leaves would compile its own slice.
_take = jax.jit(lambda states, index: jax.tree.map(lambda x: x[index], states))
_drawn_offsets = jax.jit(
    lambda env, keys: jax.vmap(env.reset_args)(keys)['goal_offset_mm'], static_argnums=0
)


@pytest.fixture(scope='module')
def sim() -> Sim:
    # Dense reward and goal noise: the reward test and the goal-noise draw use
    # the same environment (and compiled programs) as the purity tests.
    env = insertion.InsertionEnv(
        insertion.InsertionConfig(task='usb', reward='dense', goal_noise_mm=1.0)
    )
    traces = []

    def counted_step(state, action):
        traces.append(1)  # runs only while tracing
        return env.step(state, action)

    vreset = jax.jit(jax.vmap(env.reset))
    keys = jnp.concatenate(
        [
            jax.random.split(jax.random.PRNGKey(1), len(OFFSETS_MM)),
            jax.random.split(jax.random.PRNGKey(3), RESETS - len(OFFSETS_MM)),
        ]
    )
    offsets = _drawn_offsets(env, keys)
    resets = vreset(keys, goal_offset_mm=offsets.at[: len(OFFSETS_MM)].set(jnp.array(OFFSETS_MM)))
    return Sim(
        env=env,
        step=jax.jit(counted_step),
        vstep=jax.jit(jax.vmap(env.step)),
        vreset=vreset,
        traces=traces,
        resets=resets,
        starts=_take(resets, jnp.arange(len(OFFSETS_MM))),
    )


def test_step_compiles_once_over_many_calls(sim):
    state = sim.start(INSERTS)
    for i in range(6):
        action = controllers.p_controller_action(state.obs) + 0.001 * i
        state = sim.step(state, action)
    assert len(sim.traces) == 1
    assert int(state.info['step']) == 6


# Where the plug moves freely or rests in a stable contact, batched and
# single-world programs agree within these bounds. The position bound is a
# tenth of USB's clearance per side (0.15 mm): a disagreement that small cannot
# change whether the plug fits. The force bound follows from it: the F/T
# reading is the compliance's spring force k_z (z - z_set), and the set-point
# z_set = z_prev - kp_z (z_prev - z*) moves with the position, so positions
# that agree within d give forces that agree within k_z (2 - kp_z) d.
DRIFT_MM = connectors.USB.clearance_mm / 2 / 10
DRIFT_N = (
    scene.DEFAULT_EE.stiffness_n_per_m * (2 - controllers.DEFAULT_KP[2]) * DRIFT_MM * 1e-3
)  # 0.1 N


def test_vmapped_and_unvmapped_agree(sim):
    """Batched and single-world steps agree within `DRIFT_MM` and `DRIFT_N` where
    the motion is stable, and give the same outcome everywhere.

    The two XLA programs round differently. In free air, during the clean
    insertion and on the flat rim the differences do not grow (measured:
    identical qpos in free air and along the clean insertion, at most 0.0006 mm
    and 0.007 N on the rim). A plug caught on the 45 degree chamfer slides
    along it under the lateral compliance until it drops in: a marginal motion
    that amplifies rounding (measured: 0.16 mm and 0.11 N after 14 steps, and
    5 mm a step later when one copy drops in a step before the other), so
    there only the outcome is compared.
    """
    batched = sim.starts
    singles = [sim.start(i) for i in range(len(OFFSETS_MM))]
    for t in range(14):
        batched = sim.vstep(batched, controllers.p_controller_action(batched.obs))
        singles = [sim.step(s, controllers.p_controller_action(s.obs)) for s in singles]
        for i, single in enumerate(singles):
            if t < 4 or i == INSERTS:  # free air (about 10 mm above the rim), clean insertion
                np.testing.assert_allclose(
                    batched.data.qpos[i], single.data.qpos, rtol=1e-5, atol=1e-9
                )
            if i != CHAMFER:
                np.testing.assert_allclose(batched.obs[i, :3], single.obs[:3], atol=DRIFT_MM)
                np.testing.assert_allclose(batched.obs[i, 3], single.obs[3], atol=DRIFT_N)
    on_rim = float(connector_obs.obs_field(batched.obs[MISSES], 'f_z_n')[0])
    assert on_rim > 5.0  # the stable contact is a contact
    for i, single in enumerate(singles):
        assert bool(batched.info['success'][i]) == bool(single.info['success'])
    assert [bool(v) for v in batched.info['success']] == [True, False, False]


def test_reset_is_deterministic_and_varies_with_key(sim):
    keys = jax.random.split(jax.random.PRNGKey(2), 512)
    keys = keys.at[1].set(keys[0])
    states = sim.vreset(keys, goal_offset_mm=sim.drawn_offsets(keys))
    obs = np.asarray(states.obs)
    np.testing.assert_array_equal(obs[0], obs[1])
    assert not np.allclose(obs[0], obs[2])
    # Start: about 5 cm above the goal, within the horizontal reset range of
    # the true goal, no force.
    cfg = sim.env.config
    tip_mm = np.asarray(jax.vmap(sim.env.tip_position)(states.data)) * 1e3
    goal_mm = np.asarray(states.info['goal']) * 1e3
    np.testing.assert_allclose(tip_mm[:, 2] - goal_mm[:, 2], cfg.reset_height_mm, atol=0.01)
    assert np.all(np.abs(tip_mm[:, :2] - goal_mm[:, :2]) <= cfg.reset_xy_range_mm + 1e-4)
    assert np.all(np.abs(connector_obs.obs_field(obs, 'f_z_n')) < 1e-3)


def test_reset_physics_is_mujoco_forward_with_nothing_touching(sim):
    """The reset's `base.forward_at_rest` skips collision detection and the
    solver; MuJoCo's `mj_forward`, which runs them, finds nothing touching and
    the same state in all 512 resets."""
    conftest.assert_rest_is_mujoco_forward(sim.env, sim.resets.data)


def test_config_goal_noise_is_uniform_within_its_bound(sim):
    """`reset(key)` perturbs the goal by `reset_args(key)` (one line of `reset`);
    the draws, and what a reset does with them, are checked here."""
    states = _take(sim.resets, jnp.arange(len(OFFSETS_MM), RESETS))  # the drawn worlds
    offset_mm = np.asarray(states.info['goal_observed'] - states.info['goal']) * 1e3
    assert np.all(np.abs(offset_mm[:, :2]) <= 1.0 + 1e-4)
    assert np.all(offset_mm[:, 2] == 0.0)  # only the horizontal goal is perturbed
    assert abs(offset_mm[:, :2].std() - 1 / np.sqrt(3)) < 0.05  # uniform on [-1, 1]
    # The observation is relative to the perturbed goal, the socket did not move.
    rel = np.asarray(connector_obs.obs_field(states.obs, 'ee_pos_rel_goal_mm'))
    tip = np.asarray(jax.vmap(sim.env.tip_position)(states.data)) * 1e3
    np.testing.assert_allclose(rel, tip - np.asarray(states.info['goal_observed']) * 1e3, atol=1e-3)


def test_dense_reward_through_step_is_eq2_and_flips_once_connected(sim):
    """Through `step`, the reward is eq. 2 of the state after each step, with x*
    the goal the robot was told, and the force term's sign flips once connected.

    Driven by the P-controller pressing 1 mm further down (about 4 N more on
    the z compliance): the plug caught on the chamfer, told a goal 0.9 mm off
    the socket's, is pushed up by contact before it connects; the aligned plug
    connects and then presses onto the floor.
    """
    dense = sim.env.config.dense
    press = jnp.array([0.0, 0.0, -1e-3])
    force_terms = {False: [], True: []}  # connected -> [(f_z, force term)]
    for row in (CHAMFER, INSERTS):
        state = sim.start(row)
        told = np.asarray(state.info['goal_observed'], np.float64)
        for _ in range(14):
            state = sim.step(state, controllers.p_controller_action(state.obs) + press)
            error_m = np.asarray(sim.env.tip_position(state.data), np.float64) - told
            f_z = float(connector_obs.obs_field(state.obs, 'f_z_n')[0])
            connected = bool(state.info['success'])
            phi = -dense.phi if connected else dense.phi
            by_hand = (
                -dense.alpha * np.sum(np.abs(error_m))
                - dense.beta / (np.linalg.norm(error_m) + dense.eps_m)
                - phi * f_z
            )
            assert float(state.reward) == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
            assert float(state.metrics['reward/force']) == pytest.approx(-phi * f_z, rel=1e-5)
            force_terms[connected].append((f_z, float(state.metrics['reward/force'])))
    # Contact pushing the plug up (f_z > 0) costs reward before connection and
    # pays once connected.
    assert any(f > 1.0 and term < 0 for f, term in force_terms[False]), force_terms[False]
    assert any(f > 1.0 and term > 0 for f, term in force_terms[True]), force_terms[True]


def test_nan_action_gives_finite_metrics_and_flags_the_divergence(sim):
    """A diverged step hides its NaNs from the learner and from evaluation means."""
    before = sim.step(sim.start(MISSES), jnp.zeros(3))
    after = sim.step(before, jnp.full(3, jnp.nan, jnp.float32))  # not weak-typed: no retrace
    assert float(after.metrics['nonfinite']) == 1.0
    for name, value in after.metrics.items():
        assert np.isfinite(float(value)), name
    np.testing.assert_array_equal(after.obs, 0.0)
    assert float(after.reward) == 0.0
    assert bool(after.done) and bool(sim.env.terminal(after)) and not bool(sim.env.success(after))
    # Physical metrics keep the last finite step's values; reward terms are 0.
    assert float(after.metrics['distance_mm']) == float(before.metrics['distance_mm'])
    assert float(after.metrics['f_z_n']) == float(before.metrics['f_z_n'])
    assert float(after.metrics['reward/force']) == 0.0
    assert len(sim.traces) == 1  # every test of the module shares the one step program


def test_specs_and_success_follow_the_state(sim):
    env = sim.env
    assert env.observation_spec == jax.ShapeDtypeStruct((connector_obs.OBS_DIM,), jnp.float32)
    assert env.action_spec == jax.ShapeDtypeStruct((insertion.ACTION_DIM,), jnp.float32)
    assert sim.starts.obs.shape[1:] == env.observation_spec.shape
    assert sim.starts.obs.dtype == env.observation_spec.dtype
    np.testing.assert_array_equal(jax.vmap(env.success)(sim.starts), False)


@pytest.mark.parametrize('kind', sorted(registry.ENVS))
def test_every_registered_env_implements_the_protocol(kind):
    config_cls, env_cls = registry.ENVS[kind]
    env = env_cls(config_cls())  # builds the model, compiles nothing
    assert isinstance(env, base.Env)
    assert env.observation_spec == jax.ShapeDtypeStruct((env.obs_dim,), jnp.float32)
    assert env.action_spec == jax.ShapeDtypeStruct((env.action_dim,), jnp.float32)
    assert len(env.obs_scale) == env.obs_dim and env.action_scale.shape == (env.action_dim,)


def test_point_reach_state_matches_its_specs():
    env = registry.make_env(registry.config_from_dict({'kind': 'point_reach'}))
    state = env.reset(jax.random.PRNGKey(0))
    state = env.step(state, -state.obs[:2])  # straight at the goal
    assert state.obs.shape == env.observation_spec.shape
    assert state.obs.dtype == env.observation_spec.dtype
    assert env.success(state).dtype == jnp.bool_
    assert bool(env.success(state)) == (float(state.metrics['distance']) < 0.1)


def test_batched_steps_every_world_in_one_flat_batch_under_outer_vmaps():
    """`base.batched(fn)` is `jax.vmap(fn)`, except that outer vmaps (seeds,
    study configurations) merge into its axis: `fn` runs once on (S * E, ...)."""

    def fn(x, scale, empty):  # one world: x (3,), scale (), empty (0,)
        return {'y': jnp.sin(x) * scale, 'empty': empty + 1.0}

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 3))  # (C, S, E, 3)
    scale = jnp.arange(4.0)  # (E,): the same for every seed and configuration
    empty = jnp.zeros((2, 5, 4, 0))
    want = jax.vmap(jax.vmap(jax.vmap(fn), (0, None, 0)), (0, None, 0))(x, scale, empty)

    def run(x, empty):
        return base.batched(fn)(x, scale, empty=empty)

    nested = jax.vmap(jax.vmap(run))
    got = jax.jit(nested)(x, empty)
    np.testing.assert_array_equal(got['y'], want['y'])
    assert got['empty'].shape == (2, 5, 4, 0)
    np.testing.assert_array_equal(run(x[0, 0], empty[0, 0])['y'], want['y'][0, 0])
    # One flat batch of 2 x 5 x 4 worlds: the sine runs once, on (40, 3).
    jaxpr = str(jax.make_jaxpr(nested)(x, empty))
    assert re.findall(r'f32\[([\d,]+)\] = sin', jaxpr) == ['40,3'], jaxpr


def test_controllers_import_without_mujoco():
    """The exported policy imports the P-controller: it must not pull in MuJoCo."""
    code = (
        'import sys, insertion_jax.envs.controllers; '
        "print(sorted(m for m in ('mujoco', 'flax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout + out.stderr


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
        ({'reset_height_mm': 9.0}, r"reset_height_mm=9.0 must exceed the usb socket's depth"),
    ],
)
def test_bad_config_is_rejected_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        insertion.InsertionConfig(**kwargs)


def test_mjx_keeps_the_contact_budget(sim):
    """MJX reads the scene's budget: its contact arrays hold exactly that many."""
    data = mjx.make_data(sim.env.mjx_model)
    assert data._impl.contact.dist.shape == (sim.env.config.max_contact_points,)
    assert sim.env.config.max_contact_points == mjcf.MAX_CONTACT_POINTS


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
