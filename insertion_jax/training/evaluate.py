"""Success-rate evaluation: N vmapped executions of a policy, exact and noisy goal.

The protocol follows the residual-RL paper: run the final policy for N episodes
(25 in the paper) with the exact goal and with the goal perturbed by up to
+-1 mm per horizontal axis, and count the episodes that end electrically
connected. A policy here is a pure function `policy(params, obs, key) -> action`
with actions in metres, so one compiled rollout serves every parameter value,
noise level and goal offset.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from insertion_jax.envs import controllers, insertion

Policy = Callable[[Any, jax.Array, jax.Array], jax.Array]


def p_controller_policy(params: Dict[str, jax.Array], obs: jax.Array, key: jax.Array) -> jax.Array:
    """P-controller (eq. 5) plus optional uniform exploration noise.

    params: 'kp' (3,) gains; 'noise_m' () half-width of uniform action noise in
    metres (0 for the plain controller). With kp = 0 and noise_m > 0 this is a
    uniformly random policy.
    """
    action = controllers.p_controller_action(obs, params['kp'])
    noise = jax.random.uniform(key, action.shape, minval=-1.0, maxval=1.0)
    return action + params['noise_m'] * noise


def p_controller_params(noise_m: float = 0.0, kp=controllers.DEFAULT_KP) -> Dict[str, jax.Array]:
    """Parameters of `p_controller_policy`."""
    return {'kp': jnp.asarray(kp, jnp.float32), 'noise_m': jnp.asarray(noise_m, jnp.float32)}


@struct.dataclass
class Rollout:
    """What a batch of episodes did; leading axes (T, B) or (B,).

    Attributes:
      metrics: per step, each (T, B): the env's metrics (f_z, depth to go...).
      success: (B,) bool, connected at the end of the episode.
      ever_success: (B,) bool, connected at any step.
      final_distance_mm: (B,) distance of the tool point to the true goal.
      tip_mm: (T, B, 3) tool-point positions in the socket frame.
      qpos: (T + 1, B, nq) joint positions, from the reset on (for replay/render).
    """

    metrics: Dict[str, jax.Array]
    success: jax.Array
    ever_success: jax.Array
    final_distance_mm: jax.Array
    tip_mm: jax.Array
    qpos: jax.Array


def goal_offsets_mm(key: jax.Array, episodes: int, goal_noise_mm: float) -> jax.Array:
    """Per-episode goal perturbations, uniform in [-noise, noise] mm per axis: (episodes, 2)."""
    return jax.random.uniform(key, (episodes, 2), minval=-1.0, maxval=1.0) * goal_noise_mm


def rollout(
    env: insertion.InsertionEnv,
    policy: Policy,
    params: Any,
    key: jax.Array,
    goal_offset_mm: jax.Array,
) -> Rollout:
    """Runs one full episode per row of `goal_offset_mm` (B, 2), vmapped.

    The goal the policy is told is the true goal plus that row's horizontal
    offset; start pose and friction are drawn from `key`. Not jitted itself:
    use `make_rollout_fn`.
    """
    episodes = goal_offset_mm.shape[0]
    key_reset, key_policy = jax.random.split(key)
    states = jax.vmap(env.reset)(
        jax.random.split(key_reset, episodes), goal_offset_mm=goal_offset_mm
    )

    def control_step(state, step_key):
        keys = jax.random.split(step_key, episodes)
        actions = jax.vmap(policy, in_axes=(None, 0, 0))(params, state.obs, keys)
        state = jax.vmap(env.step)(state, actions)
        tip_mm = jax.vmap(env.tip_position)(state.data) * 1e3
        return state, (state.metrics, tip_mm, state.data.qpos)

    steps = jax.random.split(key_policy, env.config.horizon)
    final, (metrics, tip_mm, qpos) = jax.lax.scan(control_step, states, steps)
    return Rollout(
        metrics=metrics,
        success=final.info['success'],
        ever_success=final.info['ever_success'],
        final_distance_mm=final.metrics['distance_mm'],
        tip_mm=tip_mm,
        qpos=jnp.concatenate([states.data.qpos[None], qpos]),
    )


def make_rollout_fn(env: insertion.InsertionEnv, policy: Policy):
    """Jitted `(params, key, goal_offset_mm (B, 2)) -> Rollout`; compiles once per B."""
    return jax.jit(functools.partial(rollout, env, policy))


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Summary of one evaluation condition."""

    task: str
    policy: str
    goal_noise_mm: float
    episodes: int
    success_rate: float
    successes: int
    mean_final_distance_mm: float
    seed: int

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(
    result: Rollout, task: str, policy: str, goal_noise_mm: float, seed: int
) -> EvalResult:
    """Host-side summary of a `Rollout`."""
    success = np.asarray(result.success)
    return EvalResult(
        task=task,
        policy=policy,
        goal_noise_mm=float(goal_noise_mm),
        episodes=int(success.size),
        success_rate=float(success.mean()),
        successes=int(success.sum()),
        mean_final_distance_mm=float(np.mean(result.final_distance_mm)),
        seed=seed,
    )


def evaluate_p_controller(
    task: str,
    episodes: int,
    goal_noise_levels_mm=(0.0, 1.0),
    seed: int = 0,
    config: Optional[insertion.InsertionConfig] = None,
):
    """Evaluates the P-controller on `task` at each goal-noise level.

    Returns a list of `EvalResult`, one per noise level. The rollout is
    compiled once for all levels.
    """
    if episodes <= 0:
        raise ValueError(f'episodes={episodes!r} must be a positive integer.')
    config = config or insertion.InsertionConfig(task=task)
    env = insertion.InsertionEnv(dataclasses.replace(config, task=task))
    run = make_rollout_fn(env, p_controller_policy)
    params = p_controller_params()
    key_env, key_goal = jax.random.split(jax.random.PRNGKey(seed))
    # Paired design: every noise level sees the same start states, friction
    # draws and offset directions; only the offsets' scale changes.
    unit_offsets = goal_offsets_mm(key_goal, episodes, 1.0)
    results = []
    for noise in goal_noise_levels_mm:
        out = run(params, key_env, unit_offsets * noise)
        results.append(summarize(out, task, 'p_controller', noise, seed))
    return results
