"""The inference policy alone: raw observation -> command, for evaluation and export.

  normalize(normalizer, obs)                    the observation the actor sees
  make_actor(algo, agent_config, action_dim)    the actor network the agent trains
  make_action(algo, agent_config, action_dim)   (actor_params, normalized obs) -> a in [-1, 1]
  command(mode, action_scale, base_action, obs, a)   the executed command
  make_policy(algo, agent_config, action_dim, mode, action_scale, base_action)
      -> policy({'actor': actor params, 'normalizer': ObsNormalizer}, raw obs) -> command

This module imports only jax, flax, `agents.networks` and `types` (no optax,
replay, MJX, mujoco or `insertion_jax.training`), so a program that only runs
or exports a trained policy loads nothing of the training stack. The agents'
own `policy` fields use the deterministic actions defined here, so the
deterministic forward pass is written once.

An agent config is read for three fields only, `hidden`, `actor_out_scale`
and `encoder_channels` (every agent config class has them); the config
classes stay in the agent modules, which import optax.

Modes, after the residual-RL paper:
  * 'residual': u = base_action(obs) + action_scale * a, with base_action the
    task's hand-designed controller (the P-controller of the connector tasks);
  * 'pure' and 'lfd': u = action_scale * a.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import observations
from insertion_jax.agents import networks
from insertion_jax.types import Params

ActionFn = Callable[[Params, jax.Array], jax.Array]

MODES = ('pure', 'residual', 'lfd')
CLIP = 10.0  # normalized inputs are clipped to +-CLIP
MIN_STD = 1e-3


# ------------------------------------------------------------ normalization
@struct.dataclass
class ObsNormalizer:
    """Observation statistics the policy divides by (training/normalizer.py updates them).

    Attributes:
      mean, var: (obs_dim,) per-field mean and variance.
      count: () float32, observations absorbed so far (0 for a fixed scale).
      running: static; True when training keeps updating the statistics.
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array
    running: bool = struct.field(pytree_node=False, default=False)


def normalize(normalizer: ObsNormalizer, obs: Any) -> Any:
    """(obs - mean) / std, std floored at MIN_STD, clipped to +-CLIP; obs (..., obs_dim).

    Of an observation with an image (a dict, `observations.observation_parts`) only
    the 'state' part is normalized; the image stays uint8 (the encoder scales
    it) and the controller's input stays raw.
    """
    if isinstance(obs, dict):
        if observations.STATE not in obs:
            return obs
        return {**obs, observations.STATE: normalize(normalizer, obs[observations.STATE])}
    std = jnp.maximum(jnp.sqrt(normalizer.var), MIN_STD)
    return jnp.clip((obs - normalizer.mean) / std, -CLIP, CLIP)


# ---------------------------------------------------------- actor forward
def gaussian_mean_action(
    actor: networks.GaussianActor, actor_params: Params, obs: jax.Array
) -> jax.Array:
    """tanh of the Gaussian's mean: SAC's deterministic action, (..., obs_dim) -> (..., A)."""
    mean, _ = actor.apply(actor_params, obs)
    return jnp.tanh(mean)


def deterministic_action(
    actor: networks.DeterministicActor, actor_params: Params, obs: jax.Array
) -> jax.Array:
    """mu(obs) of a deterministic (TD3, DDPG) actor, (..., obs_dim) -> (..., A) in [-1, 1]."""
    return actor.apply(actor_params, obs)


# algo -> (actor network class, its deterministic action). An agent added to
# `agents.registry` gets a line here too.
ACTORS: Dict[str, Tuple[type, Callable[[nn.Module, Params, jax.Array], jax.Array]]] = {
    'sac': (networks.GaussianActor, gaussian_mean_action),
    'td3': (networks.DeterministicActor, deterministic_action),
    'ddpg': (networks.DeterministicActor, deterministic_action),
    'apex_ddpg': (networks.DeterministicActor, deterministic_action),
}


def _actor_kind(algo: str):
    if algo not in ACTORS:
        raise ValueError(f'Unknown algo {algo!r}; valid algos: {", ".join(ACTORS)}.')
    return ACTORS[algo]


def make_actor(algo: str, agent_config: Any, action_dim: int) -> nn.Module:
    """The actor network of `algo` for actions of `action_dim` dimensions.

    `agent_config` is the agent's config (its `hidden` widths,
    `actor_out_scale` and `encoder_channels` are read). The agents build
    their actor here, so the trained parameters always fit the network the
    policy applies.
    """
    network, _ = _actor_kind(algo)
    return network(
        action_dim,
        tuple(agent_config.hidden),
        agent_config.actor_out_scale,
        tuple(agent_config.encoder_channels),
    )


def make_action(algo: str, agent_config: Any, action_dim: int) -> ActionFn:
    """`action(actor_params, obs) -> a`: the agent's deterministic action alone.

    obs (..., obs_dim) normalized (see `normalize`); a (..., action_dim) in
    [-1, 1]. Equal to the agent's `policy` field.
    """
    _, action = _actor_kind(algo)
    return functools.partial(action, make_actor(algo, agent_config, action_dim))


# ---------------------------------------------------------------- command
def command(
    mode: str,
    action_scale: Any,
    base_action: Optional[Callable[[jax.Array], jax.Array]],
    obs: jax.Array,
    action: jax.Array,
) -> jax.Array:
    """The executed command from the agent's action (see the module docstring).

    Args:
      mode: one of MODES.
      action_scale: scalar or (A,) physical size of a unit action (metres for
        the connector tasks).
      base_action: `obs (..., obs_dim) -> (..., A)` hand-designed controller;
        used (and required) in residual mode only.
      obs: (..., obs_dim) raw observation (what `base_action` reads).
      action: (..., A) the agent's action in [-1, 1].

    Returns:
      (..., A) command in physical units.
    """
    u_rl = action_scale * action
    if mode == 'residual':
        return base_action(obs) + u_rl
    return u_rl


def _check_mode(mode: str, base_action) -> None:
    if mode not in MODES:
        raise ValueError(f'Unknown mode {mode!r}; valid modes: {", ".join(MODES)}.')
    if mode == 'residual' and base_action is None:
        raise ValueError('mode=residual needs a base_action (the hand-designed controller).')


def apply_policy(
    action: ActionFn,
    mode: str,
    action_scale: Any,
    base_action: Optional[Callable[[jax.Array], jax.Array]],
    params: Dict[str, Any],
    obs: jax.Array,
) -> jax.Array:
    """Command of the deterministic policy for raw `obs` (..., obs_dim) -> (..., A).

    params: {'actor': actor parameters, 'normalizer': ObsNormalizer}.
    """
    agent_action = action(params['actor'], normalize(params['normalizer'], obs))
    return command(mode, action_scale, base_action, obs, agent_action)


def make_policy(
    algo: str,
    agent_config: Any,
    action_dim: int,
    mode: str,
    action_scale: Any,
    base_action: Optional[Callable[[jax.Array], jax.Array]] = None,
) -> Callable[[Dict[str, Any], jax.Array], jax.Array]:
    """`policy(params, obs) -> command` of a trained agent, deterministic.

    Args:
      algo: the agent's name (a key of ACTORS, as in `agents.registry`).
      agent_config: its config (`hidden` and `actor_out_scale` are read).
      action_dim: A.
      mode: 'residual', 'pure' or 'lfd'.
      action_scale: scalar or (A,) physical size of a unit action.
      base_action: `obs -> (..., A)` controller; needed in residual mode.

    Returns:
      policy(params, obs): params {'actor': actor parameters, 'normalizer':
      ObsNormalizer}; obs (..., obs_dim) raw; the command (..., A) in
      physical units.
    """
    _check_mode(mode, base_action)
    action = make_action(algo, agent_config, action_dim)
    return functools.partial(apply_policy, action, mode, action_scale, base_action)
