"""Every agent learns a small continuous-control task above a threshold.

The task is a point reaching a random goal in the plane (pure JAX, so it
compiles in seconds); it runs through the same collector, n-step builder,
replay buffer and update functions as the insertion runs. The residual-SAC
run on the real USB task is in test_loop.py.
"""

import jax
import jax.numpy as jnp
import pytest

from insertion_jax import agents
from insertion_jax.envs import insertion
from insertion_jax.replay import uniform
from insertion_jax.training import loop


class PointReach:
    """x in [-1, 1]^2 moves by 0.15 * a per step toward goal g; reward -|x - g|.

    Observation: (x - g, x) (4,). Episodes last 15 steps; success within 0.1.
    """

    class config:  # the attribute `collect` reads
        horizon = 15

    def reset(self, key):
        key_x, key_g = jax.random.split(key)
        x = jax.random.uniform(key_x, (2,), minval=-1, maxval=1)
        g = jax.random.uniform(key_g, (2,), minval=-0.5, maxval=0.5)
        return self._state({'x': x, 'g': g}, jnp.zeros(()), jnp.zeros((), jnp.int32))

    def _state(self, data, reward, step):
        distance = jnp.linalg.norm(data['x'] - data['g'])
        return insertion.State(
            data=data,
            obs=jnp.concatenate([data['x'] - data['g'], data['x']]),
            reward=reward,
            done=step >= self.config.horizon,
            metrics={'nonfinite': jnp.zeros(()), 'distance': distance},
            info={'step': step, 'success': distance < 0.1},
        )

    def step(self, state, action):
        x = jnp.clip(state.data['x'] + 0.15 * jnp.clip(action, -1, 1), -1, 1)
        data = {**state.data, 'x': x}
        return self._state(data, -jnp.linalg.norm(x - data['g']), state.info['step'] + 1)


NUM_ENVS, BATCH = 16, 128


def train_toy(algo, iterations, seed=0, **config):
    env = PointReach()
    agent = agents.make_agent(algo, agents.config_class(algo)(hidden=(32, 32), **config), 2)
    buffer = uniform.make_uniform_buffer(20_000)
    obs_spec = jax.ShapeDtypeStruct((4,), jnp.float32)
    act_spec = jax.ShapeDtypeStruct((2,), jnp.float32)

    def explore_fn(agent_state):
        def act(obs, noise, key):
            action, noise = agent.explore(agent_state, obs, noise, key)
            return action, action, noise

        return act

    @jax.jit
    def run(key):
        key_init, key_env, key = jax.random.split(key, 3)
        agent_state = agent.init(key_init, obs_spec, act_spec)
        env_state = jax.vmap(env.reset)(jax.random.split(key_env, NUM_ENVS))
        buffer_state = buffer.init(
            loop.example_transition().replace(
                obs=jnp.zeros(4), next_obs=jnp.zeros(4), action=jnp.zeros(2)
            )
        )
        noise = agent.init_noise(key, NUM_ENVS)

        def iteration(carry, key):
            agent_state, env_state, buffer_state, noise, ret = carry
            key_collect, key_update = jax.random.split(key)
            env_state, ret, noise, chunk = loop.collect(
                env,
                env_state,
                ret,
                explore_fn(agent_state),
                noise,
                key_collect,
                15,
                agent.reset_noise,
            )
            buffer_state = buffer.add(
                buffer_state, loop.chunk_transitions(chunk, 1, agent.config.discount)
            )

            def update(agent_state, key):
                key_sample, key_agent = jax.random.split(key)
                batch = buffer.sample(buffer_state, key_sample, BATCH)
                return agent.update(agent_state, batch, key_agent)[0], None

            agent_state, _ = jax.lax.scan(update, agent_state, jax.random.split(key_update, 120))
            return (agent_state, env_state, buffer_state, noise, ret), None

        carry = (agent_state, env_state, buffer_state, noise, jnp.zeros(NUM_ENVS))
        (agent_state, *_), _ = jax.lax.scan(iteration, carry, jax.random.split(key, iterations))
        return agent_state

    def evaluate(agent_state, key):
        def act(obs, noise, key):
            action = agent.policy(agent.actor_params(agent_state), obs)
            return action, action, noise

        states = jax.vmap(env.reset)(jax.random.split(key, 128))
        chunk = loop.collect(env, states, jnp.zeros(128), act, (), key, 15)[3]
        return float(jnp.mean(chunk.success[-1]))

    agent_state = run(jax.random.PRNGKey(seed))
    untrained = agent.init(jax.random.PRNGKey(seed), obs_spec, act_spec)
    return evaluate(untrained, jax.random.PRNGKey(99)), evaluate(
        agent_state, jax.random.PRNGKey(99)
    )


@pytest.mark.parametrize(
    'algo, config',
    [
        ('sac', {'actor_lr': 1e-3, 'critic_lr': 1e-3, 'alpha_lr': 1e-3, 'discount': 0.9}),
        ('td3', {'actor_lr': 1e-3, 'critic_lr': 1e-3, 'discount': 0.9}),
        ('ddpg', {'actor_lr': 1e-3, 'critic_lr': 1e-3, 'discount': 0.9}),
        (
            'ddpg',
            {
                'actor_lr': 1e-3,
                'critic_lr': 1e-3,
                'discount': 0.9,
                'noise_kind': 'ou',
                'hard_target_every': 100,
            },
        ),
    ],
    ids=['sac', 'td3', 'ddpg', 'ddpg_ou_hard_targets'],
)
def test_agent_learns_to_reach(algo, config):
    before, after = train_toy(algo, iterations=40, **config)
    assert before < 0.3
    assert after >= 0.85, (before, after)
