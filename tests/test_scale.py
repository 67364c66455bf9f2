"""One job, three ways of running it: the same numbers on 1 device and on 4
(whole seeds, or environments split); uninterrupted in 1 process, and over
2 processes (2 x 2 devices, over loopback) killed with SIGKILL midway and
resumed; and its TensorBoard event files.

The reference is conftest's TOY run with 4 seeds, trained in this process on
one device; the others are real `python -m experiments.train` processes with
forced CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count`).
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from insertion_jax.training import checkpoint, runner, tensorboard
from tests.cli import ROOT
from tests.conftest import TOY, TOY_FLAGS, TOY_RUN

SEEDS = 4
RUN4 = dataclasses.replace(TOY_RUN, num_seeds=SEEDS)
FLAGS4 = [f for f in TOY_FLAGS if not f.startswith('--num_seeds')] + [f'--num_seeds={SEEDS}']
ITERATION_STEPS = TOY.env_steps_per_iteration  # 20


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The 4-seed TOY run, uninterrupted, on this process's one device."""
    out = str(tmp_path_factory.mktemp('scale') / 'reference')
    runner.train(TOY, RUN4, out, log=lambda line: None)
    return out


def train(out, *extra, devices=1):
    """`python -m experiments.train` of the 4-seed TOY run in a process with `devices` CPUs."""
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    return subprocess.Popen(
        [sys.executable, '-m', 'experiments.train', *FLAGS4, f'--out={out}', *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=300):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def rows(out):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [{k: v for k, v in json.loads(line).items() if k != 'wall_clock_s'} for line in f]


def assert_same_run(out, reference, seeds=SEEDS):
    """The same configuration, and every metric of every iteration and seed
    equal to float32 rounding (reductions may run in another order); with
    fewer `seeds`, those of the reference's first ones."""
    run = dataclasses.replace(RUN4, num_seeds=seeds)
    assert runner.read_config(os.path.join(out, 'config.json')) == (TOY, run)
    got, want = rows(out), [r for r in rows(reference) if r['seed'] < seeds]
    assert [(r['iteration'], r['seed']) for r in got] == [(r['iteration'], r['seed']) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            if w[key] is None or isinstance(w[key], bool):
                assert g[key] == w[key], (key, g, w)
            else:
                np.testing.assert_allclose(g[key], w[key], rtol=2e-5, atol=1e-6, err_msg=key)
    summary = json.load(open(os.path.join(out, 'summary.json')))
    want = json.load(open(os.path.join(reference, 'summary.json')))
    want['seeds'] = want['seeds'][:seeds]
    assert summary['seeds'] == [
        pytest.approx({**w, 'wall_clock_s': g['wall_clock_s']})
        for g, w in zip(summary['seeds'], want['seeds'], strict=True)
    ]
    return summary


def test_four_devices_compute_what_one_device_does(reference, tmp_path):
    """4 seeds on 4 devices, one each; 2 seeds on 4 devices, each seed's 4
    environments split over 2 (tests/devices_probe.py, one process)."""
    four, two = str(tmp_path / 'four'), str(tmp_path / 'two')
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
    done = subprocess.run(
        [sys.executable, '-m', 'tests.devices_probe', four, two],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log = done.stdout
    # The layouts are printed.
    assert 'over 4 device(s) (mesh seed=4 x env=1; 1 seed(s) per device)' in log
    assert 'cpu:3 (process 0): seed 3' in log
    assert '(mesh seed=2 x env=2; 1 seed(s), 2 envs per device)' in log
    assert 'cpu:3 (process 0): seed 1, envs 2-3' in log
    summary = assert_same_run(four, reference)
    assert (summary['num_devices'], summary['num_processes']) == (4, 1)
    one = json.load(open(os.path.join(reference, 'summary.json')))
    assert (one['num_devices'], one['num_processes']) == (1, 1)
    # Split environments: seeds 0 and 1 as in the 4-seed run.
    assert_same_run(two, reference, seeds=2)
    # Whole seeds need no communication: the compiled program holds no
    # collective, and every leaf of the state (replay buffers included)
    # stays one seed per device after a call.
    probe = json.loads(log.strip().splitlines()[-1])
    assert probe['devices'] == 4
    assert probe['odd_layout'].endswith(
        '; 3 more device(s) idle: the seeds and envs do not divide over them'
    )
    assert probe['collectives'] == dict.fromkeys(probe['collectives'], 0)
    assert probe['seeds_per_device'] == [1]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_two_processes(out, *extra):
    """Both processes of a 2 x 2-device job over loopback."""
    address = f'--coordinator_address=127.0.0.1:{free_port()}'
    return [
        train(out, address, '--num_processes=2', f'--process_id={i}', *extra, devices=2)
        for i in range(2)
    ]


def kill_when(processes, out, ready):
    """SIGKILLs `processes` as soon as `ready(names in checkpoints/)` holds
    (polled every half millisecond); returns those names and process 0's log."""
    directory = os.path.join(out, checkpoint.CHECKPOINTS)
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in processes):
        names = os.listdir(directory) if os.path.isdir(directory) else []
        if ready(names):
            for process in processes:
                process.send_signal(signal.SIGKILL)
            for process in processes:
                process.wait()
            return names, processes[0].stdout.read()
        time.sleep(0.0005)
    raise AssertionError(f'never got there: {processes[0].communicate()[0][-3000:]}')


def test_a_job_over_two_processes_killed_mid_save_and_mid_iteration_ends_as_one_uninterrupted(
    reference, tmp_path
):
    """The 4-seed job over 2 processes x 2 devices (loopback), each owning 2
    seeds; SIGKILLed mid-checkpoint, resumed by one process on one device,
    SIGKILLed again mid-iteration, finished by 2 processes again: every
    metric is the uninterrupted single process's, and each start restores
    the checkpoint another layout wrote."""
    out = str(tmp_path / 'killed')
    # 1. Both processes killed while orbax writes checkpoint 80 (its
    # temporary directory exists; a save takes tens of milliseconds, the poll
    # half of one).
    names, log = kill_when(
        start_two_processes(out, '--keep=1'), out, lambda n: any('80.' in x for x in n)
    )
    assert '80' not in names, names
    assert 'cpu:2049 (process 1): seed 3' in log  # the layout, printed by process 0
    # 2. One process resumes from 40; killed once checkpoint 80 is complete,
    # in the iterations after it.
    _, log = kill_when([train(out, '--keep=1')], out, lambda n: '80' in n)
    assert 'resumed from the checkpoint after 2 iterations' in log
    # 3. Two processes resume from checkpoint 80 and finish; process 1 only
    # takes part, process 0 speaks for the run.
    logs = [finish(p) for p in start_two_processes(out, '--keep=1')]
    assert 'resumed from the checkpoint after 4 iterations' in logs[0]
    assert 'env steps]' not in logs[1] and 'layout' not in logs[1]
    summary = assert_same_run(out, reference)
    assert (summary['num_devices'], summary['num_processes']) == (4, 2)
    # The policy the two processes saved loads in this one-device process
    # (as experiments.evaluate and experiments.export load it).
    again = runner.evaluate_run(out, RUN4.eval_episodes, RUN4.seed)['random']['per_seed']
    assert again == {str(s['seed']): s['success_random'] for s in summary['seeds']}
    # --keep=1: only the final checkpoint is left, and no torn one.
    assert os.listdir(os.path.join(out, checkpoint.CHECKPOINTS)) == ['120']
    # TensorBoard shows every step once: what the killed sessions wrote after
    # their checkpoints is purged.
    assert_same_scalars(out, reference)


def assert_same_scalars(out, reference):
    got, want = tensorboard.read_scalars(out), tensorboard.read_scalars(reference)
    assert got.keys() == want.keys()
    for run in want:
        assert got[run].keys() == want[run].keys(), run
        for tag, points in want[run].items():
            steps = [s for s, _ in got[run][tag]]
            assert steps == [s for s, _ in points], (run, tag)
            np.testing.assert_allclose(
                [v for _, v in got[run][tag]], [v for _, v in points], rtol=2e-5, atol=1e-6
            )


def test_tensorboard_holds_every_seed_and_evaluation(reference):
    scalars = tensorboard.read_scalars(reference)
    assert sorted(scalars) == ['mean'] + [f'seed_{s}' for s in range(SEEDS)]
    metrics = rows(reference)
    for s in range(SEEDS):
        seed_rows = [r for r in metrics if r['seed'] == s]
        # one point per iteration, at its env steps, with the metrics.jsonl value
        loss = scalars[f'seed_{s}']['train/critic_loss']
        expected = [
            (r['env_steps'], r['critic_loss']) for r in seed_rows if r['critic_loss'] is not None
        ]
        assert [p[0] for p in loss] == [e[0] for e in expected]
        np.testing.assert_allclose([p[1] for p in loss], [e[1] for e in expected], rtol=1e-6)
        evals = scalars[f'seed_{s}']['eval/success_random']
        assert [p[0] for p in evals] == [40, 80, 120]
    mean = scalars['mean']['eval/success_random']
    final = [r['eval/success_random'] for r in metrics if r['iteration'] == 6]
    assert mean[-1] == (120, pytest.approx(np.mean(final)))
    assert os.path.isdir(os.path.join(reference, tensorboard.DIRECTORY, 'mean'))


def test_bad_process_flags_are_one_line_errors(tmp_path):
    from tests import cli

    out = f'--out={tmp_path / "never"}'
    cases = [
        (['--coordinator_address=127.0.0.1:1'], 'given without --num_processes, --process_id'),
        (
            ['--coordinator_address=127.0.0.1:1', '--num_processes=2', '--process_id=2'],
            'process_id=2 must be in [0, num_processes) = [0, 2)',
        ),
    ]
    for flags, message in cases:
        done = cli.call_main('experiments.train', *TOY_FLAGS, out, *flags)
        assert done.returncode == 1 and message in done.stderr, done.stderr[-2000:]
        assert 'Traceback' not in done.stderr
    assert not os.path.exists(tmp_path / 'never')


def test_a_layout_on_one_device_holds_every_seed():
    import jax

    from insertion_jax.training import distributed

    layout = distributed.make_layout(3, 5, jax.devices()[:1])
    assert (layout.seed_split, layout.env_split, layout.num_devices) == (1, 1, 1)
    assert 'seeds 0-2' in layout.describe() and 'idle' not in layout.describe()
    assert not distributed.cluster_detected()
    assert distributed.initialize() is False  # nothing to join
