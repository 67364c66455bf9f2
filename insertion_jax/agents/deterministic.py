"""What TD3 and DDPG share: a deterministic actor mu(s) in [-1, 1] and critics.

  networks and optimizers      `DeterministicNetworks`, `DeterministicOptimizers`
  state and its init           `DeterministicState`, `init`
  actor loss                   `actor_loss`: -mean Q_1(s, mu(s)) (+ behaviour cloning)
  acting                       `act`, `explore` with Gaussian or Ornstein-Uhlenbeck noise
                               (`init_action_noise`, `add_action_noise`,
                               `reset_action_noise`)

Every function takes its networks and config as explicit arguments; `td3.py`
and `ddpg.py` bind them with `functools.partial`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from insertion_jax import checks, types
from insertion_jax.agents import base, bc, networks
from insertion_jax.agents import policy as policy_lib

NOISE_KINDS = ('gaussian', 'ou')
NoiseState = Dict[str, jax.Array]


def validate_noise(owner: str, kind: str, scale: float) -> None:
    """Checks an exploration-noise choice of a deterministic actor."""
    if kind not in NOISE_KINDS:
        raise ValueError(
            f'{owner}.noise_kind={kind!r} is unknown; valid kinds: {", ".join(NOISE_KINDS)}.'
        )
    checks.non_negative(owner, exploration_noise=scale)


@dataclasses.dataclass(frozen=True)
class DeterministicNetworks:
    """Actor and critic modules of TD3 and DDPG."""

    actor: networks.DeterministicActor
    critic: networks.Critic


@dataclasses.dataclass(frozen=True)
class DeterministicOptimizers:
    """One optimizer per network (each with its own Adam state)."""

    actor: optax.GradientTransformation
    critic: optax.GradientTransformation


def make_networks(
    algo: str, config: Any, action_dim: int, num_critics: int
) -> DeterministicNetworks:
    """The actor of `algo` (`policy.make_actor`) and `num_critics` critics of
    `config.hidden` widths."""
    return DeterministicNetworks(
        actor=policy_lib.make_actor(algo, config, action_dim),
        critic=networks.Critic(
            config.hidden, num_critics=num_critics, encoder_channels=config.encoder_channels
        ),
    )


def make_optimizers(config: Any) -> DeterministicOptimizers:
    """Adam for actor and critic with `config`'s learning rates and gradient clip."""
    return DeterministicOptimizers(
        actor=base.make_optimizer(config.actor_lr, config.max_grad_norm),
        critic=base.make_optimizer(config.critic_lr, config.max_grad_norm),
    )


@struct.dataclass
class DeterministicState:
    """Everything TD3 or DDPG updates; a pytree."""

    actor_params: base.Params
    target_actor_params: base.Params
    critic_params: base.Params
    target_critic_params: base.Params
    actor_opt: base.Params
    critic_opt: base.Params
    steps: jax.Array


def init(
    nets: DeterministicNetworks,
    optimizers: DeterministicOptimizers,
    key: jax.Array,
    obs_spec: jax.ShapeDtypeStruct,
    action_spec: jax.ShapeDtypeStruct,
) -> DeterministicState:
    """Fresh parameters, targets equal to them, and optimizer states."""
    actor_params, critic_params = base.init_actor_critic(
        nets, key, obs_spec, action_spec, nets.actor.action_dim
    )
    return DeterministicState(
        actor_params=actor_params,
        target_actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=critic_params,
        actor_opt=optimizers.actor.init(actor_params),
        critic_opt=optimizers.critic.init(critic_params),
        steps=jnp.zeros((), jnp.int32),
    )


def actor_loss(
    actor_params: base.Params,
    critic_params: base.Params,
    batch: types.Transition,
    nets: DeterministicNetworks,
    bc_weight: float = 0.0,
    q_filter: bool = True,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """-mean Q_1(s, mu(s)) (the first critic, as in TD3 and DDPG), plus
    `bc_weight` times the behaviour-cloning loss on the batch's demo samples.

    Returns (loss, aux) with 'q_policy_mean' and, with BC, its terms.
    """
    action = policy_lib.deterministic_action(nets.actor, actor_params, batch.obs)
    q_policy = nets.critic.apply(critic_params, batch.obs, action)[0]
    loss = -jnp.mean(q_policy)
    aux = {'q_policy_mean': jnp.mean(q_policy)}

    def first_q(a):
        return nets.critic.apply(critic_params, batch.obs, a)[0]

    return bc.add_bc_loss(loss, aux, action, batch, bc_weight, first_q if q_filter else None)


# ---------------------------------------------------------------- acting
def act(
    nets: DeterministicNetworks,
    config: Any,
    state: DeterministicState,
    obs: jax.Array,
    key: jax.Array,
    deterministic: bool = False,
) -> jax.Array:
    """mu(s) (..., A), plus Gaussian noise of scale `config.exploration_noise`
    (clipped to [-1, 1]) unless `deterministic`."""
    action = policy_lib.deterministic_action(nets.actor, state.actor_params, obs)
    if deterministic:
        return action
    noise = config.exploration_noise * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(action + noise, -1.0, 1.0)


def explore(
    nets: DeterministicNetworks,
    config: Any,
    state: DeterministicState,
    obs: jax.Array,
    noise: NoiseState,
    key: jax.Array,
) -> Tuple[jax.Array, NoiseState]:
    """What the collector runs: mu(s) for obs (E, obs_dim) plus `config.noise_kind`
    noise (see `add_action_noise`); returns ((E, A) action, noise state)."""
    action = policy_lib.deterministic_action(nets.actor, state.actor_params, obs)
    return add_action_noise(action, noise, key, config.noise_kind, config.ou_theta)


def init_action_noise(num_envs: int, action_dim: int, sigma) -> NoiseState:
    """State of the exploration noise of a deterministic actor.

    'sigma' (num_envs,): per-environment noise scale (a scalar `sigma` is
    shared; Ape-X gives every actor its own, see `ddpg.per_env_noise_scales`).
    'ou' (num_envs, A): the Ornstein-Uhlenbeck process value, zero at the
    start of every episode.
    """
    return {
        'sigma': jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (num_envs,)),
        'ou': jnp.zeros((num_envs, action_dim), jnp.float32),
    }


def add_action_noise(
    action: jax.Array, noise: NoiseState, key: jax.Array, kind: str, ou_theta: float
) -> Tuple[jax.Array, NoiseState]:
    """Exploration of a deterministic actor, clipped to [-1, 1].

    kind 'gaussian': a + sigma * N(0, 1), independent per step.
    kind 'ou': a + x, x <- x - theta x + sigma N(0, 1) (mean-reverting, so
    consecutive moves are correlated).

    Args:
      action: (E, A) the actor's deterministic action.
      noise: `init_action_noise` state for E environments.
      key: PRNG key.
      kind: one of NOISE_KINDS.
      ou_theta: mean-reversion rate of the OU process.

    Returns:
      ((E, A) noisy action, the next noise state).
    """
    sigma = noise['sigma'][..., None]
    eps = jax.random.normal(key, action.shape, action.dtype)
    if kind == 'ou':
        ou = noise['ou'] - ou_theta * noise['ou'] + sigma * eps
        return jnp.clip(action + ou, -1.0, 1.0), {**noise, 'ou': ou}
    return jnp.clip(action + sigma * eps, -1.0, 1.0), noise


def reset_action_noise(noise: NoiseState, done: jax.Array) -> NoiseState:
    """Zeros the OU process of the environments whose episode ended (`done` (E,) bool)."""
    return {**noise, 'ou': jnp.where(done[:, None], 0.0, noise['ou'])}
