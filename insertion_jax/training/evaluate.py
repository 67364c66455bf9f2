"""Success-rate evaluation of any policy on any task: N vmapped executions per condition.

Conditions (`conditions_for`):
  * connector tasks (the residual-RL paper's protocol): 'exact' (the goal as
    it is) and 'noisy' (the goal the robot is told is perturbed by up to
    +-noise mm per horizontal axis), run on the same episodes: the same start
    states, friction draws and offset directions, only the offsets' scale
    differs; the P-controller runs on those same episodes as the reference;
  * every other task: 'random', episodes drawn with the task's own
    randomization (the assembly tasks' peg yaw or ground-beam pose).

A policy here is `policy(params, obs, key) -> command` in the task's units, so
one compiled rollout serves every parameter value, noise level and offset.
All rollouts are `acting.rollout` with one episode per environment.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from insertion_jax.envs import base as env_base
from insertion_jax.envs import controllers, insertion
from insertion_jax.envs import registry as env_registry
from insertion_jax.training import acting, distributed, loop

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


@functools.lru_cache(maxsize=16)
def base_controller_policy(env: env_base.Env) -> Policy:
    """The task's hand-designed controller as an evaluation policy (no parameters;
    one object per env, so its compiled rollouts are shared)."""
    return lambda params, obs, key: env.base_action(obs)


@struct.dataclass
class Rollout:
    """What a batch of episodes did; leading axes (T, B) or (B,).

    Attributes:
      metrics: per step, each (T, B): the env's metrics (f_z, depth to go...).
      success: (B,) bool, the task's success at the end of the episode.
      ever_success: (B,) bool, success at any step.
      final_distance_mm: (B,) distance of the tool point to the true goal
        (NaN for a task that reports no `distance_mm`).
      final_obs: (B, obs_dim) the last observation.
      tip_mm: (T, B, 3) tool-point positions (`with_path`), else None.
      qpos: (T + 1, B, nq) joint positions from the reset on (`with_path`), else None.
    """

    metrics: Dict[str, jax.Array]
    success: jax.Array
    ever_success: jax.Array
    final_distance_mm: jax.Array
    final_obs: jax.Array
    tip_mm: Any = None
    qpos: Any = None


def goal_offsets_mm(key: jax.Array, episodes: int, goal_noise_mm: float) -> jax.Array:
    """Per-episode goal perturbations, uniform in [-noise, noise] mm per axis: (episodes, 2)."""
    return jax.random.uniform(key, (episodes, 2), minval=-1.0, maxval=1.0) * goal_noise_mm


def has_goal_noise(env: env_base.Env) -> bool:
    """Whether the task's reset takes a goal offset (the connector protocol)."""
    return config_has_goal_noise(env.config)


def config_has_goal_noise(env_config: Any) -> bool:
    """`has_goal_noise` of the task that `env_config` builds."""
    return any(f.name == 'goal_noise_mm' for f in dataclasses.fields(env_config))


def rollout(
    env: env_base.Env,
    policy: Policy,
    params: Any,
    key: jax.Array,
    reset_args: Mapping[str, jax.Array],
    episodes: int,
    with_path: bool = False,
) -> Rollout:
    """One full episode per start, vmapped; not jitted itself (see `make_rollout_fn`).

    Args:
      env: the task.
      policy: `(params, obs, key) -> command`.
      params: the policy's parameters.
      key: PRNG key; start states come from it (and `reset_args`).
      reset_args: per-episode arguments of `env.reset`, each (episodes, ...),
        e.g. {'goal_offset_mm': (B, 2)}; {} for the task's own randomization.
      episodes: B.
      with_path: also return tool-point and joint positions per step.
    """
    states, key_policy = _starts(env, key, reset_args, episodes)
    return _run_episodes(env, policy, params, states, key_policy, with_path)


def episode_keys(key: jax.Array, episodes: int) -> Tuple[jax.Array, jax.Array]:
    """(the reset keys (episodes,), the policy's key) of `rollout(key)`: the
    MuJoCo twin replays an evaluation's episodes from them."""
    key_reset, key_policy = jax.random.split(key)
    return jax.random.split(key_reset, episodes), key_policy


def _starts(env, key, reset_args, episodes):
    """(B start states, the policy's key) of `rollout`."""
    keys, key_policy = episode_keys(key, episodes)
    return env_base.batched(env.reset)(keys, **reset_args), key_policy


def _run_episodes(env, policy, params, states, key, with_path=False) -> Rollout:
    """`rollout` from its start states."""
    episodes = states.reward.shape[0]

    def act(state, act_state, key):
        keys = jax.random.split(key, episodes)
        command = jax.vmap(policy, in_axes=(None, 0, 0))(params, state.obs, keys)
        return command, command, act_state

    def observe(state):
        return jax.vmap(env.tip_position)(state.data) * 1e3, state.data.qpos

    final, _, _, trajectory = acting.rollout(
        env,
        states,
        act,
        (),
        key,
        env.horizon,
        auto_reset=False,
        observe=observe if with_path else None,
    )
    distance = final.metrics.get('distance_mm', jnp.full((episodes,), jnp.nan))
    tip_mm = qpos = None
    if with_path:
        tip_mm, path_qpos = trajectory.extras
        qpos = jnp.concatenate([states.data.qpos[None], path_qpos])
    return Rollout(
        metrics=trajectory.metrics,
        success=jax.vmap(env.success)(final),
        ever_success=jnp.any(trajectory.success & trajectory.alive, axis=0),
        final_distance_mm=distance,
        final_obs=final.obs,
        tip_mm=tip_mm,
        qpos=qpos,
    )


def make_rollout_fn(env: insertion.InsertionEnv, policy: Policy, with_path: bool = True):
    """Jitted connector rollout `(params, key, goal_offset_mm (B, 2)) -> Rollout`;
    compiles once per B."""

    def run(params, key, goal_offset_mm):
        return rollout(
            env,
            policy,
            params,
            key,
            {'goal_offset_mm': goal_offset_mm},
            goal_offset_mm.shape[0],
            with_path,
        )

    return jax.jit(run)


def conditions_for(env: env_base.Env, noise_mm: float = 1.0) -> Dict[str, Optional[float]]:
    """The evaluation conditions of a task: {'exact': 0, 'noisy': noise_mm} for the
    connectors, {'random': None} for tasks evaluated under their own randomization."""
    if has_goal_noise(env):
        return {'exact': 0.0, 'noisy': float(noise_mm)}
    return {'random': None}


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Summary of one evaluation condition (`experiments.evaluate --json` prints it)."""

    task: str
    policy: str
    goal_noise_mm: Optional[float]
    episodes: int
    success_rate: float
    successes: int
    mean_final_distance_mm: Optional[float]
    seed: int

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def finite_mean(values) -> Optional[float]:
    """Mean of the finite values (None when there are none): JSON-safe."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def summarize(
    result: Rollout, task: str, policy: str, goal_noise_mm: Optional[float], seed: int
) -> EvalResult:
    """Host-side summary of a `Rollout`."""
    success = np.asarray(result.success)
    return EvalResult(
        task=task,
        policy=policy,
        goal_noise_mm=None if goal_noise_mm is None else float(goal_noise_mm),
        episodes=int(success.size),
        success_rate=float(success.mean()),
        successes=int(success.sum()),
        mean_final_distance_mm=finite_mean(result.final_distance_mm),
        seed=seed,
    )


def evaluate_p_controller(
    task: str,
    episodes: int,
    goal_noise_levels_mm=(0.0, 1.0),
    seed: int = 0,
    config: Optional[insertion.InsertionConfig] = None,
):
    """Evaluates the P-controller on connector `task` at each goal-noise level.

    Returns a list of `EvalResult`, one per noise level. The rollout is
    compiled once for all levels.
    """
    if episodes <= 0:
        raise ValueError(f'episodes={episodes!r} must be a positive integer.')
    config = config or insertion.InsertionConfig(task=task)
    env = env_registry.make_env(dataclasses.replace(config, task=task))
    run = p_controller_rollout(env, episodes)
    params = p_controller_params()
    key_env, key_goal = jax.random.split(jax.random.PRNGKey(seed))
    # Paired design: every noise level sees the same start states, friction
    # draws and offset directions; only the offsets' scale changes.
    unit_offsets = goal_offsets_mm(key_goal, episodes, 1.0)
    results = []
    for noise in goal_noise_levels_mm:
        out = run(params, key_env, {'goal_offset_mm': unit_offsets * noise})
        results.append(summarize(out, task, 'p_controller', noise, seed))
    return results


def p_controller_rollout(env: insertion.InsertionEnv, episodes: int):
    """The connector P-controller's jitted rollout
    `(p_controller_params, key, {'goal_offset_mm': (episodes, 2)}) -> Rollout`.

    One program per task and batch, whatever the gains, noise and offsets:
    `evaluate_p_controller`, the P-controller reference of a training run's
    evaluations (`Evaluator.reference`, batch 2 x episodes) and the physics
    tests all run it.
    """
    return _single_rollout(env, p_controller_policy, episodes)


@functools.lru_cache(maxsize=16)
def _seed_rollout(env: env_base.Env, policy: Policy, episodes: int):
    """Jitted `rollout` of a policy with a leading seed axis on its parameters.

    Every seed runs the same episodes: the starts are computed once and
    copied along the seed axis, so that each seed's rollout is batched from
    its first state (from one shared start, JAX's batching of the step loop
    found the seed-dependent parts of its carry one pass at a time, and
    batched the MJX step six times over while tracing).
    """

    def seeded(params, key, reset_args):
        seeds = jax.tree.leaves(params)[0].shape[0]
        starts = _starts(env, key, reset_args, episodes)
        starts = jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), starts)
        return jax.vmap(functools.partial(_run_episodes, env, policy))(params, *starts)

    return jax.jit(seeded)


@functools.lru_cache(maxsize=16)
def _single_rollout(env: env_base.Env, policy: Policy, episodes: int):
    return jax.jit(functools.partial(rollout, env, policy, episodes=episodes))


@functools.lru_cache(maxsize=16)
def trained_policy(components: loop.Components) -> Policy:
    """The run's deterministic policy as an evaluation policy (cached: one
    object, so its compiled rollouts are shared)."""
    policy = loop.make_policy(components)
    return lambda params, obs, key: policy(params, obs)


class Evaluator:
    """Every seed's deterministic policy on the same episodes, per condition.

    `episodes` executions per condition (the paper's 25); the episodes are the
    same at every evaluation (fixed key and offsets; every noise level scales
    the same offset directions), and all conditions run as one rollout.
    """

    def __init__(
        self,
        components: loop.Components,
        episodes: int,
        seed: int,
        conditions: Optional[Mapping[str, Optional[float]]] = None,
    ):
        self.env = components.env
        self.episodes = episodes
        conditions = dict(conditions or conditions_for(self.env))
        self.conditions = tuple(conditions)
        self._policy = trained_policy(components)
        key_env, key_goal = jax.random.split(jax.random.PRNGKey(seed + 1_000_003))
        self.reset_args = {}
        if has_goal_noise(self.env):
            unit = goal_offsets_mm(key_goal, episodes, 1.0)
            offsets = [unit * (noise or 0.0) for noise in conditions.values()]
            self.reset_args = {'goal_offset_mm': jnp.concatenate(offsets)}
        # host values: the same global value on every process of a multi-process run
        self.key, self.reset_args = jax.device_get((key_env, self.reset_args))
        self.total = episodes * len(self.conditions)

    def _per_condition(self, values: np.ndarray) -> Dict[str, np.ndarray]:
        """Means over each condition's block of episodes (the last axis)."""
        blocks = np.split(np.asarray(values, float), len(self.conditions), axis=-1)
        return {name: block.mean(-1) for name, block in zip(self.conditions, blocks, strict=True)}

    def __call__(self, params) -> Dict[str, np.ndarray]:
        """Per seed, for each condition c: success rate {c: (S,)} and mean final
        distance {'distance_<c>_mm': (S,)} (NaN where the task reports none)."""
        run = _seed_rollout(self.env, self._policy, self.total)
        out = distributed.to_host(run(params, self.key, self.reset_args))
        distance = self._per_condition(out.final_distance_mm)
        return {
            **self._per_condition(out.success),
            **{f'distance_{name}_mm': value for name, value in distance.items()},
        }

    def reference(self) -> Optional[Dict[str, float]]:
        """The hand-designed controller's success on the same episodes, per
        condition (None for a task without one)."""
        if not self.env.has_base_controller:
            return None
        if has_goal_noise(self.env):  # a connector: the paper's P-controller (eq. 5)
            run, params = p_controller_rollout(self.env, self.total), p_controller_params()
        else:
            run, params = (
                _single_rollout(self.env, base_controller_policy(self.env), self.total),
                None,
            )
        out = jax.device_get(run(params, self.key, self.reset_args))
        return {name: float(v) for name, v in self._per_condition(out.success).items()}
