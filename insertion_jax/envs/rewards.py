"""Reward functions of both papers, each returning named terms.

* sparse (eq. 1): 1 when the connector is electrically connected, else 0.
* dense (eq. 2): r = -alpha |x - x*|_1 - beta / (|x - x*|_2 + eps) - phi f_z,
  with alpha = 100, beta = 0.002, phi = 0.1, flipping to phi = -0.1 once the
  plug is inserted, so that pressing down after insertion is rewarded.

* image: r = -100 mean_p |I_p - I*_p|, the mean absolute pixel difference
  between the camera's frame and the goal image in percent of the intensity
  range (intensities in [0, 1], so r lies in [-100, 0]; about -3 with the
  plug far from the goal, -0.3 seated, on the connectors' 32x32 camera); the
  residual-RL paper's natural reward from vision. The factor 100 keeps the
  rewards near the unit scale that the agents' default temperature,
  learning rates and initial weights assume.

* DER (Luo & Li): r = -|g - x| while |g - x| > eps, and -|g - x| + R inside
  eps (`der_reward`).

Positions are in metres and forces in newtons, as in the paper. `x*` is the goal
the task designer specified: under goal noise that is the perturbed goal, since
the reward is written from the same (wrong) calibration the controller has.
Every function returns `(reward, terms)` where the terms add up to the reward.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

REWARD_TYPES = ('sparse', 'dense', 'image')


@dataclasses.dataclass(frozen=True)
class DenseRewardConfig:
    """Coefficients of eq. 2 (paper values by default)."""

    alpha: float = 100.0
    beta: float = 0.002
    phi: float = 0.1
    eps_m: float = 1e-3


def sparse_reward(connected: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Eq. 1: 1.0 when `connected` (bool, any shape) else 0.0."""
    reward = connected.astype(jnp.float32)
    return reward, {'connected': reward}


def dense_reward(
    ee_pos_m: jax.Array,
    goal_m: jax.Array,
    f_z_n: jax.Array,
    inserted: jax.Array,
    config: DenseRewardConfig = DenseRewardConfig(),
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Eq. 2 with its force-sign flip.

    Args:
      ee_pos_m: end-effector position x, shape (..., 3).
      goal_m: goal x*, shape (..., 3).
      f_z_n: vertical contact force on the end effector (positive when pushed
        up by contact), shape (...).
      inserted: bool, shape (...): flips the sign of the force term.
      config: coefficients.

    Returns:
      (reward, terms) with terms 'distance_l1', 'distance_inverse', 'force'.
    """
    error = ee_pos_m - goal_m
    l1 = jnp.sum(jnp.abs(error), axis=-1)
    l2 = jnp.linalg.norm(error, axis=-1)
    phi = jnp.where(inserted, -config.phi, config.phi)
    terms = {
        'distance_l1': -config.alpha * l1,
        'distance_inverse': -config.beta / (l2 + config.eps_m),
        'force': -phi * f_z_n,
    }
    return terms['distance_l1'] + terms['distance_inverse'] + terms['force'], terms


IMAGE_REWARD_SCALE = 100.0  # percent of the intensity range


def image_reward(frame: jax.Array, goal_frame: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """-100 mean |frame - goal_frame| over the last two axes, intensities
    scaled to [0, 1]; frames uint8 (..., R, R). Returns (reward, {'image_l1': reward})."""
    diff = jnp.abs(frame.astype(jnp.float32) - goal_frame.astype(jnp.float32)) / 255.0
    reward = -IMAGE_REWARD_SCALE * jnp.mean(diff, axis=(-2, -1))
    return reward, {'image_l1': reward}


def validate_reward_type(name: str) -> str:
    """Returns `name` if it is a known reward type, else raises ValueError."""
    if name not in REWARD_TYPES:
        raise ValueError(f'Unknown reward {name!r}; valid rewards: {", ".join(REWARD_TYPES)}.')
    return name


def der_reward(
    distance: jax.Array, success: jax.Array, bonus: float
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The DER paper's reward: -|g - x| plus `bonus` (R) inside the tolerance.

    Args:
      distance: |g - x| in the task's distance unit, any shape.
      success: bool, same shape: within the tolerance eps.
      bonus: R (1000 for the peg-in-hole, 100 for the lap joint).

    Returns:
      (reward, terms) with terms 'distance' and 'bonus'.
    """
    terms = {'distance': -distance, 'bonus': bonus * success.astype(jnp.float32)}
    return terms['distance'] + terms['bonus'], terms
