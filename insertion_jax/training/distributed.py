"""A run over every device of every process: the seed layout, and the multi-host runtime.

A run's training state carries a leading seed axis (`loop.TrainState`). A
`Layout` lays that axis over a `('seed', 'env')` device mesh with
`jax.sharding.NamedSharding`: each device holds whole seeds (their
parameters, optimizer states, replay buffers and environments), and the
vmapped training program is partitioned along the seed axis with no
communication at all (no collective in the compiled program: seeds are
independent). Where there are fewer seeds than devices, the second mesh axis
splits each seed's environments too: the rollout runs spread over those
devices, and XLA gathers the collected steps into the seed's replay (the one
place a collective is needed). Either way it is one compiled program, and the
same seeds compute the same numbers, to float32 rounding, on one device or
many (tests/test_scale.py).

Many hosts (`initialize`): each process runs the same program over the
global mesh and owns the seeds of its own devices. Process 0 writes the run's
files; checkpoints are orbax's multi-host checkpoints (each process writes
its own seeds' shards, process 0 commits the step), so every process
restores from the same one. `to_host` gathers metrics from every process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

SEED, ENV = 'seed', 'env'


class LayoutError(ValueError):
    """The seeds cannot be laid out over the devices as asked."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How `num_seeds` seeds of `num_envs` environments lie on the devices of `mesh`.

    `mesh` has the axes ('seed', 'env'): seed s lives on the devices of row
    s // (num_seeds / seed_split), its environments split over the row's
    `env_split` devices.
    """

    mesh: Mesh
    num_seeds: int
    num_envs: int
    idle: int = 0  # devices offered that the seeds and environments do not divide over

    @property
    def seed_split(self) -> int:
        return self.mesh.shape[SEED]

    @property
    def env_split(self) -> int:
        return self.mesh.shape[ENV]

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def seeds(self) -> NamedSharding:
        """A leading seed axis split over the mesh's rows (metrics, parameters)."""
        return NamedSharding(self.mesh, P(SEED))

    def _env_batched(self, x: Any) -> NamedSharding:
        if self.env_split > 1 and x.ndim >= 2 and x.shape[1] == self.num_envs:
            return NamedSharding(self.mesh, P(SEED, ENV))
        return self.seeds

    def state_shardings(self, state: Any) -> Any:
        """Shardings of a training state (`loop.TrainState`, or any tree whose
        leaves have a leading seed axis): every leaf by seed; the
        environments' leaves (`env`, `noise`, `episode_return`, axis 1 of
        size `num_envs`) also by environment when the mesh splits them."""
        shardings = jax.tree.map(lambda _: self.seeds, state)
        if self.env_split == 1 or not hasattr(state, 'env'):
            return shardings
        return shardings.replace(
            **{
                name: jax.tree.map(self._env_batched, getattr(state, name))
                for name in ('env', 'noise', 'episode_return')
            }
        )

    def describe(self) -> str:
        """The layout in a few lines: which seeds (and environments) each device holds."""
        per_row = self.num_seeds // self.seed_split
        per_device_envs = self.num_envs // self.env_split
        processes = jax.process_count()
        head = (
            f'  layout: {self.num_seeds} seed(s) x {self.num_envs} envs over '
            f'{self.num_devices} device(s)'
            + (f' of {processes} processes' if processes > 1 else '')
            + f' (mesh seed={self.seed_split} x env={self.env_split}; '
            f'{per_row} seed(s)'
            + (f', {per_device_envs} envs' if self.env_split > 1 else '')
            + ' per device)'
            + (
                f'; {self.idle} more device(s) idle: the seeds and envs do not divide over them'
                if self.idle
                else ''
            )
        )
        lines = [head]
        for row in range(self.seed_split):
            first = row * per_row
            seeds = f'seed {first}' if per_row == 1 else f'seeds {first}-{first + per_row - 1}'
            for col, device in enumerate(self.mesh.devices[row]):
                envs = (
                    f', envs {col * per_device_envs}-{(col + 1) * per_device_envs - 1}'
                    if self.env_split > 1
                    else ''
                )
                lines.append(
                    f'    {device.platform}:{device.id} (process {device.process_index}): '
                    f'{seeds}{envs}'
                )
        if len(lines) > 17:  # a pod: the first and last devices tell the pattern
            lines = lines[:9] + [f'    ... {len(lines) - 17} more ...'] + lines[-8:]
        return '\n'.join(lines)


def make_layout(
    num_seeds: int, num_envs: int, devices: Optional[Sequence[jax.Device]] = None
) -> Layout:
    """The layout of `num_seeds` seeds of `num_envs` environments over
    `devices` (default: every device of every process).

    Seeds go over as many devices as divide them evenly; the devices left
    over per seed split its environments where those divide evenly. On one
    process a remainder stays idle (`describe` says so); a multi-process run
    needs every device used (LayoutError naming what divides).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    seed_split = math.gcd(num_seeds, n)
    env_split = math.gcd(num_envs, n // seed_split)
    used = seed_split * env_split
    if used < n and len({d.process_index for d in devices}) > 1:
        raise LayoutError(
            f'num_seeds={num_seeds} with num_envs={num_envs} cannot be laid out evenly over '
            f'{n} devices of {jax.process_count()} processes (it would use {used}): pick '
            f'num_seeds a multiple of {n}, or num_seeds and num_envs whose product is.'
        )
    mesh = Mesh(np.asarray(devices[:used]).reshape(seed_split, env_split), (SEED, ENV))
    return Layout(mesh=mesh, num_seeds=num_seeds, num_envs=num_envs, idle=n - used)


def to_host(tree: Any) -> Any:
    """`tree` as numpy arrays on this host, gathered from every process's devices."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def writer_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on process 0, which speaks for the run; a no-op on the others."""
    return log if is_writer() else _silent


def _silent(line: str) -> None:
    del line


def cluster_detected() -> bool:
    """Whether a cluster's environment describes a job of several processes,
    as `jax.distributed.initialize()` reads it (Slurm, Open MPI, Kubernetes,
    a Cloud TPU pod)."""
    return _cluster_size() > 1


def _cluster_size() -> int:
    try:  # JAX's own cluster detection (not public API; jax is pinned)
        from jax._src.clusters import ClusterEnv
    except ImportError:  # a JAX without it: Slurm's and Open MPI's variables
        for name in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
            if os.environ.get(name, '').isdigit():
                return int(os.environ[name])
        return 1
    for env in ClusterEnv._cluster_types:
        if not env.opt_in_only_method and env.is_env_present():
            return int(env.get_process_count())
    return 1


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> bool:
    """Joins a multi-process job (`jax.distributed.initialize`), before any
    other JAX call; returns whether it did.

    With no argument it joins only where a cluster says there is more than
    one process (`cluster_detected`: Slurm with several tasks, a TPU pod,
    Open MPI), and JAX finds the coordinator there by itself. CPU processes
    exchange data through gloo.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not any(given) and not cluster_detected():
        return False
    if num_processes is not None and num_processes < 1:
        raise ValueError(f'num_processes={num_processes} must be at least 1.')
    if process_id is not None and not 0 <= process_id < (num_processes or math.inf):
        raise ValueError(
            f'process_id={process_id} must be in [0, num_processes)'
            + (f' = [0, {num_processes})' if num_processes else '')
            + '.'
        )
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True
