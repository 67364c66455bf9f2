"""Agent losses and updates, and the inference policy, against values computed
by hand (NumPy, float64)."""

import functools
import json
import subprocess
import sys

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax import types
from insertion_jax.agents import base, bc, ddpg, deterministic, networks, policy, sac, td3
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import connector_obs, controllers
from insertion_jax.training import normalizer as obs_norm

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 5
OBS_SPEC = jax.ShapeDtypeStruct((OBS_DIM,), jnp.float32)
ACTION_SPEC = jax.ShapeDtypeStruct((ACTION_DIM,), jnp.float32)


# ------------------------------------------------------- NumPy reference nets
def np_mlp(layers, x):
    """Forward pass of `networks.MLP` params: relu hidden layers, linear output."""
    names = sorted(layers, key=lambda n: int(n.split('_')[1]))
    x = np.asarray(x, np.float64)
    for i, name in enumerate(names):
        x = x @ np.asarray(layers[name]['kernel'], np.float64) + np.asarray(
            layers[name]['bias'], np.float64
        )
        if i < len(names) - 1:
            x = np.maximum(x, 0.0)
    return x


def np_critic(params, obs, action):
    """(C, B) Q-values of `networks.Critic` params."""
    layers = params['params']['VmapMLP_0']
    num = next(iter(layers.values()))['kernel'].shape[0]
    x = np.concatenate([obs, action], axis=-1)
    return np.stack(
        [
            np_mlp({k: jax.tree.map(lambda a, c=c: a[c], v) for k, v in layers.items()}, x)[..., 0]
            for c in range(num)
        ]
    )


def np_gaussian_actor(params, obs):
    out = np_mlp(params['params']['MLP_0'], obs)
    mean, log_std = np.split(out, 2, axis=-1)
    return mean, np.clip(log_std, networks.LOG_STD_MIN, networks.LOG_STD_MAX)


def np_det_actor(params, obs):
    return np.tanh(np_mlp(params['params']['MLP_0'], obs))


def np_squashed_sample(mean, log_std, eps):
    """tanh(u), u = mean + std eps, and log pi by the textbook formula."""
    u = mean + np.exp(log_std) * eps
    log_normal = -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.tanh(u), np.sum(log_normal - np.log(1 - np.tanh(u) ** 2), axis=-1)


def make_batch(key, is_demo=None):
    keys = jax.random.split(key, 5)
    return types.make_transition(
        obs=jax.random.normal(keys[0], (BATCH, OBS_DIM)),
        action=jax.random.uniform(keys[1], (BATCH, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(keys[2], (BATCH,)),
        discount=jnp.array([0.99, 0.99, 0.0, 0.9703, 0.99]),
        next_obs=jax.random.normal(keys[3], (BATCH, OBS_DIM)),
        is_demo=is_demo,
        weight=jax.random.uniform(keys[4], (BATCH,), minval=0.5, maxval=1.5),
    )


def init(algo, **config):
    agent = agent_registry.make_agent(
        algo, agent_registry.config_class(algo)(hidden=(8, 8), **config), ACTION_DIM
    )
    return agent, agent.init(jax.random.PRNGKey(0), OBS_SPEC, ACTION_SPEC)


def np64(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# ----------------------------------------------------------------------- SAC
def test_tanh_gaussian_log_prob_matches_the_change_of_variables_formula():
    key = jax.random.PRNGKey(3)
    mean = jnp.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.1], [0.4, -2.0]])
    action, log_prob = networks.tanh_gaussian_sample(mean, log_std, key)
    eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    want_action, want_log_prob = np_squashed_sample(np64(mean), np64(log_std), eps)
    np.testing.assert_allclose(action, want_action, rtol=1e-5)
    np.testing.assert_allclose(log_prob, want_log_prob, rtol=1e-4)


def test_sac_critic_loss_soft_target_by_hand():
    agent, state = init('sac')
    nets = sac.SACNetworks(
        networks.GaussianActor(ACTION_DIM, (8, 8)), networks.Critic((8, 8), num_critics=2)
    )
    # Distinct targets so that the min over the target critics matters.
    target = jax.tree.map(lambda x: x * 1.3 + 0.01, state.critic_params)
    batch, key, alpha = make_batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2), 0.37
    loss, aux = jax.jit(functools.partial(sac.critic_loss, nets=nets))(
        state.critic_params, target, state.actor_params, alpha, batch, key
    )
    b = np64(batch)
    mean, log_std = np_gaussian_actor(np64(state.actor_params), b.next_obs)
    eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    next_action, next_log_prob = np_squashed_sample(mean, log_std, eps)
    next_q = np_critic(np64(target), b.next_obs, next_action).min(axis=0)
    y = b.reward + b.discount * (next_q - alpha * next_log_prob)
    q = np_critic(np64(state.critic_params), b.obs, b.action)
    want = np.sum(np.mean(b.weight * (q - y) ** 2, axis=1))
    np.testing.assert_allclose(aux['target'], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, want, rtol=1e-4)


def test_sac_actor_loss_entropy_term_by_hand():
    agent, state = init('sac')
    nets = sac.SACNetworks(
        networks.GaussianActor(ACTION_DIM, (8, 8)), networks.Critic((8, 8), num_critics=2)
    )
    batch, key, alpha = make_batch(jax.random.PRNGKey(4)), jax.random.PRNGKey(5), 0.2
    loss, aux = jax.jit(functools.partial(sac.actor_loss, nets=nets))(
        state.actor_params, state.critic_params, alpha, batch, key
    )
    b = np64(batch)
    mean, log_std = np_gaussian_actor(np64(state.actor_params), b.obs)
    eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    action, log_prob = np_squashed_sample(mean, log_std, eps)
    q = np_critic(np64(state.critic_params), b.obs, action).min(axis=0)
    np.testing.assert_allclose(loss, np.mean(alpha * log_prob - q), rtol=1e-4)
    np.testing.assert_allclose(aux['log_prob'], log_prob, rtol=1e-4)


def test_sac_temperature_loss_and_its_direction():
    log_prob = jnp.array([-1.0, 1.0])  # entropy estimate 0
    # alpha * mean(-log pi - target) = 0.5 * mean([1 + 3, -1 + 3]) = 1.5
    assert float(sac.alpha_loss(jnp.log(0.5), log_prob, -3.0)) == pytest.approx(1.5)
    grad = jax.grad(sac.alpha_loss)(jnp.log(0.5), log_prob, -3.0)
    assert grad > 0  # entropy 0 is above the target -3: gradient descent lowers alpha
    grad = jax.grad(sac.alpha_loss)(jnp.log(0.5), log_prob, 2.0)
    assert grad < 0  # below a target of 2: alpha rises


def test_sac_default_target_entropy_is_minus_action_dim_and_alpha_adapts():
    assert sac.target_entropy(sac.SACConfig(), ACTION_DIM) == -ACTION_DIM
    assert sac.target_entropy(sac.SACConfig(target_entropy=-0.5), ACTION_DIM) == -0.5
    init_alpha = 0.5
    agent, state = init('sac', alpha_lr=0.1, init_alpha=init_alpha)
    batch, key = make_batch(jax.random.PRNGKey(6)), jax.random.PRNGKey(7)
    new_state, metrics = jax.jit(agent.update)(state, batch, key)
    # The temperature loss of this update, by hand: alpha * mean(-log pi - (-A)),
    # log pi of the actor's sample on batch.obs with the update's actor key.
    _, key_actor = jax.random.split(key)
    mean, log_std = np_gaussian_actor(np64(state.actor_params), np64(batch.obs))
    eps = np.asarray(jax.random.normal(key_actor, mean.shape), np.float64)
    _, log_prob = np_squashed_sample(mean, log_std, eps)
    want = init_alpha * np.mean(-log_prob + ACTION_DIM)
    np.testing.assert_allclose(metrics['alpha_loss'], want, rtol=1e-4)
    np.testing.assert_allclose(metrics['entropy'], -np.mean(log_prob), rtol=1e-4)
    # A fresh policy's entropy is far above -A, so alpha must fall.
    assert float(metrics['entropy']) > -ACTION_DIM
    assert float(jnp.exp(new_state.log_alpha)) < init_alpha
    assert int(new_state.steps) == 1


# ----------------------------------------------------------------------- TD3
def test_td3_critic_target_uses_clipped_smoothing_noise():
    agent, state = init('td3')
    nets = deterministic.DeterministicNetworks(
        networks.DeterministicActor(ACTION_DIM, (8, 8)), networks.Critic((8, 8), 2)
    )
    target_actor = jax.tree.map(lambda x: x * 0.7, state.actor_params)
    target_critic = jax.tree.map(lambda x: x * 1.2 - 0.01, state.critic_params)
    batch, key = make_batch(jax.random.PRNGKey(8)), jax.random.PRNGKey(9)
    policy_noise, noise_clip = 5.0, 0.3  # large noise: the clip decides
    loss, aux = td3.critic_loss(
        state.critic_params, target_critic, target_actor, batch, key, nets, policy_noise, noise_clip
    )
    b = np64(batch)
    mu = np_det_actor(np64(target_actor), b.next_obs)
    noise = np.clip(policy_noise * np.asarray(jax.random.normal(key, mu.shape)), -0.3, 0.3)
    assert np.mean(np.isclose(np.abs(noise), 0.3)) > 0.8  # the clip is active
    next_action = np.clip(mu + noise, -1, 1)
    y = b.reward + b.discount * np_critic(np64(target_critic), b.next_obs, next_action).min(0)
    q = np_critic(np64(state.critic_params), b.obs, b.action)
    np.testing.assert_allclose(aux['target'], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, np.sum(np.mean(b.weight * (q - y) ** 2, axis=1)), rtol=1e-4)


def test_td3_actor_and_targets_update_every_policy_delay_steps():
    agent, state = init('td3', policy_delay=2)
    update = jax.jit(agent.update)
    batch = make_batch(jax.random.PRNGKey(10))
    s1, m1 = update(state, batch, jax.random.PRNGKey(11))
    same = jax.tree.map(np.array_equal, s1.actor_params, state.actor_params)
    assert all(jax.tree.leaves(same))
    assert all(
        jax.tree.leaves(
            jax.tree.map(np.array_equal, s1.target_critic_params, state.target_critic_params)
        )
    )
    assert np.isnan(m1['actor_loss'])
    s2, m2 = update(s1, batch, jax.random.PRNGKey(12))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, s2.actor_params, s1.actor_params)))
    assert np.isfinite(m2['actor_loss'])


# ---------------------------------------------------------------------- DDPG
def test_ddpg_critic_loss_bootstraps_from_the_target_networks_with_the_batch_discount():
    agent, state = init('ddpg')
    nets = deterministic.DeterministicNetworks(
        networks.DeterministicActor(ACTION_DIM, (8, 8)), networks.Critic((8, 8), 1)
    )
    # Targets differ from the online networks (equal at init), so bootstrapping
    # from the wrong network changes the target.
    target_actor = jax.tree.map(lambda x: x * 0.7 + 0.02, state.actor_params)
    target_critic = jax.tree.map(lambda x: x * 1.2 - 0.01, state.critic_params)
    batch = make_batch(jax.random.PRNGKey(13))
    loss, aux = jax.jit(functools.partial(ddpg.critic_loss, nets=nets))(
        state.critic_params, target_critic, target_actor, batch
    )
    b = np64(batch)
    next_action = np_det_actor(np64(target_actor), b.next_obs)
    y = b.reward + b.discount * np_critic(np64(target_critic), b.next_obs, next_action)[0]
    q = np_critic(np64(state.critic_params), b.obs, b.action)[0]
    np.testing.assert_allclose(aux['target'], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, np.mean(b.weight * (q - y) ** 2), rtol=1e-4)
    # The terminal sample (discount 0) regresses on its reward alone.
    assert float(aux['target'][2]) == pytest.approx(float(batch.reward[2]))


def test_ddpg_hard_target_update_copies_every_k_updates():
    agent, state = init('ddpg', hard_target_every=3)
    update = jax.jit(agent.update)
    batch = make_batch(jax.random.PRNGKey(14))
    initial = state.target_critic_params
    for i in range(1, 7):
        state, _ = update(state, batch, jax.random.PRNGKey(i))
        equal_online = all(
            jax.tree.leaves(
                jax.tree.map(np.array_equal, state.target_critic_params, state.critic_params)
            )
        )
        if i % 3 == 0:
            assert equal_online, i
            initial = state.target_critic_params
        else:
            assert not equal_online, i
            assert all(
                jax.tree.leaves(jax.tree.map(np.array_equal, state.target_critic_params, initial))
            ), i


def test_soft_target_update_is_polyak_averaging():
    target = {'w': jnp.array([1.0, 2.0])}
    online = {'w': jnp.array([3.0, -2.0])}
    out = base.soft_update(target, online, 0.1)
    np.testing.assert_allclose(out['w'], [1.2, 1.6], rtol=1e-6)


def test_ddpg_loss_coefficients_scale_the_losses():
    _, state = init('ddpg')
    batch = make_batch(jax.random.PRNGKey(15))
    agent_1, _ = init('ddpg')
    agent_2, _ = init('ddpg', actor_loss_coef=0.1, critic_loss_coef=2.0)
    _, m1 = jax.jit(agent_1.update)(state, batch, jax.random.PRNGKey(0))
    _, m2 = jax.jit(agent_2.update)(state, batch, jax.random.PRNGKey(0))
    assert float(m2['critic_loss']) == pytest.approx(2.0 * float(m1['critic_loss']), rel=1e-5)
    assert float(m2['actor_loss']) == pytest.approx(0.1 * float(m1['actor_loss']), rel=1e-5)


def test_ornstein_uhlenbeck_noise_is_correlated_and_resets():
    noise = deterministic.init_action_noise(2, 1, sigma=0.1)
    action = jnp.zeros((2, 1))
    values = []
    for i in range(200):
        _, noise = deterministic.add_action_noise(action, noise, jax.random.PRNGKey(i), 'ou', 0.15)
        values.append(np.asarray(noise['ou'][:, 0]))
    values = np.array(values)
    lag1 = np.corrcoef(values[:-1, 0], values[1:, 0])[0, 1]
    assert lag1 > 0.7  # Gaussian noise would give about 0
    noise = deterministic.reset_action_noise(noise, jnp.array([True, False]))
    assert float(noise['ou'][0, 0]) == 0.0 and float(noise['ou'][1, 0]) != 0.0


# ------------------------------------------------------------------------ BC
def test_bc_loss_averages_over_demo_samples_and_q_filter_masks():
    policy = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    demo = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.3, 0.4]])
    is_demo = jnp.array([1.0, 1.0, 1.0, 0.0])
    loss, aux = bc.bc_loss(policy, demo, is_demo)
    # squared errors 1, 1, 0.25 on the three demo samples; the agent sample is ignored
    assert float(loss) == pytest.approx(2.25 / 3)
    q_policy = jnp.array([0.0, 5.0, 0.0, 0.0])
    q_demo = jnp.array([1.0, 1.0, 1.0, 9.0])
    loss, aux = bc.bc_loss(policy, demo, is_demo, q_policy, q_demo)
    # sample 1 fails the filter (its own action is rated higher)
    assert float(loss) == pytest.approx(1.25 / 3)
    assert float(aux['q_filter_pass']) == pytest.approx(2 / 3)
    grad = jax.grad(lambda p: bc.bc_loss(p, demo, is_demo, q_policy, q_demo)[0])(policy)
    assert np.all(np.asarray(grad[1]) == 0) and np.all(np.asarray(grad[3]) == 0)


def test_td3_actor_loss_adds_weighted_bc_term():
    agent, state = init('td3')
    nets = deterministic.DeterministicNetworks(
        networks.DeterministicActor(ACTION_DIM, (8, 8)), networks.Critic((8, 8), 2)
    )
    batch = make_batch(jax.random.PRNGKey(16), is_demo=jnp.array([1.0, 1.0, 0.0, 0.0, 1.0]))
    plain, _ = deterministic.actor_loss(state.actor_params, state.critic_params, batch, nets)
    with_bc, aux = deterministic.actor_loss(
        state.actor_params, state.critic_params, batch, nets, bc_weight=2.5, q_filter=False
    )
    b = np64(batch)
    mu = np_det_actor(np64(state.actor_params), b.obs)
    want_bc = np.sum(b.is_demo * np.sum((mu - b.action) ** 2, -1)) / 3
    np.testing.assert_allclose(with_bc - plain, 2.5 * want_bc, rtol=1e-4)


# --------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    'algo, kwargs, message',
    [
        ('sac', {'hidden': (0, 8)}, 'SACConfig.hidden=(0, 8)'),
        ('sac', {'discount': 1.5}, 'SACConfig.discount=1.5 must be in [0, 1]'),
        ('td3', {'noise_kind': 'pink'}, "TD3Config.noise_kind='pink' is unknown"),
        ('ddpg', {'actor_loss_coef': 0}, 'DDPGConfig.actor_loss_coef=0 must be > 0'),
        (
            'apex_ddpg',
            {'exploration_noise': 1.5},
            'ApeXDDPGConfig.exploration_noise=1.5 must be in',
        ),
        ('ddpg', {'hard_target_every': -1}, 'hard_target_every'),
    ],
)
def test_bad_agent_configs_name_the_value(algo, kwargs, message):
    with pytest.raises(
        ValueError,
        match=message.replace('(', r'\(')
        .replace(')', r'\)')
        .replace('[', r'\[')
        .replace(']', r'\]'),
    ):
        agent_registry.config_class(algo)(**kwargs)


def test_unknown_algo_lists_the_valid_ones():
    with pytest.raises(ValueError, match='valid algos: sac, td3, ddpg'):
        agent_registry.make_agent('ppo')


def test_apex_ddpg_gives_every_environment_its_own_noise_scale():
    cfg = agent_registry.config_class('apex_ddpg')()
    assert (cfg.n_step if hasattr(cfg, 'n_step') else None) is None  # the loop owns n-step
    assert (cfg.actor_lr, cfg.critic_lr, cfg.hard_target_every) == (1e-3, 1e-3, 50_000)
    assert (cfg.actor_loss_coef, cfg.critic_loss_coef) == (0.1, 1.0)
    agent = agent_registry.make_agent('apex_ddpg', cfg, ACTION_DIM)
    noise = agent.init_noise(jax.random.PRNGKey(0), 8)
    expected = 0.4 ** (1 + 7 * np.arange(8) / 7)
    np.testing.assert_allclose(noise['sigma'], expected, rtol=1e-5)
    # The spread shows in the actions: environment 0 explores far more than 7.
    state = agent.init(jax.random.PRNGKey(1), OBS_SPEC, ACTION_SPEC)
    obs = jnp.zeros((8, OBS_DIM))
    greedy = agent.policy(agent.actor_params(state), obs)
    keys = jax.random.split(jax.random.PRNGKey(2), 200)
    actions = jax.jit(jax.vmap(lambda k: agent.explore(state, obs, noise, k)[0]))(keys)
    spread = np.asarray(jnp.std(actions - greedy[None], axis=(0, 2)))
    assert spread[0] > 0.3 and spread[7] < 0.01
    assert agent_registry.make_agent('ddpg', None, ACTION_DIM).init_noise(None, 3)[
        'sigma'
    ].shape == (3,)


# ------------------------------------------------------------ inference policy
# Run in a fresh interpreter: what `import insertion_jax.agents.policy` loads,
# then a residual policy with the connector P-controller, as the robot loop's
# export will build it.
POLICY_ALONE = """
import json, sys, types
import jax, jax.numpy as jnp

def loaded(banned):
    return sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in banned))

TRAINING_STACK = ('optax', 'mujoco', 'orbax', 'insertion_jax.replay', 'insertion_jax.training')
from insertion_jax.agents import policy
after_import = loaded(TRAINING_STACK + ('insertion_jax.envs',))
from insertion_jax.envs import controllers
config = types.SimpleNamespace(hidden=(8, 8), actor_out_scale=1.0, encoder_channels=(8,))
run = policy.make_policy('td3', config, 3, 'residual', 0.002, controllers.p_controller_action)
actor = policy.make_actor('td3', config, 3)
params = {
    'actor': actor.init(jax.random.PRNGKey(0), jnp.zeros(4)),
    'normalizer': policy.ObsNormalizer(jnp.zeros(4), jnp.ones(4), jnp.zeros(())),
}
command = run(params, jnp.ones((5, 4)))
print(json.dumps({'after_import': after_import, 'after_run': loaded(TRAINING_STACK),
                  'shape': list(command.shape), 'finite': bool(jnp.all(jnp.isfinite(command)))}))
"""


def test_the_policy_module_imports_and_runs_without_the_training_stack():
    done = subprocess.run(
        [sys.executable, '-c', POLICY_ALONE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['after_import'] == [], 'importing agents.policy loaded these'
    assert result['after_run'] == [], 'the residual policy loaded these'
    assert result['shape'] == [5, 3] and result['finite']


def np_normalize(mean, var, obs):
    std = np.maximum(np.sqrt(var), policy.MIN_STD)
    return np.clip((obs - mean) / std, -policy.CLIP, policy.CLIP)


@pytest.mark.parametrize('algo', ['sac', 'td3', 'ddpg', 'apex_ddpg'])
def test_make_policy_is_the_agents_policy_on_normalized_obs_scaled_plus_the_p_controller(algo):
    # The connector tasks' shapes: 4-D observation, 3-D move.
    obs_dim, action_dim = connector_obs.OBS_DIM, 3
    config = agent_registry.config_class(algo)(hidden=(8, 8))
    agent = agent_registry.make_agent(algo, config, action_dim)
    state = agent.init(
        jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct((obs_dim,), jnp.float32),
        jax.ShapeDtypeStruct((action_dim,), jnp.float32),
    )
    keys = jax.random.split(jax.random.PRNGKey(20), 2)
    normalizer = policy.ObsNormalizer(
        mean=jax.random.normal(keys[0], (obs_dim,)),
        # The last field's tiny variance hits the MIN_STD floor and the clip.
        var=jnp.array([0.5, 2.0, 4.0, 1e-9]),
        count=jnp.asarray(7.0),
        running=True,
    )
    obs = 3.0 * jax.random.normal(keys[1], (6, obs_dim))
    params = {'actor': agent.actor_params(state), 'normalizer': normalizer}
    action_scale = jnp.array([0.002, 0.003, 0.005])
    base_action = controllers.p_controller_action

    # By hand: normalize, the actor's deterministic action, scale, add u_H.
    normalized = np_normalize(np64(normalizer.mean), np64(normalizer.var), np64(obs))
    assert np.any(np.abs(normalized) == policy.CLIP)
    actor = np64(state.actor_params)
    if algo == 'sac':
        a = np.tanh(np_gaussian_actor(actor, normalized)[0])
    else:
        a = np_det_actor(actor, normalized)
    scale = np64(action_scale)
    u_h = -np.array(controllers.DEFAULT_KP) * np64(obs)[:, :3] * 1e-3
    agent_action = agent.policy(params['actor'], obs_norm.normalize(normalizer, obs))
    np.testing.assert_allclose(agent_action, a, rtol=1e-4, atol=1e-6)
    action = policy.make_action(algo, config, action_dim)
    np.testing.assert_allclose(action(params['actor'], normalized), a, rtol=1e-4, atol=1e-6)
    for mode, want in [('residual', u_h + scale * a), ('pure', scale * a), ('lfd', scale * a)]:
        run = policy.make_policy(algo, config, action_dim, mode, action_scale, base_action)
        np.testing.assert_allclose(run(params, obs), want, rtol=1e-4, atol=1e-8, err_msg=mode)
        # The same from the agent's own policy (bit for bit: one forward pass).
        np.testing.assert_array_equal(
            run(params, obs), policy.command(mode, action_scale, base_action, obs, agent_action)
        )


def test_make_policy_refuses_residual_without_a_base_action_and_unknown_names():
    config = sac.SACConfig(hidden=(8, 8))
    with pytest.raises(ValueError, match='mode=residual needs a base_action'):
        policy.make_policy('sac', config, ACTION_DIM, 'residual', 0.01, None)
    with pytest.raises(ValueError, match="Unknown mode 'hybrid'"):
        policy.make_policy('sac', config, ACTION_DIM, 'hybrid', 0.01, None)
    with pytest.raises(ValueError, match='valid algos: sac, td3, ddpg, apex_ddpg'):
        policy.make_policy('ppo', config, ACTION_DIM, 'pure', 0.01)
    # Every registered agent has an inference policy.
    assert set(policy.ACTORS) == set(agent_registry.ALGOS)


def test_training_normalizer_keeps_its_names_from_the_policy_module():
    assert obs_norm.ObsNormalizer is policy.ObsNormalizer
    assert obs_norm.normalize is policy.normalize
    norm = obs_norm.init_normalizer('running', jnp.array([1.0, 2.0, 4.0]))
    norm = obs_norm.update(norm, jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]]))
    np.testing.assert_allclose(norm.mean, [2.0, 2.0, 4.0])
    np.testing.assert_allclose(norm.var, [1.0, 0.0, 1.0])
    obs = jnp.array([4.0, 2.0, 4.0])
    np.testing.assert_allclose(obs_norm.normalize(norm, obs), [2.0, 0.0, 0.0])


# ------------------------------------------------------------ image observations
IMAGE_OBS_SPEC = {
    'image': jax.ShapeDtypeStruct((8, 8, 2), jnp.uint8),
    'state': jax.ShapeDtypeStruct((OBS_DIM,), jnp.float32),
}


def image_batch(key, size=BATCH):
    k = jax.random.split(key, 5)

    def obs(key):
        image = jax.random.randint(key, (size, 8, 8, 2), 0, 256).astype(jnp.uint8)
        return {'image': image, 'state': jax.random.normal(jax.random.fold_in(key, 1), (size, 3))}

    return types.make_transition(
        obs=obs(k[0]),
        action=jax.random.uniform(k[1], (size, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (size,)),
        discount=jnp.full((size,), 0.9),
        next_obs=obs(k[3]),
    )


@pytest.mark.parametrize('algo', ['sac', 'td3', 'ddpg'])
def test_image_agents_train_the_encoder_with_the_critic_loss_only(algo):
    """The critics own the CNN and their loss moves it; every update copies
    it into the actor."""
    agent = agent_registry.make_agent(
        algo, agent_registry.config_class(algo)(hidden=(8,), encoder_channels=(4,)), ACTION_DIM
    )
    state = agent.init(jax.random.PRNGKey(0), IMAGE_OBS_SPEC, ACTION_SPEC)
    new, metrics = jax.jit(agent.update)(
        state, image_batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    )
    encoder = new.critic_params['params'][networks.ENCODER]
    before = state.critic_params['params'][networks.ENCODER]
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(before), strict=True)
    )
    for got, want in zip(
        jax.tree.leaves(new.actor_params['params'][networks.ENCODER]),
        jax.tree.leaves(encoder),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    action = agent.policy(
        new.actor_params, jax.tree.map(lambda x: x[0], image_batch(jax.random.PRNGKey(3)).obs)
    )
    assert action.shape == (ACTION_DIM,) and bool(jnp.all(jnp.abs(action) <= 1.0))
    assert np.isfinite(float(metrics['critic_loss']))


@pytest.mark.parametrize(
    'actor',
    [
        networks.GaussianActor(ACTION_DIM, (8,), encoder_channels=(4,)),
        networks.DeterministicActor(ACTION_DIM, (8,), encoder_channels=(4,)),
    ],
    ids=['gaussian', 'deterministic'],
)
def test_an_actor_loss_never_moves_the_image_encoder(actor):
    """The actor reads the encoder's features with their gradient stopped:
    whatever it is trained on, the encoder's gradient is exactly zero, while
    its own layers get one (the actors of SAC, TD3 and DDPG)."""
    obs = image_batch(jax.random.PRNGKey(4)).obs
    params = actor.init(jax.random.PRNGKey(5), obs)

    def loss(params):
        return sum(jnp.sum(out**2) for out in jax.tree.leaves(actor.apply(params, obs)))

    grads = jax.jit(jax.grad(loss))(params)['params']
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads[networks.ENCODER]))
    assert all(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(grads['MLP_0']))


def test_normalizer_scales_the_state_part_of_an_image_observation_only():
    norm = obs_norm.init_normalizer('running', jnp.full((OBS_DIM,), 2.0))
    obs = image_batch(jax.random.PRNGKey(4)).obs
    out = obs_norm.normalize(norm, obs)
    np.testing.assert_array_equal(out['image'], obs['image'])
    np.testing.assert_allclose(out['state'], obs['state'] / 2.0, rtol=1e-6)
    updated = obs_norm.update(norm, obs)
    np.testing.assert_allclose(updated.mean, np.mean(obs['state'], 0), rtol=1e-5)
    assert obs_norm.update(norm, {'image': obs['image']}) is norm  # nothing to learn


@pytest.mark.parametrize('stride', [1, 2])
def test_patch_convolution_equals_flax_conv(stride):
    """`networks.Conv3x3` (a matrix product over patches, fast in loops on a
    CPU) computes what `nn.Conv` with 'SAME' padding computes, same params."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 10, 3))
    ours = networks.Conv3x3(5, stride=stride)
    params = ours.init(jax.random.PRNGKey(1), x)
    theirs = flax.linen.Conv(5, (3, 3), strides=stride, padding='SAME')
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, theirs.init(jax.random.PRNGKey(1), x)
    )
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), atol=1e-5)
