"""The gymnasium adapter (`insertion_jax.gym`): registration, gymnasium's own
`check_env` on the single env, the VectorEnv contract of the vector env, and
Stable-Baselines3's SAC training on it (skipped where SB3 is not installed:
`make test-gym` installs it).

gymnasium 1.4 has no checker for vector envs; `check_vector_env` below asserts
the contract its `SyncVectorEnv` keeps (spaces, batched shapes and dtypes,
info masks, same-step autoreset with `final_obs` / `final_info`, seeding),
and `test_vector_env_runs_what_single_envs_with_the_same_seeds_run` that
sub-env i is a single env seeded with seed + i, autoresets included.

point_reach compiles in about a second, so the mechanics are tested there;
USB, what users will train, runs `check_env` (20 to 27 s on a 2-core CPU with a
cold compilation cache, 3 s warm). Its vector env against single envs adds
about 40 s cold: it runs where INSERTION_JAX_SLOW_GYM_TESTS is set (`make
test-gym` sets it).
"""

from __future__ import annotations

import os
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

import insertion_jax.gym as ij_gym
from insertion_jax.envs import registry as env_registry

# Set by `make test-gym`: also run the USB vector env (its compile dominates).
SLOW = 'INSERTION_JAX_SLOW_GYM_TESTS'
TASKS = ('usb', 'dsub', 'model_e', 'peg_in_hole', 'lap_joint', 'point_reach')
# The only warnings `check_env` may give: the state vector's Box is unbounded
# on purpose (the JAX env bounds none of its entries).
UNBOUNDED = ('minimum value is -infinity', 'maximum value is infinity')


def _check_env_without_other_warnings(env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        check_env(env)
    others = [str(w.message) for w in caught if not any(u in str(w.message) for u in UNBOUNDED)]
    assert not others, others


def _trajectory(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
    return out


def _actions(space, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(space.low, space.high).astype(np.float32) for _ in range(count)]


# ------------------------------------------------------------ registration
def test_every_task_is_registered_single_and_vector():
    assert set(env_registry.TASKS) == set(env_registry.ENVS), 'a registry kind lacks a task list'
    assert ij_gym.tasks() == TASKS
    for task in TASKS:
        spec = gymnasium.spec(f'insertion_jax/{task}')
        assert spec.kwargs == {'task': task}
        assert spec.entry_point == 'insertion_jax.gym:InsertionJaxEnv'
        assert spec.vector_entry_point == 'insertion_jax.gym:InsertionJaxVectorEnv'
    env = gymnasium.make('insertion_jax/usb', reward='dense', goal_noise_mm=1.0, horizon=40)
    config = env.unwrapped.config
    assert (config.task, config.reward, config.goal_noise_mm, config.horizon) == (
        'usb',
        'dense',
        1.0,
        40,
    )
    env = gymnasium.make('insertion_jax/usb', dense={'beta': 0.005})
    assert env.unwrapped.config.dense.beta == 0.005


@pytest.mark.parametrize(
    'task, kwargs, names',
    [
        ('usb', {'rewards': 'dense'}, ["'rewards'", 'options:', 'goal_noise_mm']),
        ('usb', {'reward': 'shiny'}, ["'shiny'", 'sparse', 'dense']),
        ('usb', {'goal_noise_mm': '1'}, ["goal_noise_mm='1'", 'a number']),
        ('usb', {'horizon': 2.5}, ['horizon=2.5', 'an integer']),
        ('usb', {'goal_noise_mm': -1.0}, ['goal_noise_mm=-1.0', '>= 0']),
        ('usb', {'dense': {'gamma': 1.0}}, ["'gamma'", 'alpha, beta']),
        ('usb', {'render_mode': 'human'}, ["'human'", 'no render mode']),
        ('peg_in_hole', {'obs': 'image'}, ["'obs'", 'options:']),
        ('point_reach', {'obs': 'pixels'}, ["'pixels'", 'state+image']),
    ],
)
def test_a_bad_option_is_a_one_line_value_error_naming_it(task, kwargs, names):
    with pytest.raises(ValueError) as err, warnings.catch_warnings():
        warnings.simplefilter('ignore')  # gymnasium's own note on an unknown render_mode
        gymnasium.make(f'insertion_jax/{task}', **kwargs)
    message = str(err.value)
    assert '\n' not in message and message.startswith(f'insertion_jax/{task}'), message
    for name in names:
        assert name in message, (name, message)
    with pytest.raises(ValueError, match='rewards'):
        gymnasium.make_vec('insertion_jax/usb', num_envs=2, rewards='dense')


# -------------------------------------------------------------- single env
@pytest.mark.parametrize('obs', ['state', 'image'])
def test_check_env_passes_on_point_reach(obs):
    env = gymnasium.make('insertion_jax/point_reach', obs=obs)
    _check_env_without_other_warnings(env.unwrapped)
    obs_space = env.observation_space
    if obs == 'image':
        assert isinstance(obs_space, gymnasium.spaces.Dict)
        assert obs_space['image'].dtype == np.uint8 and obs_space['image'].shape == (12, 12, 1)
        assert obs_space['controller'].dtype == np.float32
    else:
        assert obs_space.dtype == np.float32 and obs_space.shape == (4,)


def test_check_env_passes_on_usb_and_its_units_are_the_envs():
    env = gymnasium.make('insertion_jax/usb')
    _check_env_without_other_warnings(env.unwrapped)
    # Actions are the plug's relative move in metres, at most 1 cm per axis.
    np.testing.assert_array_equal(env.action_space.high, np.full(3, 0.01, np.float32))
    np.testing.assert_array_equal(env.action_space.low, -env.action_space.high)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (4,)
    # The tool point starts 50 mm above the goal (the observation is in mm).
    assert obs[2] == pytest.approx(50.0, abs=1e-3)
    assert info['success'] is False and info['step'] == 0
    assert isinstance(info['distance_mm'], float)
    # Same seed and actions, same trajectory; a connector runs to its
    # horizon and truncates (it never terminates on success).
    actions = _actions(env.action_space, 30)
    one, two = _trajectory(env, 3, actions), _trajectory(env, 3, actions)
    assert data_equivalence(one, two, exact=True)
    _, _, terminated, truncated, info = one[-1]
    assert (terminated, truncated, info['step']) == (False, True, 30)
    assert not any(t[2] or t[3] for t in one[1:-1])
    # An action beyond the bounds is clipped to them, as the JAX env clips.
    env.reset(seed=3)
    far = env.step(np.array([0.05, -1.0, 0.02], np.float32))
    env.reset(seed=3)
    edge = env.step(np.array([0.01, -0.01, 0.01], np.float32))
    assert data_equivalence(far, edge, exact=True)
    # Reset options: the told goal moved 1 mm in x moves the observation -1 mm.
    base, _ = env.reset(seed=3, options={'goal_offset_mm': [0.0, 0.0]})
    moved, _ = env.reset(seed=3, options={'goal_offset_mm': np.array([1.0, 0.0])})
    np.testing.assert_allclose(moved - base, [-1.0, 0.0, 0.0, 0.0], atol=1e-4)
    with pytest.raises(ValueError, match="'goal_offset'.*goal_offset_mm"):
        env.reset(options={'goal_offset': [1.0, 0.0]})
    with pytest.raises(ValueError, match=r'\(3,\)'):
        env.reset(options={'goal_offset_mm': [1.0, 0.0, 0.0]})


def test_same_seed_same_trajectory_and_actions_are_clipped_on_point_reach():
    env = gymnasium.make('insertion_jax/point_reach')
    actions = _actions(env.action_space, 20)
    one, two = _trajectory(env, 7, actions), _trajectory(env, 7, actions)
    assert data_equivalence(one, two, exact=True)
    other = _trajectory(env, 8, actions)
    assert not np.allclose(one[0], other[0])
    # The first trajectory ran past the horizon (15): it truncated there.
    assert [t[3] for t in one[1:16]] == [False] * 14 + [True]
    # A reset without a seed continues the seed's chain: reproducible too.
    env.reset(seed=7)
    after = [env.reset()[0] for _ in range(3)]
    env.reset(seed=7)
    assert data_equivalence(after, [env.reset()[0] for _ in range(3)], exact=True)
    assert not np.allclose(after[0], after[1])
    # Outside [-1, 1] an action is clipped; a wrong shape is refused.
    env.reset(seed=7)
    far = env.step(np.array([5.0, -3.0], np.float32))
    env.reset(seed=7)
    edge = env.step(np.array([1.0, -1.0], np.float32))
    assert data_equivalence(far, edge, exact=True)
    with pytest.raises(ValueError, match=r'shape \(3,\); expected \(2,\)'):
        env.step(np.zeros(3, np.float32))


def test_terminated_is_the_envs_terminal_and_base_action_is_its_controller():
    env = gymnasium.make(
        'insertion_jax/point_reach', terminate_on_success=True, success_radius=0.3, horizon=40
    )
    obs, _ = env.reset(seed=0)
    unwrapped = env.unwrapped
    for _ in range(40):
        command = unwrapped.base_action(obs)
        assert command in env.action_space
        obs, reward, terminated, truncated, info = env.step(command)
        if terminated or truncated:
            break
    # The P-controller reaches the goal well within the horizon: a success
    # that ends the episode is a termination, not a truncation.
    assert terminated and not truncated and info['success'] and info['is_success']
    with pytest.raises(ValueError, match='no hand-designed controller'):
        gymnasium.make('insertion_jax/peg_in_hole').unwrapped.base_action(np.zeros(13))


# -------------------------------------------------------------- vector env
def check_vector_env(envs: VectorEnv, seed: int = 0, steps: int = 8) -> None:
    """The VectorEnv contract, as gymnasium's SyncVectorEnv keeps it with
    `AutoresetMode.SAME_STEP`: spaces, batched shapes and dtypes, infos with
    their masks, the final observation and info of every ended episode, the
    new episode's first observation in its place, and seeding."""
    n = envs.num_envs
    assert isinstance(envs, VectorEnv)
    assert envs.metadata['autoreset_mode'] == AutoresetMode.SAME_STEP
    assert envs.observation_space == batch_space(envs.single_observation_space, n)
    assert envs.action_space == batch_space(envs.single_action_space, n)

    def check_info(info, mask):
        for key, value in info.items():
            if key.startswith('_') or key in ('final_obs', 'final_info'):
                continue
            assert isinstance(value, np.ndarray) and value.shape == (n,), key
            np.testing.assert_array_equal(info[f'_{key}'], mask)

    obs, info = envs.reset(seed=seed)
    assert obs in envs.observation_space
    check_info(info, np.ones(n, bool))
    np.testing.assert_array_equal(info['step'], 0)
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(steps)]
    trajectory = [obs]
    ended_any = False
    for action in actions:
        obs, rewards, terminated, truncated, info = envs.step(action)
        assert obs in envs.observation_space
        for array, dtype in ((rewards, np.floating), (terminated, np.bool_), (truncated, np.bool_)):
            assert isinstance(array, np.ndarray) and array.shape == (n,)
            assert np.issubdtype(array.dtype, dtype)
        assert not np.any(terminated & truncated)
        check_info(info, np.ones(n, bool))
        ended = terminated | truncated
        # Same step: an ended env already shows its next episode's start.
        np.testing.assert_array_equal(info['step'] == 0, ended)
        if ended.any():
            ended_any = True
            np.testing.assert_array_equal(info['_final_obs'], ended)
            np.testing.assert_array_equal(info['_final_info'], ended)
            check_info(info['final_info'], ended)
            for i in range(n):
                if ended[i]:
                    assert info['final_obs'][i] in envs.single_observation_space
                    assert info['final_info']['step'][i] > 0
                else:
                    assert info['final_obs'][i] is None
        else:
            assert 'final_obs' not in info and 'final_info' not in info
        trajectory.append((obs, rewards, terminated, truncated))
    assert ended_any, 'no episode ended: the autoreset went unchecked'
    # Seeding: the same seed replays the same steps; another differs.
    replay = [envs.reset(seed=seed)[0]] + [envs.step(a)[:4] for a in actions]
    assert data_equivalence(trajectory, replay, exact=True)
    other, _ = envs.reset(seed=seed + 1000)
    assert not data_equivalence(other, trajectory[0])


@pytest.mark.parametrize('obs', ['state', 'image'])
def test_vector_env_checks_on_point_reach(obs):
    # A short horizon and a wide success radius: episodes end by truncation
    # and by termination within the checked steps.
    envs = gymnasium.make_vec(
        'insertion_jax/point_reach',
        num_envs=4,
        obs=obs,
        horizon=3,
        terminate_on_success=True,
        success_radius=0.4,
    )
    assert isinstance(envs, ij_gym.InsertionJaxVectorEnv)
    check_vector_env(envs)
    mode = gymnasium.make_vec(
        'insertion_jax/point_reach', num_envs=2, vectorization_mode='vector_entry_point'
    )
    assert isinstance(mode, ij_gym.InsertionJaxVectorEnv)


def test_vector_env_runs_what_single_envs_with_the_same_seeds_run():
    kwargs = {'horizon': 4, 'terminate_on_success': True, 'success_radius': 0.3}
    n, seed, steps = 3, 11, 13
    envs = gymnasium.make_vec('insertion_jax/point_reach', num_envs=n, **kwargs)
    singles = [gymnasium.make('insertion_jax/point_reach', **kwargs) for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    terminations = truncations = 0
    for action in _actions(envs.action_space, steps):
        obs, rewards, terminated, truncated, info = envs.step(action)
        for i, env in enumerate(singles):
            o, r, te, tr, _ = env.step(action[i])
            assert (terminated[i], truncated[i]) == (te, tr)
            assert rewards[i] == pytest.approx(r, abs=1e-6)
            if te or tr:
                np.testing.assert_allclose(info['final_obs'][i], o, atol=1e-6)
                o, _ = env.reset()  # continues the seed's chain, as the vector env does
            np.testing.assert_allclose(obs[i], o, atol=1e-6)
        terminations += terminated.sum()
        truncations += truncated.sum()
    assert terminations > 0 and truncations > 0
    # Seeds one per env (None: the env's chain goes on), and a partial reset.
    obs, _ = envs.reset(seed=[seed + 2, seed + 1, seed])
    np.testing.assert_array_equal(obs, np.stack(single_obs[::-1]))
    mask = np.array([False, True, False])
    partial, info = envs.reset(seed=seed, options={'reset_mask': mask})
    np.testing.assert_array_equal(partial[[0, 2]], obs[[0, 2]])
    np.testing.assert_array_equal(partial[1], single_obs[1])
    np.testing.assert_array_equal(info['_step'], mask)
    with pytest.raises(ValueError, match='2 seeds for num_envs=3'):
        envs.reset(seed=[1, 2])
    with pytest.raises(ValueError, match='seed -1 must be a non-negative integer'):
        envs.reset(seed=[1, None, -1])
    with pytest.raises(ValueError, match=r'shape \(2, 2\); expected \(3, 2\)'):
        envs.step(np.zeros((2, 2), np.float32))


@pytest.mark.skipif(
    not os.environ.get(SLOW),
    reason=f'compiles the batched USB programs (about 40 s on a 2-core CPU, cold); {SLOW}=1 runs it',
)
def test_usb_vector_env_matches_single_envs():
    n, seed = 2, 5
    envs = gymnasium.make_vec('insertion_jax/usb', num_envs=n)
    assert envs.single_action_space == gymnasium.make('insertion_jax/usb').action_space
    single = gymnasium.make('insertion_jax/usb')
    obs, info = envs.reset(seed=seed, options={'goal_offset_mm': [[0.5, 0.0], [0.0, 0.0]]})
    assert obs.shape == (n, 4) and obs.dtype == np.float32
    actions = _actions(envs.action_space, 3)
    for i in range(n):
        offset = [0.5, 0.0] if i == 0 else [0.0, 0.0]
        o, _ = single.reset(seed=seed + i, options={'goal_offset_mm': offset})
        np.testing.assert_allclose(obs[i], o, atol=1e-4)
    vector_steps = [envs.step(a) for a in actions]
    for i in range(n):
        offset = [0.5, 0.0] if i == 0 else [0.0, 0.0]
        single.reset(seed=seed + i, options={'goal_offset_mm': offset})
        for action, (obs, rewards, terminated, truncated, info) in zip(
            actions, vector_steps, strict=True
        ):
            o, r, te, tr, single_info = single.step(action[i])
            # Batched and unbatched MJX agree to float32 rounding (tests/test_env_pure.py).
            np.testing.assert_allclose(obs[i], o, atol=1e-3)
            assert (rewards[i], terminated[i], truncated[i]) == (r, te, tr)
            assert info['distance_mm'][i] == pytest.approx(single_info['distance_mm'], abs=1e-3)


# ------------------------------------------------------------ Stable-Baselines3
def test_stable_baselines3_sac_trains_on_point_reach():
    sb3 = pytest.importorskip('stable_baselines3')
    import torch
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # One torch thread: on the 2-core CPU, torch's threads and JAX's (which
    # steps the env) contended, and SAC's 200 updates took 9.8 s instead of 1.1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_sac(sb3, sb3_check_env)
    finally:
        torch.set_num_threads(threads)


def _train_sac(sb3, sb3_check_env):
    env = gymnasium.make('insertion_jax/point_reach')
    sb3_check_env(env.unwrapped, warn=False)
    model = sb3.SAC(
        'MlpPolicy',
        env,
        learning_starts=100,
        batch_size=32,
        policy_kwargs={'net_arch': [32, 32]},
        seed=0,
        device='cpu',
    )
    model.learn(total_timesteps=300)
    assert model.num_timesteps == 300
    # 300 steps of 15-step episodes: SB3's Monitor saw them end, and read
    # the env's 'is_success' at each end.
    assert len(model.ep_info_buffer) == 20
    assert len(model.ep_success_buffer) == 20
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action in env.action_space
