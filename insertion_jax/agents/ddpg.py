"""DDPG (Lillicrap et al. 2016), configurable toward Ape-X DDPG (Horgan et al. 2018).

One critic and a deterministic actor with target copies of both. Options:
  * exploration: Gaussian or Ornstein-Uhlenbeck noise (`noise_kind`);
  * n-step returns: the replay side builds n-step transitions (see
    `insertion_jax.replay.nstep`, `TrainConfig.n_step`); the agent bootstraps
    with whatever `batch.discount` says (gamma^n, 0 at a terminal);
  * target updates: soft (Polyak, `tau`) or a hard copy every
    `hard_target_every` updates (Ape-X DDPG: every 50,000);
  * loss coefficients `actor_loss_coef`, `critic_loss_coef` (Ape-X DDPG: 0.1 and
    1.0). With one Adam state per network these only matter through Adam's
    epsilon and gradient clipping, as Adam is invariant to a constant scale;
  * per-environment exploration scales (`per_env_noise_alpha`): environment
    i of E explores with sigma_i = exploration_noise^(1 + alpha i / (E - 1)),
    Ape-X's schedule (Horgan et al.: 0.4 and 7), so a few environments act
    almost greedily while others explore widely.

`ApeXDDPGConfig` (algo 'apex_ddpg') holds the DER paper's settings.
With `bc_weight` > 0 the actor adds the behaviour-cloning loss of `bc.py`.
The actor, its loss and exploration are shared with TD3 (`deterministic.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from insertion_jax import checks, types
from insertion_jax.agents import base, deterministic, networks
from insertion_jax.agents import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class DDPGConfig:
    """Hyperparameters of DDPG.

    Attributes:
      hidden: hidden layer widths of actor and critic.
      encoder_channels: channels of the image encoder's 3x3 convolutions
        (`networks.ImageEncoder`; used when observations hold an image).
      actor_lr, critic_lr: Adam learning rates.
      discount: gamma (per environment step; the n-step discount is gamma^n).
      tau: Polyak rate of the targets (used when hard_target_every == 0).
      hard_target_every: copy the online networks into the targets every K
        updates; 0 selects soft updates.
      exploration_noise: scale of the exploration noise (normalized actions).
      noise_kind: 'gaussian' or 'ou'.
      per_env_noise_alpha: 0 gives every environment `exploration_noise`;
        > 0 spreads the scales as Ape-X does (see the module docstring).
      ou_theta: mean reversion of the OU noise.
      actor_loss_coef, critic_loss_coef: multipliers of the two losses.
      actor_out_scale: initial weight scale of the actor's output layer.
      bc_weight: weight of the behaviour-cloning loss (0 disables it).
      q_filter: apply the Q-filter to the behaviour-cloning loss.
      max_grad_norm: global-norm gradient clip (0 disables it).
    """

    hidden: Tuple[int, ...] = (256, 256)
    encoder_channels: Tuple[int, ...] = networks.ENCODER_CHANNELS
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    discount: float = 0.99
    tau: float = 0.005
    hard_target_every: int = 0
    exploration_noise: float = 0.1
    noise_kind: str = 'gaussian'
    per_env_noise_alpha: float = 0.0
    ou_theta: float = 0.15
    actor_loss_coef: float = 1.0
    critic_loss_coef: float = 1.0
    actor_out_scale: float = 1.0
    bc_weight: float = 0.0
    q_filter: bool = True
    max_grad_norm: float = 0.0

    def __post_init__(self):
        owner = type(self).__name__
        checks.positive_ints(owner, hidden=self.hidden, encoder_channels=self.encoder_channels)
        checks.positive(
            owner,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            actor_loss_coef=self.actor_loss_coef,
            critic_loss_coef=self.critic_loss_coef,
        )
        checks.unit_interval(owner, discount=self.discount, tau=self.tau)
        deterministic.validate_noise(owner, self.noise_kind, self.exploration_noise)
        checks.non_negative(
            owner,
            hard_target_every=self.hard_target_every,
            bc_weight=self.bc_weight,
            per_env_noise_alpha=self.per_env_noise_alpha,
        )
        if self.per_env_noise_alpha > 0 and not 0 < self.exploration_noise < 1:
            raise ValueError(
                f'{owner}.exploration_noise={self.exploration_noise!r} must be in (0, 1) '
                'for per-environment scales (per_env_noise_alpha > 0).'
            )


@dataclasses.dataclass(frozen=True)
class ApeXDDPGConfig(DDPGConfig):
    """DDPG with the Ape-X DDPG settings of the DER paper (Luo & Li, appendix):
    Adam 1e-3 for both networks, loss coefficients 0.1 (actor) and 1.0
    (critic), a hard target copy every 50,000 updates, 64x64 networks (the
    peg-in-hole's; the lap joint used 256x256) and Ape-X's per-environment
    exploration scales (0.4, alpha 7). This class is the one place for the
    agent-side settings; the loop-side ones (3-step returns, train batch 512,
    running observation filter, DER replay) are in
    `insertion_jax.training.config.ALGO_PRESETS`."""

    hidden: Tuple[int, ...] = (64, 64)
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    hard_target_every: int = 50_000
    actor_loss_coef: float = 0.1
    critic_loss_coef: float = 1.0
    exploration_noise: float = 0.4
    per_env_noise_alpha: float = 7.0


def per_env_noise_scales(num_envs: int, scale: float, alpha: float) -> jax.Array:
    """Ape-X's exploration scales scale^(1 + alpha i / (E - 1)), i = 0..E-1
    (all `scale` when alpha is 0 or E is 1)."""
    if alpha <= 0 or num_envs == 1:
        return jnp.full((num_envs,), scale, jnp.float32)
    exponent = 1.0 + alpha * jnp.arange(num_envs, dtype=jnp.float32) / (num_envs - 1)
    return jnp.asarray(scale, jnp.float32) ** exponent


def critic_loss(
    critic_params: base.Params,
    target_critic_params: base.Params,
    target_actor_params: base.Params,
    batch: types.Transition,
    nets: deterministic.DeterministicNetworks,
) -> Tuple[jax.Array, types.Metrics]:
    """(n-step) Bellman regression: y = R + discount * Q'(s', mu'(s')).

    Returns (loss, aux): loss = mean(w (Q(s, a) - y)^2); aux 'q' (1, B),
    'target' (B,), 'td_error' (B,).
    """
    next_action = policy_lib.deterministic_action(nets.actor, target_actor_params, batch.next_obs)
    next_q = nets.critic.apply(target_critic_params, batch.next_obs, next_action)[0]
    target = batch.reward + batch.discount * next_q
    q = nets.critic.apply(critic_params, batch.obs, batch.action)
    loss = base.q_regression_loss(q, target, batch.weight)
    return loss, {'q': q, 'target': target, 'td_error': q[0] - target}


def scaled_loss(loss_fn: Callable, coef: float, *args) -> Tuple[jax.Array, types.Metrics]:
    """`loss_fn(*args)` = (loss, aux) with the loss multiplied by `coef`."""
    loss, aux = loss_fn(*args)
    return coef * loss, aux


def update(
    nets: deterministic.DeterministicNetworks,
    optimizers: deterministic.DeterministicOptimizers,
    config: DDPGConfig,
    state: deterministic.DeterministicState,
    batch: types.Transition,
    key: jax.Array,
) -> Tuple[deterministic.DeterministicState, types.Metrics]:
    """One DDPG update on `batch` (B transitions): critic step, actor step with
    the new critic, then the target update (soft, or a hard copy every
    `hard_target_every` updates)."""
    del key  # DDPG's update is deterministic given the batch
    critic_loss_fn = functools.partial(scaled_loss, critic_loss, config.critic_loss_coef)
    (loss_q, aux_q), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic_params, state.target_critic_params, state.target_actor_params, batch, nets
    )
    critic_params, critic_opt_state = base.apply_gradients(
        optimizers.critic, state.critic_params, state.critic_opt, grads
    )
    actor_loss_fn = functools.partial(scaled_loss, deterministic.actor_loss, config.actor_loss_coef)
    shared_actor_params = networks.share_encoder(state.actor_params, critic_params)
    (loss_pi, aux_pi), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
        shared_actor_params, critic_params, batch, nets, config.bc_weight, config.q_filter
    )
    actor_params, actor_opt_state = base.apply_gradients(
        optimizers.actor, shared_actor_params, state.actor_opt, grads
    )
    steps = state.steps + 1
    every = config.hard_target_every
    new_state = deterministic.DeterministicState(
        actor_params=actor_params,
        target_actor_params=base.update_target(
            state.target_actor_params, actor_params, steps, config.tau, every
        ),
        critic_params=critic_params,
        target_critic_params=base.update_target(
            state.target_critic_params, critic_params, steps, config.tau, every
        ),
        actor_opt=actor_opt_state,
        critic_opt=critic_opt_state,
        steps=steps,
    )
    metrics = {
        'critic_loss': loss_q,
        'actor_loss': loss_pi,
        'q_mean': jnp.mean(aux_q['q']),
        'target_q_mean': jnp.mean(aux_q['target']),
        'td_error': aux_q['td_error'],
        **aux_pi,
    }
    return new_state, metrics


def init_noise(
    action_dim: int, config: DDPGConfig, key: jax.Array, num_envs: int
) -> deterministic.NoiseState:
    """Exploration noise for `num_envs` environments, each with its scale from
    `per_env_noise_scales`."""
    del key  # the noise process starts at zero
    scales = per_env_noise_scales(num_envs, config.exploration_noise, config.per_env_noise_alpha)
    return deterministic.init_action_noise(num_envs, action_dim, scales)


def make_ddpg(config: DDPGConfig = DDPGConfig(), action_dim: int = 3) -> base.Agent:
    """Builds the DDPG agent (Ape-X DDPG with an `ApeXDDPGConfig`) for actions
    of `action_dim` dimensions."""
    nets = deterministic.make_networks('ddpg', config, action_dim, num_critics=1)
    optimizers = deterministic.make_optimizers(config)
    return base.Agent(
        name='ddpg',
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
