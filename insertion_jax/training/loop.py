"""The on-device training loop: collect, store, update, in one jitted function.

One *iteration* of `train_iteration`:
  1. `num_envs` vmapped environments step `unroll_length` times
     (`acting.rollout`) with the agent's exploration policy; finished
     episodes reset in place.
  2. The steps go into the run's replay (`TrainConfig.make_replay()`, any
     kind of `replay.registry`, mixed with the demonstrations in LfD mode);
     the observation normalizer absorbs their observations.
  3. `updates_per_iteration` = utd * num_envs * unroll_length gradient updates
     run in a `lax.scan`, each on a fresh batch from the replay weighted by
     its importance weights (observations normalized, images randomly
     shifted: `sample_batch`); each update hands its |TD errors| back to the
     replay. Before `learning_starts` env steps the updates are computed and
     discarded (a select over the small agent state; the replay's priority
     writes are masked), so one compiled function serves the whole run. The
     replay then does its end-of-iteration work (DER zone refreshes).
`run_iterations(state, n)` scans n iterations per device call;
`make_train_fn` vmaps it over seeds: every leaf of `TrainState` carries a
leading seed axis. The host only logs, evaluates and saves between calls.

The loop knows no replay kind and no task: the replay and the environment
are reached through their interfaces (`replay.base.Replay`, `envs.base.Env`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import observations
from insertion_jax.agents import base as agent_base
from insertion_jax.agents import policy as policy_lib
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import base as env_base
from insertion_jax.envs import registry as env_registry
from insertion_jax.replay import base as replay_base
from insertion_jax.training import acting, distributed
from insertion_jax.training import normalizer as obs_norm
from insertion_jax.training.config import TrainConfig
from insertion_jax.training.demonstrations import Demonstrations
from insertion_jax.types import Step


@struct.dataclass
class TrainState:
    """Everything one seed's training changes; vmapped runs add a leading seed axis.

    Attributes:
      agent: the agent's state (parameters, optimizer states, update count).
      buffer: the replay's state (`Components.replay`).
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
    env: env_base.State
    noise: Any
    normalizer: obs_norm.ObsNormalizer
    episode_return: jax.Array
    key: jax.Array
    env_steps: jax.Array
    iteration: jax.Array


@dataclasses.dataclass(frozen=True)
class Components:
    """The static parts a run is built from (environment, agent, replay)."""

    config: TrainConfig
    env: env_base.Env
    agent: agent_base.Agent
    replay: replay_base.Replay


@functools.lru_cache(maxsize=16)
def make_components(config: TrainConfig) -> Components:
    """Compiles the environment and builds the agent and replay of `config`.

    Cached per config (everything in it is immutable), so that every jitted
    function built from the same components is traced once per process.
    """
    env = env_registry.make_env(config.env)
    return Components(
        config=config,
        env=env,
        agent=agent_registry.make_agent(config.algo, config.agent, env.action_dim),
        replay=config.make_replay(),
    )


# ------------------------------------------------------------------ policy
def make_policy(components: Components) -> Callable[[Any, jax.Array], jax.Array]:
    """`policy(params, obs) -> command` of the deterministic trained policy.

    params: {'actor': the agent's actor parameters, 'normalizer': ObsNormalizer}
    (see `policy_params`); obs (..., obs_dim) raw; the command in the task's
    units (the P-controller's move added under residual RL). This is the
    policy evaluation runs and the robot loop exports (`agents.policy`).
    """
    cfg, env = components.config, components.env
    return policy_lib.make_policy(
        cfg.algo,
        cfg.agent,
        env.action_dim,
        cfg.mode,
        env.action_scale,
        env.base_action if env.has_base_controller else None,
    )


def policy_params(components: Components, state: TrainState) -> Dict[str, Any]:
    """The parameters `make_policy`'s policy needs, from a training state."""
    return {'actor': components.agent.actor_params(state.agent), 'normalizer': state.normalizer}


def policy_params_like(components: Components, num_seeds: int) -> Dict[str, Any]:
    """Shapes and dtypes of `num_seeds` seeds' policy parameters, built without
    demonstrations, replay or environments (what loading a run needs)."""
    cfg, env = components.config, components.env

    def one(key):
        agent_state = components.agent.init(key, env.observation_spec, env.action_spec)
        return {
            'actor': components.agent.actor_params(agent_state),
            'normalizer': obs_norm.init_normalizer(cfg.obs_normalizer, env.obs_scale),
        }

    return jax.eval_shape(jax.vmap(one), seed_keys(0, num_seeds))


def make_act(components: Components, state: TrainState) -> acting.Act:
    """The collector's policy for `acting.rollout`: explores with the agent's
    current parameters and normalizer, `(env_state, noise, key) -> (agent action,
    command, noise)`."""
    agent, cfg, env = components.agent, components.config, components.env
    base_action = env.base_action if env.has_base_controller else None

    def act(env_state, noise, key):
        obs = env_state.obs
        action, noise = agent.explore(
            state.agent, obs_norm.normalize(state.normalizer, obs), noise, key
        )
        command = policy_lib.command(cfg.mode, env.action_scale, base_action, obs, action)
        return action, command, noise

    return act


# ---------------------------------------------------------------- training
def example_step(env: env_base.Env) -> Step:
    """One zero step with the shapes the replay stores."""
    obs = observations.zeros_like_spec(env.observation_spec)
    return Step(
        obs=obs,
        action=jnp.zeros(env.action_spec.shape, env.action_spec.dtype),
        reward=jnp.zeros((), jnp.float32),
        terminal=jnp.zeros((), bool),
        next_obs=obs,
    )


def init_state(
    components: Components, key: jax.Array, demos: Optional[Demonstrations] = None
) -> TrainState:
    """Initial training state of one seed.

    `demos` (in the agent's action space of the run's mode, see
    `demonstrations.for_mode`) go to the replay when it takes them.
    """
    cfg, env = components.config, components.env
    key_agent, key_env, key_noise, key = jax.random.split(key, 4)
    agent_state = components.agent.init(key_agent, env.observation_spec, env.action_spec)
    buffer_state = components.replay.init(
        example_step(env), demos if components.replay.takes_demonstrations else None
    )
    env_state = env_base.batched(env.reset)(jax.random.split(key_env, cfg.num_envs))
    return TrainState(
        agent=agent_state,
        buffer=buffer_state,
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
) -> Tuple[Any, Any]:
    """One training batch (observations normalized, images shifted at random
    when `config.image_shift_px` > 0) and the replay's sample info."""
    cfg = components.config
    shift = cfg.image_shift_px if observations.has_image(components.env.observation_spec) else 0
    if shift:  # (state runs keep the key stream they always had)
        key, key_obs, key_next = jax.random.split(key, 3)
    batch, info = components.replay.sample(buffer_state, key, cfg.batch_size)
    obs = obs_norm.normalize(state.normalizer, batch.obs)
    next_obs = obs_norm.normalize(state.normalizer, batch.next_obs)
    if shift:
        obs = {**obs, observations.IMAGE: random_shift(obs[observations.IMAGE], shift, key_obs)}
        next_obs = {
            **next_obs,
            observations.IMAGE: random_shift(next_obs[observations.IMAGE], shift, key_next),
        }
    return batch.replace(obs=obs, next_obs=next_obs), info


def random_shift(images: jax.Array, pad: int, key: jax.Array) -> jax.Array:
    """DrQ's augmentation: each image (B, R, R, F) padded by `pad` pixels
    (edge pixels repeated) and cropped back to R x R at a random offset, so it
    shifts by up to `pad` pixels in each direction."""
    size = images.shape[1]
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * pad + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (size, size, image.shape[-1])
        )

    return jax.vmap(crop)(padded, offsets)


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
    env_state, episode_return, noise, trajectory = acting.rollout(
        components.env,
        state.env,
        make_act(components, state),
        state.noise,
        key_collect,
        cfg.unroll_length,
        auto_reset=True,
        episode_return=state.episode_return,
        reset_act_state=agent.reset_noise,
    )
    env_steps = state.env_steps + cfg.env_steps_per_iteration
    buffer_state = replay.add(
        state.buffer,
        trajectory.steps(),
        trajectory.last,
        trajectory.last & trajectory.success,
        key_store,
    )
    state = state.replace(
        normalizer=obs_norm.update(state.normalizer, trajectory.obs),
        env=env_state,
        episode_return=episode_return,
        noise=noise,
        key=key,
        env_steps=env_steps,
        iteration=state.iteration + 1,
    )
    ready = env_steps >= max(cfg.learning_starts, cfg.batch_size)

    def one_update(carry, update_key):
        agent_state, buffer_state = carry
        key_batch, key_agent = jax.random.split(update_key)
        batch, info = sample_batch(components, state, buffer_state, key_batch)
        agent_state, metrics = agent.update(agent_state, batch, key_agent)
        metrics = dict(metrics)
        td_error = metrics.pop('td_error')
        buffer_state = replay.set_priorities(buffer_state, info, jnp.abs(td_error), ready)
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
        **acting.episode_metrics(trajectory),
        **update_metrics,
        **replay.metrics(buffer_state),
        'env_steps': env_steps,
        'reward_mean': jnp.mean(trajectory.reward),
        'nonfinite': jnp.sum(trajectory.terminal.astype(jnp.float32)),
    }
    return state, metrics


def run_iterations(
    components: Components, state: TrainState, num_iterations: int
) -> Tuple[TrainState, Dict]:
    """`num_iterations` iterations of one seed in a `lax.scan`; metrics stacked (n, ...)."""
    return jax.lax.scan(
        lambda s, _: train_iteration(components, s), state, None, length=num_iterations
    )


def make_train_fn(
    components: Components, num_iterations: int, layout: Optional[distributed.Layout] = None
):
    """The compiled train function: jitted `state -> (state, metrics)` running
    `num_iterations` iterations of every seed (leading seed axis on state and
    metrics: metrics (S, n, ...)).

    The state is donated: the replay buffers update in place. With a
    `layout` the state and metrics stay laid out over its devices
    (`distributed.Layout.state_shardings`), call after call, in one program.
    """
    return _train_fn(components, num_iterations, spread(layout))


@functools.lru_cache(maxsize=16)
def _train_fn(components: Components, num_iterations: int, layout: Optional[distributed.Layout]):
    fn = jax.vmap(functools.partial(run_iterations, components, num_iterations=num_iterations))
    if layout is None:
        return jax.jit(fn, donate_argnums=0)

    def laid_out(state):
        state, metrics = fn(constrain(layout, state))
        return constrain(layout, state), jax.lax.with_sharding_constraint(metrics, layout.seeds)

    return jax.jit(laid_out, donate_argnums=0)


def spread(layout: Optional[distributed.Layout]) -> Optional[distributed.Layout]:
    """`layout` where its constraints are needed (seeds over several devices,
    or on another device than the default one), else None: on the default
    device alone they would change nothing but cost compile time (about 3 s
    of the USB iteration's 21 s), so the plain program runs."""
    if layout is None or (
        layout.num_devices == 1 and layout.mesh.devices.flat[0] == jax.devices()[0]
    ):
        return None
    return layout


def constrain(layout: distributed.Layout, state: Any) -> Any:
    """`state` (leading seed axis) constrained to `layout` inside a jitted function."""
    return jax.lax.with_sharding_constraint(state, layout.state_shardings(state))


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """PRNG keys of seeds seed, seed + 1, ...: seed s of a vmapped run uses the
    same key as a run of that seed alone."""
    return jnp.stack([jax.random.PRNGKey(seed + s) for s in range(num_seeds)])


def init_states(
    components: Components,
    seed: int,
    num_seeds: int,
    demos: Optional[Demonstrations] = None,
    layout: Optional[distributed.Layout] = None,
) -> TrainState:
    """Initial states of `num_seeds` seeds stacked on a leading axis.

    `demos` (in the run's action space, `demonstrations.for_mode`) are required
    when the run's replay takes demonstrations, and shared by every seed.
    With a `layout` each device initializes only its own seeds (a
    multi-process run included): nothing passes through the host.
    """
    if components.replay.takes_demonstrations and demos is None:
        raise ValueError(
            'This configuration learns from demonstrations '
            f'(mode={components.config.mode}); pass them (demonstrations.record).'
        )
    if not components.replay.takes_demonstrations:
        demos = None
    # Host values: a multi-process jit takes numpy arguments as the same
    # global value on every process.
    keys, demos = jax.device_get((seed_keys(seed, num_seeds), demos))
    return committed(_init_fn(components, spread(layout))(keys, demos))


def committed(tree: Any) -> Any:
    """`tree` with every array committed to the device it is on.

    jit compiles a committed argument into a different program (explicit
    shardings) from an uncommitted one, and what a jitted initialization
    returns is uncommitted while a restored checkpoint is committed (orbax).
    `init_states` commits, so that fresh, restored and hand-started states
    all run one training program (and find it in the compilation cache).
    """
    return jax.tree.map(lambda x: jax.device_put(x, x.sharding), tree)


@functools.lru_cache(maxsize=16)
def _init_fn(components: Components, layout: Optional[distributed.Layout] = None):
    init = jax.vmap(functools.partial(init_state, components), in_axes=(0, None))
    if layout is None:
        return jax.jit(init)
    return jax.jit(lambda keys, demos: constrain(layout, init(keys, demos)))
