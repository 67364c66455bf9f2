r"""Reproduces the DER paper's ablation on an assembly task.

  python -m experiments.reproduce_der --task=peg_in_hole --preset=cpu --seeds=3 --out=runs/der_peg
  python -m experiments.reproduce_der --task=lap_joint --preset=paper --out=runs/der_lap  # a GPU

Trains Ape-X DDPG with DER replay in the 8 configurations (4 buffer
structures x DER on/off), all seeds and configurations vmapped in one compiled
program, and writes results.csv, der_study.png (the paper's figure layout),
summary.md/json, effects.md and checkpoints/ into --out; the same command
resumes a stopped study. `--preset` sizes the study (`der_study.preset`: cpu,
the paper's experiment scaled to 90 minutes on a 2-core CPU; paper, the
appendix's sizes for a GPU); any size flag given goes on top of it. The
runs (configurations x seeds) lie over every device; --coordinator_address,
--num_processes and --process_id run the study over several processes or hosts.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import common
from insertion_jax.training import demonstrations, der_results, der_study, run_dir

_TASK = flags.DEFINE_string(
    'task',
    'peg_in_hole',
    'Assembly task: peg_in_hole or lap_joint; point_reach checks the pipeline in seconds.',
)
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per configuration.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'First seed.')
_OUT = flags.DEFINE_string(
    'out', None, 'Output directory (default: runs/der_TASK, with --compare runs/der_tasks).'
)
_DEMOS = flags.DEFINE_string('demos', None, 'Demonstrations file (default: record them).')
_STRUCTURES = flags.DEFINE_list(
    'structures', ['none', 'one_shot_all', 'all_shots_all', 'one_shot_each'], 'Structures.'
)
_DER = flags.DEFINE_enum('der', 'both', ['both', 'on', 'off'], 'DER on, off, or both.')
_PRESET = flags.DEFINE_enum(
    'preset', 'cpu', list(der_study.PRESET_NAMES), 'Study size: cpu (90 min here) or paper (a GPU).'
)
_ITERATIONS = flags.DEFINE_integer(
    'iterations', None, "Reported iterations (default: the preset's).", lower_bound=1
)
_STEPS = flags.DEFINE_integer(
    'steps_per_iteration', None, 'Environment steps per run per iteration.', lower_bound=1
)
_NUM_ENVS = flags.DEFINE_integer('num_envs', None, 'Environments per run.', lower_bound=1)
_UNROLL = flags.DEFINE_integer('unroll_length', None, 'Steps per loop iteration.', lower_bound=1)
_UTD = flags.DEFINE_float('utd', None, 'Updates per environment step.', lower_bound=1e-6)
_BATCH = flags.DEFINE_integer('batch_size', None, 'Train batch.', lower_bound=1)
_BUFFER = flags.DEFINE_integer('buffer_capacity', None, 'Transitions per buffer.', lower_bound=1)
_ZONE = flags.DEFINE_float('zone_fraction', None, 'Demonstration zone share of a buffer.')
_REFRESH = flags.DEFINE_integer(
    'refresh_every', None, 'Updates between zone refreshes.', lower_bound=1
)
_TARGET = flags.DEFINE_integer(
    'target_every', None, 'Updates between target copies.', lower_bound=1
)
_HIDDEN = flags.DEFINE_list('hidden', None, "Network widths (default: the paper's per task).")
_STARTS = flags.DEFINE_integer('learning_starts', None, 'Steps before updates.', lower_bound=0)
_ZONE_TOP = flags.DEFINE_bool(
    'zone_top_priority',
    True,
    "Zone items keep the top priority (the paper's); --nozone_top_priority gives them their "
    '|TD|, an ablation.',
)
_COMPARE = flags.DEFINE_list(
    'compare',
    None,
    'PEG_DIR,LAP_DIR: instead of training, compare two finished studies (peg-in-hole, lap '
    'joint) and write tasks.md and tasks.png into --out.',
)
common.define_run_flags(__name__)
common.define_process_flags(__name__)
_YAW = flags.DEFINE_list(
    'yaw_range_deg', None, "Start yaw low,high, degrees: a scaled task (default: the paper's)."
)


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if _COMPARE.value is not None:
        return compare(_COMPARE.value, _OUT.value or 'runs/der_tasks')
    common.join_processes()
    modes = {'both': (False, True), 'on': (True,), 'off': (False,)}[_DER.value]
    try:
        hidden = tuple(int(h) for h in _HIDDEN.value) if _HIDDEN.value else None
    except ValueError as e:
        raise app.UsageError(f'--hidden={",".join(_HIDDEN.value)} must be integers.') from e
    try:
        yaw = tuple(float(v) for v in _YAW.value) if _YAW.value else None
    except ValueError as e:
        raise app.UsageError(f'--yaw_range_deg={",".join(_YAW.value)}: two numbers.') from e
    try:
        sizes = {
            'iterations': _ITERATIONS.value,
            'steps_per_iteration': _STEPS.value,
            'num_envs': _NUM_ENVS.value,
            'unroll_length': _UNROLL.value,
            'utd': _UTD.value,
            'batch_size': _BATCH.value,
            'buffer_capacity': _BUFFER.value,
            'zone_fraction': _ZONE.value,
            'refresh_every': _REFRESH.value,
            'target_every': _TARGET.value,
            'hidden': hidden,
            'learning_starts': _STARTS.value,
            'yaw_range_deg': yaw,
        }
        given = {k: v for k, v in sizes.items() if v is not None}
        config = der_study.StudyConfig(
            task=_TASK.value,
            structures=tuple(_STRUCTURES.value),
            der_modes=modes,
            num_seeds=_SEEDS.value,
            seed=_SEED.value,
            zone_top_priority=_ZONE_TOP.value,
            **{**der_study.preset(_PRESET.value, _TASK.value), **given},
        )
        config.train_config()  # checks the sizes before any compile
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    common.enable_compilation_cache()
    try:
        der_study.run_study(
            config,
            _OUT.value or f'runs/der_{_TASK.value}',
            _DEMOS.value,
            **common.run_kwargs(),
        )
    except (ValueError, FileNotFoundError, demonstrations.DemonstratorError) as e:
        # DemoFormatError and ConfigMismatchError are ValueErrors: one line each.
        raise app.UsageError(str(e)) from e


def compare(dirs, out):
    """Writes OUT/tasks.md and OUT/tasks.png from two finished studies, both
    summarized over the steps per run they have in common (from study.json and
    results.csv; from summary.json alone where those are absent)."""
    if len(dirs) != 2:
        raise app.UsageError(f'--compare={",".join(dirs)}: give PEG_DIR,LAP_DIR.')
    summaries = []
    for d, task in zip(dirs, ('peg_in_hole', 'lap_joint'), strict=True):
        path = os.path.join(d, 'summary.json')
        if not os.path.exists(path):
            raise app.UsageError(f'{path} does not exist: run the {task} study first.')
        summary = run_dir.read_json(path)
        if summary.get('task') != task:
            raise app.UsageError(f'{path} is a {summary.get("task")!r} study; expected {task}.')
        planned = summary.get('planned_iterations', 0)  # absent: a study from before it
        done = min((c.get('iterations', 0) for c in summary['configurations']), default=0)
        if done < planned:
            raise app.UsageError(
                f'{path}: the study has run {done} of its {planned} iterations; '
                f'finish it first (rerun its command: it resumes).'
            )
        summaries.append(summary)
    studies = [(os.path.join(d, 'study.json'), os.path.join(d, 'results.csv')) for d in dirs]
    if all(os.path.exists(a) and os.path.exists(b) for a, b in studies):
        summaries = der_results.summarize_at_equal_steps(
            [
                (der_study.study_config_from_dict(run_dir.read_json(a)), der_study.read_rows(b))
                for a, b in studies
            ]
        )
    comparison = der_results.compare_tasks(*summaries)
    os.makedirs(out, exist_ok=True)
    text = der_results.compare_tasks_markdown(comparison)
    run_dir.write_text(os.path.join(out, 'tasks.md'), text)
    der_results.plot_task_comparison(comparison, os.path.join(out, 'tasks.png'))
    print(text + f'\nWrote {out}/: tasks.md, tasks.png')


if __name__ == '__main__':
    app.run(main)
