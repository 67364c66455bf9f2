"""experiments.sweep, run as a user runs it (in a `cli.CLIHost` of its own):
a grid of experiments.train configurations trained one after another in
one process, skipped once finished, resumed when stopped, run as submitit
jobs (the Slurm launcher's code, through submitit's local executor: real
processes), submitted to Slurm (a stand-in sbatch, srun and sacct on the
PATH) and compared; and the table's arithmetic on made-up summaries.

Every configuration is conftest's TOY run (point_reach, compiled in
seconds) with utd 0.5 (TOY itself) or 1.0, one seed.
"""

import csv
import dataclasses
import json
import os
import shutil
import stat
import textwrap

import numpy as np
import pytest

from insertion_jax.training import run_dir, runner, stats
from insertion_jax.training import sweep as sweep_lib
from tests import cli, conftest
from tests.conftest import TOY, TOY_RUN

# conftest's TOY run through experiments.train's flags, its seeds left to --seeds.
TOY_FLAGS = tuple(f for f in conftest.TOY_FLAGS if not f.startswith('--num_seeds='))
GRID = ('--grid=utd=0.5,1.0', '--seeds=1')
NAMES = ['utd=0.5', 'utd=1.0']

# Stand-ins for Slurm's commands: sbatch keeps the script it is given and
# answers with a job id; sacct reports every job asked for in the state
# that the file `state` beside it holds; srun is only looked for.
FAKE_SLURM = {
    'sbatch': """\
        #!/bin/sh
        cp "$1" "$(dirname "$0")/submitted.sh"
        echo "Submitted batch job 4242"
        """,
    'srun': """\
        #!/bin/sh
        exit 0
        """,
    'sacct': """\
        #!/bin/sh
        state=$(cat "$(dirname "$0")/state")
        echo "JobID|State|NodeList"
        while [ $# -gt 0 ]; do
          if [ "$1" = "-j" ]; then echo "$2_[0-9]|$state|node1"; shift; fi
          shift
        done
        """,
}


@pytest.fixture(scope='module')
def fake_slurm(tmp_path_factory):
    """A directory holding the stand-in Slurm commands."""
    path = tmp_path_factory.mktemp('fake_slurm')
    for name, text in FAKE_SLURM.items():
        script = path / name
        script.write_text(textwrap.dedent(text))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (path / 'state').write_text('RUNNING\n')
    return path


@pytest.fixture(scope='module')
def host(fake_slurm):
    """The sweep's CLI host, with the stand-in Slurm commands on its PATH."""
    return cli.host('experiments.sweep', PATH=f'{fake_slurm}{os.pathsep}{os.environ["PATH"]}')


@pytest.fixture(scope='module')
def sweep(host, tmp_path_factory):
    """A finished local sweep of the two configurations: (its directory, the result)."""
    out = str(tmp_path_factory.mktemp('sweeps') / 'utd')
    result = host.run(*TOY_FLAGS, *GRID, f'--out={out}', '--json')
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def json_lines(result):
    """Every line of stdout, parsed (each must be JSON)."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def read_rows(out):
    return run_dir.Records(os.path.join(out, 'comparison.csv'), ['configuration']).read()


def test_a_local_sweep_trains_each_configuration_and_writes_the_comparison(sweep):
    out, result = sweep
    *finished, last = json_lines(result)
    assert [line['configuration'] for line in finished] == NAMES
    assert [row['configuration'] for row in last['table']] == NAMES
    assert last['unfinished'] == []
    for row in last['table']:
        assert row['seeds'] == 1 and row['env_steps'] == 120
        # One seed: the interval is the value itself.
        assert row['success_random_low'] == row['success_random'] == row['success_random_high']
    # Each configuration is what experiments.train builds from the same flags.
    assert runner.read_config(os.path.join(out, 'utd=0.5', 'config.json')) == (TOY, TOY_RUN)
    assert runner.read_config(os.path.join(out, 'utd=1.0', 'config.json')) == (
        dataclasses.replace(TOY, utd=1.0),
        TOY_RUN,
    )
    for name in NAMES:
        assert os.path.exists(os.path.join(out, name, 'summary.json'))
    for name in sweep_lib.COMPARISON_FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert [(r['configuration'], r['utd'], r['seeds']) for r in read_rows(out)] == [
        ('utd=0.5', '0.5', '1'),
        ('utd=1.0', '1.0', '1'),
    ]
    table = open(os.path.join(out, 'comparison.md')).read().splitlines()
    assert table[0].startswith('| utd | seeds | success (task randomization) |')
    assert table[2].startswith('| 0.5 | 1 | ') and table[3].startswith('| 1.0 | 1 | ')
    record = run_dir.read_json(os.path.join(out, 'sweep.json'))
    assert record['grid'] == {'utd': ['0.5', '1.0']} and record['seeds'] == 1
    assert record['settings']['task'] == 'point_reach' and 'out' not in record['settings']
    # The progress went to stderr, with an ETA from the second configuration on.
    assert '[2/2] utd=1.0 (' in result.stderr and ', eta ' in result.stderr


def test_a_second_start_skips_what_finished_and_resumes_what_stopped(host, sweep):
    out, _ = sweep
    # No --grid: the sweep stored in --out, its settings included.
    again = host.run(f'--out={out}')
    assert again.returncode == 0, again.stderr[-3000:]
    assert '2 finished, 0 to run' in again.stdout and 'Compiling' not in again.stdout
    # A run stopped after its last checkpoint (no summary yet) resumes from it.
    stopped = os.path.join(out, 'utd=0.5')
    summary = run_dir.read_json(os.path.join(stopped, 'summary.json'))
    metrics = open(os.path.join(stopped, 'metrics.jsonl')).read()
    os.remove(os.path.join(stopped, 'summary.json'))
    resumed = host.run(*TOY_FLAGS, *GRID, f'--out={out}')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '1 finished, 1 to run' in resumed.stdout
    assert 'resumed from the checkpoint after 6 iterations' in resumed.stdout
    assert open(os.path.join(stopped, 'metrics.jsonl')).read() == metrics  # not trained again
    again = run_dir.read_json(os.path.join(stopped, 'summary.json'))
    assert again['seeds'][0]['success_random'] == summary['seeds'][0]['success_random']


def test_the_submitit_launcher_runs_configurations_as_jobs_and_reports_a_failed_one(host, sweep):
    """The slurm launcher's code on submitit's local executor, two jobs at once:
    one configuration trains from scratch in a process of its own; the
    other's job fails (a file stands where its run directory goes) and is
    reported with its configuration and log."""
    out, _ = sweep
    for name in NAMES:
        shutil.rmtree(os.path.join(out, name))
    open(os.path.join(out, 'utd=0.5'), 'w').close()
    result = host.run(
        f'--out={out}', '--launcher=submitit_local', '--slurm_parallelism=2', '--json'
    )
    assert result.returncode == 1, result.stderr[-3000:]
    *finished, last = json_lines(result)
    assert [line['configuration'] for line in finished] == ['utd=1.0']
    assert [row['configuration'] for row in last['table']] == ['utd=1.0']
    assert last['unfinished'] == ['utd=0.5']
    # The job trained the configuration into the same layout.
    trained = os.path.join(out, 'utd=1.0')
    assert run_dir.read_json(os.path.join(trained, 'summary.json'))['mean']['env_steps'] == 120
    jobs = run_dir.read_json(os.path.join(out, 'slurm', 'jobs.json'))
    assert sorted(jobs) == NAMES and {j['cluster'] for j in jobs.values()} == {'local'}
    assert 'Compiling point_reach' in open(jobs['utd=1.0']['log'][: -len('.err')] + '.out').read()
    # The failure: its configuration, the exception, and the log holding the traceback.
    failed = next(line for line in result.stderr.splitlines() if 'utd=0.5 failed:' in line)
    assert 'FileExistsError' in failed and f'(log: {jobs["utd=0.5"]["log"]})' in failed
    assert 'Traceback' in open(jobs['utd=0.5']['log']).read()
    assert (
        'Not finished (not in the table): utd=0.5.'
        in open(os.path.join(out, 'comparison.md')).read()
    )


def test_the_slurm_launcher_submits_one_job_array_and_guards_its_jobs(host, fake_slurm, tmp_path):
    out = str(tmp_path / 'slurm_sweep')
    flags = (*TOY_FLAGS, *GRID, f'--out={out}', '--launcher=slurm')
    submitted = host.run(
        *flags,
        '--nowait',
        '--slurm_partition=gpu',
        '--slurm_time_min=30',
        '--slurm_parallelism=1',
        '--slurm_extra=account=lab',
        '--slurm_setup=source .venv/bin/activate',
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    script = (fake_slurm / 'submitted.sh').read_text()
    for line in (
        '#SBATCH --array=0-1%1',
        '#SBATCH --partition=gpu',
        '#SBATCH --time=30',
        '#SBATCH --gpus-per-node=1',
        '#SBATCH --account=lab',
        '#SBATCH --signal=USR2@90',  # the time-limit warning that requeues a job
        'source .venv/bin/activate',
    ):
        assert line in script.splitlines(), script
    assert '-m submitit.core._submit' in script
    jobs = run_dir.read_json(os.path.join(out, 'slurm', 'jobs.json'))
    assert {name: job['job_id'] for name, job in jobs.items()} == {
        'utd=0.5': '4242_0',
        'utd=1.0': '4242_1',
    }
    # While its jobs run, no start trains those configurations again.
    again = host.run(f'--out={out}')
    cli.assert_refused([again], ['configuration utd=0.5 may still be training in Slurm job 4242_0'])
    (fake_slurm / 'state').write_text('CANCELLED\n')
    resubmitted = host.run(*flags, '--nowait')
    assert resubmitted.returncode == 0, resubmitted.stderr[-3000:]


BAD_GRIDS = [
    (
        ['--grid=algos=sac,td3'],
        "--grid: 'algos' is not a flag of experiments.train (did you mean 'algo'?); "
        'its flags: algo, alpha,',
    ),
    (['--grid=algo='], "--grid: 'algo=' has an empty value"),
    (['--grid=algo=sac,'], "--grid: 'algo=sac,' has an empty value"),
    (['--grid=algo'], "--grid: 'algo' is not KEY=VALUE,VALUE,..."),
    (['--grid=algo=sac,ppo'], '--grid: algo=ppo: value should be one of <sac|td3|ddpg|apex_ddpg>'),
    (['--grid=utd=0,1'], '--grid: utd=0: 0.0 is not number >= 1e-06'),
    (['--grid=num_envs=4,0'], '--grid: num_envs=0: 0 is not a positive integer'),
    (['--grid=der=true,maybe'], '--grid: der=maybe: must be true or false'),
    (['--grid=algo=sac algo=td3'], '--grid: algo appears twice'),
    (['--grid=utd=0.5,.5'], '--grid: utd=0.5 and utd=.5 are the same value'),
    (['--grid=num_seeds=1,2'], '--grid: num_seeds cannot vary: the sweep sets it with --seeds'),
    (
        ['--grid=hidden=[16,16],[16,0]'],
        'configuration hidden=16-0: --hidden=16,0: widths must be positive',
    ),
    (
        ['--grid=task=usb,peg_in_hole', '--reward=dense'],
        'configuration task=peg_in_hole: --reward applies to the connector tasks',
    ),
    (['--grid=algo=sac,td3', '--algo=sac'], '--algo is given both as a flag and in --grid'),
]


def test_bad_grids_are_refused_in_one_line_before_anything_runs(host, sweep, tmp_path):
    out = str(tmp_path / 'never')
    results = [host.run(*arguments, f'--out={out}') for arguments, _ in BAD_GRIDS]
    cli.assert_refused(results, [message for _, message in BAD_GRIDS])
    assert not os.path.exists(out)
    existing, _ = sweep
    refused = [
        host.run(*TOY_FLAGS, '--grid=algo=sac,td3', '--seeds=1', f'--out={existing}'),
        host.run(*TOY_FLAGS, *GRID, '--unroll_length=10', f'--out={existing}'),
        host.run(f'--out={tmp_path}'),
        host.run(*GRID),
    ]
    cli.assert_refused(
        refused,
        [
            f"{existing!r} holds a sweep of another grid (--grid='utd=0.5,1.0')",
            f'{existing!r} holds a sweep with other settings (--unroll_length=5 there, '
            '--unroll_length=10 here)',
            f'--grid is required: {str(tmp_path)!r} holds no sweep to resume',
            '--out=DIR is required',
        ],
    )


# ------------------------------------------------------------ the table
def summary(per_seed, reference=None, conditions=('exact', 'noisy')):
    """A made-up run summary: per_seed[s] = {condition: success}."""
    return {
        'conditions': list(conditions),
        'eval_episodes': 25,
        'eval_noise_mm': 1.0,
        'seeds': [
            {'seed': s, **{f'success_{c}': v[c] for c in conditions}}
            for s, v in enumerate(per_seed)
        ],
        'mean': {'env_steps': 24_000, 'wall_clock_s': 272.4},
        'p_controller': ({f'success_{c}': reference[c] for c in conditions} if reference else None),
    }


def configuration(**values):
    name = ','.join(f'{k}={v}' for k, v in values.items())
    return sweep_lib.Configuration(name, tuple(values.items()), TOY, TOY_RUN)


def test_a_row_is_the_seed_mean_with_its_bootstrap_interval_over_seeds():
    seeds = [{'exact': 1.0, 'noisy': x} for x in (0.6, 0.96, 0.72, 0.8)]
    row = sweep_lib.comparison_row(
        configuration(algo='sac'), summary(seeds, {'exact': 1, 'noisy': 0.36})
    )
    mean, low, high = stats.bootstrap_band(np.array([0.6, 0.96, 0.72, 0.8]))
    assert row['success_noisy'] == pytest.approx(0.77)
    assert (row['success_noisy_low'], row['success_noisy_high']) == (
        pytest.approx(float(low)),
        pytest.approx(float(high)),
    )
    assert low < mean < high
    assert row['success_exact'] == row['success_exact_low'] == row['success_exact_high'] == 1.0
    assert row['per_seed_noisy'] == [0.6, 0.96, 0.72, 0.8]
    assert (row['seeds'], row['env_steps'], row['p_controller_noisy']) == (4, 24_000, 0.36)
    assert sweep_lib.success_cell(row, 'noisy') == (
        f'77% [{100 * float(low):.0f}, {100 * float(high):.0f}]'
    )


def test_the_table_names_the_controller_once_where_every_row_shares_it():
    shared = {'exact': 1.0, 'noisy': 0.36}
    rows = [
        sweep_lib.comparison_row(
            configuration(algo=algo), summary([{'exact': 1.0, 'noisy': 0.5}] * 2, shared)
        )
        for algo in ('sac', 'td3')
    ]
    lines = sweep_lib.table_markdown(rows, ['algo'], unfinished=['algo=ddpg']).splitlines()
    assert (
        lines[0] == '| algo | seeds | exact goal | ±1 mm goal noise | env steps | wall-clock (s) |'
    )
    assert lines[2] == '| sac | 2 | 100% [100, 100] | 50% [50, 50] | 24000 | 272 |'
    assert lines[4] == '| P-controller | – | 100% | 36% | – | – |'
    assert lines[-1] == 'Not finished (not in the table): algo=ddpg.'
    # Different references (say, a grid over tasks): a column each.
    rows[1] = sweep_lib.comparison_row(
        configuration(algo='td3'),
        summary([{'exact': 1.0, 'noisy': 0.5}], {'exact': 1, 'noisy': 0.5}),
    )
    lines = sweep_lib.table_markdown(rows, ['algo']).splitlines()
    assert 'P-controller, ±1 mm goal noise' in lines[0]
    assert lines[3] == '| td3 | 1 | 100% (1 seed) | 50% (1 seed) | 100% | 50% | 24000 | 272 |'
    csv_rows = list(csv.DictReader(sweep_lib.table_csv(rows, ['algo']).splitlines()))
    assert [r['algo'] for r in csv_rows] == ['sac', 'td3']
    assert csv_rows[1]['success_noisy_low'] == '0.5' and 'per_seed_noisy' not in csv_rows[1]


def test_a_job_cut_off_by_its_time_limit_is_requeued_as_the_same_call():
    """submitit calls `checkpoint` on the time-limit signal and requeues what
    it returns: the same configuration, which resumes from its checkpoint."""
    job = sweep_lib.RunConfiguration('/sweep', {'keep': 2})
    config = configuration(utd='0.5')
    requeued = job.checkpoint(config)
    assert requeued.function is job and requeued.args == (config,)
