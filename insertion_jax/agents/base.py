"""What every agent shares: the agent interface, target updates, optimizer steps.

An agent is a frozen dataclass of pure functions: each agent module writes
them at module level with explicit arguments (networks, optimizers, config)
and its `make_*` binds those with `functools.partial`
(`agents.registry.make_agent` builds one):

  init(key, obs_spec, action_spec) -> AgentState
  act(state, obs, key, deterministic) -> action            # (..., A) in [-1, 1]
  update(state, batch, key) -> (state, metrics)
  init_noise(key, num_envs) -> NoiseState                  # exploration process
  explore(state, obs, noise, key) -> (action, noise)       # what the collector runs
  reset_noise(noise, done) -> noise                        # at episode boundaries
  actor_params(state) -> params                            # all that `policy` needs
  policy(params, obs) -> action                            # deterministic; exported

Specs are `jax.ShapeDtypeStruct`s of one observation and one action. Actions
are normalized to [-1, 1] per axis; `agents.policy.command` scales them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from insertion_jax import observations
from insertion_jax.types import Metrics, Params, Transition


@dataclasses.dataclass(frozen=True)
class Agent:
    """An off-policy agent as pure functions; see the module docstring."""

    name: str
    config: Any
    init: Callable[[jax.Array, jax.ShapeDtypeStruct, jax.ShapeDtypeStruct], Any]
    act: Callable[..., jax.Array]
    update: Callable[[Any, Transition, jax.Array], Tuple[Any, Metrics]]
    init_noise: Callable[[jax.Array, int], Any]
    explore: Callable[[Any, jax.Array, Any, jax.Array], Tuple[jax.Array, Any]]
    reset_noise: Callable[[Any, jax.Array], Any]
    actor_params: Callable[[Any], Params]
    policy: Callable[[Params, jax.Array], jax.Array]


def q_regression_loss(q: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Sum over critics of the weighted mean squared TD error.

    Args:
      q: (num_critics, B) predictions.
      target: (B,) regression targets (gradients are stopped here).
      weight: (B,) per-sample weights.

    Returns:
      sum_c mean_b weight_b (q_cb - target_b)^2.
    """
    error = q - jax.lax.stop_gradient(target)[None]
    return jnp.sum(jnp.mean(weight[None] * error**2, axis=-1))


def soft_update(target: Params, online: Params, tau: float) -> Params:
    """Polyak averaging: target <- (1 - tau) target + tau online."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def hard_update(target: Params, online: Params, step: jax.Array, every: int) -> Params:
    """Copies `online` into `target` when `step` (the update count after this
    update, int ()) is a multiple of `every`; otherwise keeps `target`."""
    copy = (step % every) == 0
    return jax.tree.map(lambda t, o: jnp.where(copy, o, t), target, online)


def update_target(target: Params, online: Params, step: jax.Array, tau: float, every: int):
    """Soft update with rate `tau` when `every` == 0, else a hard copy every `every` updates."""
    if every > 0:
        return hard_update(target, online, step, every)
    return soft_update(target, online, tau)


def apply_gradients(
    optimizer: optax.GradientTransformation, params: Params, opt_state: Any, grads: Params
) -> Tuple[Params, Any]:
    """One optimizer step; returns (params, opt_state)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def make_optimizer(learning_rate: float, max_grad_norm: float = 0.0):
    """Adam, preceded by global-norm gradient clipping when `max_grad_norm` > 0."""
    adam = optax.adam(learning_rate)
    if max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)
    return adam


def nan_metrics(fn: Callable, *args) -> Metrics:
    """NaN-filled metrics shaped like the second output of `fn(*args)`: what the
    branch of a `lax.cond` that skips `fn` reports (averaged away with nanmean)."""
    shapes = jax.eval_shape(fn, *args)[1]
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)


def actor_params(state: Any) -> Params:
    """`state.actor_params`: all that an agent's `policy` needs (every agent's state has it)."""
    return state.actor_params


def init_actor_critic(nets, key, obs_spec, action_spec, action_dim: int) -> Tuple[Params, Params]:
    """(actor_params, critic_params) of `nets` (with `.actor` and `.critic`
    modules) for one observation and action of the given specs."""
    if action_spec.shape != (action_dim,):
        raise ValueError(
            f'The agent was built for actions of shape ({action_dim},), got {action_spec.shape}.'
        )
    key_actor, key_critic = jax.random.split(key)
    obs = observations.zeros_like_spec(obs_spec)
    action = jnp.zeros(action_spec.shape, jnp.float32)
    return nets.actor.init(key_actor, obs), nets.critic.init(key_critic, obs, action)
