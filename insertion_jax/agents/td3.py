"""TD3 (Fujimoto et al. 2018): twin critics, target-policy smoothing, delayed actor.

Critic target y = r + discount * min_i Q'_i(s', clip(mu'(s') + clip(N(0, sigma~), -c, c), -1, 1)).
The actor and the target networks update once every `policy_delay` critic
updates. Exploration is Gaussian (or Ornstein-Uhlenbeck) noise on the
deterministic action. With `bc_weight` > 0 the actor loss adds the
behaviour-cloning loss of `bc.py` (the paper's RL + LfD), Q-filtered by
default.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks, types
from insertion_jax.agents import base, bc, networks


@dataclasses.dataclass(frozen=True)
class TD3Config:
    """Hyperparameters of TD3.

    Attributes:
      hidden: hidden layer widths of actor and critics.
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
        checks.positive_ints(owner, hidden=self.hidden)
        checks.positive(
            owner,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            policy_delay=self.policy_delay,
        )
        checks.unit_interval(owner, discount=self.discount, tau=self.tau)
        validate_noise(owner, self.noise_kind, self.exploration_noise)
        checks.non_negative(
            owner,
            policy_noise=self.policy_noise,
            noise_clip=self.noise_clip,
            bc_weight=self.bc_weight,
        )


def validate_noise(owner: str, kind: str, scale: float) -> None:
    """Checks an exploration-noise choice of a deterministic actor."""
    if kind not in base.NOISE_KINDS:
        raise ValueError(
            f'{owner}.noise_kind={kind!r} is unknown; valid kinds: {", ".join(base.NOISE_KINDS)}.'
        )
    checks.non_negative(owner, exploration_noise=scale)


@struct.dataclass
class TD3State:
    """Everything TD3 updates; a pytree."""

    actor_params: base.Params
    target_actor_params: base.Params
    critic_params: base.Params
    target_critic_params: base.Params
    actor_opt: base.Params
    critic_opt: base.Params
    steps: jax.Array


@dataclasses.dataclass(frozen=True)
class DeterministicNetworks:
    """Actor and critic modules of TD3 and DDPG."""

    actor: networks.DeterministicActor
    critic: networks.Critic


def smoothed_target_action(nets, target_actor_params, next_obs, key, policy_noise, noise_clip):
    """mu'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), clipped to [-1, 1]."""
    action = nets.actor.apply(target_actor_params, next_obs)
    noise = jnp.clip(
        policy_noise * jax.random.normal(key, action.shape, action.dtype), -noise_clip, noise_clip
    )
    return jnp.clip(action + noise, -1.0, 1.0)


def critic_loss(
    critic_params,
    target_critic_params,
    target_actor_params,
    batch: types.Transition,
    key: jax.Array,
    nets: DeterministicNetworks,
    policy_noise: float,
    noise_clip: float,
):
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


def deterministic_actor_loss(
    actor_params,
    critic_params,
    batch: types.Transition,
    nets: DeterministicNetworks,
    bc_weight: float = 0.0,
    q_filter: bool = True,
):
    """-mean Q_1(s, mu(s)) (the first critic, as in TD3 and DDPG), plus
    `bc_weight` times the behaviour-cloning loss on the batch's demo samples.

    Returns (loss, aux) with 'q_policy_mean' and, with BC, its terms.
    """
    action = nets.actor.apply(actor_params, batch.obs)
    q_policy = nets.critic.apply(critic_params, batch.obs, action)[0]
    loss = -jnp.mean(q_policy)
    aux = {'q_policy_mean': jnp.mean(q_policy)}

    def first_q(a):
        return nets.critic.apply(critic_params, batch.obs, a)[0]

    return bc.add_bc_loss(loss, aux, action, batch, bc_weight, first_q if q_filter else None)


def make_td3(config: TD3Config = TD3Config(), action_dim: int = 3) -> base.Agent:
    """Builds the TD3 agent for actions of `action_dim` dimensions."""
    nets = DeterministicNetworks(
        actor=networks.DeterministicActor(action_dim, config.hidden, config.actor_out_scale),
        critic=networks.Critic(config.hidden, num_critics=2),
    )
    actor_opt = base.make_optimizer(config.actor_lr, config.max_grad_norm)
    critic_opt = base.make_optimizer(config.critic_lr, config.max_grad_norm)

    def init(key, obs_spec, action_spec) -> TD3State:
        actor_params, critic_params = base.init_actor_critic(
            nets, key, obs_spec, action_spec, action_dim
        )
        return TD3State(
            actor_params=actor_params,
            target_actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            actor_opt=actor_opt.init(actor_params),
            critic_opt=critic_opt.init(critic_params),
            steps=jnp.zeros((), jnp.int32),
        )

    def policy(actor_params, obs):
        return nets.actor.apply(actor_params, obs)

    def update(state: TD3State, batch: types.Transition, key):
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
            critic_opt, state.critic_params, state.critic_opt, grads
        )
        steps = state.steps + 1
        state = state.replace(critic_params=critic_params, critic_opt=critic_opt_state, steps=steps)

        def actor_and_targets(state):
            (loss_pi, aux_pi), grads = jax.value_and_grad(deterministic_actor_loss, has_aux=True)(
                state.actor_params,
                state.critic_params,
                batch,
                nets,
                config.bc_weight,
                config.q_filter,
            )
            actor_params, actor_opt_state = base.apply_gradients(
                actor_opt, state.actor_params, state.actor_opt, grads
            )
            state = state.replace(
                actor_params=actor_params,
                actor_opt=actor_opt_state,
                target_actor_params=base.soft_update(
                    state.target_actor_params, actor_params, config.tau
                ),
                target_critic_params=base.soft_update(
                    state.target_critic_params, state.critic_params, config.tau
                ),
            )
            return state, {'actor_loss': loss_pi, **aux_pi}

        def skip(state):
            return state, base.nan_metrics(actor_and_targets, state)

        state, aux_pi = jax.lax.cond(
            steps % config.policy_delay == 0, actor_and_targets, skip, state
        )
        metrics = {
            'critic_loss': loss_q,
            'q_mean': jnp.mean(aux_q['q']),
            'target_q_mean': jnp.mean(aux_q['target']),
            'td_error': aux_q['td_error'],
            **aux_pi,
        }
        return state, metrics

    return base.Agent(
        name='td3',
        config=config,
        init=init,
        act=deterministic_act(policy, config.exploration_noise),
        update=update,
        init_noise=lambda key, num_envs: base.init_action_noise(
            num_envs, action_dim, config.exploration_noise
        ),
        explore=deterministic_explore(policy, config.noise_kind, config.ou_theta),
        reset_noise=base.reset_action_noise,
        actor_params=lambda state: state.actor_params,
        policy=policy,
    )


def deterministic_act(policy, sigma: float):
    """`act(state, obs, key, deterministic)` of a deterministic actor: mu(s), plus
    Gaussian noise of scale `sigma` (clipped to [-1, 1]) unless deterministic."""

    def act(state, obs, key, deterministic: bool = False):
        action = policy(state.actor_params, obs)
        if deterministic:
            return action
        noise = sigma * jax.random.normal(key, action.shape, action.dtype)
        return jnp.clip(action + noise, -1.0, 1.0)

    return act


def deterministic_explore(policy, kind: str, ou_theta: float):
    """`explore(state, obs, noise, key)` for a deterministic actor (see base.add_action_noise)."""

    def explore(state, obs, noise, key):
        return base.add_action_noise(policy(state.actor_params, obs), noise, key, kind, ou_theta)

    return explore
