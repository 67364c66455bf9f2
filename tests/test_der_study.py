"""The DER ablation study (experiments.reproduce_der) in a small setting: all 8
configurations vmapped in one program, its outputs, and resuming."""

import os

import numpy as np
import pytest

from insertion_jax.replay import der
from insertion_jax.training import der_study

SMALL_STUDY = der_study.StudyConfig(
    task='peg_in_hole',
    num_seeds=1,
    iterations=2,
    steps_per_iteration=100,  # one 100-step episode limit: episodes end
    num_envs=2,
    unroll_length=10,
    utd=0.25,
    batch_size=32,
    buffer_capacity=2_000,
    zone_fraction=0.3,  # 600 transitions: six 100-step episode slots
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
    bonus = 1000.0  # R of peg_in_hole
    for r in rows:
        assert r['env_steps'] == 100 * r['iteration']
        if r['iteration'] == 2:
            assert r['episodes'] >= 2  # every environment finished an episode
            # A rate over whole episodes: successes are a whole number of them.
            successes = r['success_rate'] * r['episodes']
            assert successes == pytest.approx(round(successes), abs=1e-6)
            # Every step pays -|g - x| <= 0 and a success adds R once, so the
            # mean return is at most R times the success rate (negative without one).
            assert r['mean_return'] <= bonus * r['success_rate'] + 1e-3
            if r['success_rate'] == 0:
                assert r['mean_return'] < 0
    assert len(summary['configurations']) == 8
    for name in ('der_study.png', 'summary.md', 'summary.json', 'demos.npz', 'study.json'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with pytest.raises(ValueError, match='holds a run with a different configuration'):
        der_study.run_study(der_study.StudyConfig(num_seeds=2), out, log=lines.append)


def test_study_config_errors_name_the_value():
    with pytest.raises(ValueError, match="task='usb' is not an assembly task"):
        der_study.StudyConfig(task='usb')
    with pytest.raises(ValueError, match='must be a multiple of'):
        der_study.StudyConfig(steps_per_iteration=1001)
    with pytest.raises(ValueError, match="structures=\\('two_shots',\\)"):
        der_study.StudyConfig(structures=('two_shots',))


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
                    }
                )
    summary = der_study.summarize(config, rows)
    off, on = summary['configurations']
    assert off['iterations_to_threshold'] == 4 and on['iterations_to_threshold'] == 2
    assert on['final_success'] == pytest.approx(1.05)  # last quarter: iteration 4
    assert on['final_success_band'] == pytest.approx(1.96 * np.std([1.0, 1.1], ddof=1) / np.sqrt(2))
    assert '| none | on | 105% ± 10 | 100 | 2 |' in der_study.summary_markdown(summary)
