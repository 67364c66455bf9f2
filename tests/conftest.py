"""Shared fixtures. JAX compiles cost seconds each: every compiled function that
more than one test uses is built once per session here."""

from __future__ import annotations

import os

import jax
import mujoco
import numpy as np
import pytest

# One absolute path, exported, so that the CLIs the tests start find what the
# tests compiled: the persistent cache key includes the cache directory as
# written (see BUILD_NOTES, "the cache key names the cache's path").
# An empty value counts as unset (its absolute path would be the working
# directory, which would fill with cache files).
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.abspath(
    os.environ.get('JAX_COMPILATION_CACHE_DIR')
    or os.path.join(os.path.dirname(__file__), '..', '.jax_cache')
)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
# The persistent cache settings come from the environment (the Makefile sets
# JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS), so `make test` writes entries
# that later runs reuse.

from insertion_jax.agents import sac  # noqa: E402
from insertion_jax.envs import insertion, point_reach  # noqa: E402
from insertion_jax.envs import registry as env_registry  # noqa: E402
from insertion_jax.training import config, evaluate, runner  # noqa: E402
from tests import cli  # noqa: E402

# Residual SAC on USB under +-1 mm goal noise: test_learning trains it for
# 10,560 steps; the SMALL run (what the CLI and regression tests read) runs
# the same configuration for four iterations of 480 steps (updates from the
# second on, once 960 steps are stored). One configuration, so the two share
# every compiled program: the initialization, the training iteration, and the
# evaluation and P-controller rollouts (25 episodes per condition, like the
# paper's).
USB_SAC = config.TrainConfig(
    env=insertion.InsertionConfig(task='usb', goal_noise_mm=1.0),
    algo='sac',
    agent=sac.SACConfig(hidden=(64, 64)),
    mode='residual',
    num_envs=16,
    utd=0.5,
    learning_starts=960,
)
SMALL = USB_SAC
SMALL_RUN = runner.RunConfig(total_steps=4 * 480, num_seeds=1, eval_every=4 * 480)


# The loop's mechanics (seeds, warm-up, resume, residual composition, LfD)
# on a task whose physics compiles in a second: point_reach with its
# P-controller. Contact physics is not the point of those tests. test_cli
# trains the same run through experiments.train's flags, on the same worker.
TOY = config.TrainConfig(
    env=point_reach.PointReachConfig(),
    algo='sac',
    agent=sac.SACConfig(hidden=(16, 16)),
    mode='residual',
    num_envs=4,
    unroll_length=5,
    utd=0.5,
    batch_size=16,
    buffer_capacity=400,
    learning_starts=40,  # two iterations: the first runs the masked warm-up path
)
TOY_RUN = runner.RunConfig(
    total_steps=3 * 2 * 20, num_seeds=1, eval_every=40, eval_episodes=3, iterations_per_call=2
)
# The experiments.train flags that build exactly TOY and TOY_RUN.
TOY_FLAGS = (
    '--task=point_reach',
    '--total_steps=120',
    '--num_envs=4',
    '--unroll_length=5',
    '--num_seeds=1',
    '--hidden=16,16',
    '--batch_size=16',
    '--buffer_capacity=400',
    '--learning_starts=40',
    '--eval_every=40',
    '--eval_episodes=3',
    '--iterations_per_call=2',
)


# How `make test` spreads the files over its two workers (pytest-xdist,
# --dist loadgroup): each file is a group, except that files sharing compiled
# programs share a worker (the residual-SAC USB programs of the SMALL run and
# test_learning; TOY's; the USB rig), and the heaviest groups start first so
# that no worker is left with a long group at the end.
SHARED_WORKER = {
    'test_regression': 'test_cli',
    'test_learning': 'test_cli',
    'test_loop': 'test_cli',  # TOY, which test_cli also trains through the CLI
    'test_hardware': 'test_cli',  # exports the SMALL run
    'test_reproduce': 'test_cli',  # its USB cell is the SMALL run's configuration
    'test_evaluate': 'test_physics',  # the USB rig
}
HEAVIEST_FIRST = ('test_cli', 'test_assembly', 'test_physics', 'test_env_pure')


def _group(item) -> str:
    name = item.module.__name__.rsplit('.', 1)[-1]
    return SHARED_WORKER.get(name, name)


def pytest_itemcollected(item):
    # Marked as each test is collected: xdist reads the group in its own
    # pytest_collection_modifyitems, which runs before this file's.
    item.add_marker(pytest.mark.xdist_group(_group(item)))


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = _group(item)
        return HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST else len(HEAVIEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


def pytest_collection_finish(session):
    """Fails loudly where xdist ignored the groups (pytest-xdist 3.8 tags node
    ids in a way pytest 9 no longer reads): the tests would still pass, each
    worker compiling the shared programs again."""
    if getattr(session.config.option, 'loadgroup', False):
        ungrouped = [item.nodeid for item in session.items if '@' not in item.nodeid]
        if ungrouped:
            raise pytest.UsageError(
                f'--dist loadgroup left {len(ungrouped)} tests ungrouped (e.g. '
                f'{ungrouped[0]}): use the pytest version setup.cfg pins.'
            )


class TaskRig:
    """One task's environment and its P-controller rollout
    (`evaluate.p_controller_rollout`: gains and uniform action noise are
    parameters, so every physics test of a task runs one program).

    USB's rig runs 50 episodes, the batch of a training run's P-controller
    reference (2 conditions x 25): the program test_learning and the SMALL run
    compile. Its tests run two conditions of 25 in each call, as the
    reference does (`halves`). The other connectors' rigs run the paper's 25.
    """

    def __init__(self, task: str, episodes: int):
        self.task = task
        self.episodes = episodes
        self.env = env_registry.make_env(insertion.InsertionConfig(task=task))
        self._run = evaluate.p_controller_rollout(self.env, episodes)

    def run(self, params, key, goal_offset_mm):
        return self._run(params, key, {'goal_offset_mm': goal_offset_mm})

    def offsets(self, x_mm: float = 0.0, y_mm: float = 0.0):
        return jax.numpy.tile(jax.numpy.array([x_mm, y_mm]), (self.episodes, 1))

    def halves(self, out):
        """A rollout's first and second halves of episodes: two conditions
        (the first half's offsets, the second's) run as one call."""
        half = self.episodes // 2

        def part(episodes):
            return out.replace(
                metrics={name: v[:, episodes] for name, v in out.metrics.items()},  # (T, B)
                success=out.success[episodes],
                ever_success=out.ever_success[episodes],
                final_distance_mm=out.final_distance_mm[episodes],
                final_obs=out.final_obs[episodes],
            )

        return part(slice(None, half)), part(slice(half, None))


_RIGS = {}


def rig(task: str) -> TaskRig:
    if task not in _RIGS:
        _RIGS[task] = TaskRig(task, 50 if task == 'usb' else 25)
    return _RIGS[task]


def assert_rest_is_mujoco_forward(env, data) -> None:
    """A batch of resets (`data`, from `base.forward_at_rest`) is what MuJoCo's
    own `mj_forward` computes for the same inputs: in float64, with collision
    detection and the constraint solver, which the reset skips.

    Nothing touches (no contact within its margin, no constraint row), and
    kinematics and sensor readings agree to float32 rounding: within `ULPS`
    float32 ulps of the field's largest magnitude. At rest the accelerations
    are about 0 (the drive compensates gravity), so they are compared as
    generalized forces, M (qacc - qacc_native), against the largest load
    (`qfrc_bias`). Measured on 64 resets of every task: at most 9 ulps.
    """
    model, native = env.mj_model, mujoco.MjData(env.mj_model)
    data = jax.device_get(data)
    inertia = np.zeros((model.nv, model.nv))
    for i in range(data.qpos.shape[0]):
        for field in ('qpos', 'qvel', 'act', 'ctrl', 'mocap_pos', 'mocap_quat'):
            getattr(native, field)[:] = getattr(data, field)[i]
        mujoco.mj_forward(model, native)
        assert native.ncon == 0 and native.nefc == 0, (i, native.ncon, native.nefc)
        for field in ('xpos', 'xquat', 'site_xpos', 'sensordata'):
            want = getattr(native, field)
            bound = ULPS * EPS32 * np.abs(want).max()
            np.testing.assert_array_less(
                np.abs(getattr(data, field)[i] - want), bound + 1e-30, field
            )
        mujoco.mj_fullM(model, native, inertia)
        force = inertia @ (data.qacc[i] - native.qacc)
        np.testing.assert_array_less(
            np.abs(force), ULPS * EPS32 * np.abs(native.qfrc_bias).max(), 'M qacc'
        )


EPS32 = float(np.finfo(np.float32).eps)
ULPS = 32


@pytest.fixture(scope='module', autouse=True)
def _close_cli_hosts():
    """The CLI hosts a test module started (`tests.cli.host`) end with it."""
    yield
    cli.close_hosts()


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


# Every compiled XLA:CPU executable keeps its machine code in its own memory
# mappings (2,500-3,000 for one MJX rollout), and Linux allows a process
# vm.max_map_count of them (65,530 by default). A whole-suite pytest process
# that kept every executable alive crossed that limit after about a hundred
# tests, and LLVM aborted inside a compile or a cache write (BUILD_NOTES.md,
# pitfalls). So each group of test files releases its compiled code when it ends:
# JAX's caches and every functools cache in the package and the tests.


def mapped_regions() -> int | None:
    """How many memory mappings this process holds (None where /proc is absent)."""
    try:
        with open('/proc/self/maps') as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def release_compiled_code() -> None:
    _RIGS.clear()
    runner.release_compiled_code(('insertion_jax', 'tests'))


_PEAK = {'regions': 0, 'where': ''}


@pytest.hookimpl(trylast=True)  # after the item's fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """Releases the compiled code when a group of files (one worker's share,
    `SHARED_WORKER`) ends; files of one group share their programs."""
    if nextitem is None or _group(nextitem) != _group(item):
        release_compiled_code()


@pytest.fixture(autouse=True)
def _track_mapped_regions(request):
    yield
    regions = mapped_regions()
    if regions is not None and regions > _PEAK['regions']:
        _PEAK.update(regions=regions, where=request.node.nodeid)


def pytest_sessionfinish(session):
    """An xdist worker hands its peak to the controller (which runs no tests)."""
    workeroutput = getattr(session.config, 'workeroutput', None)
    if workeroutput is not None:
        workeroutput['peak_mapped_regions'] = dict(_PEAK)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    peak = getattr(node, 'workeroutput', {}).get('peak_mapped_regions')
    if peak and peak['regions'] > _PEAK['regions']:
        _PEAK.update(peak)


def pytest_terminal_summary(terminalreporter):
    """The peak mapping count of any test process, against the kernel's limit."""
    if _PEAK['regions']:
        try:
            with open('/proc/sys/vm/max_map_count') as f:
                limit = f.read().strip()
        except OSError:
            limit = 'unknown'
        terminalreporter.write_line(
            f'memory mappings: peak {_PEAK["regions"]} of the limit {limit} '
            f'(after {_PEAK["where"]})'
        )
