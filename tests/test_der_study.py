"""The DER ablation study (experiments.reproduce_der) in a small setting: all 8
configurations vmapped in one program, its outputs, and resuming.

The study's machinery (zones per structure, the DER flag per configuration,
rows, resume, figure) does not depend on the task's physics, so it runs on
point_reach, which compiles in seconds; the assembly tasks' own programs are
tested in test_assembly, and `experiments.reproduce_der` runs them."""

import json
import os

import pytest

from insertion_jax.replay import der
from insertion_jax.training import der_results, der_study, tensorboard
from tests import cli

SMALL_STUDY = der_study.StudyConfig(
    task='point_reach',
    num_seeds=1,
    iterations=2,
    steps_per_iteration=30,  # one 15-step episode per environment: episodes end
    num_envs=2,
    unroll_length=15,
    utd=0.25,
    batch_size=32,
    buffer_capacity=2_000,
    zone_fraction=0.3,  # 600 transitions: forty 15-step episode slots
    refresh_every=5,
    target_every=20,
    hidden=(16, 16),
    learning_starts=40,
)


def test_small_study_runs_every_configuration_and_resumes(tmp_path):
    out = str(tmp_path / 'study')
    lines = []
    der_study.run_study(SMALL_STUDY, out, log=lines.append, max_new_iterations=1)
    rows = der_study.read_rows(os.path.join(out, 'results.csv'))
    assert len(rows) == 8 and {r['iteration'] for r in rows} == {1}
    summary = der_study.run_study(SMALL_STUDY, out, log=lines.append)  # resumes
    assert any('resumed from the checkpoint after 1 iteration' in line for line in lines)
    rows = der_study.read_rows(os.path.join(out, 'results.csv'))
    assert len(rows) == 8 * 2  # no iteration twice
    configs = {(r['structure'], r['der']) for r in rows}
    assert configs == {(s, d) for s in der.STRUCTURES for d in ('on', 'off')}
    for r in rows:
        assert r['env_steps'] == 30 * r['iteration']
        assert r['episodes'] == 2  # every environment finished its one episode
        # A rate over whole episodes: successes are a whole number of them.
        successes = r['success_rate'] * r['episodes']
        assert successes == pytest.approx(round(successes), abs=1e-6)
        # Fifteen steps, each paying -|x - g| (at most 2.13 apart: x in
        # [-1, 1]^2, g in [-0.5, 0.5]^2), and point_reach adds no success bonus.
        assert -15 * 2.13 < r['mean_return'] < 0
        # The diagnostics: zones hold the demonstrations where the structure
        # puts them (none: no zone episode unless DER refilled one), and the
        # pool counts no more successes than episodes ended.
        assert 0.0 <= r['zone_fill'] <= 1.0 and 0 <= r['pool_count'] <= 2 * r['iteration']
        assert 0.0 <= r['zone_share'] <= 1.0
        if r['structure'] == 'all_shots_all':
            assert r['zone_fill'] > 0 and r['zone_share'] > 0
        if r['structure'] == 'none' and r['der'] == 'off':
            assert r['zone_fill'] == 0.0 and r['zone_share'] == 0.0
    assert len(summary['configurations']) == 8
    for name in (
        'der_study.png',
        'summary.md',
        'summary.json',
        'effects.md',
        'demos.npz',
        'study.json',
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with pytest.raises(ValueError, match='holds a run with a different configuration'):
        der_study.run_study(der_study.StudyConfig(num_seeds=2), out, log=lines.append)

    # The command line over the finished study: its flags (on top of a
    # preset) give the same configuration, so it trains nothing and writes
    # the outputs again.
    os.remove(os.path.join(out, 'summary.md'))
    result = cli.host('experiments.reproduce_der').run(
        '--task=point_reach',
        '--preset=cpu',
        '--seeds=1',
        '--iterations=2',
        '--steps_per_iteration=30',
        '--num_envs=2',
        '--unroll_length=15',
        '--utd=0.25',
        '--batch_size=32',
        '--buffer_capacity=2000',
        '--zone_fraction=0.3',
        '--refresh_every=5',
        '--target_every=20',
        '--hidden=16,16',
        '--learning_starts=40',
        f'--out={out}',
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'resumed from the checkpoint after 2 iterations' in result.stdout
    assert os.path.getsize(os.path.join(out, 'summary.md')) > 0
    assert len(der_study.read_rows(os.path.join(out, 'results.csv'))) == 8 * 2
    # TensorBoard: one run per configuration and seed, a point per iteration,
    # each written once although the study was stopped and resumed.
    scalars = tensorboard.read_scalars(out)
    assert set(scalars) == {f'{s}_der_{d}/seed_0' for s in der.STRUCTURES for d in ('on', 'off')}
    for run in scalars.values():
        assert [step for step, _ in run['train/success_rate']] == [30, 60]


def test_presets_scale_the_run_not_the_task():
    cpu = der_study.StudyConfig(task='lap_joint', **der_study.preset('cpu', 'lap_joint'))
    paper = der_study.StudyConfig(task='lap_joint', **der_study.preset('paper', 'lap_joint'))
    assert cpu.env_config == paper.env_config == der_study.StudyConfig(task='lap_joint').env_config
    assert paper.steps_per_iteration == 200_000 and paper.target_every == 50_000
    assert paper.iterations == 500 and der_study.preset('paper', 'peg_in_hole')['iterations'] == 200
    # The 90-minute budget: the lap joint's 256x256 networks get fewer iterations.
    assert cpu.iterations == 16 and der_study.preset('cpu', 'peg_in_hole')['iterations'] == 24
    assert cpu.zone_fraction == paper.zone_fraction  # the paper's 1% zone at both sizes
    assert paper.buffer_capacity == 2_000_000 and paper.zone_fraction == 0.01
    with pytest.raises(ValueError, match="preset='gpu' is unknown; valid: cpu, paper"):
        der_study.preset('gpu', 'peg_in_hole')


def test_study_config_errors_name_the_value():
    with pytest.raises(ValueError, match="task='usb' is not an assembly task"):
        der_study.StudyConfig(task='usb')
    with pytest.raises(ValueError, match='must be a multiple of'):
        der_study.StudyConfig(steps_per_iteration=1001)
    with pytest.raises(ValueError, match="structures=\\('two_shots',\\)"):
        der_study.StudyConfig(structures=('two_shots',))
    with pytest.raises(ValueError, match='yaw_range_deg=\\(20.0, 0.0\\) must be \\(low, high\\)'):
        der_study.StudyConfig(yaw_range_deg=(20.0, 0.0))
    assert der_study.StudyConfig(yaw_range_deg=(-10.0, 10.0)).env_config.yaw_range_deg == (-10, 10)


def test_summary_and_curves_from_rows():
    config = der_study.StudyConfig(structures=('none',), num_seeds=2, iterations=4, threshold=0.5)
    rows = []
    for der_on, values in ((False, [0.0, 0.2, 0.4, 0.6]), (True, [0.2, 0.6, 0.8, 1.0])):
        for seed in (0, 1):
            for i, v in enumerate(values, start=1):
                rows.append(
                    {
                        'structure': 'none',
                        'der': 'on' if der_on else 'off',
                        'seed': seed,
                        'iteration': i,
                        'success_rate': v + 0.1 * seed,
                        'mean_return': 100 * v,
                        'zone_share': 0.25 if der_on else 0.0,
                        'q_mean': 10 * v + seed,
                    }
                )
    summary = der_results.summarize(config, rows)
    off, on = summary['configurations']
    assert off['iterations_to_threshold'] == 4 and on['iterations_to_threshold'] == 2
    assert on['final_success'] == pytest.approx(1.05)  # last quarter: iteration 4
    assert on['der'] is True and off['der'] is False and on['seeds'] == 2
    # The diagnostics' last quarter, seeds averaged: Q 10 and 11 at iteration 4.
    assert on['final_zone_share'] == 0.25 and off['final_zone_share'] == 0.0
    assert on['final_q_mean'] == pytest.approx(10.5) and on['final_return'] == pytest.approx(100)
    # Two seeds, 1.0 and 1.1: the bootstrap means are 1.0, 1.05 and 1.1.
    assert on['final_success_low'] == pytest.approx(1.0)
    assert on['final_success_high'] == pytest.approx(1.1)
    assert '| none | on | 105% [100%, 110%] | 100 | 2 | 25% | 10 |' in der_results.summary_markdown(
        summary
    )
    # DER on's band [1.0, 1.1] lies above off's [0.6, 0.7]: the effect is shown.
    (none, all_shots) = der_results.der_effects(summary)
    assert none['verdict'] == 'shown' and 'bands above; 2 seeds' in none['evidence']
    assert all_shots['verdict'] == 'not run'


def configuration(der_on, final, low, high, reached, seeds=3, structure='none'):
    """A summary's configuration entry, made up."""
    return {
        'structure': structure,
        'der': der_on,
        'final_success': final,
        'final_success_low': low,
        'final_success_high': high,
        'iterations_to_threshold': reached,
        'seeds': seeds,
    }


def test_der_effects_need_separate_bands_and_two_seeds():
    config = configuration

    def verdict(*configurations):
        summary = {'task': 'peg_in_hole', 'configurations': list(configurations)}
        return der_results.der_effects(summary)[0]['verdict']

    assert verdict(config(True, 0.7, 0.61, 0.8, 10), config(False, 0.5, 0.4, 0.6, 20)) == 'shown'
    # Overlapping bands: an earlier threshold alone (a seed mean's first
    # crossing, with no band) decides nothing, either way.
    assert (
        verdict(config(True, 0.5, 0.4, 0.6, 10), config(False, 0.45, 0.35, 0.55, 20)) == 'not shown'
    )
    assert (
        verdict(config(True, 0.5, 0.4, 0.6, 20), config(False, 0.45, 0.35, 0.55, 10)) == 'not shown'
    )
    assert (
        verdict(config(True, 0.2, 0.1, 0.3, None), config(False, 0.5, 0.4, 0.6, 5)) == 'not shown'
    )
    one_seed = (
        config(True, 0.9, 0.9, 0.9, 1, seeds=1),
        config(False, 0.1, 0.1, 0.1, None, seeds=1),
    )
    assert verdict(*one_seed) == 'not shown'
    text = der_results.effects_markdown({'task': 'peg_in_hole', 'configurations': list(one_seed)})
    assert 'too few to show anything' in text and '**not run** (all shots in all buffers)' in text


def test_lap_joint_harder_only_where_the_peg_ends_higher_and_never_lower(tmp_path):
    def summary(task, *configurations):
        return {'task': task, 'configurations': list(configurations)}

    peg = summary(
        'peg_in_hole',
        configuration(False, 0.6, 0.5, 0.7, 8),
        configuration(True, 0.7, 0.6, 0.8, 6),
        configuration(True, 0.3, 0.2, 0.4, None, structure='all_shots_all'),
    )
    lap = summary(
        'lap_joint',
        configuration(False, 0.1, 0.0, 0.2, None),
        configuration(True, 0.65, 0.5, 0.75, 9),
    )
    comparison = der_results.compare_tasks(peg, lap)
    assert [r['order'] for r in comparison['rows']] == [
        'peg',
        'level',
    ]  # all_shots_all: lap lacks it
    assert comparison['verdict'] == 'shown' and comparison['seeds'] == 3
    lap['configurations'][1] = configuration(True, 0.95, 0.9, 1.0, 2)  # lap above in one
    assert der_results.compare_tasks(peg, lap)['verdict'] == 'not shown'
    one_seed = summary('lap_joint', configuration(False, 0.1, 0.1, 0.1, None, seeds=1))
    assert der_results.compare_tasks(peg, one_seed)['verdict'] == 'not shown'
    assert der_results.compare_tasks(peg, summary('lap_joint'))['verdict'] == 'not run'
    sized = der_results.compare_tasks(
        dict(peg, steps_per_run=76800), dict(lap, steps_per_run=51200)
    )
    text = der_results.compare_tasks_markdown(sized)
    assert 'steps per run: peg-in-hole 76,800, lap joint 51,200 (the shorter' in text

    # The command line: --compare=PEG_DIR,LAP_DIR writes tasks.md and tasks.png.
    lap['configurations'][1] = configuration(True, 0.65, 0.5, 0.75, 9)
    dirs = []
    for name, s in (('peg', peg), ('lap', lap)):
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / 'summary.json', 'w') as f:
            json.dump(s, f)
        dirs.append(str(tmp_path / name))
    host = cli.host('experiments.reproduce_der')
    out = str(tmp_path / 'tasks')
    result = host.run(f'--compare={",".join(dirs)}', f'--out={out}')
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(out, 'tasks.md')) as f:
        text = f.read()
    assert '**shown**' in text and '| none | off | 60% [50, 70]' in text and '| peg |' in text
    assert os.path.getsize(os.path.join(out, 'tasks.png')) > 0
    stopped = dict(lap, planned_iterations=16)
    stopped['configurations'] = [dict(c, iterations=5) for c in lap['configurations']]
    os.makedirs(tmp_path / 'stopped')
    with open(tmp_path / 'stopped' / 'summary.json', 'w') as f:
        json.dump(stopped, f)
    for argv, message in (
        ([f'--compare={dirs[1]},{dirs[0]}'], "is a 'lap_joint' study; expected peg_in_hole"),
        ([f'--compare={dirs[0]},{tmp_path}/stopped'], 'has run 5 of its 16 iterations'),
        ([f'--compare={dirs[0]}'], 'give PEG_DIR,LAP_DIR'),
        ([f'--compare={dirs[0]},{tmp_path}/none'], 'summary.json does not exist'),
        (['--preset=gpu'], 'flag --preset=gpu: value should be one of <cpu|paper>'),
    ):
        bad = host.run(*argv, f'--out={out}')
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-500:]
        assert 'Traceback' not in bad.stderr


def test_tasks_are_compared_over_the_steps_both_ran():
    def rows(iterations, success):
        return [
            {
                'structure': 'none',
                'der': 'off',
                'seed': seed,
                'iteration': i,
                'success_rate': success(i),
                'mean_return': 0.0,
                'zone_share': 0.0,
                'q_mean': 0.0,
            }
            for seed in range(2)
            for i in range(1, iterations + 1)
        ]

    def config(task, iterations):
        return der_study.StudyConfig(
            task=task,
            structures=('none',),
            der_modes=(False,),
            num_seeds=2,
            iterations=iterations,
            steps_per_iteration=200,
            threshold=0.5,
        )

    # The peg-in-hole ran 8 iterations and learned late; the lap joint ran 4.
    peg, lap = der_results.summarize_at_equal_steps(
        [
            (config('peg_in_hole', 8), rows(8, lambda i: float(i > 4))),
            (config('lap_joint', 4), rows(4, lambda i: 0.0)),
        ]
    )
    assert peg['steps_per_run'] == lap['steps_per_run'] == 800
    (none,) = peg['configurations']
    assert none['final_success'] == 0.0 and none['iterations'] == 4
    text = der_results.compare_tasks_markdown(der_results.compare_tasks(peg, lap))
    assert '**not shown**' in text and 'Both over their first 800 environment steps' in text
