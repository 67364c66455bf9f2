"""The training loop: residual composition, seeds, compile count, warm-up, resume, LfD.

The loop's mechanics do not depend on contact physics, so these tests run
`TOY` (point_reach with its P-controller, pure JAX: it compiles in seconds,
where an MJX program takes tens of seconds on this CPU) and share its
compiled functions. The same loop on the real USB task is pinned by
test_regression (the shared SMALL run) and test_learning.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax.agents import policy as policy_lib
from insertion_jax.agents import sac, td3
from insertion_jax.envs import insertion
from insertion_jax.training import (
    acting,
    config,
    demonstrations,
    evaluate,
    loop,
    run_dir,
    runner,
)
from tests.conftest import TOY, TOY_RUN


@pytest.fixture(scope='module')
def small():
    components = loop.make_components(TOY)
    return components, loop.make_train_fn(components, 2)


def test_residual_mode_executes_the_sum_and_stores_the_rl_part(small):
    components, _ = small
    state = jax.tree.map(lambda x: x[0], loop.init_states(components, 0, 1))
    act = loop.make_act(components, state)
    _, _, _, trajectory = jax.jit(
        lambda s, k: acting.rollout(components.env, s.env, act, s.noise, k, 6, auto_reset=True)
    )(state, jax.random.PRNGKey(1))
    u_h = components.env.base_action(trajectory.obs)
    np.testing.assert_allclose(trajectory.command, u_h + trajectory.action, rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(u_h)).max() > 0.1  # the P-controller did move
    stored = trajectory.steps()
    np.testing.assert_array_equal(stored.action, trajectory.action)
    assert np.abs(np.asarray(stored.action)).max() <= 1.0
    # The environment really ran the sum: replaying the first move reproduces the step.
    first = jax.tree.map(lambda x: x[0], state.env)
    replay = jax.jit(components.env.step)(first, trajectory.command[0, 0])
    np.testing.assert_allclose(replay.obs, trajectory.next_obs[0, 0], rtol=1e-6, atol=1e-7)


def test_command_per_mode(small):
    env = small[0].env
    obs = jnp.array([[0.3, -0.1, 0.2, 0.4]])
    a = jnp.array([[0.5, -1.0]])
    u_h = env.base_action(obs)
    np.testing.assert_allclose(u_h, [[-0.6, 0.2]], rtol=1e-6)  # 0.3 x offset / step
    scale = 2.0 * env.action_scale

    def command(mode):
        return policy_lib.command(mode, scale, env.base_action, obs, a)

    np.testing.assert_allclose(command('residual'), u_h + 2.0 * a, rtol=1e-6)
    np.testing.assert_allclose(command('pure'), 2.0 * a)
    np.testing.assert_allclose(command('lfd'), 2.0 * a)


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


def test_a_seed_run_alone_has_the_same_episodes_as_in_a_batch(small):
    """Seed 6 run alone against seed 6 of a two-seed run. A batch of one
    compiles to other XLA kernels than a batch of two, which sum in other
    orders: on the USB task even the first iteration's contact forces
    differed in the last bits (34 N read 33.95071 and 33.95044), and contact
    physics and Adam amplify that, so no bound on states or parameters holds
    on every CPU (one tuned on one machine failed on another). What is
    defined: the same keys draw the same start states and actions, and
    every episode ends the same way."""
    components, run = small
    together, metrics_together = run(loop.init_states(components, 5, 2))
    alone, metrics_alone = run(loop.init_states(components, 6, 1))
    second = jax.tree.map(lambda x: x[1:], together)
    starts = slice(0, TOY.num_envs)  # the first step of every environment
    for field in ('obs', 'action'):
        a = np.asarray(getattr(second.buffer.data, field))[:, starts]
        b = np.asarray(getattr(alone.buffer.data, field))[:, starts]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=field)
    np.testing.assert_array_equal(metrics_together['success'][1], metrics_alone['success'][0])
    np.testing.assert_array_equal(metrics_together['episodes'][1], metrics_alone['episodes'][0])


def test_the_loop_compiles_once(small):
    components, run = small
    state = loop.init_states(components, 0, 2)
    state, metrics = run(state)
    compiled = run._cache_size()  # other tests may have run other seed counts
    for _ in range(2):
        state, metrics = run(state)
    assert run._cache_size() == compiled
    assert int(state.iteration[0]) == 6
    assert int(state.env_steps[0]) == 6 * TOY.env_steps_per_iteration
    assert np.all(np.isfinite(metrics['critic_loss'][:, -1]))


def test_updates_wait_for_learning_starts(small):
    """learning_starts = 40 env steps = two iterations: the first iteration's
    updates are computed and dropped (NaN metrics, the agent untouched), the
    second's apply."""
    components, run = small
    state, metrics = run(loop.init_states(components, 0, 1))
    assert np.isnan(metrics['critic_loss'][0, 0]) and np.isfinite(metrics['critic_loss'][0, 1])
    # Only the second iteration's updates counted (the first's were computed
    # and dropped by the select over the agent state).
    assert int(state.agent.steps[0]) == TOY.updates_per_iteration
    assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(state.agent))
    assert int(state.buffer.size[0]) == 2 * TOY.env_steps_per_iteration


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="Unknown mode 'hybrid'; valid modes: pure, residual, lfd"):
        config.TrainConfig(mode='hybrid')
    with pytest.raises(ValueError, match="Unknown observation type 'depth'; valid types: state"):
        config.TrainConfig(env=insertion.InsertionConfig(obs='depth'))
    with pytest.raises(ValueError, match='TrainConfig.image_shift_px=-1 must be an integer >= 0'):
        config.TrainConfig(image_shift_px=-1)
    assert config.TrainConfig(env=insertion.InsertionConfig(obs='image')).obs == 'image'
    # A run written before the camera still reads back (its 'obs' was 'state').
    old = {**config.to_dict(TOY), 'obs': 'state'}
    assert config.from_dict(old) == TOY
    with pytest.raises(ValueError, match='TrainConfig.num_envs=0 must be a positive integer'):
        config.TrainConfig(num_envs=0)
    with pytest.raises(ValueError, match='mode=lfd needs the agent bc_weight > 0'):
        config.TrainConfig(mode='lfd')
    with pytest.raises(ValueError, match="bc_weight=1.0 but mode='residual'"):
        config.TrainConfig(agent=sac.SACConfig(bc_weight=1.0))
    with pytest.raises(TypeError, match="replay='der' must be a replay config object"):
        config.TrainConfig(replay='der')


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    d = config.to_dict(TOY)
    assert config.from_dict(json.loads(json.dumps(d))) == TOY
    with pytest.raises(ValueError, match="unknown key 'gamma' for TrainConfig"):
        config.from_dict({**d, 'gamma': 0.9})
    with pytest.raises(ValueError, match="agent: unknown key 'tau2' for SACConfig"):
        config.from_dict({**d, 'agent': {**d['agent'], 'tau2': 1}})
    path = tmp_path / 'config.json'
    path.write_text(json.dumps({'train': {**d, 'replay_kind': 'x'}, 'run': {}}))
    with pytest.raises(ValueError, match="unknown key 'replay_kind'"):
        runner.read_config(str(path))


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_and_ends_the_same_and_a_longer_one_continues_it(small, tmp_path):
    whole_dir = str(tmp_path / 'whole')
    runner.train(TOY, TOY_RUN, whole_dir, log=lambda line: None)
    components, run = small  # the runner's train function (one per configuration)
    assert loop.make_train_fn(components, TOY_RUN.iterations_per_call) is run
    programs = run._cache_size()

    def log(line):
        if line.startswith('[') and line.split('/')[0].strip('[ ') == '80':
            raise Stop  # stopped after the second call and its checkpoint

    out = str(tmp_path / 'stopped')
    with pytest.raises(Stop):
        runner.train(TOY, TOY_RUN, out, log=log)
    # A run killed while appending leaves a torn last line: resuming drops it.
    with open(os.path.join(out, 'metrics.jsonl'), 'a') as f:
        f.write('{"iteration": 5, "seed": 0, "env_st')
    resumed_lines = []
    resumed = runner.train(TOY, TOY_RUN, out, log=resumed_lines.append)
    assert any('resumed from the checkpoint after 4 iterations' in line for line in resumed_lines)
    # A restored (committed) state, a fresh run's and one started by hand run
    # one program: a resumed run compiles nothing new.
    run(loop.init_states(components, 0, 1))
    assert run._cache_size() == programs
    whole = run_dir.read_json(os.path.join(whole_dir, 'summary.json'))
    assert resumed['seeds'][0]['success_random'] == whole['seeds'][0]['success_random']
    _, whole_params, _ = runner.load_run(whole_dir)
    _, resumed_params, _ = runner.load_run(out)
    for a, b in zip(jax.tree.leaves(whole_params), jax.tree.leaves(resumed_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    records = run_dir.Records(os.path.join(out, 'metrics.jsonl')).read()
    assert [r['iteration'] for r in records] == list(range(1, 7))
    wall = {r['iteration']: r.pop('wall_clock_s') for r in records}
    assert wall[6] >= wall[4]
    expected = run_dir.Records(os.path.join(whole_dir, 'metrics.jsonl')).read()
    for r in expected:
        r.pop('wall_clock_s')
    assert records == expected  # the resumed run wrote what the whole one did
    for name in ('config.json', 'learning_curve.png', 'summary.json', 'summary.md'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    # A finished run started again with a larger total_steps continues.
    longer = dataclasses.replace(TOY_RUN, total_steps=TOY_RUN.total_steps + 40)
    lines = []
    extended = runner.train(TOY, longer, out, log=lines.append)
    assert '  total_steps: 120 -> 160 (the run continues)' in lines
    assert extended['mean']['env_steps'] == 160
    records = run_dir.Records(os.path.join(out, 'metrics.jsonl')).read()
    assert [r['iteration'] for r in records] == list(range(1, 9))
    for r in records:
        r.pop('wall_clock_s')
    assert records[:6] == expected
    with pytest.raises(runner.ConfigMismatchError, match='has done 160 environment steps'):
        runner.train(TOY, TOY_RUN, out, log=lambda s: None)
    config_file = run_dir.read_json(os.path.join(out, 'config.json'))
    assert config_file['run']['total_steps'] == 160  # the refused start changed nothing
    with pytest.raises(runner.ConfigMismatchError, match=r'\(train.utd: 0.5 there, 1.0 here\)'):
        runner.train(dataclasses.replace(TOY, utd=1.0), TOY_RUN, out, log=lambda s: None)


def test_checkpoints_between_evaluations_bound_what_a_stop_loses(tmp_path):
    """checkpoint_every saves between evaluations: a run evaluated only at its
    end, stopped after 80 steps, resumes from there and ends as a run that
    was not stopped; `keep` checkpoints are left."""
    run = dataclasses.replace(TOY_RUN, eval_every=120, checkpoint_every=40)

    def log(line):
        if line.startswith('[') and line.split('/')[0].strip('[ ') == '80':
            raise Stop  # after the second call and its checkpoint (no evaluation)

    out = str(tmp_path / 'saved')
    with pytest.raises(Stop):
        runner.train(TOY, run, out, log=log, keep=5)
    assert sorted(os.listdir(os.path.join(out, 'checkpoints')), key=int) == ['40', '80']
    lines = []
    resumed = runner.train(TOY, run, out, log=lines.append, keep=5)
    assert 'resumed from the checkpoint after 4 iterations' in '\n'.join(lines)
    assert sorted(os.listdir(os.path.join(out, 'checkpoints')), key=int) == ['40', '80', '120']
    whole_dir = str(tmp_path / 'whole')
    whole = runner.train(TOY, run, whole_dir, log=lambda line: None, keep=1)
    assert os.listdir(os.path.join(whole_dir, 'checkpoints')) == ['120']

    def rows(path):
        records = run_dir.Records(os.path.join(path, 'metrics.jsonl')).read()
        return [{k: v for k, v in r.items() if k != 'wall_clock_s'} for r in records]

    assert rows(out) == rows(whole_dir)
    assert [k for k in rows(out)[3] if k.startswith('eval/')] == []  # no evaluation at 80
    assert resumed['seeds'][0]['success_random'] == whole['seeds'][0]['success_random']


def test_records_drop_a_torn_last_line_and_files_are_written_whole(tmp_path):
    records = run_dir.Records(str(tmp_path / 'm.jsonl'))
    records.append([{'iteration': 1, 'x': float('nan')}, {'iteration': 2, 'x': 1.5}])
    with open(records.path, 'a') as f:
        f.write('{"iteration": 3, "x"')
    assert records.read() == [{'iteration': 1, 'x': None}, {'iteration': 2, 'x': 1.5}]
    records.append([{'iteration': 3, 'x': 2.0}])  # the torn line is cut off first
    assert [r['iteration'] for r in records.read()] == [1, 2, 3]
    records.truncate_after(2)
    assert [r['iteration'] for r in records.read()] == [1, 2]
    with open(records.path) as f:
        for line in f:
            json.loads(line)  # strict JSON: NaN was written as null
    with pytest.raises(ValueError, match='Out of range float values are not JSON compliant'):
        json.dumps(float('nan'), allow_nan=False)
    assert (
        run_dir.dumps({'a': np.float32('nan'), 'b': [np.inf, 2]}) == '{"a": null, "b": [null, 2]}'
    )


LFD = dataclasses.replace(
    TOY,
    algo='td3',
    agent=td3.TD3Config(hidden=(16, 16), bc_weight=1.0),
    mode='lfd',
    num_demos=3,
)


def test_lfd_mode_records_successful_demonstrations_and_clones_them(tmp_path):
    components = loop.make_components(LFD)
    env, horizon = components.env, LFD.env.horizon
    demos = runner.make_demonstrations(components, 0, log=lambda line: None)
    assert demos.steps.obs.shape == (3, horizon, 4)
    np.testing.assert_array_equal(demos.lengths, horizon)
    assert np.abs(np.asarray(demos.steps.action)).max() <= 1.0
    # Every demonstration ends at the goal: its last step is within the radius.
    radius = LFD.env.success_radius
    assert np.all(np.linalg.norm(np.asarray(demos.steps.next_obs)[:, -1, :2], axis=-1) < radius)
    # The same compiled recorder with a noiseless demonstrator: the
    # P-controller reaches every goal, so every episode it tries succeeds.
    _, info = demonstrations.record(
        env, 4, jax.random.PRNGKey(1), demonstrations.ScriptedController(noise=0.0), batch=4
    )
    assert info['demonstrator_success_rate'] == 1.0
    state = loop.init_states(components, 0, 1, demos)
    state, metrics = loop.make_train_fn(components, 2)(state)
    # Batches mix agent and demo samples; the BC term and its Q-filter ran.
    assert np.isfinite(np.nanmean(metrics['bc_mse']))
    assert 0.0 <= float(np.nanmean(metrics['q_filter_pass'])) <= 1.0
    assert LFD.demo_batch_size == 4

    # A finished LfD run is evaluated from its policy alone: loading it needs
    # no demonstrations (it used to fail with "mode=lfd needs demonstrations").
    out = str(tmp_path / 'lfd')
    runner.train(LFD, TOY_RUN, out, log=lambda line: None)
    loaded, params, (train_config, _) = runner.load_run(out)
    assert train_config == LFD and loaded.replay.takes_demonstrations
    result = evaluate.Evaluator(loaded, 3, 0)(params)
    assert set(result) == {'random', 'distance_random_mm'}
    summary = run_dir.read_json(os.path.join(out, 'summary.json'))
    assert float(result['random'][0]) == summary['seeds'][0]['success_random']


def test_residual_demonstrations_store_the_residual_not_the_whole_command(small):
    """Defect: DER zones held the demonstrator's whole command / scale under
    residual RL, about twice the P-controller's move. The agent's action is
    u_RL = u_demo - u_H, so a scripted P-controller with noise n stores n."""
    env = small[0].env
    noise = 0.3
    demos, _ = demonstrations.record(
        env, 3, jax.random.PRNGKey(2), demonstrations.ScriptedController(noise=noise), batch=4
    )
    pure = np.asarray(demos.steps.action)
    residual = demonstrations.for_mode(demos, env, 'residual')
    stored = np.asarray(residual.steps.action)
    u_h = np.asarray(env.base_action(jnp.asarray(demos.steps.obs)))
    scale = np.asarray(env.action_scale)
    valid = np.arange(pure.shape[1])[None, :] < np.asarray(demos.lengths)[:, None]
    np.testing.assert_allclose(stored[valid], (pure - u_h / scale)[valid], atol=1e-6)
    # Only the noise is left, except where the whole command was clipped to
    # the maximum move (the first steps, far from the goal): there the
    # residual is what brings u_H back to that move.
    unclipped = valid[..., None] & (np.abs(pure) < 1.0)
    assert np.abs(stored[unclipped]).max() <= noise + 1e-6
    assert np.abs(pure[valid]).max() == 1.0 and np.abs(stored[valid]).max() < 1.0
    assert demonstrations.for_mode(demos, env, 'pure') is demos


def test_random_shift_moves_each_image_by_at_most_the_padding():
    """DrQ's shift: one bright pixel in the middle lands within +-pad pixels of
    where it was, at every offset for some image of the batch; edges repeat."""
    images = jnp.zeros((400, 9, 9, 1), jnp.uint8).at[:, 4, 4, 0].set(255)
    shifted = np.asarray(loop.random_shift(images, 2, jax.random.PRNGKey(0)))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    rows, cols = np.nonzero(shifted[..., 0] == 255)[1:]
    assert len(rows) == 400  # one bright pixel per image, never lost
    offsets = set(zip(rows - 4, cols - 4, strict=True))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    edge = jnp.arange(81, dtype=jnp.uint8).reshape(1, 9, 9, 1)
    corner = np.asarray(loop.random_shift(edge, 3, jax.random.PRNGKey(1)))
    assert set(np.unique(corner)) <= set(np.arange(81))  # padding repeats edge pixels


def test_a_run_written_before_a_new_setting_resumes_with_its_default(tmp_path):
    """config.json from before `encoder_channels` and `image_shift_px` existed
    reads back with their defaults (what that code ran with), so the run
    resumes; a stored value that differs is still refused by name."""
    now = runner.config_dict(TOY, TOY_RUN)
    old = json.loads(json.dumps(now))
    del old['train']['agent']['encoder_channels'], old['train']['image_shift_px']
    run_dir.write_json(str(tmp_path / 'config.json'), old)

    def open_run():
        return run_dir.RunDir(
            str(tmp_path),
            now,
            'config.json',
            extendable=runner.EXTENDABLE,
            read_back=runner.read_back,
        )

    assert open_run().changed == {}
    old['train']['image_shift_px'] = 4
    run_dir.write_json(str(tmp_path / 'config.json'), old)
    with pytest.raises(run_dir.ConfigMismatchError, match='train.image_shift_px: 4 there, 2 here'):
        open_run()
