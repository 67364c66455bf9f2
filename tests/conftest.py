"""Shared fixtures. JAX compiles cost seconds each: every compiled function that
more than one test uses is built once per session here."""

from __future__ import annotations

import os

import jax
import pytest

jax.config.update(
    'jax_compilation_cache_dir',
    os.environ.get(
        'JAX_COMPILATION_CACHE_DIR', os.path.join(os.path.dirname(__file__), '..', '.jax_cache')
    ),
)
# The test process reads the persistent cache but does not write to it:
# jaxlib 0.10.2's CPU executable serialization crashed (abort or segfault in
# `executable.serialize()`) after about a hundred compiles in one process, at a
# different test each run (BUILD_NOTES.md, pitfalls). The CLI subprocesses the
# tests start, and `make train`, still write entries that later runs reuse.
jax.config.update(
    'jax_persistent_cache_min_compile_time_secs',
    float(os.environ.get('INSERTION_JAX_TEST_CACHE_MIN_COMPILE_SECS', '1e9')),
)

from insertion_jax.agents import sac  # noqa: E402
from insertion_jax.envs import insertion  # noqa: E402
from insertion_jax.training import evaluate, loop, runner  # noqa: E402

# The small training configuration every loop test shares (its compiled
# functions are cached per process by loop.make_components / make_runner).
SMALL = loop.TrainConfig(
    env=insertion.InsertionConfig(task='usb', goal_noise_mm=1.0, horizon=12),
    algo='sac',
    agent=sac.SACConfig(hidden=(16, 16)),
    mode='residual',
    num_envs=3,
    unroll_length=6,
    utd=0.5,
    batch_size=16,
    buffer_capacity=200,
    learning_starts=18,
)
SMALL_RUN = runner.RunConfig(
    total_steps=3 * 18 * 2, num_seeds=1, eval_every=36, eval_episodes=3, iterations_per_call=2
)


class TaskRig:
    """One task's environment and its compiled rollout (P-controller + noise policy)."""

    def __init__(self, task: str, episodes: int):
        self.task = task
        self.episodes = episodes
        self.env = insertion.InsertionEnv(insertion.InsertionConfig(task=task))
        self.run = evaluate.make_rollout_fn(self.env, evaluate.p_controller_policy)

    def offsets(self, x_mm: float = 0.0, y_mm: float = 0.0):
        return jax.numpy.tile(jax.numpy.array([x_mm, y_mm]), (self.episodes, 1))


_RIGS = {}


def rig(task: str, episodes: int = 25) -> TaskRig:
    if task not in _RIGS:
        _RIGS[task] = TaskRig(task, episodes)
    return _RIGS[task]


@pytest.fixture(scope='session')
def usb_rig():
    return rig('usb')


@pytest.fixture(scope='session')
def rig_for():
    return rig


@pytest.fixture(scope='session')
def small_run_dir(tmp_path_factory):
    """A finished run of the SMALL configuration (3 device calls, one seed)."""
    out = str(tmp_path_factory.mktemp('runs') / 'small')
    runner.train(SMALL, SMALL_RUN, out, log=lambda line: None)
    return out
