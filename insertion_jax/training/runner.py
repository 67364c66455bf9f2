"""The host side of a training run: call the compiled train function, log, evaluate, save, resume.

`train(train_config, run_config, out_dir)` runs every seed at once (vmapped)
and writes into `out_dir` (through `run_dir.RunDir`):
  config.json         both configs, as given (a different configuration in the
                      same directory is refused, except a longer run or another
                      evaluation schedule: `EXTENDABLE`)
  reference.json      the hand-designed controller's success on the evaluation
                      episodes (null for a task without one), measured once
  metrics.jsonl       one line per iteration and seed (training metrics, and
                      the evaluation on evaluation iterations)
  learning_curve.png  success vs environment steps, mean and 95% band
  summary.json / summary.md   final success per seed and their mean, with the
                      hand-designed controller measured on the same episodes
  checkpoints/        the full training state at each evaluation (and every
                      `checkpoint_every` steps), for resuming (the newest `keep`)
  policy/             the final policy parameters (see `load_run`)
  tensorboard/        TensorBoard event files (`training.tensorboard`)
The seeds lie over every device of every process (`distributed`); the
summary records `num_devices` and `num_processes`.
A run stopped at any point resumes from its newest checkpoint when started
again with the same configuration and `out_dir`; started with a larger
`total_steps`, a run (finished or not) continues from there to the new end.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from insertion_jax import checks
from insertion_jax.replay import registry as replay_registry
from insertion_jax.training import (
    checkpoint,
    demonstrations,
    distributed,
    evaluate,
    loop,
    plots,
    run_dir,
)
from insertion_jax.training import config as config_lib
from insertion_jax.training import tensorboard as tensorboard_lib
from insertion_jax.training.config import TrainConfig

ConfigMismatchError = run_dir.ConfigMismatchError

# What a later start of a run may change: a run continues to a larger
# `total_steps` (a finished run too), and evaluates or saves on another
# schedule. None changes what the steps already taken compute.
EXTENDABLE = ('run.total_steps', 'run.eval_every', 'run.checkpoint_every')


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Host-side settings of a run.

    Attributes:
      total_steps: environment steps per seed (rounded up to whole device calls).
      num_seeds: seeds trained at once (vmapped), seed, seed + 1, ...
      seed: first seed.
      eval_every: environment steps between evaluations (and checkpoints).
      eval_episodes: executions per evaluation condition (the paper's 25).
      eval_noise_mm: goal noise of the noisy evaluation condition (connector tasks).
      iterations_per_call: iterations per jitted device call.
      checkpoint_every: environment steps between checkpoints besides those
        at evaluations (None: at evaluations only); what a hard kill can lose.
    """

    total_steps: int = 30_000
    num_seeds: int = 1
    seed: int = 0
    eval_every: int = 5_000
    eval_episodes: int = 25
    eval_noise_mm: float = 1.0
    iterations_per_call: int = 1
    checkpoint_every: Optional[int] = None

    def __post_init__(self):
        checks.positive_int(
            'RunConfig',
            total_steps=self.total_steps,
            num_seeds=self.num_seeds,
            eval_every=self.eval_every,
            eval_episodes=self.eval_episodes,
            iterations_per_call=self.iterations_per_call,
        )
        if self.checkpoint_every is not None:
            checks.positive_int('RunConfig', checkpoint_every=self.checkpoint_every)
        checks.non_negative('RunConfig', eval_noise_mm=self.eval_noise_mm)


def config_dict(train_config: TrainConfig, run_config: RunConfig) -> Dict[str, Any]:
    """Both configs as JSON-ready nested dicts (`config.json`)."""
    return {'train': config_lib.to_dict(train_config), 'run': dataclasses.asdict(run_config)}


def read_back(d: Dict[str, Any]) -> Dict[str, Any]:
    """A stored `config.json` dict read through the config classes and written
    again: the fields added since it was written take their defaults."""
    train = config_lib.from_dict(d['train'])
    return config_dict(train, config_lib.dataclass_from_dict(RunConfig, d['run'], 'run'))


def read_config(path: str) -> Tuple[TrainConfig, RunConfig]:
    """The configs of a run directory's `config.json`; a missing, malformed or
    unknown key raises ValueError naming it."""
    try:
        d = run_dir.read_json(path)
    except ValueError as e:
        raise ValueError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(d, dict) or set(d) != {'train', 'run'}:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{path} must hold the keys 'train' and 'run', found {keys}.")
    train_config = config_lib.from_dict(d['train'], f'{path} train')
    run_config = config_lib.dataclass_from_dict(RunConfig, d['run'], f'{path} run')
    return train_config, run_config


def finished_summary(
    out_dir: str, train_config: TrainConfig, run_config: RunConfig
) -> Optional[Dict[str, Any]]:
    """The summary of the run in `out_dir` if it has ended at
    `run_config.total_steps` or later; None if it has not started, stopped
    early, is to be extended (`EXTENDABLE`), or its summary is damaged (a
    `train` writes it again). A run of another configuration raises
    `ConfigMismatchError` rather than being reported as this one."""
    config_path = os.path.join(out_dir, 'config.json')
    if os.path.exists(config_path):
        run_dir.check_config(
            config_path, config_dict(train_config, run_config), EXTENDABLE, read_back
        )
    path = os.path.join(out_dir, 'summary.json')
    if not os.path.exists(path):
        return None
    try:
        summary = run_dir.read_json(path)
        done = summary['mean']['env_steps']
    except (ValueError, KeyError, TypeError):
        return None
    return summary if done >= run_config.total_steps else None


def make_demonstrations(components: loop.Components, seed: int, log) -> Any:
    """The run's demonstrations (recorded with the task's scripted demonstrator),
    in the agent's action space of the run's mode; None if it needs none."""
    cfg, env = components.config, components.env
    if not cfg.uses_demonstrations:
        return None
    demos, info = demonstrations.record(
        env,
        cfg.num_demos,
        jax.random.PRNGKey(seed),
        demonstrations.default_demonstrator(env, cfg.demo_noise),
        batch=cfg.num_envs,
        max_batches=10,
    )
    log(
        f'  {cfg.num_demos} demonstrations recorded (demonstrator success '
        f'{100 * info["demonstrator_success_rate"]:.0f}%)'
    )
    return demonstrations.for_mode(demos, env, cfg.mode)


def replay_memory_line(
    components: loop.Components, buffers: Any, layout: distributed.Layout
) -> str:
    """What the replay of the run's seeds holds on the devices, in one line:
    its kind, capacity, bytes per seed, per device and in all, and how
    observations are stored."""
    cfg = components.config
    total = sum(x.nbytes for x in jax.tree.leaves(buffers))
    spec = components.env.observation_spec
    stored = ', '.join(
        f'{name} {s.dtype} {"x".join(map(str, s.shape))}'
        for name, s in (spec.items() if isinstance(spec, dict) else [('state', spec)])
    )
    return (
        f'  replay: {replay_registry.kind_of(cfg.replay)}, capacity {cfg.buffer_capacity:,} '
        f'transitions; {total / layout.num_seeds / 2**20:,.1f} MiB per seed, '
        f'{total / layout.num_devices / 2**20:,.1f} MiB per device, {total / 2**20:,.1f} MiB '
        f'for {layout.num_seeds} seed(s) (observations: {stored})'
    )


def release_compiled_code(packages: Sequence[str] = ('insertion_jax',)) -> None:
    """Drops every compiled program this process holds: JAX's caches and the
    `functools` caches of the modules under `packages`.

    Each XLA:CPU executable keeps its machine code in memory mappings of its
    own (2,500-3,000 for one MJX rollout) and Linux caps a process at
    `vm.max_map_count` (65,530 by default); LLVM fails to allocate past it. A
    process that trains many configurations one after another (the table's
    cells, a sweep) calls this between them (BUILD_NOTES.md, pitfalls).
    """
    for name, module in list(sys.modules.items()):
        if not any(name == p or name.startswith(p + '.') for p in packages):
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, 'cache_clear', None)):
                value.cache_clear()
    jax.clear_caches()
    gc.collect()


def train(
    train_config: TrainConfig,
    run_config: RunConfig,
    out_dir: str,
    log: Callable[[str], None] = print,
    keep: int = 2,
    tensorboard: bool = True,
    devices: Optional[Sequence[jax.Device]] = None,
) -> Dict[str, Any]:
    """Trains, evaluates and saves a run; returns the summary (see module docstring).

    `keep`: checkpoints kept (the newest). `tensorboard`: also write
    TensorBoard event files (`training.tensorboard`). `devices`: where the
    seeds go (`distributed.make_layout`; default every device of every
    process). In a multi-process run every process calls `train` with the
    same arguments; process 0 writes the files and logs.
    """
    # Laid out first: a layout the devices refuse writes nothing.
    layout = distributed.make_layout(run_config.num_seeds, train_config.num_envs, devices)
    writer = distributed.is_writer()
    log = distributed.writer_log(log)
    out = run_dir.RunDir(
        out_dir,
        config_dict(train_config, run_config),
        'config.json',
        keep=keep,
        extendable=EXTENDABLE,
        read_back=read_back,
        writer=writer,
    )
    iterations_per_call = run_config.iterations_per_call
    steps_per_call = train_config.env_steps_per_iteration * iterations_per_call
    num_calls = math.ceil(run_config.total_steps / steps_per_call)
    calls_per_eval = max(1, round(run_config.eval_every / steps_per_call))
    calls_per_save = (
        max(1, round(run_config.checkpoint_every / steps_per_call))
        if run_config.checkpoint_every
        else num_calls + 1  # at evaluations only
    )
    num_seeds = run_config.num_seeds

    log(
        f'Compiling {train_config.env.task} ({train_config.mode} {train_config.algo}, '
        f'{num_seeds} seed(s) x {train_config.num_envs} envs)...'
    )
    log(layout.describe())
    components = loop.make_components(train_config)
    demos = make_demonstrations(components, run_config.seed, log)
    state = loop.init_states(components, run_config.seed, num_seeds, demos, layout)
    log(replay_memory_line(components, state.buffer, layout))
    records = out.records('metrics.jsonl')
    state, iterations_done, wall_before = out.resume(state, records, log)
    calls_done = iterations_done // iterations_per_call
    steps_done = iterations_done * train_config.env_steps_per_iteration
    if calls_done > num_calls:
        raise ConfigMismatchError(
            f'{out_dir!r} holds a run that has done {steps_done} environment steps per '
            f'seed; total_steps={run_config.total_steps} cannot end it earlier: ask for '
            f'at least {steps_done}, or pick another output directory.'
        )
    out.accept_changes()
    for key, (was, now) in out.changed.items():
        log(f'  {key.split(".")[-1]}: {was} -> {now} (the run continues)')

    train_fn = loop.make_train_fn(components, iterations_per_call, layout)
    conditions = evaluate.conditions_for(components.env, run_config.eval_noise_mm)
    evaluator = evaluate.Evaluator(
        components, run_config.eval_episodes, run_config.seed, conditions
    )
    reference = out.cached_json('reference.json', evaluator.reference)
    progress = run_dir.Progress(num_calls, calls_done, wall_before)
    last_eval: Optional[Dict[str, np.ndarray]] = None
    # A resumed session replaces what the last one logged after its checkpoint.
    board = tensorboard_lib.Board(out_dir, tensorboard and writer, purge_step=steps_done + 1)

    for call in range(calls_done, num_calls):
        state, metrics = train_fn(state)
        metrics = distributed.to_host(metrics)  # (S, n, ...)
        evaluation = None
        if (call + 1) % calls_per_eval == 0 or call + 1 == num_calls:
            evaluation = evaluator(loop.policy_params(components, state))
            last_eval = evaluation
        wall = progress.wall()
        rows = _records(metrics, call, run_config, train_config, wall, evaluation)
        records.append(rows)
        board.records(rows)
        if evaluation is not None or (call + 1) % calls_per_save == 0:
            board.flush()  # the event files hold what the checkpoint holds
            out.save(
                (call + 1) * steps_per_call,
                state,
                {'iterations': (call + 1) * iterations_per_call, 'wall_clock_s': wall},
            )
        ended = np.asarray(metrics['success'][:, -1], float)
        ended = ended[np.isfinite(ended)]  # NaN: no episode ended in that iteration
        line = f'[{(call + 1) * steps_per_call:>8}/{num_calls * steps_per_call} env steps] ' + (
            f'train success {100 * ended.mean():5.1f}%' if ended.size else 'train success   -  '
        )
        if evaluation is not None:
            line += ' | eval ' + ' '.join(
                f'{name} {100 * evaluation[name].mean():5.1f}%' for name in evaluator.conditions
            )
        log(line + f' | {wall:.0f} s, eta {progress.eta(call + 1)}')

    params = loop.policy_params(components, state)
    if last_eval is None:  # resumed after the final call: evaluate the final state
        last_eval = evaluator(params)
    checkpoint.save_policy(out_dir, params)
    summary = _summary(
        last_eval,
        reference,
        evaluator.conditions,
        run_config,
        num_calls * steps_per_call,
        progress.wall(),
    )
    summary.update(num_devices=layout.num_devices, num_processes=jax.process_count())
    table = plots.summary_markdown(summary)
    out.write_summary(summary, table)
    if writer:
        title = (
            f'{train_config.env.task}: {train_config.mode} {train_config.algo.upper()}, '
            f'{getattr(train_config.env, "reward", "task")} reward'
        )
        plots.plot_learning_curve(
            records.read(),
            out.file('learning_curve.png'),
            num_seeds,
            title,
            reference,
            run_config.eval_noise_mm,
        )
    board.image('learning_curve', out.file('learning_curve.png'), num_calls * steps_per_call)
    board.close()
    log('\n' + table)
    log(
        f'\nWrote {out_dir}/: config.json, metrics.jsonl, learning_curve.png, summary.json, '
        'summary.md, policy/, checkpoints/' + (', tensorboard/' if tensorboard else '')
    )
    return summary


def _records(metrics, call, run_config, train_config, wall_clock_s, evaluation) -> List[Dict]:
    """metrics.jsonl rows of one device call: one per iteration and seed."""
    n = run_config.iterations_per_call
    records = []
    for i in range(n):
        iteration = call * n + i + 1
        for s in range(run_config.num_seeds):
            record = {
                'iteration': iteration,
                'seed': run_config.seed + s,
                'env_steps': iteration * train_config.env_steps_per_iteration,
                'wall_clock_s': round(wall_clock_s, 2),
            }
            record.update({k: run_dir.to_python(v[s, i]) for k, v in metrics.items()})
            if evaluation is not None and i == n - 1:
                record.update(
                    {f'eval/{k}': run_dir.to_python(v[s]) for k, v in _eval_items(evaluation)}
                )
            records.append(record)
    return records


def _eval_items(evaluation):
    """('success_<c>', values) and ('distance_<c>_mm', values) of an evaluation."""
    for name, values in evaluation.items():
        yield (name if name.startswith('distance_') else f'success_{name}'), values


def _summary(evaluation, reference, conditions, run_config, env_steps, wall_clock_s):
    def row(extra, pick):
        return {
            **extra,
            **{f'success_{c}': float(pick(evaluation[c])) for c in conditions},
            'env_steps': int(env_steps),
            'wall_clock_s': round(wall_clock_s, 1),
        }

    return {
        'conditions': list(conditions),
        'eval_episodes': run_config.eval_episodes,
        'eval_noise_mm': run_config.eval_noise_mm,
        'seeds': [
            row({'seed': run_config.seed + s}, lambda v, s=s: v[s])
            for s in range(run_config.num_seeds)
        ],
        'mean': row({}, np.mean),
        'p_controller': (
            {f'success_{c}': reference[c] for c in conditions} if reference is not None else None
        ),
    }


def load_run(path: str):
    """(components, policy params with a leading seed axis, (TrainConfig, RunConfig))
    of a finished run. Needs no demonstrations: only the policy is restored."""
    train_config, run_config = read_config(os.path.join(path, 'config.json'))
    components = loop.make_components(train_config)
    like = loop.policy_params_like(components, run_config.num_seeds)
    return components, checkpoint.load_policy(path, like), (train_config, run_config)


def evaluate_run(
    path: str,
    episodes: int,
    seed: int,
    goal_noise_mm: Optional[float] = None,
) -> Dict[str, Dict[str, Any]]:
    """Every seed's deterministic policy of a finished run, `episodes` executions
    per condition; {condition: summary} (what `experiments.evaluate --json` prints
    for its one condition).

    Conditions: a connector task runs at `goal_noise_mm` ('exact' at 0, else
    'noisy'), or with None at the run's own conditions (the exact goal and its
    `eval_noise_mm`); any other task at its own randomization ('random'), where
    a `goal_noise_mm` is refused (ValueError). With the run's seed and
    `eval_episodes` and no `goal_noise_mm`, these are the episodes of the run's
    own evaluations: the result repeats its final one.
    """
    components, params, (train_config, run_config) = load_run(path)
    env = components.env
    if goal_noise_mm is None:
        conditions = evaluate.conditions_for(env, run_config.eval_noise_mm)
    elif evaluate.has_goal_noise(env):
        conditions = {'noisy' if goal_noise_mm > 0 else 'exact': float(goal_noise_mm)}
    else:
        raise ValueError(f'task {train_config.env.task!r} takes no goal_noise_mm')
    out = evaluate.Evaluator(components, episodes, seed, conditions)(params)
    seeds = [str(s) for s in range(run_config.seed, run_config.seed + run_config.num_seeds)]
    summaries = {}
    for name, noise in conditions.items():
        per_seed = [float(x) for x in out[name]]
        summaries[name] = {
            'task': train_config.env.task,
            'policy': path,
            'goal_noise_mm': noise,
            'episodes': episodes * len(per_seed),
            'success_rate': float(np.mean(per_seed)),
            'successes': int(round(sum(per_seed) * episodes)),
            'mean_final_distance_mm': evaluate.finite_mean(out[f'distance_{name}_mm']),
            'seed': seed,
            'per_seed': dict(zip(seeds, per_seed, strict=True)),
        }
    return summaries
