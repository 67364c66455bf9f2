"""The insertion training loop: residual composition, seeds, compile count, resume, learning.

MJX compiles cost tens of seconds on this CPU, so every test here shares one
small configuration (`SMALL`) and its compiled functions.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax.agents import sac
from insertion_jax.envs import controllers, insertion
from insertion_jax.training import loop, runner
from tests.conftest import SMALL, SMALL_RUN


@pytest.fixture(scope='module')
def small():
    components = loop.make_components(SMALL)
    return components, loop.make_runner(components, 2)


def tree_allclose(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_residual_mode_executes_the_sum_and_stores_the_rl_part(small):
    components, _ = small
    state = jax.tree.map(lambda x: x[0], loop.init_states(components, 0, 1))
    act = loop.make_act(components, state)
    _, _, _, chunk = jax.jit(
        lambda s, k: loop.collect(components.env, s.env, s.episode_return, act, s.noise, k, 6)
    )(state, jax.random.PRNGKey(1))
    u_h = controllers.p_controller_action(chunk.obs)
    np.testing.assert_allclose(
        chunk.move, u_h + SMALL.env.max_action_m * chunk.action, rtol=1e-5, atol=1e-9
    )
    stored = loop.chunk_steps(chunk)
    np.testing.assert_array_equal(stored.action, chunk.action)
    assert np.abs(np.asarray(stored.action)).max() <= 1.0
    # The environment really ran the sum: replaying the first move reproduces the step.
    first = jax.tree.map(lambda x: x[0], state.env)
    replay = jax.jit(components.env.step)(first, chunk.move[0, 0])
    np.testing.assert_allclose(replay.obs, chunk.next_obs[0, 0], rtol=1e-5, atol=1e-5)


def test_executed_action_per_mode(small):
    env = small[0].env
    obs = jnp.array([[2.0, -1.0, 40.0, 0.0]])
    a = jnp.array([[0.5, 0.0, -1.0]])
    u_h = controllers.p_controller_action(obs)
    max_move = SMALL.env.max_action_m
    np.testing.assert_allclose(
        loop.executed_action(env, 'residual', obs, a), u_h + max_move * a, rtol=1e-6
    )
    np.testing.assert_allclose(loop.executed_action(env, 'pure', obs, a), max_move * a)
    np.testing.assert_allclose(loop.executed_action(env, 'lfd', obs, a), max_move * a)


def test_a_seed_gives_the_same_results_whichever_seeds_share_its_batch(small):
    """No state leaks between vmapped seeds: seed 6 next to seed 5 or next to
    seed 7 (and in either position) produces bit-identical training."""
    components, run = small
    with_5, metrics_5 = run(loop.init_states(components, 5, 2))  # seeds 5, 6
    with_7, metrics_7 = run(loop.init_states(components, 6, 2))  # seeds 6, 7
    for a, b in zip(jax.tree.leaves(with_5), jax.tree.leaves(with_7), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[0])
    for key in metrics_5:
        np.testing.assert_array_equal(metrics_5[key][1], metrics_7[key][0])


def test_vmapped_seeds_equal_each_seed_run_alone(small):
    """Seed 6 run alone matches seed 6 of a two-seed run. Batched and unbatched
    XLA kernels sum in different orders, and contact physics amplifies the last
    bits, so after two iterations the two agree to float32 rounding amplified
    by Adam (whose steps are about the learning rate, 3e-4, whatever the
    gradient's size), far below a real difference; the episodes' outcomes are
    the same."""
    components, run = small
    together, metrics_together = run(loop.init_states(components, 5, 2))
    alone, metrics_alone = run(loop.init_states(components, 6, 1))
    second = jax.tree.map(lambda x: x[1:], together)
    tree_allclose(second.agent.actor_params, alone.agent.actor_params, atol=5e-4)
    tree_allclose(second.agent.critic_params, alone.agent.critic_params, atol=5e-4)
    tree_allclose(second.buffer.data.action, alone.buffer.data.action, atol=0.02)
    np.testing.assert_array_equal(metrics_together['success'][1], metrics_alone['success'][0])
    np.testing.assert_array_equal(second.buffer.data.reward, alone.buffer.data.reward)
    assert int(alone.agent.steps[0]) > 0  # updates ran


def test_the_loop_compiles_once(small):
    components, run = small
    state = loop.init_states(components, 0, 2)
    state, metrics = run(state)
    compiled = run._cache_size()  # other tests may have run other seed counts
    for _ in range(2):
        state, metrics = run(state)
    assert run._cache_size() == compiled
    assert int(state.iteration[0]) == 6
    assert int(state.env_steps[0]) == 6 * SMALL.env_steps_per_iteration
    assert np.all(np.isfinite(metrics['critic_loss'][:, -1]))


def test_training_state_has_no_nan_and_updates_wait_for_learning_starts(small):
    components, run = small
    state, metrics = run(loop.init_states(components, 0, 1))
    # Iteration 1 holds 18 steps = learning_starts: the updates start there.
    assert np.isfinite(metrics['critic_loss'][0, 0])
    assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(state.agent))
    assert int(state.buffer.size[0]) == 2 * SMALL.env_steps_per_iteration


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="Unknown mode 'hybrid'; valid modes: pure, residual, lfd"):
        loop.TrainConfig(mode='hybrid')
    with pytest.raises(ValueError, match="obs='image' is not available"):
        loop.TrainConfig(obs='image')
    with pytest.raises(ValueError, match='TrainConfig.num_envs=0 must be a positive integer'):
        loop.TrainConfig(num_envs=0)
    with pytest.raises(ValueError, match='mode=lfd needs the agent bc_weight > 0'):
        loop.TrainConfig(mode='lfd')
    with pytest.raises(ValueError, match="bc_weight=1.0 but mode='residual'"):
        loop.TrainConfig(agent=sac.SACConfig(bc_weight=1.0))


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_the_same(small_run_dir, tmp_path):
    def log(line):
        if line.startswith('[') and line.split('/')[0].strip('[ ') == '72':
            raise Stop  # stopped after the second call and its checkpoint

    out = str(tmp_path / 'stopped')
    with pytest.raises(Stop):
        runner.train(SMALL, SMALL_RUN, out, log=log)
    resumed_lines = []
    resumed = runner.train(SMALL, SMALL_RUN, out, log=resumed_lines.append)
    assert any('resumed from the checkpoint at 72 env steps' in line for line in resumed_lines)
    with open(os.path.join(small_run_dir, 'summary.json')) as f:
        whole = json.load(f)
    assert resumed['seeds'][0]['success_exact'] == whole['seeds'][0]['success_exact']
    _, whole_params, _ = runner.load_run(small_run_dir)
    _, resumed_params, _ = runner.load_run(out)
    tree_allclose(whole_params, resumed_params, rtol=1e-6, atol=1e-7)
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        records = [json.loads(line) for line in f]
    assert [r['iteration'] for r in records] == list(range(1, 7))
    for name in ('config.json', 'learning_curve.png', 'summary.json', 'summary.md'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with pytest.raises(runner.ConfigMismatchError, match='different configuration'):
        runner.train(dataclasses.replace(SMALL, utd=1.0), SMALL_RUN, out, log=lambda s: None)


def test_lfd_mode_records_successful_demonstrations_and_clones_them():
    from insertion_jax.agents import td3  # pylint: disable=import-outside-toplevel

    config = dataclasses.replace(
        SMALL,
        algo='td3',
        agent=td3.TD3Config(hidden=(16, 16), bc_weight=1.0),
        mode='lfd',
        env=dataclasses.replace(SMALL.env, goal_noise_mm=0.0, horizon=20),
        num_envs=4,
        unroll_length=5,
        num_demos=3,
        learning_starts=20,
    )
    components = loop.make_components(config)
    demos, info = loop.make_demonstrations(components, jax.random.PRNGKey(0))
    horizon = config.env.horizon
    assert demos.steps.obs.shape == (3, horizon, insertion.OBS_DIM)
    np.testing.assert_array_equal(demos.lengths, horizon)
    assert np.abs(np.asarray(demos.steps.action)).max() <= 1.0
    # Every demonstration ends connected: its last reward is 1 (sparse reward).
    np.testing.assert_array_equal(np.asarray(demos.steps.reward)[:, -1], 1.0)
    assert 0.0 < info['demonstrator_success_rate'] <= 1.0
    transitions = loop.demo_transitions(demos, config.n_step, 0.99)
    np.testing.assert_array_equal(transitions.is_demo, 1.0)
    assert transitions.obs.shape == (3 * horizon, insertion.OBS_DIM)
    state = loop.init_states(components, 0, 1, demos)
    assert int(state.demos.size[0]) == 3 * horizon
    state, metrics = loop.make_runner(components, 2)(state)
    # Batches mix agent and demo samples; the BC term and its Q-filter ran.
    assert np.isfinite(np.nanmean(metrics['bc_mse']))
    assert 0.0 <= float(np.nanmean(metrics['q_filter_pass'])) <= 1.0
    assert config.demo_batch_size == 4
