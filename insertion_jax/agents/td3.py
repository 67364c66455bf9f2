"""TD3 (Fujimoto et al. 2018): twin critics, target-policy smoothing, delayed actor.

Critic target y = r + discount * min_i Q'_i(s', clip(mu'(s') + clip(N(0, sigma~), -c, c), -1, 1)).
The actor and the target networks update once every `policy_delay` critic
updates. Exploration is Gaussian (or Ornstein-Uhlenbeck) noise on the
deterministic action. With `bc_weight` > 0 the actor loss adds the
behaviour-cloning loss of `bc.py` (the paper's RL + LfD), Q-filtered by
default. The actor, its loss and exploration are shared with DDPG
(`deterministic.py`); this module adds the critic target and the delayed
actor step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

import jax
import jax.numpy as jnp

from insertion_jax import checks, types
from insertion_jax.agents import base, deterministic, networks
from insertion_jax.agents import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class TD3Config:
    """Hyperparameters of TD3.

    Attributes:
      hidden: hidden layer widths of actor and critics.
      encoder_channels: channels of the image encoder's 3x3 convolutions
        (`networks.ImageEncoder`; used when observations hold an image).
      actor_lr, critic_lr: Adam learning rates.
      discount: gamma.
      tau: Polyak rate of the target networks.
      policy_noise: std of the target-policy smoothing noise (normalized actions).
      noise_clip: clip of that noise.
      policy_delay: critic updates per actor and target update.
      exploration_noise: std of the exploration noise.
      noise_kind: 'gaussian' or 'ou'.
      ou_theta: mean reversion of the OU noise.
      actor_out_scale: initial weight scale of the actor's output layer.
      bc_weight: weight of the behaviour-cloning loss (0 disables it).
      q_filter: apply the Q-filter to the behaviour-cloning loss.
      max_grad_norm: global-norm gradient clip (0 disables it).
    """

    hidden: Tuple[int, ...] = (256, 256)
    encoder_channels: Tuple[int, ...] = networks.ENCODER_CHANNELS
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    exploration_noise: float = 0.1
    noise_kind: str = 'gaussian'
    ou_theta: float = 0.15
    actor_out_scale: float = 1.0
    bc_weight: float = 0.0
    q_filter: bool = True
    max_grad_norm: float = 0.0

    def __post_init__(self):
        owner = 'TD3Config'
        checks.positive_ints(owner, hidden=self.hidden, encoder_channels=self.encoder_channels)
        checks.positive(
            owner,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            policy_delay=self.policy_delay,
        )
        checks.unit_interval(owner, discount=self.discount, tau=self.tau)
        deterministic.validate_noise(owner, self.noise_kind, self.exploration_noise)
        checks.non_negative(
            owner,
            policy_noise=self.policy_noise,
            noise_clip=self.noise_clip,
            bc_weight=self.bc_weight,
        )


def smoothed_target_action(
    nets: deterministic.DeterministicNetworks,
    target_actor_params: base.Params,
    next_obs: jax.Array,
    key: jax.Array,
    policy_noise: float,
    noise_clip: float,
) -> jax.Array:
    """mu'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), clipped to [-1, 1].

    next_obs (B, obs_dim) -> (B, A).
    """
    action = policy_lib.deterministic_action(nets.actor, target_actor_params, next_obs)
    noise = jnp.clip(
        policy_noise * jax.random.normal(key, action.shape, action.dtype), -noise_clip, noise_clip
    )
    return jnp.clip(action + noise, -1.0, 1.0)


def critic_loss(
    critic_params: base.Params,
    target_critic_params: base.Params,
    target_actor_params: base.Params,
    batch: types.Transition,
    key: jax.Array,
    nets: deterministic.DeterministicNetworks,
    policy_noise: float,
    noise_clip: float,
) -> Tuple[jax.Array, types.Metrics]:
    """Clipped double-Q regression with target-policy smoothing.

    Returns (loss, aux): loss = sum_i mean(w (Q_i(s, a) - y)^2); aux 'q' (C, B),
    'target' (B,), 'td_error' (B,).
    """
    next_action = smoothed_target_action(
        nets, target_actor_params, batch.next_obs, key, policy_noise, noise_clip
    )
    next_q = jnp.min(nets.critic.apply(target_critic_params, batch.next_obs, next_action), axis=0)
    target = batch.reward + batch.discount * next_q
    q = nets.critic.apply(critic_params, batch.obs, batch.action)
    loss = base.q_regression_loss(q, target, batch.weight)
    return loss, {'q': q, 'target': target, 'td_error': jnp.mean(q, axis=0) - target}


def actor_and_target_step(
    nets: deterministic.DeterministicNetworks,
    optimizers: deterministic.DeterministicOptimizers,
    config: TD3Config,
    batch: types.Transition,
    state: deterministic.DeterministicState,
) -> Tuple[deterministic.DeterministicState, types.Metrics]:
    """The delayed half of a TD3 update: one actor step on `batch`, then soft
    updates of both targets. Returns (state, metrics)."""
    (loss_pi, aux_pi), grads = jax.value_and_grad(deterministic.actor_loss, has_aux=True)(
        state.actor_params,
        state.critic_params,
        batch,
        nets,
        config.bc_weight,
        config.q_filter,
    )
    actor_params, actor_opt_state = base.apply_gradients(
        optimizers.actor, state.actor_params, state.actor_opt, grads
    )
    state = state.replace(
        actor_params=actor_params,
        actor_opt=actor_opt_state,
        target_actor_params=base.soft_update(state.target_actor_params, actor_params, config.tau),
        target_critic_params=base.soft_update(
            state.target_critic_params, state.critic_params, config.tau
        ),
    )
    return state, {'actor_loss': loss_pi, **aux_pi}


def update(
    nets: deterministic.DeterministicNetworks,
    optimizers: deterministic.DeterministicOptimizers,
    config: TD3Config,
    state: deterministic.DeterministicState,
    batch: types.Transition,
    key: jax.Array,
) -> Tuple[deterministic.DeterministicState, types.Metrics]:
    """One TD3 update on `batch` (B transitions): a critic step, and every
    `policy_delay`-th update `actor_and_target_step` (NaN actor metrics otherwise)."""
    (loss_q, aux_q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic_params,
        state.target_critic_params,
        state.target_actor_params,
        batch,
        key,
        nets,
        config.policy_noise,
        config.noise_clip,
    )
    critic_params, critic_opt_state = base.apply_gradients(
        optimizers.critic, state.critic_params, state.critic_opt, grads
    )
    steps = state.steps + 1
    state = state.replace(
        critic_params=critic_params,
        critic_opt=critic_opt_state,
        steps=steps,
        actor_params=networks.share_encoder(state.actor_params, critic_params),
    )
    actor_step = functools.partial(actor_and_target_step, nets, optimizers, config, batch)

    def skip(state):
        return state, base.nan_metrics(actor_step, state)

    state, aux_pi = jax.lax.cond(steps % config.policy_delay == 0, actor_step, skip, state)
    metrics = {
        'critic_loss': loss_q,
        'q_mean': jnp.mean(aux_q['q']),
        'target_q_mean': jnp.mean(aux_q['target']),
        'td_error': aux_q['td_error'],
        **aux_pi,
    }
    return state, metrics


def init_noise(
    action_dim: int, config: TD3Config, key: jax.Array, num_envs: int
) -> deterministic.NoiseState:
    """Exploration noise of scale `config.exploration_noise` for `num_envs` environments."""
    del key  # the noise process starts at zero
    return deterministic.init_action_noise(num_envs, action_dim, config.exploration_noise)


def make_td3(config: TD3Config = TD3Config(), action_dim: int = 3) -> base.Agent:
    """Builds the TD3 agent for actions of `action_dim` dimensions."""
    nets = deterministic.make_networks('td3', config, action_dim, num_critics=2)
    optimizers = deterministic.make_optimizers(config)
    return base.Agent(
        name='td3',
        config=config,
        init=functools.partial(deterministic.init, nets, optimizers),
        act=functools.partial(deterministic.act, nets, config),
        update=functools.partial(update, nets, optimizers, config),
        init_noise=functools.partial(init_noise, action_dim, config),
        explore=functools.partial(deterministic.explore, nets, config),
        reset_noise=deterministic.reset_action_noise,
        actor_params=base.actor_params,
        policy=functools.partial(policy_lib.deterministic_action, nets.actor),
    )
