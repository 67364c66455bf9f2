"""Every task the training loop can run.

A task is a frozen config dataclass and an environment class built from it
that implements the task interface `base.Env` (sizes and specs of observations
and actions, `reset`, `step`, `terminal`, `success`, the hand-designed
controller's `base_action`), with `base.State` as its state.

`task_names()` lists every task and `default_config(task)` gives its config;
`make_env(config)` builds the environment of any registered config;
`config_to_dict` / `config_from_dict` round-trip configs through JSON.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Tuple

from insertion_jax.envs import (
    assembly,
    assembly_scene,
    base,
    connectors,
    insertion,
    point_reach,
    rewards,
)

ENVS: Dict[str, Any] = {
    'insertion': (insertion.InsertionConfig, insertion.InsertionEnv),
    'assembly': (assembly.AssemblyConfig, assembly.AssemblyEnv),
    'point_reach': (point_reach.PointReachConfig, point_reach.PointReachEnv),
}


# The tasks of each kind, in order (tests/test_gym.py checks that every kind
# has its list): a config of a kind with several tasks names one (`task`).
TASKS: Dict[str, Tuple[str, ...]] = {
    'insertion': tuple(connectors.task_names()),
    'assembly': tuple(assembly_scene.TASKS),
    'point_reach': ('point_reach',),
}


def task_names() -> Tuple[str, ...]:
    """Every task, in the registry's order: the connectors, the assembly
    tasks, point_reach (what `experiments/` and `insertion_jax.gym` offer)."""
    return tuple(task for kind in ENVS for task in TASKS[kind])


def default_config(task: str) -> Any:
    """The config of `task` with every other field at its default."""
    for kind, (config_cls, _) in ENVS.items():
        if task in TASKS[kind]:
            has_task = 'task' in {f.name for f in dataclasses.fields(config_cls)}
            return config_cls(task=task) if has_task else config_cls()
    raise ValueError(f'Unknown task {task!r}; valid tasks: {", ".join(task_names())}.')


def kind_of(config: Any) -> str:
    """The registry name of an env config."""
    for kind, (config_cls, _) in ENVS.items():
        if type(config) is config_cls:
            return kind
    raise TypeError(
        f'{type(config).__name__} is not an environment config; known: '
        f'{", ".join(c.__name__ for c, _ in ENVS.values())}.'
    )


def env_class(config: Any) -> type:
    """The environment class (a `base.Env`) that `config` builds."""
    return ENVS[kind_of(config)][1]


@functools.lru_cache(maxsize=32)
def make_env(config: Any) -> base.Env:
    """The environment of `config` (compiles its MJX model where it has one).

    Cached per config (configs are frozen): one environment object per task
    setting, so functions jitted on it are shared (the loop, the recorder).
    """
    return env_class(config)(config)


def config_to_dict(config: Any) -> Dict[str, Any]:
    """The fields of `config` and its registry 'kind', for JSON."""
    return {'kind': kind_of(config), **dataclasses.asdict(config)}


def config_from_dict(d: Dict[str, Any]) -> Any:
    """Inverse of `config_to_dict` (a dict without 'kind' is an insertion config)."""
    d = dict(d)
    kind = d.pop('kind', 'insertion')
    if kind not in ENVS:
        raise ValueError(f'Unknown environment kind {kind!r}; known: {", ".join(ENVS)}.')
    if kind == 'insertion':
        d['dense'] = rewards.DenseRewardConfig(**d['dense'])
    for name in ('max_rate_deg_s', 'yaw_range_deg'):  # JSON turned tuples into lists
        if isinstance(d.get(name), list):
            d[name] = tuple(d[name])
    return ENVS[kind][0](**d)
