"""One rollout for every use: collection, evaluation and demonstration recording.

`rollout(env, state, act, act_state, key, num_steps, auto_reset)` steps a
batch of E environments `num_steps` times in a `lax.scan` and returns what
happened, time-major (K, E, ...):

  * collection (`auto_reset=True`): a finished episode restarts at once from
    a fresh `env.reset`, so episodes need not align with iterations;
  * evaluation and demonstrations (`auto_reset=False`): each environment runs
    one episode from the given start state; once it ends it holds its final
    state and its later steps are marked not `alive`.

The policy is `act(env_state, act_state, key) -> (agent_action, command,
act_state)`: it sees the batched env state (observations, and the task's
info for scripted demonstrators), returns the agent's own action in [-1, 1]
(what the replay stores) and the command the robot executes. `observe(state)`
adds per-step extras to the trajectory (tool-point positions for plots, joint
positions for rendering); it is traced only when given.

Keys: step k uses `split(step_key)` into (act, reset); `act` splits its key
per environment itself if it needs one each.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax.envs import base as env_base
from insertion_jax.types import Step

Act = Callable[[env_base.State, Any, jax.Array], Tuple[jax.Array, jax.Array, Any]]


@struct.dataclass
class Trajectory:
    """What a rollout did, time-major (K, E, ...).

    Attributes:
      obs: observation the policy saw.
      action: the agent's action in [-1, 1] (u_RL under residual RL).
      command: what the robot executed, in the task's units.
      reward: reward of the step.
      terminal: the episode ended here without bootstrap (not a time limit).
      last: the episode ended at this step (time limit, terminal or failure).
      next_obs: observation after the step (before any auto-reset).
      success: the task's success after the step (`env.success`).
      alive: the step belongs to an episode (False after the end when not
        auto-resetting).
      episode_return: return of the episode that ended here (0 elsewhere).
      metrics: the env's named per-step metrics after the step.
      extras: `observe(next_state)` per step, or None.
    """

    obs: jax.Array
    action: jax.Array
    command: jax.Array
    reward: jax.Array
    terminal: jax.Array
    last: jax.Array
    next_obs: jax.Array
    success: jax.Array
    alive: jax.Array
    episode_return: jax.Array
    metrics: Dict[str, jax.Array]
    extras: Any = None

    def steps(self) -> Step:
        """The one-step experience (K, E, ...) as the replay stores it."""
        return Step(
            obs=self.obs,
            action=self.action,
            reward=self.reward,
            terminal=self.terminal,
            next_obs=self.next_obs,
        )


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per environment: `new` where `mask` (E,), else `old`, for any pytree of (E, ...)."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


def rollout(
    env: env_base.Env,
    state: env_base.State,
    act: Act,
    act_state: Any,
    key: jax.Array,
    num_steps: int,
    auto_reset: bool,
    episode_return: Optional[jax.Array] = None,
    reset_act_state: Callable[[Any, jax.Array], Any] = lambda s, done: s,
    observe: Optional[Callable[[env_base.State], Any]] = None,
) -> Tuple[env_base.State, jax.Array, Any, Trajectory]:
    """Steps E environments `num_steps` times (see the module docstring).

    Args:
      env: the task (`envs.base.Env`).
      state: batched env state of E environments.
      act: the policy, `(state, act_state, key) -> (agent_action (E, A), command (E, A),
        act_state)`.
      act_state: carried state of `act` (exploration noise, a demonstrator's memory).
      key: PRNG key.
      num_steps: K (static).
      auto_reset: restart finished episodes (collection) or hold them (one episode each).
      episode_return: (E,) return so far of the running episodes (zeros if None).
      reset_act_state: `(act_state, done (E,)) -> act_state` at episode ends.
      observe: optional `state -> pytree` of per-step extras.

    Returns:
      (state, episode_return (E,), act_state, Trajectory with leaves (K, E, ...)).
    """
    num_envs = state.reward.shape[0]
    # The loop's carry is computed from `state`, not made of constants: under
    # an outer vmap (seeds) a constant carry is unbatched until the first step
    # batches it, and JAX then traces the whole step loop again. (Rewards are
    # finite: `envs.base.mask_nonfinite`. An episode that starts ended is not
    # alive; fresh starts never have.)
    if episode_return is None:
        episode_return = 0.0 * state.reward
    alive = jnp.logical_not(state.done)

    def step(carry, step_key):
        state, episode_return, act_state, alive = carry
        key_act, key_reset = jax.random.split(step_key)
        agent_action, command, act_state = act(state, act_state, key_act)
        next_state = env_base.batched(env.step)(state, command)
        done = next_state.done
        ret = episode_return + next_state.reward
        out = Trajectory(
            obs=state.obs,
            action=agent_action,
            command=command,
            reward=next_state.reward,
            terminal=jax.vmap(env.terminal)(next_state),
            last=done & alive,
            next_obs=next_state.obs,
            success=jax.vmap(env.success)(next_state),
            alive=alive,
            episode_return=jnp.where(done & alive, ret, 0.0),
            metrics=next_state.metrics,
            extras=None if observe is None else observe(next_state),
        )
        if auto_reset:
            # A fresh start for every environment; only the finished ones take it.
            fresh = env_base.batched(env.reset)(jax.random.split(key_reset, num_envs))
            state = _where(done, fresh, next_state)
        else:
            state = _where(alive, next_state, state)  # an ended episode holds
            alive = alive & ~done
        carry = (state, jnp.where(done, 0.0, ret), reset_act_state(act_state, done), alive)
        return carry, out

    (state, episode_return, act_state, _), trajectory = jax.lax.scan(
        step, (state, episode_return, act_state, alive), jax.random.split(key, num_steps)
    )
    return state, episode_return, act_state, trajectory


def episode_metrics(trajectory: Trajectory) -> Dict[str, jax.Array]:
    """Mean return and end-of-episode success of the episodes that ended in a
    trajectory (NaN when none did), and how many ended."""
    ended = trajectory.last.astype(jnp.float32)
    count = jnp.sum(ended)
    safe = jnp.maximum(count, 1.0)
    nan = jnp.full((), jnp.nan)
    return {
        'episodes': count,
        'episode_return': jnp.where(count > 0, jnp.sum(trajectory.episode_return) / safe, nan),
        'success': jnp.where(count > 0, jnp.sum(ended * trajectory.success) / safe, nan),
    }
