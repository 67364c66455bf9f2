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
jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)

from insertion_jax.envs import insertion  # noqa: E402
from insertion_jax.training import evaluate  # noqa: E402


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
