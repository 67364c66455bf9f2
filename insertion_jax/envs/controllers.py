"""Hand-designed controllers: the P-controller of residual RL.

The P-controller is eq. 5 of the residual-RL paper: pi_H(s) = -k_p (x - x*),
with k_p = [1, 1, 0.3]. From the reset pose about 5 cm above the goal it
centres the plug in one or two control steps and closes the vertical gap by 30%
per step, so it reaches the goal in about ten steps, pushing down with a force
that shrinks as it gets there: that small z gain is why it cannot seat a
connector whose last millimetres need a large force.

In residual RL the executed command is u = u_H + u_RL (eq. 4), and the replay
buffer stores u_RL alone (Algorithm 1). This module depends on JAX and the
observation layout only: the exported inference policy imports it.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from insertion_jax import observations
from insertion_jax.envs import connector_obs

DEFAULT_KP = (1.0, 1.0, 0.3)


def p_controller_action(obs: jax.Array, kp: Sequence[float] = DEFAULT_KP) -> jax.Array:
    """Eq. 5: the P-controller's relative end-effector move, in metres.

    Args:
      obs: observation(s), shape (..., OBS_DIM), laid out as `connector_obs.OBS_SPEC`
        (of an image observation, its state vector: `observations.state_vector`).
      kp: per-axis gains (x, y, z).

    Returns:
      action of shape (..., 3): -kp * (x - x*), where x - x* is read from the
      observation (it is relative to the goal the controller is told).
    """
    obs = observations.state_vector(obs)
    error_m = connector_obs.obs_field(obs, 'ee_pos_rel_goal_mm') * 1e-3
    return -jnp.asarray(kp, dtype=obs.dtype) * error_m
