"""The absl entry points, run as a user runs them, on real files: `main`
through absl's `app.run` (`cli.call_main`: train in this process, the other
programs in a `cli.CLIHost` each), and from the command line itself
(`cli.run_module`: `python -m` in a fresh interpreter)."""

import json
import os

import pytest
from absl import flags

from experiments import train
from insertion_jax.envs import warp_camera
from insertion_jax.replay import der
from insertion_jax.training import run_dir, runner
from tests import cli
from tests.conftest import TOY, TOY_FLAGS, TOY_RUN


# The tests reading the SMALL run come first: the run compiles the USB
# programs that the tests below (and the physics tests on the other worker)
# then reuse.
def test_a_finished_run_evaluated_from_disk_repeats_its_final_evaluation(small_run_dir):
    """`runner.evaluate_run`, what experiments.evaluate runs on a run directory,
    loads the saved policy and composes the residual policy as training did:
    with the run's seed and episode count it repeats the run's final
    evaluation, episode for episode. It runs here, on the run's compiled
    evaluation (a fresh interpreter compiles its own, 20-30 s on this CPU:
    BUILD_NOTES, pitfalls); experiments.evaluate evaluates a run through its
    command line in the point_reach test below."""
    final = run_dir.read_json(os.path.join(small_run_dir, 'summary.json'))
    last = run_dir.Records(os.path.join(small_run_dir, 'metrics.jsonl')).read()[-1]
    summaries = runner.evaluate_run(small_run_dir, 25, 0)
    assert list(summaries) == ['exact', 'noisy']
    for name, summary in summaries.items():
        assert summary['task'] == 'usb' and summary['episodes'] == 25
        assert summary['goal_noise_mm'] == {'exact': 0.0, 'noisy': 1.0}[name]
        assert summary['per_seed'] == {'0': final['seeds'][0][f'success_{name}']}
        assert summary['mean_final_distance_mm'] == pytest.approx(
            last[f'eval/distance_{name}_mm'], rel=1e-6
        )
    # The command line's one condition, here 50 episodes under +-1 mm noise
    # (the same batch, so the same program).
    (noisy,) = runner.evaluate_run(small_run_dir, 50, 0, goal_noise_mm=1.0).values()
    assert noisy['goal_noise_mm'] == 1.0 and noisy['episodes'] == 50
    assert noisy['successes'] == round(50 * noisy['per_seed']['0'])
    assert noisy['mean_final_distance_mm'] > summaries['exact']['mean_final_distance_mm']


def test_compare_draws_runs_and_reports_steps_to_threshold(small_run_dir, tmp_path):
    out = str(tmp_path / 'compare.png')
    result = cli.host('experiments.compare').run(
        f'--runs={small_run_dir},{small_run_dir}',
        f'--out={out}',
        '--threshold=0.0',
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith('| residual SAC')]
    assert len(rows) == 2
    assert rows[0].split('|')[4].strip() == '1920'  # its one evaluation, at 1920 env steps
    assert os.path.getsize(out) > 0
    missing = cli.host('experiments.compare').run(f'--runs={tmp_path}', f'--out={out}')
    cli.assert_refused([missing], ['has no config.json: is it a training run directory?'])


EVALUATE_BAD_VALUES = {
    '--task=hdmi': 'value should be one of <usb|dsub|model_e|peg_in_hole|lap_joint|point_reach>',
    '--episodes=-3': '--episodes=-3: -3 is not a positive integer',
    '--goal_noise_mm=-1': '--goal_noise_mm=-1',
    '--policy=sac': "--policy='sac' is not available; valid policies: p_controller",
}


def test_evaluate_rejects_bad_values_without_a_traceback():
    results = [cli.host('experiments.evaluate').run(flag) for flag in EVALUATE_BAD_VALUES]
    cli.assert_refused(results, list(EVALUATE_BAD_VALUES.values()))


def test_evaluate_prints_json_on_its_last_line():
    # 50 episodes: the batch of a run's P-controller reference (2 x 25), so
    # this compiles (or finds in the cache) the program the SMALL run uses.
    result = cli.host('experiments.evaluate').run(
        '--task=usb', '--episodes=50', '--goal_noise_mm=0', '--json'
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        'task',
        'policy',
        'goal_noise_mm',
        'episodes',
        'success_rate',
        'mean_final_distance_mm',
    ):
        assert key in summary
    assert summary['task'] == 'usb' and summary['episodes'] == 50
    assert summary['success_rate'] >= 0.9  # exact goal: the P-controller seats the USB plug


@pytest.mark.parametrize(
    'flag, message',
    [
        ('--algo=ppo', 'value should be one of <sac|td3|ddpg|apex_ddpg>'),
        ('--replay=fifo', 'value should be one of <uniform|prioritized|der>'),
        ('--task=peg_in_hole --reward=dense', '--reward applies to the connector tasks'),
        ('--task=peg_in_hole --mode=residual', 'mode=residual needs a hand-designed controller'),
        ('--structure=two_shots', 'value should be one of <none|one_shot_all'),
        ('--mode=hybrid', 'value should be one of <pure|residual|lfd>'),
        ('--task=peg_in_hole --obs=image', "task 'peg_in_hole' has no camera"),
        ('--obs=depth', 'value should be one of <state|image|state+image>'),
        ('--num_envs=0', '--num_envs=0'),
        ('--total_steps=-5', '--total_steps=-5'),
        ('--hidden=64,0', '--hidden=64,0: widths must be positive'),
        ('--batch_size=0', '--batch_size=0'),
        ('--camera_backend=opengl', 'value should be one of <raycast|warp>'),
    ]
    + (
        []
        if warp_camera.warp_available()[0]
        else [('--obs=image --camera_backend=warp', '--camera_backend=warp cannot run: warp-lang')]
    ),
)
def test_train_rejects_bad_values_without_a_traceback(flag, message, tmp_path):
    """In this process (`cli.call_main`); the test below starts the program once."""
    cli.assert_refused(
        [cli.call_main('experiments.train', *flag.split(), f'--out={tmp_path}')], [message]
    )


def test_train_as_a_program_rejects_a_bad_value_without_a_traceback(tmp_path):
    result = cli.run_module('experiments.train', '--hidden=64,0', f'--out={tmp_path}')
    assert result.returncode != 0
    assert '--hidden=64,0: widths must be positive' in result.stderr
    assert 'Traceback' not in result.stdout + result.stderr


def test_apex_ddpg_presets_fill_only_the_flags_left_unset():
    try:
        flags.FLAGS(['train', '--algo=apex_ddpg', '--batch_size=64', '--structure=all_shots_all'])
        config, _ = train.build_configs()
    finally:
        flags.FLAGS.unparse_flags()
    assert isinstance(config.replay, der.DERConfig)
    assert (config.n_step, config.obs_normalizer) == (3, 'running')
    assert config.batch_size == 64  # set on the command line: kept
    assert config.replay.structure == 'all_shots_all' and config.replay.num_buffers == 6
    assert config.agent.actor_lr == 1e-3 and config.agent.hard_target_every == 50_000


def test_a_task_without_goal_noise_trains_and_evaluates_through_the_clis(tmp_path):
    """Every registered task runs through experiments.train and experiments.evaluate,
    not only the connectors: residual SAC on point_reach, evaluated over episodes
    with the task's own randomization. These flags build exactly conftest's
    TOY run, so this run shares its compiled programs with test_loop (one
    worker); the Ape-X DDPG and DER presets are checked above and learned in
    test_agents_learn."""
    out = str(tmp_path / 'reach')
    trained = cli.call_main('experiments.train', *TOY_FLAGS, '--notensorboard', f'--out={out}')
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert not os.path.exists(os.path.join(out, 'tensorboard'))  # --tensorboard=false
    summary = json.loads(open(os.path.join(out, 'summary.json')).read())
    assert summary['conditions'] == ['random']
    # No --mode: point_reach has a P-controller, so residual is the default there.
    assert runner.read_config(os.path.join(out, 'config.json')) == (TOY, TOY_RUN)
    result = cli.host('experiments.evaluate').run(
        '--task=point_reach', f'--policy={out}', '--episodes=3', '--json'
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads(result.stdout.strip().splitlines()[-1])
    assert evaluation['task'] == 'point_reach' and evaluation['goal_noise_mm'] is None
    assert evaluation['episodes'] == 3
    # The same three episodes the run's final evaluation ran (same seed and count).
    assert evaluation['success_rate'] == summary['mean']['success_random']
    refused = [
        cli.host('experiments.evaluate').run(f'--policy={out}', '--goal_noise_mm=1'),
        cli.host('experiments.evaluate').run('--task=peg_in_hole', '--policy=p_controller'),
    ]
    cli.assert_refused(
        refused,
        [
            '--goal_noise_mm applies to the connector tasks',
            "task 'peg_in_hole' has no P-controller",
        ],
    )
