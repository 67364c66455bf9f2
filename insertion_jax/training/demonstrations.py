"""Demonstrations for a run: recorded with a scripted demonstrator, in the agent's action space.

Two demonstrators, both pytrees (one compiled recorder per task, whatever
their settings), both run through `acting.rollout` like every other policy:

  * `ScriptedController`, for tasks with a hand-designed controller (the
    connectors): that controller plus uniform noise of `noise` times the
    maximum move on every axis; it sees the goal the robot was told.
  * `demos.HumanDemonstrator`, for the assembly tasks: a person with a game
    controller (see `replay/demos.py`).

`record(env, num, key, demonstrator)` runs batches of one-episode rollouts
until `num` episodes succeeded and keeps only those. The recorded actions are
the pure parameterization's (command / action_scale, in [-1, 1]), as the
demonstrations file stores them. `for_mode` turns them into what the agent
stores in a run's mode: under residual RL the agent's action is the residual
u_RL = u_demo - u_H, so it becomes (command - u_H(s)) / scale.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from insertion_jax import checks
from insertion_jax.envs import base as env_base
from insertion_jax.replay import demos as demos_lib
from insertion_jax.training import acting

Demonstrations = demos_lib.Demonstrations


class DemonstratorError(RuntimeError):
    """The demonstrator did not succeed often enough to give the demonstrations asked for."""


@struct.dataclass
class ScriptedController:
    """The task's hand-designed controller with uniform noise (`noise` x max move)."""

    noise: float = 0.3

    def validate(self) -> 'ScriptedController':
        """Raises ValueError unless `noise` lies in [0, 1]; returns self."""
        checks.unit_interval('ScriptedController', noise=self.noise)
        return self

    def init(self, key: jax.Array) -> Dict[str, jax.Array]:
        del key
        return {}

    def act(self, env, state, memory, key) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """The agent-space action in [-1, 1] for one environment."""
        scale = env.action_scale
        noise = jax.random.uniform(key, (env.action_dim,), minval=-1, maxval=1)
        command = env.base_action(state.obs) + self.noise * scale * noise
        return jnp.clip(command / scale, -1.0, 1.0), memory


def default_demonstrator(env: env_base.Env, noise: float = 0.3):
    """The scripted controller where the task has one, else the human-like demonstrator."""
    if env.has_base_controller:
        return ScriptedController(noise=noise).validate()
    return demos_lib.HumanDemonstrator().validate()


def draw_starts(env: env_base.Env, key: jax.Array, episodes: int) -> Tuple[jax.Array, Dict]:
    """(reset keys (episodes,), reset_args) of `episodes` starts drawn with the
    task's own randomization (`env.reset_args`: a start pose on the assembly
    tasks).

    The draws are made outside the compiled recorder, so that recordings
    from given poses (the physics tests) run the same program.
    """
    keys = jax.random.split(key, episodes)
    return keys, jax.vmap(env.reset_args)(keys)


def record_episodes(
    env: env_base.Env, demonstrator: Any, key: jax.Array, states: env_base.State
) -> Tuple[Demonstrations, jax.Array, Dict[str, jax.Array]]:
    """One demonstration from each start state (B of them), each until it ends.

    Returns (Demonstrations padded to env.horizon (steps after an episode's
    end are zero), success (B,) bool at the episode's last step, the env's
    per-step metrics (B, T)). `make_recorder` gives the jitted version.
    """
    episodes = states.reward.shape[0]
    key_memory, key_run = jax.random.split(key)
    memory = jax.vmap(demonstrator.init)(jax.random.split(key_memory, episodes))
    scale = env.action_scale

    def act(state, memory, key):
        stick, memory = jax.vmap(demonstrator.act, in_axes=(None, 0, 0, 0))(
            env, state, memory, jax.random.split(key, episodes)
        )
        return stick, stick * scale, memory

    _, _, _, trajectory = acting.rollout(
        env, states, act, memory, key_run, env.horizon, auto_reset=False
    )
    alive = trajectory.alive
    # Zeros of each field's own dtype: a bare 0 would turn the bool
    # `terminal` into int32, and recorded demonstrations would then compile
    # other programs than the same ones loaded from a file.
    steps = jax.tree.map(
        lambda x: jnp.where(
            alive.reshape(alive.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype)
        ),
        trajectory.steps(),
    )
    success = jnp.any(trajectory.last & trajectory.success, axis=0)
    lengths = jnp.sum(alive, axis=0).astype(jnp.int32)
    batch_major = functools.partial(jax.tree.map, lambda x: jnp.swapaxes(x, 0, 1))
    demos = Demonstrations(steps=batch_major(steps), lengths=lengths)
    return demos, success, batch_major(trajectory.metrics)


def record_from_starts(
    env: env_base.Env,
    demonstrator: Any,
    key: jax.Array,
    reset_keys: jax.Array,
    reset_args: Dict[str, jax.Array],
) -> Tuple[Demonstrations, jax.Array, Dict[str, jax.Array], env_base.State]:
    """`record_episodes` from the B start states `env.reset(reset_keys[i],
    **reset_args[i])`; returns its three results and the start states."""
    states = jax.vmap(env.reset)(reset_keys, **reset_args)
    return (*record_episodes(env, demonstrator, key, states), states)


@functools.lru_cache(maxsize=8)
def make_recorder(env: env_base.Env):
    """Jitted `record_from_starts(env, ...)`: the resets and the recording in
    one program, compiled once per environment, demonstrator type and batch
    size."""
    return jax.jit(functools.partial(record_from_starts, env))


def record(
    env: env_base.Env,
    num: int,
    key: jax.Array,
    demonstrator: Optional[Any] = None,
    batch: int = 16,
    max_batches: int = 20,
) -> Tuple[Demonstrations, Dict[str, float]]:
    """`num` successful demonstrations (batches of `batch` episodes until enough).

    `demonstrator` defaults to `default_demonstrator(env)`. Only episodes that
    end in success are kept.

    Returns (Demonstrations with leaves (num, horizon, ...),
    {'demonstrator_success_rate', 'mean_length'}). Raises RuntimeError if
    `max_batches` batches do not give `num` successes (DemonstratorError).
    """
    demonstrator = demonstrator if demonstrator is not None else default_demonstrator(env)
    demonstrator.validate()
    checks.positive_int('record', num=num, batch=batch, max_batches=max_batches)
    recorder = make_recorder(env)
    kept, tried, succeeded = [], 0, 0
    for batch_key in jax.random.split(key, max_batches):
        key_start, key_run = jax.random.split(batch_key)
        demos, success, _, _ = jax.device_get(
            recorder(demonstrator, key_run, *draw_starts(env, key_start, batch))
        )
        tried, succeeded = tried + batch, succeeded + int(np.sum(success))
        for e in np.flatnonzero(success):
            kept.append(jax.tree.map(lambda x, e=e: x[e], demos))
        if len(kept) >= num:
            break
    if len(kept) < num:
        raise DemonstratorError(
            f'The demonstrator succeeded in {succeeded} of {tried} episodes, fewer than the '
            f'{num} asked for; ask for fewer demonstrations or a less noisy demonstrator.'
        )
    demos = jax.tree.map(lambda *xs: np.stack(xs), *kept[:num])
    return demos, {
        'demonstrator_success_rate': succeeded / tried,
        'mean_length': float(np.mean(demos.lengths)),
    }


def for_mode(demos: Demonstrations, env: env_base.Env, mode: str) -> Demonstrations:
    """The demonstrations with the actions the agent stores in `mode`.

    Files and recorders hold the pure parameterization a = command / scale.
    Under residual RL the agent's action is the residual, so it becomes
    a - u_H(s) / scale, clipped to [-1, 1] (padding stays zero); the other
    modes store a as it is.
    """
    if mode != 'residual':
        return demos
    steps = demos.steps
    valid = np.arange(np.shape(steps.action)[1])[None, :] < np.asarray(demos.lengths)[:, None]
    obs = jax.tree.map(jnp.asarray, steps.obs)
    base = np.asarray(env.base_action(obs)) / np.asarray(env.action_scale)
    residual = np.clip(np.asarray(steps.action) - base, -1.0, 1.0)
    action = np.where(valid[..., None], residual, 0.0).astype(np.asarray(steps.action).dtype)
    return demos.replace(steps=steps.replace(action=action))
