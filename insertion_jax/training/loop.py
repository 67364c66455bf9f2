"""The on-device training loop: collect, store, update, in one jitted function.

One *iteration* of `train_iteration`:
  1. `num_envs` vmapped environments step `unroll_length` times (a `lax.scan`)
     with the agent's exploration policy; finished episodes reset in place.
  2. The chunk becomes (n-step) transitions and goes into the replay buffer;
     the observation normalizer absorbs its observations.
  3. `updates_per_iteration` = utd * num_envs * unroll_length gradient updates
     run in a `lax.scan`, each on a fresh batch (plus demonstration samples in
     LfD mode). Before `learning_starts` env steps the updates are computed and
     discarded (`lax.cond`), so one compiled function serves the whole run.
`run_iterations(state, n)` scans n iterations per device call and is vmapped
over seeds: every leaf of `TrainState` carries a leading seed axis. The host
only logs, evaluates and saves between calls.

Modes (`TrainConfig.mode`), after the residual-RL paper:
  * 'residual': executed u = u_H(s) + max_action * a, with u_H the P-controller
    (eq. 5); the buffer stores the agent's a, i.e. u_RL (Algorithm 1).
  * 'pure': u = max_action * a.
  * 'lfd': pure RL plus a behaviour-cloning loss on demonstrations (the
    agent's `bc_weight`), the demonstrations kept in their own buffer and
    mixed into every batch (`demo_fraction`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from insertion_jax import agents, checks
from insertion_jax.agents import base
from insertion_jax.envs import controllers, insertion
from insertion_jax.replay import nstep, uniform
from insertion_jax.training import normalizer as obs_norm

MODES = ('pure', 'residual', 'lfd')
OBS_TYPES = ('state',)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static configuration of a training run (one per run, shared by all seeds).

    Attributes:
      env: the environment.
      algo: 'sac', 'td3' or 'ddpg'.
      agent: the algo's config dataclass (None: its defaults).
      mode: 'pure', 'residual' or 'lfd' (see the module docstring).
      obs: observation type; only 'state' exists until the camera lands.
      num_envs: environments stepped in parallel per seed.
      unroll_length: control steps per environment per iteration.
      utd: gradient updates per environment step (update-to-data ratio).
      batch_size: transitions per gradient update.
      buffer_capacity: replay capacity, in transitions.
      learning_starts: environment steps collected before updates apply.
      n_step: return length of the stored transitions.
      num_demos: demonstration episodes (LfD mode).
      demo_fraction: share of each batch drawn from the demonstrations (LfD).
      demo_noise: exploration of the scripted demonstrator (the P-controller
        with uniform noise of this fraction of the maximum move).
      obs_normalizer: 'fixed' or 'running' (see `normalizer.py`).
    """

    env: insertion.InsertionConfig = insertion.InsertionConfig()
    algo: str = 'sac'
    agent: Any = None
    mode: str = 'residual'
    obs: str = 'state'
    num_envs: int = 16
    unroll_length: int = 30
    utd: float = 1.0
    batch_size: int = 256
    buffer_capacity: int = 100_000
    learning_starts: int = 1_000
    n_step: int = 1
    num_demos: int = 20
    demo_fraction: float = 0.25
    demo_noise: float = 0.3
    obs_normalizer: str = 'fixed'

    def __post_init__(self):
        agents.validate_algo(self.algo)
        if self.agent is None:
            object.__setattr__(self, 'agent', agents.config_class(self.algo)())
        if self.mode not in MODES:
            raise ValueError(f'Unknown mode {self.mode!r}; valid modes: {", ".join(MODES)}.')
        if self.obs not in OBS_TYPES:
            raise ValueError(
                f'obs={self.obs!r} is not available; valid observation types: '
                f'{", ".join(OBS_TYPES)} (image observations need the camera, not built yet).'
            )
        checks.positive_int(
            'TrainConfig',
            num_envs=self.num_envs,
            unroll_length=self.unroll_length,
            batch_size=self.batch_size,
            buffer_capacity=self.buffer_capacity,
            n_step=self.n_step,
        )
        checks.positive('TrainConfig', utd=self.utd)
        if not (isinstance(self.learning_starts, int) and self.learning_starts >= 0):
            raise ValueError(
                f'TrainConfig.learning_starts={self.learning_starts!r} must be an integer >= 0.'
            )
        if self.env_steps_per_iteration > self.buffer_capacity:
            raise ValueError(
                f'TrainConfig.buffer_capacity={self.buffer_capacity} is smaller than one '
                f"iteration's {self.env_steps_per_iteration} transitions."
            )
        bc_weight = getattr(self.agent, 'bc_weight', 0.0)
        if self.mode == 'lfd':
            if not bc_weight > 0:
                raise ValueError(f'mode=lfd needs the agent bc_weight > 0, got {bc_weight!r}.')
            if not (isinstance(self.num_demos, int) and self.num_demos > 0):
                raise ValueError(f'mode=lfd needs num_demos > 0, got {self.num_demos!r}.')
            if not 0.0 < self.demo_fraction < 1.0:
                raise ValueError(
                    f'TrainConfig.demo_fraction={self.demo_fraction!r} must be in (0, 1).'
                )
            if self.demo_batch_size < 1:
                raise ValueError(
                    f'demo_fraction={self.demo_fraction} of batch_size={self.batch_size} '
                    'leaves no demonstration sample in a batch.'
                )
        elif bc_weight > 0:
            raise ValueError(
                f'The agent has bc_weight={bc_weight!r} but mode={self.mode!r} has no '
                'demonstrations; use mode=lfd or bc_weight=0.'
            )
        obs_norm.init_normalizer(self.obs_normalizer, insertion.OBS_SCALE)
        if getattr(self.agent, 'discount', None) is None:
            raise ValueError('The agent config has no discount.')

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def updates_per_iteration(self) -> int:
        return max(1, int(round(self.utd * self.env_steps_per_iteration)))

    @property
    def demo_batch_size(self) -> int:
        return int(round(self.demo_fraction * self.batch_size)) if self.mode == 'lfd' else 0


@struct.dataclass
class TrainState:
    """Everything one seed's training changes; vmapped runs add a leading seed axis.

    Attributes:
      agent: the agent's state (parameters, optimizer states, update count).
      buffer: replay buffer of the agent's transitions.
      demos: replay buffer of demonstration transitions (one empty slot when
        there are none).
      env: the `num_envs` environment states.
      noise: the exploration process state of each environment.
      normalizer: observation normalizer.
      episode_return: (num_envs,) return of the running episodes so far.
      key: PRNG key.
      env_steps: int32 (), environment steps taken by this seed.
      iteration: int32 (), iterations done.
    """

    agent: Any
    buffer: uniform.BufferState
    demos: uniform.BufferState
    env: insertion.State
    noise: Any
    normalizer: obs_norm.ObsNormalizer
    episode_return: jax.Array
    key: jax.Array
    env_steps: jax.Array
    iteration: jax.Array


@dataclasses.dataclass(frozen=True)
class Components:
    """The static parts a run is built from (environment, agent, buffer)."""

    config: TrainConfig
    env: insertion.InsertionEnv
    agent: base.Agent
    buffer: uniform.UniformBuffer


@functools.lru_cache(maxsize=16)
def make_components(config: TrainConfig) -> Components:
    """Compiles the environment and builds the agent and buffer of `config`.

    Cached per config (everything in it is immutable), so that every jitted
    function built from the same components is traced once per process.
    """
    return Components(
        config=config,
        env=insertion.InsertionEnv(config.env),
        agent=agents.make_agent(config.algo, config.agent, insertion.ACTION_DIM),
        buffer=uniform.make_uniform_buffer(config.buffer_capacity),
    )


def obs_spec() -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((insertion.OBS_DIM,), jnp.float32)


def action_spec() -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((insertion.ACTION_DIM,), jnp.float32)


# ------------------------------------------------------------------- actions
def executed_action(
    mode: str, obs: jax.Array, agent_action: jax.Array, max_action_m: float
) -> jax.Array:
    """The move the robot executes, metres, from the agent's action in [-1, 1].

    residual: u_H(obs) + max_action_m * a (eq. 4); pure and lfd: max_action_m * a.
    Shapes (..., OBS_DIM) and (..., A) -> (..., A).
    """
    u_rl = max_action_m * agent_action
    if mode == 'residual':
        return controllers.residual_action(controllers.p_controller_action(obs), u_rl)
    return u_rl


def make_eval_policy(components: Components) -> Callable:
    """`policy(params, obs, key) -> move (m)` of the deterministic trained policy.

    params: {'actor': the agent's actor parameters, 'normalizer': ObsNormalizer}
    (see `policy_params`). This is the policy `evaluate.rollout` and the robot
    loop run.
    """
    agent, cfg = components.agent, components.config

    def policy(params, obs, key):
        del key
        action = agent.policy(params['actor'], obs_norm.normalize(params['normalizer'], obs))
        return executed_action(cfg.mode, obs, action, cfg.env.max_action_m)

    return policy


def policy_params(components: Components, state: TrainState) -> Dict[str, Any]:
    """The parameters `make_eval_policy`'s policy needs, from a training state."""
    return {'actor': components.agent.actor_params(state.agent), 'normalizer': state.normalizer}


# ---------------------------------------------------------------- collection
@struct.dataclass
class Chunk:
    """What `collect` gathered, time-major (K, E, ...)."""

    obs: jax.Array
    action: jax.Array  # the agent's action in [-1, 1] (u_RL under residual RL)
    move: jax.Array  # what the robot executed, metres
    reward: jax.Array
    terminal: jax.Array
    last: jax.Array
    next_obs: jax.Array
    success: jax.Array  # connected at this step
    episode_return: jax.Array  # return of the episode that ended here (0 elsewhere)


def collect(
    env: insertion.InsertionEnv,
    env_state: insertion.State,
    episode_return: jax.Array,
    act: Callable[[jax.Array, Any, jax.Array], Tuple[jax.Array, jax.Array, Any]],
    act_state: Any,
    key: jax.Array,
    num_steps: int,
    reset_noise: Callable[[Any, jax.Array], Any] = lambda s, done: s,
):
    """Steps a batch of environments `num_steps` times with auto-reset.

    Args:
      env: the environment.
      env_state: batched `insertion.State` of E environments.
      episode_return: (E,) return so far of the running episodes.
      act: `(obs (E, D), act_state, key) -> (agent_action (E, A), move (E, A), act_state)`.
      act_state: carried state of `act` (exploration noise).
      key: PRNG key.
      num_steps: K (static).
      reset_noise: `(act_state, done (E,)) -> act_state` at episode ends.

    Returns:
      (env_state, episode_return, act_state, Chunk with leaves (K, E, ...)).
    """
    num_envs = episode_return.shape[0]

    def step(carry, step_key):
        env_state, episode_return, act_state = carry
        key_act, key_reset = jax.random.split(step_key)
        obs = env_state.obs
        agent_action, move, act_state = act(obs, act_state, key_act)
        next_state = jax.vmap(env.step)(env_state, move)
        done = next_state.done
        terminal = done & (next_state.metrics['nonfinite'] > 0)
        ret = episode_return + next_state.reward
        # A fresh start for every environment; only the finished ones take it.
        fresh = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))
        env_state = jax.tree.map(
            lambda f, n: jnp.where(done.reshape(done.shape + (1,) * (n.ndim - 1)), f, n),
            fresh,
            next_state,
        )
        out = Chunk(
            obs=obs,
            action=agent_action,
            move=move,
            reward=next_state.reward,
            terminal=terminal,
            last=done,
            next_obs=next_state.obs,
            success=next_state.info['success'],
            episode_return=jnp.where(done, ret, 0.0),
        )
        carry = (env_state, jnp.where(done, 0.0, ret), reset_noise(act_state, done))
        return carry, out

    (env_state, episode_return, act_state), chunk = jax.lax.scan(
        step, (env_state, episode_return, act_state), jax.random.split(key, num_steps)
    )
    return env_state, episode_return, act_state, chunk


def episode_metrics(chunk: Chunk) -> Dict[str, jax.Array]:
    """Mean return and end-of-episode success of the episodes that ended in a chunk
    (NaN when none did), and how many ended."""
    ended = chunk.last.astype(jnp.float32)
    count = jnp.sum(ended)
    safe = jnp.maximum(count, 1.0)
    nan = jnp.full((), jnp.nan)
    return {
        'episodes': count,
        'episode_return': jnp.where(count > 0, jnp.sum(chunk.episode_return) / safe, nan),
        'success': jnp.where(count > 0, jnp.sum(ended * chunk.success) / safe, nan),
    }


def chunk_transitions(chunk: Chunk, n_step: int, discount: float) -> base.Transition:
    """The chunk's (n-step) transitions, flattened to (K * E, ...)."""
    transitions = nstep.n_step_transitions(
        chunk.obs,
        chunk.action,
        chunk.reward,
        chunk.terminal,
        chunk.last,
        chunk.next_obs,
        n_step,
        discount,
    )
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), transitions)


# ------------------------------------------------------------------ training
def init_state(
    components: Components, key: jax.Array, demos: Optional[base.Transition] = None
) -> TrainState:
    """Initial training state of one seed.

    Args:
      components: from `make_components`.
      key: the seed's PRNG key.
      demos: demonstration transitions (N, ...) for LfD mode (see
        `make_demonstrations`).
    """
    cfg = components.config
    key_agent, key_env, key_noise, key = jax.random.split(key, 4)
    agent_state = components.agent.init(key_agent, obs_spec(), action_spec())
    example = example_transition()
    buffer_state = components.buffer.init(example)
    if demos is None:
        demo_state = uniform.init_storage(example, 1)
    else:
        n = jax.tree.leaves(demos)[0].shape[0]
        demo_state = uniform.write(uniform.init_storage(example, n), demos)
    env_state = jax.vmap(components.env.reset)(jax.random.split(key_env, cfg.num_envs))
    return TrainState(
        agent=agent_state,
        buffer=buffer_state,
        demos=demo_state,
        env=env_state,
        noise=components.agent.init_noise(key_noise, cfg.num_envs),
        normalizer=obs_norm.init_normalizer(cfg.obs_normalizer, insertion.OBS_SCALE),
        episode_return=jnp.zeros((cfg.num_envs,), jnp.float32),
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
        iteration=jnp.zeros((), jnp.int32),
    )


def example_transition() -> base.Transition:
    """One zero transition with the shapes the buffer stores."""
    obs = jnp.zeros((insertion.OBS_DIM,), jnp.float32)
    return base.make_transition(
        obs=obs,
        action=jnp.zeros((insertion.ACTION_DIM,), jnp.float32),
        reward=jnp.zeros((), jnp.float32),
        discount=jnp.zeros((), jnp.float32),
        next_obs=obs,
    )


def sample_batch(components: Components, state: TrainState, key: jax.Array) -> base.Transition:
    """One training batch: agent samples plus, in LfD mode, demonstration samples;
    observations normalized."""
    cfg = components.config
    demo_size = cfg.demo_batch_size
    key_agent, key_demo = jax.random.split(key)
    batch = components.buffer.sample(state.buffer, key_agent, cfg.batch_size - demo_size)
    if demo_size:
        demo = components.buffer.sample(state.demos, key_demo, demo_size)
        batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), batch, demo)
    return batch.replace(
        obs=obs_norm.normalize(state.normalizer, batch.obs),
        next_obs=obs_norm.normalize(state.normalizer, batch.next_obs),
    )


def make_act(components: Components, state: TrainState) -> Callable:
    """The collector's policy: `(obs (E, D), noise, key) -> (agent action, move, noise)`,
    exploring with the agent's current parameters and normalizer."""
    agent, cfg = components.agent, components.config

    def act(obs, noise, key):
        action, noise = agent.explore(
            state.agent, obs_norm.normalize(state.normalizer, obs), noise, key
        )
        return action, executed_action(cfg.mode, obs, action, cfg.env.max_action_m), noise

    return act


def train_iteration(components: Components, state: TrainState) -> Tuple[TrainState, Dict]:
    """One iteration for one seed: collect, store, update. Pure; see module docstring.

    Returns (state, metrics): scalars for this iteration, agent metrics
    averaged over its updates (NaN for those that did not run, e.g. TD3's
    delayed actor loss is averaged over the updates that computed it).
    """
    cfg, agent = components.config, components.agent
    key, key_collect, key_update = jax.random.split(state.key, 3)
    env_state, episode_return, noise, chunk = collect(
        components.env,
        state.env,
        state.episode_return,
        make_act(components, state),
        state.noise,
        key_collect,
        cfg.unroll_length,
        agent.reset_noise,
    )
    transitions = chunk_transitions(chunk, cfg.n_step, cfg.agent.discount)
    env_steps = state.env_steps + cfg.env_steps_per_iteration
    state = state.replace(
        buffer=components.buffer.add(state.buffer, transitions),
        normalizer=obs_norm.update(state.normalizer, chunk.obs),
        env=env_state,
        episode_return=episode_return,
        noise=noise,
        key=key,
        env_steps=env_steps,
        iteration=state.iteration + 1,
    )

    def one_update(agent_state, update_key):
        key_batch, key_agent = jax.random.split(update_key)
        batch = sample_batch(components, state, key_batch)
        agent_state, metrics = agent.update(agent_state, batch, key_agent)
        metrics = dict(metrics)
        metrics.pop('td_error', None)  # per-sample; prioritized replay uses it
        return agent_state, metrics

    def learn(agent_state):
        keys = jax.random.split(key_update, cfg.updates_per_iteration)
        agent_state, metrics = jax.lax.scan(one_update, agent_state, keys)
        return agent_state, jax.tree.map(jnp.nanmean, metrics)

    def skip(agent_state):
        return agent_state, base.nan_metrics(learn, agent_state)

    ready = env_steps >= max(cfg.learning_starts, cfg.batch_size)
    agent_state, update_metrics = jax.lax.cond(ready, learn, skip, state.agent)
    state = state.replace(agent=agent_state)
    metrics = {
        **episode_metrics(chunk),
        **update_metrics,
        'env_steps': env_steps,
        'buffer_size': state.buffer.size,
        'reward_mean': jnp.mean(chunk.reward),
        'nonfinite': jnp.sum(chunk.terminal.astype(jnp.float32)),
    }
    return state, metrics


def run_iterations(
    components: Components, state: TrainState, num_iterations: int
) -> Tuple[TrainState, Dict]:
    """`num_iterations` iterations of one seed in a `lax.scan`; metrics stacked (n, ...)."""
    return jax.lax.scan(
        lambda s, _: train_iteration(components, s), state, None, length=num_iterations
    )


@functools.lru_cache(maxsize=16)
def make_runner(components: Components, num_iterations: int):
    """Jitted `state -> (state, metrics)` running `num_iterations` iterations of
    every seed (leading seed axis on state and metrics: metrics (S, n, ...)).

    The state is donated: the replay buffers update in place.
    """
    fn = functools.partial(run_iterations, components, num_iterations=num_iterations)
    return jax.jit(jax.vmap(fn), donate_argnums=0)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """PRNG keys of seeds seed, seed + 1, ...: seed s of a vmapped run uses the
    same key as a run of that seed alone."""
    return jnp.stack([jax.random.PRNGKey(seed + s) for s in range(num_seeds)])


def init_states(
    components: Components, seed: int, num_seeds: int, demos: Optional[base.Transition] = None
) -> TrainState:
    """Initial states of `num_seeds` seeds stacked on a leading axis."""
    return _init_fn(components)(seed_keys(seed, num_seeds), demos)


@functools.lru_cache(maxsize=16)
def _init_fn(components: Components):
    return jax.jit(jax.vmap(functools.partial(init_state, components), in_axes=(0, None)))


# ------------------------------------------------------------ demonstrations
def make_demonstrations(
    components: Components, key: jax.Array, max_attempts: int = 10
) -> Tuple[base.Transition, Dict[str, float]]:
    """Demonstration transitions from a scripted, imperfect demonstrator.

    The demonstrator is the P-controller with uniform noise of `demo_noise`
    times the maximum move on every axis (a person with a joystick is neither
    exact nor steady); it sees the goal the robot was told. Episodes run in
    batches of `num_envs` until `num_demos` of them end connected; only those
    are kept. Actions are stored in the agent's space of the 'pure'
    parameterization (move / max_action, clipped to [-1, 1]).

    Returns (transitions (num_demos * horizon, ...), info with the
    demonstrator's success rate).
    """
    cfg = components.config
    env, horizon, max_action = components.env, cfg.env.horizon, cfg.env.max_action_m

    def act(obs, act_state, key):
        noise = jax.random.uniform(
            key, obs.shape[:-1] + (insertion.ACTION_DIM,), minval=-1, maxval=1
        )
        move = controllers.p_controller_action(obs) + cfg.demo_noise * max_action * noise
        return jnp.clip(move / max_action, -1.0, 1.0), move, act_state

    @jax.jit
    def episodes(key):
        key_reset, key_run = jax.random.split(key)
        states = jax.vmap(env.reset)(jax.random.split(key_reset, cfg.num_envs))
        zeros = jnp.zeros((cfg.num_envs,), jnp.float32)
        return collect(env, states, zeros, act, (), key_run, horizon)[3]

    kept, tried, succeeded = [], 0, 0
    for attempt_key in jax.random.split(key, max_attempts):
        chunk = jax.device_get(episodes(attempt_key))
        ok = np.asarray(chunk.success[-1])
        tried, succeeded = tried + ok.size, succeeded + int(ok.sum())
        kept += [jax.tree.map(lambda x, e=e: x[:, e : e + 1], chunk) for e in np.flatnonzero(ok)]
        if len(kept) >= cfg.num_demos:
            break
    if len(kept) < cfg.num_demos:
        raise RuntimeError(
            f'The scripted demonstrator succeeded in {succeeded} of {tried} episodes, fewer '
            f'than num_demos={cfg.num_demos}; lower num_demos or demo_noise.'
        )
    chunk = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *kept[: cfg.num_demos])
    transitions = chunk_transitions(chunk, cfg.n_step, cfg.agent.discount)
    transitions = transitions.replace(is_demo=jnp.ones_like(transitions.reward))
    return transitions, {'demonstrator_success_rate': succeeded / tried}
