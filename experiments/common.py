"""Helpers shared by the absl entry points: the task list, env configs, logging, caching."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
from absl import app, flags
from absl import logging as absl_logging

from insertion_jax.envs import (
    assembly,
    camera,
    insertion,
    point_reach,
)
from insertion_jax.envs import registry as env_registry
from insertion_jax.training import distributed

CONNECTORS = env_registry.TASKS['insertion']
ASSEMBLY = env_registry.TASKS['assembly']
# Every task `experiments.train` and `experiments.evaluate` run.
TASKS = env_registry.task_names()


def env_config(
    task: str,
    reward: str = 'sparse',
    goal_noise_mm: float = 0.0,
    obs: str = 'state',
    frame_stack: int = 1,
    randomize_camera: bool = True,
    camera_backend: str = 'raycast',
) -> Any:
    """The environment config of `task`. `reward`, `goal_noise_mm` and the
    camera's settings apply to the connector tasks; point_reach takes `obs`
    (it draws its own picture); the assembly tasks have their own reward and
    randomization and no camera (ValueError for an image `obs`, or for the
    Warp backend where warp-lang is missing)."""
    if task in CONNECTORS:
        cam = dataclasses.replace(insertion.InsertionConfig().camera, backend=camera_backend)
        if not randomize_camera:
            cam = dataclasses.replace(cam, randomize=camera.NO_RANDOMIZATION)
        if camera_backend == 'warp' and obs != 'state':
            from insertion_jax.envs import warp_camera

            ok, why = warp_camera.warp_available()
            if not ok:
                raise ValueError(f'--camera_backend=warp cannot run: {why}.')
        return insertion.InsertionConfig(
            task=task,
            reward=reward,
            goal_noise_mm=goal_noise_mm,
            obs=obs,
            frame_stack=frame_stack,
            camera=cam,
        )
    if task == 'point_reach':
        return point_reach.PointReachConfig(obs=obs)
    if obs != 'state':
        raise ValueError(
            f'obs={obs!r}: task {task!r} has no camera; image observations exist for the '
            f'connector tasks ({", ".join(CONNECTORS)}) and point_reach.'
        )
    if task in ASSEMBLY:
        return assembly.AssemblyConfig(task=task)
    raise ValueError(f'Unknown task {task!r}; valid tasks: {", ".join(TASKS)}.')


def batch_sizes(values, flag: str = 'batch_sizes') -> list:
    """The positive integers of a list flag's `values`; app.UsageError (one
    line, naming the flag) otherwise."""
    try:
        sizes = [int(v) for v in values]
    except ValueError:
        sizes = [0]
    if not sizes or min(sizes) <= 0:
        raise app.UsageError(f'--{flag}={",".join(values)} must be positive integers.')
    return sizes


def quiet_logs() -> None:
    """Keeps absl's INFO chatter (backend probing, OpenGL accelerate) off the console.

    Call at the start of `main`: absl sets the verbosity from its flags just before.
    """
    absl_logging.set_verbosity(absl_logging.WARNING)


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache (skips recompiles across runs)."""
    cache_dir = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.expanduser(
        '~/.cache/insertion_jax/jax'
    )  # (an empty value counts as unset)
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


# ------------------------------------------------------------ run output
def _flags_module(module_name: str) -> str:
    """The name absl files a module's flags under (`python -m` runs a module
    as __main__, whose flags absl files under the program's path)."""
    return sys.argv[0] if module_name == '__main__' else module_name


def define_run_flags(module_name: str) -> None:
    """--keep and --tensorboard, flags of the entry point `module_name`: what
    its runs keep and write beyond their configuration (`run_kwargs` reads
    them)."""
    module_name = _flags_module(module_name)
    flags.DEFINE_integer(
        'keep', 2, 'Checkpoints kept per run (the newest).', lower_bound=1, module_name=module_name
    )
    flags.DEFINE_bool(
        'tensorboard',
        True,
        "Also write TensorBoard event files into the run's tensorboard/.",
        module_name=module_name,
    )


def run_kwargs() -> dict:
    """`runner.train`'s (and `der_study.run_study`'s) `keep` and `tensorboard`
    from the flags of `define_run_flags`."""
    return {'keep': flags.FLAGS['keep'].value, 'tensorboard': flags.FLAGS['tensorboard'].value}


# ------------------------------------------------------------ many hosts
def define_process_flags(module_name: str) -> None:
    """--coordinator_address, --num_processes, --process_id, flags of the
    entry point `module_name`: one job over several processes or hosts
    (`join_processes` reads them)."""
    module_name = _flags_module(module_name)
    flags.DEFINE_string(
        'coordinator_address',
        None,
        'host:port of process 0, to run one job over several processes/hosts '
        '(jax.distributed.initialize; found by itself under Slurm and on TPU pods).',
        module_name=module_name,
    )
    flags.DEFINE_integer(
        'num_processes',
        None,
        'Processes of a multi-process job.',
        lower_bound=1,
        module_name=module_name,
    )
    flags.DEFINE_integer(
        'process_id',
        None,
        "This process's index in [0, num_processes).",
        lower_bound=0,
        module_name=module_name,
    )


def join_processes() -> None:
    """Joins the multi-process job the flags (or the cluster) describe; call
    at the start of `main`, before any JAX computation. app.UsageError (one
    line) for inconsistent flags or a coordinator that cannot be reached."""
    values = {
        name: flags.FLAGS[name].value
        for name in ('coordinator_address', 'num_processes', 'process_id')
    }
    given = {k: v for k, v in values.items() if v is not None}
    if given and len(given) < 3 and not distributed.cluster_detected():
        missing = sorted(set(values) - set(given))
        raise app.UsageError(
            f'{", ".join("--" + k for k in sorted(given))} given without '
            f'{", ".join("--" + k for k in missing)}: a multi-process job outside Slurm or a '
            'TPU pod needs all three.'
        )
    try:
        distributed.initialize(**values)
    except (ValueError, RuntimeError) as e:
        raise app.UsageError(f'cannot join the multi-process job ({values}): {e}') from e
