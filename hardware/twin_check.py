"""The MuJoCo twin against MJX on the same episodes (`experiments.twin_vs_mjx`).

MJX runs the P-controller's evaluation rollout (`training.evaluate`); the
twin (`sim_robot.SimRobot`) replays each of its episodes (the same start,
friction and goal offset, from the same PRNG keys) through the robot loop
and its safety layer.
"""

from __future__ import annotations

from typing import Dict

import jax
import numpy as np

from hardware import loop as hw_loop
from hardware import sim_robot
from insertion_jax.envs import insertion, registry
from insertion_jax.training import evaluate


def paired_outcomes(
    config: insertion.InsertionConfig,
    episodes: int,
    noise_mm: float,
    seed: int,
    batch: int = 50,
) -> Dict[str, np.ndarray]:
    """{'mjx': success (episodes,), 'twin': success (episodes,)} of the
    P-controller on the same episodes of the task of `config`, goal offsets
    up to `noise_mm` (given to both; `config.goal_noise_mm` is not used)."""
    env = registry.make_env(config)
    run = evaluate.p_controller_rollout(env, batch)
    twin = sim_robot.SimRobot(env.config)
    out = {'mjx': [], 'twin': []}
    for call in range(-(-episodes // batch)):
        key_env, key_goal = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), call))
        offsets = evaluate.goal_offsets_mm(key_goal, batch, noise_mm)
        rollout = run(evaluate.p_controller_params(), key_env, {'goal_offset_mm': offsets})
        out['mjx'] += list(np.asarray(rollout.success))
        keys, _ = evaluate.episode_keys(key_env, batch)
        for key, offset in zip(keys, np.asarray(offsets), strict=True):
            episode = twin.reset(key, offset)
            log = hw_loop.run_episode(
                twin, hw_loop.p_controller, episode.goal_observed_m, env.horizon
            )
            out['twin'].append(log.stopped is None and twin.connected())
    return {name: np.array(v[:episodes]) for name, v in out.items()}
