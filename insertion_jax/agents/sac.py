"""Soft actor-critic (Haarnoja et al. 2018) with automatic entropy tuning.

Twin Q-functions with soft (Polyak) target updates, a tanh-squashed Gaussian
policy, and a learned temperature alpha that drives the policy's entropy to
`target_entropy` (default -|A|). One `update` is: critic step, actor step with
the new critic, temperature step, target update. Each network has its own Adam
state. With `bc_weight` > 0 the actor also minimizes the behaviour-cloning loss
of `bc.py` on the demonstration samples of each batch (applied to the mean
action tanh(mu)).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from insertion_jax import checks, types
from insertion_jax.agents import base, bc, networks
from insertion_jax.agents import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Hyperparameters of SAC.

    Attributes:
      hidden: hidden layer widths of actor and critics.
      encoder_channels: channels of the image encoder's 3x3 convolutions
        (`networks.ImageEncoder`; used when observations hold an image).
      actor_lr, critic_lr, alpha_lr: Adam learning rates.
      discount: gamma.
      tau: Polyak rate of the target critics.
      init_alpha: initial temperature.
      target_entropy: entropy target; None means -action_dim.
      actor_out_scale: initial weight scale of the actor's output layer.
      bc_weight: weight of the behaviour-cloning loss (0 disables it).
      q_filter: apply the Q-filter to the behaviour-cloning loss.
      max_grad_norm: global-norm gradient clip (0 disables it).
    """

    hidden: Tuple[int, ...] = (256, 256)
    encoder_channels: Tuple[int, ...] = networks.ENCODER_CHANNELS
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy: Optional[float] = None
    actor_out_scale: float = 1.0
    bc_weight: float = 0.0
    q_filter: bool = True
    max_grad_norm: float = 0.0

    def __post_init__(self):
        owner = 'SACConfig'
        checks.positive_ints(owner, hidden=self.hidden, encoder_channels=self.encoder_channels)
        checks.positive(
            owner,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            alpha_lr=self.alpha_lr,
            init_alpha=self.init_alpha,
        )
        checks.unit_interval(owner, discount=self.discount, tau=self.tau)
        checks.non_negative(owner, bc_weight=self.bc_weight)


@struct.dataclass
class SACState:
    """Everything SAC updates; a pytree."""

    actor_params: base.Params
    critic_params: base.Params
    target_critic_params: base.Params
    log_alpha: jax.Array
    actor_opt: base.Params
    critic_opt: base.Params
    alpha_opt: base.Params
    steps: jax.Array


@dataclasses.dataclass(frozen=True)
class SACNetworks:
    """Actor and twin-critic modules of SAC."""

    actor: networks.GaussianActor
    critic: networks.Critic


@dataclasses.dataclass(frozen=True)
class SACOptimizers:
    """One optimizer per network and one for the temperature (each its own Adam state)."""

    actor: optax.GradientTransformation
    critic: optax.GradientTransformation
    alpha: optax.GradientTransformation


def target_entropy(config: SACConfig, action_dim: int) -> float:
    """The entropy target the temperature loss uses: `config.target_entropy`,
    or -action_dim when it is None."""
    return -float(action_dim) if config.target_entropy is None else float(config.target_entropy)


def sample_action(
    nets: SACNetworks, actor_params: base.Params, obs: jax.Array, key: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    """(action (..., A), log_prob (...)) from the squashed Gaussian policy for obs (..., obs_dim)."""
    mean, log_std = nets.actor.apply(actor_params, obs)
    return networks.tanh_gaussian_sample(mean, log_std, key)


def critic_loss(
    critic_params: base.Params,
    target_critic_params: base.Params,
    actor_params: base.Params,
    alpha: jax.Array,
    batch: types.Transition,
    key: jax.Array,
    nets: SACNetworks,
) -> Tuple[jax.Array, types.Metrics]:
    """Soft Bellman regression of both critics.

    y = r + discount * (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
    loss = sum_i mean(w (Q_i(s, a) - y)^2). Returns (loss, aux) with aux 'q'
    (C, B) predictions, 'target' (B,) and 'td_error' (B,) = mean_i Q_i - y.
    """
    next_action, next_log_prob = sample_action(nets, actor_params, batch.next_obs, key)
    next_q = nets.critic.apply(target_critic_params, batch.next_obs, next_action)
    soft_value = jnp.min(next_q, axis=0) - alpha * next_log_prob
    target = batch.reward + batch.discount * soft_value
    q = nets.critic.apply(critic_params, batch.obs, batch.action)
    loss = base.q_regression_loss(q, target, batch.weight)
    return loss, {'q': q, 'target': target, 'td_error': jnp.mean(q, axis=0) - target}


def actor_loss(
    actor_params: base.Params,
    critic_params: base.Params,
    alpha: jax.Array,
    batch: types.Transition,
    key: jax.Array,
    nets: SACNetworks,
    bc_weight: float = 0.0,
    q_filter: bool = True,
) -> Tuple[jax.Array, types.Metrics]:
    """Policy loss mean(alpha log pi(a|s) - min_i Q_i(s, a)), a ~ pi(.|s), plus
    `bc_weight` times the behaviour-cloning loss of the mean action.

    Returns (loss, aux) with aux 'log_prob' (B,) and the BC terms.
    """
    mean, log_std = nets.actor.apply(actor_params, batch.obs)
    action, log_prob = networks.tanh_gaussian_sample(mean, log_std, key)
    q = jnp.min(nets.critic.apply(critic_params, batch.obs, action), axis=0)
    loss = jnp.mean(alpha * log_prob - q)
    aux = {'log_prob': log_prob}

    def min_q(a):
        return jnp.min(nets.critic.apply(critic_params, batch.obs, a), axis=0)

    return bc.add_bc_loss(loss, aux, jnp.tanh(mean), batch, bc_weight, min_q if q_filter else None)


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """Temperature loss alpha * mean(-log pi - target_entropy), alpha = exp(log_alpha).

    Its gradient raises alpha while the policy's entropy (-log pi) is below the
    target and lowers it above.
    """
    return jnp.exp(log_alpha) * jnp.mean(-jax.lax.stop_gradient(log_prob) - target_entropy)


def init(
    nets: SACNetworks,
    optimizers: SACOptimizers,
    config: SACConfig,
    key: jax.Array,
    obs_spec: jax.ShapeDtypeStruct,
    action_spec: jax.ShapeDtypeStruct,
) -> SACState:
    """Fresh parameters, target critics equal to the critics, alpha = init_alpha."""
    actor_params, critic_params = base.init_actor_critic(
        nets, key, obs_spec, action_spec, nets.actor.action_dim
    )
    log_alpha = jnp.asarray(jnp.log(config.init_alpha), jnp.float32)
    return SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=critic_params,
        log_alpha=log_alpha,
        actor_opt=optimizers.actor.init(actor_params),
        critic_opt=optimizers.critic.init(critic_params),
        alpha_opt=optimizers.alpha.init(log_alpha),
        steps=jnp.zeros((), jnp.int32),
    )


def act(
    nets: SACNetworks, state: SACState, obs: jax.Array, key: jax.Array, deterministic: bool = False
) -> jax.Array:
    """tanh(mean) when `deterministic`, else a sample of the policy; obs (..., obs_dim) -> (..., A)."""
    if deterministic:
        return policy_lib.gaussian_mean_action(nets.actor, state.actor_params, obs)
    return sample_action(nets, state.actor_params, obs, key)[0]


def update(
    nets: SACNetworks,
    optimizers: SACOptimizers,
    config: SACConfig,
    state: SACState,
    batch: types.Transition,
    key: jax.Array,
) -> Tuple[SACState, types.Metrics]:
    """One SAC update on `batch` (B transitions): critic step, actor step with
    the new critic (and its image encoder, `networks.share_encoder`),
    temperature step, soft target update."""
    key_critic, key_actor = jax.random.split(key)
    alpha = jnp.exp(state.log_alpha)
    (loss_q, aux_q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic_params,
        state.target_critic_params,
        state.actor_params,
        alpha,
        batch,
        key_critic,
        nets,
    )
    critic_params, critic_opt_state = base.apply_gradients(
        optimizers.critic, state.critic_params, state.critic_opt, grads
    )
    shared_actor_params = networks.share_encoder(state.actor_params, critic_params)
    (loss_pi, aux_pi), grads = jax.value_and_grad(actor_loss, has_aux=True)(
        shared_actor_params,
        critic_params,
        alpha,
        batch,
        key_actor,
        nets,
        config.bc_weight,
        config.q_filter,
    )
    actor_params, actor_opt_state = base.apply_gradients(
        optimizers.actor, shared_actor_params, state.actor_opt, grads
    )
    loss_alpha, grad = jax.value_and_grad(alpha_loss)(
        state.log_alpha, aux_pi['log_prob'], target_entropy(config, nets.actor.action_dim)
    )
    log_alpha, alpha_opt_state = base.apply_gradients(
        optimizers.alpha, state.log_alpha, state.alpha_opt, grad
    )
    steps = state.steps + 1
    new_state = SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=base.soft_update(
            state.target_critic_params, critic_params, config.tau
        ),
        log_alpha=log_alpha,
        actor_opt=actor_opt_state,
        critic_opt=critic_opt_state,
        alpha_opt=alpha_opt_state,
        steps=steps,
    )
    metrics = {
        'critic_loss': loss_q,
        'actor_loss': loss_pi,
        'alpha_loss': loss_alpha,
        'alpha': alpha,
        'entropy': -jnp.mean(aux_pi['log_prob']),
        'q_mean': jnp.mean(aux_q['q']),
        'target_q_mean': jnp.mean(aux_q['target']),
        'td_error': aux_q['td_error'],
    }
    metrics.update({k: v for k, v in aux_pi.items() if k != 'log_prob'})
    return new_state, metrics


def init_noise(key: jax.Array, num_envs: int) -> Dict[str, jax.Array]:
    """SAC explores by sampling its policy: no noise process (an empty state)."""
    del key, num_envs
    return {}


def explore(
    nets: SACNetworks, state: SACState, obs: jax.Array, noise: Dict[str, jax.Array], key: jax.Array
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """A policy sample for obs (E, obs_dim) -> ((E, A), the unchanged empty noise state)."""
    return act(nets, state, obs, key, False), noise


def reset_noise(noise: Dict[str, jax.Array], done: jax.Array) -> Dict[str, jax.Array]:
    """Nothing to reset at episode ends (no noise process)."""
    del done
    return noise


def make_optimizers(config: SACConfig) -> SACOptimizers:
    """Adam for actor and critics (with the gradient clip) and for the temperature."""
    return SACOptimizers(
        actor=base.make_optimizer(config.actor_lr, config.max_grad_norm),
        critic=base.make_optimizer(config.critic_lr, config.max_grad_norm),
        alpha=base.make_optimizer(config.alpha_lr),
    )


def make_sac(config: SACConfig = SACConfig(), action_dim: int = 3) -> base.Agent:
    """Builds the SAC agent for actions of `action_dim` dimensions."""
    nets = SACNetworks(
        actor=policy_lib.make_actor('sac', config, action_dim),
        critic=networks.Critic(
            config.hidden, num_critics=2, encoder_channels=config.encoder_channels
        ),
    )
    optimizers = make_optimizers(config)
    return base.Agent(
        name='sac',
        config=config,
        init=functools.partial(init, nets, optimizers, config),
        act=functools.partial(act, nets),
        update=functools.partial(update, nets, optimizers, config),
        init_noise=init_noise,
        explore=functools.partial(explore, nets),
        reset_noise=reset_noise,
        actor_params=base.actor_params,
        policy=functools.partial(policy_lib.gaussian_mean_action, nets.actor),
    )
