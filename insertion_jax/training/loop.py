"""The on-device training loop: collect, store, update, in one jitted function.

One *iteration* of `train_iteration`:
  1. `num_envs` vmapped environments step `unroll_length` times (a `lax.scan`)
     with the agent's exploration policy; finished episodes reset in place.
  2. The chunk goes into the replay (`TrainConfig.replay`: uniform,
     prioritized or DER, see `insertion_jax.replay.interface`) as n-step
     transitions; the observation normalizer absorbs its observations.
  3. `updates_per_iteration` = utd * num_envs * unroll_length gradient updates
     run in a `lax.scan`, each on a fresh batch (plus demonstration samples in
     LfD mode) weighted by the replay's importance weights; each update
     writes its |TD errors| back as priorities. Before `learning_starts` env
     steps the updates are computed and discarded (the priority writes are
     masked), so one compiled function serves the whole run. DER then
     refreshes its demonstration zones when due.
`run_iterations(state, n)` scans n iterations per device call and is vmapped
over seeds: every leaf of `TrainState` carries a leading seed axis. The host
only logs, evaluates and saves between calls.

The task is any environment of `insertion_jax.envs.registry`.

Modes (`TrainConfig.mode`), after the residual-RL paper:
  * 'residual': executed u = u_H(s) + scale * a, with u_H the task's
    hand-designed controller (the P-controller, eq. 5); the buffer stores the
    agent's a, i.e. u_RL (Algorithm 1).
  * 'pure': u = scale * a (`env.action_scale`).
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

from insertion_jax import checks, types
from insertion_jax.agents import base
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import insertion, registry
from insertion_jax.replay import demos as demos_lib
from insertion_jax.replay import der, interface, nstep, prioritized, uniform
from insertion_jax.training import normalizer as obs_norm

MODES = ('pure', 'residual', 'lfd')
OBS_TYPES = ('state',)

# Loop-side settings that belong to an algorithm as published; the experiment
# scripts use them as flag defaults.
ALGO_PRESETS: Dict[str, Dict[str, Any]] = {
    'apex_ddpg': {
        'n_step': 3,
        'batch_size': 512,
        'obs_normalizer': 'running',
        'replay': 'der',
    },
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static configuration of a training run (one per run, shared by all seeds).

    Attributes:
      env: the task's config (any of `registry.ENVS`).
      algo: 'sac', 'td3', 'ddpg' or 'apex_ddpg'.
      agent: the algo's config dataclass (None: its defaults).
      mode: 'pure', 'residual' or 'lfd' (see the module docstring).
      obs: observation type; only 'state' exists until the camera lands.
      num_envs: environments stepped in parallel per seed.
      unroll_length: control steps per environment per iteration.
      utd: gradient updates per environment step (update-to-data ratio).
      batch_size: transitions per gradient update.
      buffer_capacity: replay capacity, in transitions (DER: of each buffer).
      learning_starts: environment steps collected before updates apply.
      n_step: return length of the stored transitions.
      num_demos: demonstration episodes (LfD mode; DER structures with
        demonstrations).
      demo_fraction: share of each batch drawn from the demonstrations (LfD).
      demo_noise: exploration of the scripted demonstrator (the P-controller
        with uniform noise of this fraction of the maximum move).
      obs_normalizer: 'fixed' or 'running' (see `normalizer.py`).
      replay: 'uniform', 'prioritized' or 'der'.
      priority: prioritized sampling settings (replay 'prioritized').
      der: DER settings (replay 'der').
    """

    env: Any = insertion.InsertionConfig()
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
    replay: str = 'uniform'
    priority: prioritized.PrioritizedConfig = prioritized.PrioritizedConfig()
    der: der.DERConfig = der.DERConfig()

    def __post_init__(self):
        agent_registry.validate_algo(self.algo)
        env_cls = registry.env_class(self.env)  # raises for a non-env config
        interface.validate_replay(self.replay)
        if self.agent is None:
            object.__setattr__(self, 'agent', agent_registry.config_class(self.algo)())
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
        if self.mode == 'residual' and not env_cls.has_base_controller:
            raise ValueError(
                f'mode=residual needs a hand-designed controller, which task '
                f'{self.env.task!r} does not have; use mode=pure.'
            )
        bc_weight = getattr(self.agent, 'bc_weight', 0.0)
        if self.mode == 'lfd' and self.replay == 'der':
            raise ValueError(
                'mode=lfd keeps its demonstrations in a buffer of their own; with replay=der '
                'choose a DER structure for them instead (mode=pure).'
            )
        if self.replay == 'der':
            self.make_der_buffer()  # raises for sizes that do not fit
            if self.der.structure != 'none' and not (
                isinstance(self.num_demos, int) and self.num_demos > 0
            ):
                raise ValueError(
                    f'DER structure {self.der.structure!r} needs num_demos > 0, '
                    f'got {self.num_demos!r}.'
                )
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
        obs_norm.init_normalizer(self.obs_normalizer, env_cls.obs_scale)
        if getattr(self.agent, 'discount', None) is None:
            raise ValueError('The agent config has no discount.')

    def make_der_buffer(self) -> der.DERBuffer:
        return der.make_der_buffer(
            self.der,
            self.buffer_capacity,
            self.env.horizon,
            self.num_envs,
            self.n_step,
            self.agent.discount,
        )

    @property
    def uses_demonstrations(self) -> bool:
        return self.mode == 'lfd' or (self.replay == 'der' and self.der.structure != 'none')

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
      buffer: the replay's state (`Components.replay`).
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
    buffer: Any
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
    env: Any
    agent: base.Agent
    replay: interface.Replay


@functools.lru_cache(maxsize=16)
def make_components(config: TrainConfig) -> Components:
    """Compiles the environment and builds the agent and replay of `config`.

    Cached per config (everything in it is immutable), so that every jitted
    function built from the same components is traced once per process.
    """
    env = registry.make_env(config.env)
    return Components(
        config=config,
        env=env,
        agent=agent_registry.make_agent(config.algo, config.agent, env.action_dim),
        replay=interface.make_replay(
            config.replay,
            config.buffer_capacity,
            config.n_step,
            config.agent.discount,
            priority=config.priority,
            der_config=config.der,
            episode_length=env.horizon,
            num_envs=config.num_envs,
            updates_per_iteration=config.updates_per_iteration,
        ),
    )


def obs_spec(env) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((env.obs_dim,), jnp.float32)


def action_spec(env) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((env.action_dim,), jnp.float32)


# ------------------------------------------------------------------- actions
def executed_action(env, mode: str, obs: jax.Array, agent_action: jax.Array) -> jax.Array:
    """The command the robot executes from the agent's action in [-1, 1].

    residual: u_H(obs) + scale * a (eq. 4); pure and lfd: scale * a, with
    scale `env.action_scale` (metres for the connector tasks).
    Shapes (..., obs_dim) and (..., A) -> (..., A).
    """
    u_rl = env.action_scale * agent_action
    if mode == 'residual':
        return env.base_action(obs) + u_rl
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
        return executed_action(components.env, cfg.mode, obs, action)

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
    env: Any,
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
      env: the environment (the interface of `registry.py`).
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
        terminal = jax.vmap(env.terminal)(next_state)
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


def chunk_steps(chunk: Chunk) -> nstep.Step:
    """The chunk's one-step experience (K, E, ...), as the replay stores it."""
    return nstep.Step(
        obs=chunk.obs,
        action=chunk.action,
        reward=chunk.reward,
        terminal=chunk.terminal,
        next_obs=chunk.next_obs,
    )


# ------------------------------------------------------------ demonstrations
Demonstrations = demos_lib.Demonstrations


def demo_transitions(demos: Demonstrations, n_step: int, discount: float) -> types.Transition:
    """The n-step transitions of every demonstration step, padding dropped, marked
    `is_demo` (host-side: the count depends on the lengths)."""
    episodes = nstep.episode_transitions(
        jax.tree.map(lambda x: jnp.swapaxes(jnp.asarray(x), 0, 1), demos.steps),
        jnp.asarray(demos.lengths),
        n_step,
        discount,
    )
    valid = np.arange(episodes.reward.shape[0])[:, None] < np.asarray(demos.lengths)[None, :]
    flat = jax.tree.map(lambda x: np.asarray(jnp.swapaxes(x, 0, 1))[valid.T], episodes)
    return flat.replace(is_demo=np.ones_like(flat.reward))


# ------------------------------------------------------------------ training
def example_step(components: Components) -> nstep.Step:
    """One zero step with the shapes the replay stores."""
    env = components.env
    obs = jnp.zeros((env.obs_dim,), jnp.float32)
    return nstep.Step(
        obs=obs,
        action=jnp.zeros((env.action_dim,), jnp.float32),
        reward=jnp.zeros((), jnp.float32),
        terminal=jnp.zeros((), bool),
        next_obs=obs,
    )


def init_state(
    components: Components,
    key: jax.Array,
    demos: Optional[Demonstrations] = None,
    lfd_transitions: Optional[types.Transition] = None,
) -> TrainState:
    """Initial training state of one seed.

    Args:
      components: from `make_components`.
      key: the seed's PRNG key.
      demos: demonstration episodes for a DER structure (see
        `make_demonstrations`); placed into the zones by the structure.
      lfd_transitions: demonstration transitions (N, ...) for LfD mode
        (`demo_transitions`), kept in a buffer of their own.
    """
    cfg, env = components.config, components.env
    key_agent, key_env, key_noise, key = jax.random.split(key, 4)
    agent_state = components.agent.init(key_agent, obs_spec(env), action_spec(env))
    example = example_step(components)
    if cfg.replay == 'der' and demos is not None:
        buffer_state = components.replay.init(example, demos.steps, demos.lengths)
    else:
        buffer_state = components.replay.init(example)
    flat = nstep.transition_like(example)
    if lfd_transitions is None:
        demo_state = uniform.init_storage(flat, 1)
    else:
        n = jax.tree.leaves(lfd_transitions)[0].shape[0]
        demo_state = uniform.write(uniform.init_storage(flat, n), lfd_transitions)
    env_state = jax.vmap(env.reset)(jax.random.split(key_env, cfg.num_envs))
    return TrainState(
        agent=agent_state,
        buffer=buffer_state,
        demos=demo_state,
        env=env_state,
        noise=components.agent.init_noise(key_noise, cfg.num_envs),
        normalizer=obs_norm.init_normalizer(cfg.obs_normalizer, env.obs_scale),
        episode_return=jnp.zeros((cfg.num_envs,), jnp.float32),
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
        iteration=jnp.zeros((), jnp.int32),
    )


def sample_batch(
    components: Components, state: TrainState, buffer_state: Any, key: jax.Array
) -> Tuple[types.Transition, Any]:
    """One training batch and the replay's sample info: agent samples (with
    importance weights) plus, in LfD mode, demonstration samples last (weight
    1); observations normalized."""
    cfg = components.config
    demo_size = cfg.demo_batch_size
    batch, info = components.replay.sample(buffer_state, key, cfg.batch_size - demo_size)
    if demo_size:
        demo = uniform.sample(state.demos, jax.random.fold_in(key, 1), demo_size)
        batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), batch, demo)
    return batch.replace(
        obs=obs_norm.normalize(state.normalizer, batch.obs),
        next_obs=obs_norm.normalize(state.normalizer, batch.next_obs),
    ), info


def make_act(components: Components, state: TrainState) -> Callable:
    """The collector's policy: `(obs (E, D), noise, key) -> (agent action, command, noise)`,
    exploring with the agent's current parameters and normalizer."""
    agent, cfg = components.agent, components.config

    def act(obs, noise, key):
        action, noise = agent.explore(
            state.agent, obs_norm.normalize(state.normalizer, obs), noise, key
        )
        return action, executed_action(components.env, cfg.mode, obs, action), noise

    return act


def train_iteration(components: Components, state: TrainState) -> Tuple[TrainState, Dict]:
    """One iteration for one seed: collect, store, update. Pure; see module docstring.

    Returns (state, metrics): scalars for this iteration, agent metrics
    averaged over its updates (NaN before learning starts and for those that
    did not run, e.g. TD3's delayed actor loss is averaged over the updates
    that computed it).
    """
    cfg, agent, replay = components.config, components.agent, components.replay
    key, key_collect, key_update = jax.random.split(state.key, 3)
    key_store, key_refresh = jax.random.split(jax.random.fold_in(key_update, 1))
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
    env_steps = state.env_steps + cfg.env_steps_per_iteration
    buffer_state = replay.store(
        state.buffer, chunk_steps(chunk), chunk.last, chunk.last & chunk.success, key_store
    )
    state = state.replace(
        normalizer=obs_norm.update(state.normalizer, chunk.obs),
        env=env_state,
        episode_return=episode_return,
        noise=noise,
        key=key,
        env_steps=env_steps,
        iteration=state.iteration + 1,
    )
    ready = env_steps >= max(cfg.learning_starts, cfg.batch_size)
    agent_size = cfg.batch_size - cfg.demo_batch_size

    def one_update(carry, update_key):
        agent_state, buffer_state = carry
        key_batch, key_agent = jax.random.split(update_key)
        batch, info = sample_batch(components, state, buffer_state, key_batch)
        agent_state, metrics = agent.update(agent_state, batch, key_agent)
        metrics = dict(metrics)
        td_error = metrics.pop('td_error')[:agent_size]
        buffer_state = replay.update(buffer_state, info, jnp.abs(td_error), ready)
        return (agent_state, buffer_state), metrics

    keys = jax.random.split(key_update, cfg.updates_per_iteration)
    (agent_state, buffer_state), update_metrics = jax.lax.scan(
        one_update, (state.agent, buffer_state), keys
    )
    # Before learning starts the updates ran on a partly filled buffer: drop
    # them (a select over the small agent state; the replay was masked).
    agent_state = jax.tree.map(lambda a, b: jnp.where(ready, a, b), agent_state, state.agent)
    update_metrics = jax.tree.map(
        lambda m: jnp.where(ready, jnp.nanmean(m), jnp.nan), update_metrics
    )
    buffer_state = replay.after_updates(buffer_state, key_refresh)
    state = state.replace(agent=agent_state, buffer=buffer_state)
    metrics = {
        **episode_metrics(chunk),
        **update_metrics,
        **replay.metrics(buffer_state),
        'env_steps': env_steps,
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
    components: Components, seed: int, num_seeds: int, demos: Optional[Demonstrations] = None
) -> TrainState:
    """Initial states of `num_seeds` seeds stacked on a leading axis.

    `demos` go where the configuration uses them: LfD's own buffer (as n-step
    transitions) or the DER zones."""
    cfg = components.config
    lfd = None
    if cfg.mode == 'lfd':
        if demos is None:
            raise ValueError('mode=lfd needs demonstrations (make_demonstrations).')
        lfd = demo_transitions(demos, cfg.n_step, cfg.agent.discount)
    zone_demos = demos if cfg.replay == 'der' and cfg.der.structure != 'none' else None
    if cfg.replay == 'der' and cfg.der.structure != 'none' and demos is None:
        raise ValueError(f'DER structure {cfg.der.structure!r} needs demonstrations.')
    return _init_fn(components)(seed_keys(seed, num_seeds), zone_demos, lfd)


@functools.lru_cache(maxsize=16)
def _init_fn(components: Components):
    return jax.jit(jax.vmap(functools.partial(init_state, components), in_axes=(0, None, None)))


def make_demonstrations(
    components: Components, key: jax.Array, max_attempts: int = 10
) -> Tuple[Demonstrations, Dict[str, float]]:
    """`num_demos` successful episodes of a scripted, imperfect demonstrator.

    Tasks with a hand-designed controller (the connectors): that controller
    with uniform noise of `demo_noise` times the action scale on every axis;
    it sees the goal the robot was told. Other tasks (the assembly tasks):
    `demos.HumanDemonstrator`, a person with a game controller. Episodes run
    in batches of `num_envs` until `num_demos` of them succeed; only those are
    kept. Actions are stored in the agent's space of the 'pure'
    parameterization (command / action_scale, clipped to [-1, 1]).

    Returns (Demonstrations, info with the demonstrator's success rate).
    """
    cfg, env = components.config, components.env
    if not env.has_base_controller:
        return demos_lib.record(
            env, cfg.num_demos, key, batch=cfg.num_envs, max_batches=max_attempts
        )
    scale = env.action_scale

    def act(obs, act_state, key):
        noise = jax.random.uniform(key, obs.shape[:-1] + (env.action_dim,), minval=-1, maxval=1)
        command = env.base_action(obs) + cfg.demo_noise * scale * noise
        return jnp.clip(command / scale, -1.0, 1.0), command, act_state

    @jax.jit
    def episodes(key):
        key_reset, key_run = jax.random.split(key)
        states = jax.vmap(env.reset)(jax.random.split(key_reset, cfg.num_envs))
        zeros = jnp.zeros((cfg.num_envs,), jnp.float32)
        return collect(env, states, zeros, act, (), key_run, env.horizon)[3]

    kept, tried, succeeded = [], 0, 0
    for attempt_key in jax.random.split(key, max_attempts):
        chunk = jax.device_get(episodes(attempt_key))
        ended = np.asarray(chunk.last)
        # The first episode of each environment: its end and its outcome.
        first_end = np.argmax(ended, axis=0)
        ok = np.asarray(chunk.success)[first_end, np.arange(ended.shape[1])] & ended.any(0)
        tried, succeeded = tried + ok.size, succeeded + int(ok.sum())
        for e in np.flatnonzero(ok):
            kept.append(
                (jax.tree.map(lambda x, e=e: x[:, e], chunk_steps(chunk)), first_end[e] + 1)
            )
        if len(kept) >= cfg.num_demos:
            break
    if len(kept) < cfg.num_demos:
        raise RuntimeError(
            f'The scripted demonstrator succeeded in {succeeded} of {tried} episodes, fewer '
            f'than num_demos={cfg.num_demos}; lower num_demos or demo_noise.'
        )
    kept = kept[: cfg.num_demos]
    steps = jax.tree.map(lambda *xs: np.stack(xs), *[k[0] for k in kept])
    lengths = np.asarray([k[1] for k in kept], np.int32)
    # Zero the steps after each episode's end (the next episode's start).
    mask = np.arange(env.horizon)[None, :] < lengths[:, None]
    steps = jax.tree.map(
        lambda x: np.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, np.zeros_like(x)),
        steps,
    )
    demos = Demonstrations(steps=steps, lengths=lengths)
    return demos, {'demonstrator_success_rate': succeeded / tried}
