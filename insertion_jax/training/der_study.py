"""The DER paper's ablation: four buffer structures, each with and without DER.

`run_study(config, out_dir)` trains Ape-X DDPG with DER replay on one assembly
task (or on point_reach, which runs the whole pipeline in seconds as a check
of the machinery, not a result) in every configuration (structure x DER
on/off) and every seed at once:
the structure only decides what the demonstration zones hold at the start,
and DER on/off is a flag in the replay state, so all configurations run as
one vmapped batch through one compiled training function (seeds and
configurations side by side on the leading axis).

Like the paper, it reports per *iteration* (a fixed number of environment
steps per run) the success rate and the mean return of the training episodes
that ended in it. Outputs in `out_dir`:

  results.csv      one row per configuration, seed and iteration: success,
                   return, and the diagnostics `DIAGNOSTICS`
  der_study.png    the paper's figure layout: one panel per structure, DER on
                   and off, mean over seeds and bootstrap 95% band;
                   success on top, return below, and the critic's mean Q
                   against the success bonus at the bottom
  summary.md/json  per configuration (`structure`, `der` true/false): final
                   success (mean of the last quarter of iterations, seeds
                   averaged) with its bootstrap 95% band (`final_success_low`,
                   `final_success_high`), `seeds`, iterations to reach
                   `threshold`, and the last quarter's return, zone share and
                   critic mean Q
  effects.md       does DER help with no demonstrations and with all shots in
                   all buffers (`der_effects`)
  demos.npz        the demonstrations used (unless given)
  checkpoints/     the batched training state after every iteration; the
                   same call resumes a stopped study

`preset(name, task)` gives the study's sizes: 'paper' (200,000 steps per
iteration, 200 or 500 iterations, 50,000 updates between target copies: a
GPU) and 'cpu' (the same experiment at 1/520 of its steps on the
peg-in-hole and 1/1,950 on the lap joint, about 80 minutes each on a 2-core
CPU); BUILD_NOTES.md says what the cpu preset changes and why.
The summaries, verdicts and figures are computed in `der_results`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from insertion_jax import checks
from insertion_jax.agents import ddpg
from insertion_jax.envs import assembly, assembly_scene, point_reach
from insertion_jax.envs import registry as env_registry
from insertion_jax.replay import demos as demos_lib
from insertion_jax.replay import der
from insertion_jax.training import demonstrations, distributed, loop, run_dir
from insertion_jax.training import tensorboard as tensorboard_lib
from insertion_jax.training.config import ALGO_PRESETS, TrainConfig
from insertion_jax.training.der_results import (
    effects_markdown,
    nanmean,
    plot_study,
    summarize,
    summary_markdown,
)

# The loop-side Ape-X DDPG settings (3-step returns, a running observation
# filter); the study sets its own batch size and always uses DER replay.
APEX = ALGO_PRESETS['apex_ddpg']

CSV_FIELDS = (
    'task',
    'structure',
    'der',
    'seed',
    'iteration',
    'env_steps',
    'episodes',
    'success_rate',
    'mean_return',
    'pool_count',
    'zone_fill',
    'zone_share',
    'q_mean',
    'wall_clock_s',
)
# The diagnostics among them (the state at the iteration's end; q_mean over
# its updates): successes pushed to the pool so far, the share of zone slots
# holding an episode, the chance that a draw comes from a zone (zone items
# keep the top priority), and the critic's mean Q on its batches (does it see
# the success bonus?).
DIAGNOSTICS = ('pool_count', 'zone_fill', 'zone_share', 'q_mean')


# The paper's assembly tasks, and point_reach: the same pipeline without
# contact physics (its scripted P-controller records the demonstrations).
STUDY_TASKS = tuple(assembly_scene.TASKS) + ('point_reach',)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What `run_study` runs.

    Attributes:
      task: 'peg_in_hole' or 'lap_joint' (the paper's tasks), or 'point_reach'
        (no physics: the study's machinery in seconds).
      structures: DER structures to compare.
      der_modes: DER off (False) and/or on (True).
      num_seeds, seed: seeds seed .. seed + num_seeds - 1, shared by every
        configuration (paired comparisons).
      iterations: reported iterations.
      steps_per_iteration: environment steps per run per iteration.
      num_envs, unroll_length: environments per run and steps per loop iteration.
      utd: gradient updates per environment step.
      batch_size: train batch (the paper: 512).
      buffer_capacity: transitions per DER buffer.
      zone_fraction: share of each buffer for the demonstration zone.
      num_buffers: K (the paper: 6).
      num_demos: demonstrations (the paper: 6).
      refresh_every: updates between zone refreshes.
      target_every: updates between hard target copies (the paper: 50,000 at
        its scale).
      hidden: network widths (the paper: 64x64 peg, 256x256 lap joint); None
        takes the paper's for the task.
      learning_starts: environment steps before updates.
      threshold: success rate for 'iterations to reach'.
      yaw_range_deg: (low, high) start yaw of the peg or the ground beam, a
        scaled task; None: the paper's (`assembly.AssemblyConfig`).
      zone_top_priority: zone items keep the top priority (the paper's);
        False is an ablation (`der.DERConfig.zone_top_priority`).
    """

    task: str = 'peg_in_hole'
    structures: Tuple[str, ...] = der.STRUCTURES
    der_modes: Tuple[bool, ...] = (False, True)
    num_seeds: int = 3
    seed: int = 0
    iterations: int = 30
    steps_per_iteration: int = 4_000
    num_envs: int = 8
    unroll_length: int = 25
    utd: float = 0.25
    batch_size: int = 512
    buffer_capacity: int = 100_000
    zone_fraction: float = 0.01
    num_buffers: int = 6
    num_demos: int = 6
    refresh_every: int = 500
    target_every: int = 2_000
    hidden: Optional[Tuple[int, ...]] = None
    learning_starts: int = 2_000
    threshold: float = 0.5
    yaw_range_deg: Optional[Tuple[float, float]] = None
    zone_top_priority: bool = True

    def __post_init__(self):
        owner = 'StudyConfig'
        if self.task not in STUDY_TASKS:
            raise ValueError(
                f'{owner}.task={self.task!r} is not an assembly task; valid: '
                f'{", ".join(STUDY_TASKS)}.'
            )
        bad = [s for s in self.structures if s not in der.STRUCTURES]
        if bad or not self.structures:
            raise ValueError(
                f'{owner}.structures={self.structures!r}: valid structures are '
                f'{", ".join(der.STRUCTURES)} (at least one).'
            )
        if not self.der_modes or any(not isinstance(m, bool) for m in self.der_modes):
            raise ValueError(f'{owner}.der_modes={self.der_modes!r} must hold True and/or False.')
        checks.positive_int(
            owner,
            num_seeds=self.num_seeds,
            iterations=self.iterations,
            steps_per_iteration=self.steps_per_iteration,
            num_envs=self.num_envs,
            unroll_length=self.unroll_length,
        )
        if self.steps_per_iteration % (self.num_envs * self.unroll_length):
            raise ValueError(
                f'{owner}.steps_per_iteration={self.steps_per_iteration} must be a multiple of '
                f'num_envs x unroll_length = {self.num_envs * self.unroll_length}.'
            )
        checks.unit_interval(owner, threshold=self.threshold)
        if self.yaw_range_deg is not None:
            if self.task == 'point_reach':
                raise ValueError(f'{owner}.yaw_range_deg applies to the assembly tasks only.')
            self.env_config  # noqa: B018 (AssemblyConfig checks the range)

    @property
    def configurations(self) -> List[Tuple[str, bool]]:
        return [(s, d) for s in self.structures for d in self.der_modes]

    @property
    def loop_iterations(self) -> int:
        return self.steps_per_iteration // (self.num_envs * self.unroll_length)

    @property
    def network(self) -> Tuple[int, ...]:
        if self.hidden is not None:
            return tuple(self.hidden)
        return (256, 256) if self.task == 'lap_joint' else (64, 64)

    @property
    def env_config(self) -> Any:
        if self.task == 'point_reach':
            return point_reach.PointReachConfig()
        return assembly.AssemblyConfig(task=self.task, yaw_range_deg=self.yaw_range_deg)

    def train_config(self, structure: str = 'none', der_on: bool = True) -> TrainConfig:
        """The training configuration of one (structure, DER on/off) configuration."""
        return TrainConfig(
            env=self.env_config,
            algo='apex_ddpg',
            agent=ddpg.ApeXDDPGConfig(hidden=self.network, hard_target_every=self.target_every),
            mode='pure',
            num_envs=self.num_envs,
            unroll_length=self.unroll_length,
            utd=self.utd,
            batch_size=self.batch_size,
            buffer_capacity=self.buffer_capacity,
            learning_starts=self.learning_starts,
            n_step=APEX['n_step'],
            num_demos=self.num_demos,
            obs_normalizer=APEX['obs_normalizer'],
            replay=der.DERConfig(
                num_buffers=self.num_buffers,
                zone_fraction=self.zone_fraction,
                structure=structure,
                der=der_on,
                refresh_every=self.refresh_every,
                pool_episodes=max(64, self.num_envs),
                zone_top_priority=self.zone_top_priority,
            ),
        )


def study_config_from_dict(d: Dict[str, Any]) -> StudyConfig:
    d = dict(d)
    for key in ('structures', 'der_modes', 'hidden', 'yaw_range_deg'):
        if isinstance(d.get(key), list):
            d[key] = tuple(d[key])
    return StudyConfig(**d)


# ----------------------------------------------------------------- presets
PRESET_NAMES = ('cpu', 'paper')


def preset(name: str, task: str) -> Dict[str, Any]:
    """The `StudyConfig` fields of a named study size for `task` (a caller's
    own settings go on top).

    'paper': the paper's appendix: iterations of 200,000 environment steps
    per run, 200 of them on the peg-in-hole and 500 on the lap joint, buffers
    of 2,000,000 transitions with 1% for the zone, a hard target copy every
    50,000 updates. It needs a GPU (BUILD_NOTES gives its size and time).

    'cpu': the same experiment scaled to 90 minutes on a 2-core CPU (8
    configurations x 3 seeds): the paper's task, start yaw, algorithm and
    zone share of a buffer (1%), at 1/520 of its steps per run on the
    peg-in-hole (76,800 against 40 M) and 1/1,950 on the lap joint (51,200
    against 100 M). What changes with the size (BUILD_NOTES measures each):
      * iterations of 3,200 steps per run, 24 of them on the peg-in-hole
        and 16 on the lap joint (whose 256x256 networks make an iteration
        about twice as long), 16 environments, 0.5 updates per step;
      * the target copy every 200 updates instead of 50,000 (at 1/500 of the
        steps, the paper's period would copy the target less than once a run;
        at 2,000 updates, runs of 16,000 steps learned nothing);
      * buffers of 60,000 transitions, so that the 1% zone holds 6 episode
        slots: the six demonstrations of all_shots_all, and six agent
        episodes with DER.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f'preset={name!r} is unknown; valid: {", ".join(PRESET_NAMES)}.')
    if name == 'paper':
        return {
            'iterations': 500 if task == 'lap_joint' else 200,
            'steps_per_iteration': 200_000,
            'num_envs': 64,
            'buffer_capacity': 2_000_000,
            'zone_fraction': 0.01,
            'target_every': 50_000,
            'refresh_every': 5_000,
            'learning_starts': 10_000,
        }
    return {
        'iterations': 16 if task == 'lap_joint' else 24,
        'steps_per_iteration': 3_200,
        'num_envs': 16,
        'utd': 0.5,
        'buffer_capacity': 60_000,
        'zone_fraction': 0.01,
        'target_every': 200,
        'refresh_every': 500,
        'learning_starts': 2_000,
    }


# ----------------------------------------------------------------- running
def _initial_state(
    config: StudyConfig,
    demos: demos_lib.Demonstrations,
    layout: Optional[distributed.Layout] = None,
):
    """All configurations' initial states, stacked (configuration-major, seeds
    inner), laid out by `layout`: one jitted call in which each device builds
    only its own runs (no replay passes through the host).

    One initialization of agents and environments serves every configuration;
    only the replay differs: the structure's zones (built once per structure,
    the same for every seed) and the DER flag.
    """
    keys, demos = jax.device_get((loop.seed_keys(config.seed, config.num_seeds), demos))
    return loop.committed(_build_initial_state(config, loop.spread(layout))(keys, demos))


@functools.lru_cache(maxsize=8)
def _build_initial_state(config: StudyConfig, layout: Optional[distributed.Layout]):
    """The jitted `(seed keys, demos) -> stacked initial state` of `_initial_state`
    (cached: a resumed study in the same process compiles it once)."""
    components = loop.make_components(config.train_config())
    init = jax.vmap(functools.partial(loop.init_state, components), in_axes=(0, None))
    example = loop.example_step(components.env)
    replays = {s: config.train_config(s).make_replay() for s in config.structures}

    def build(keys, demos):
        base = init(keys, None)
        zones = {
            structure: replay.init(example, demos if structure != 'none' else None)
            for structure, replay in replays.items()
        }
        parts = []
        for structure, der_on in config.configurations:
            zone = zones[structure].replace(der=jnp.asarray(der_on))
            zone = jax.tree.map(lambda x: jnp.broadcast_to(x, (config.num_seeds,) + x.shape), zone)
            parts.append(base.replace(buffer=zone))
        state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        return state if layout is None else loop.constrain(layout, state)

    return jax.jit(build)


def _iteration_rows(config, metrics, iteration, wall) -> List[Dict[str, Any]]:
    """Rows of one reported iteration from the runner's metrics (S, n, ...)."""
    episodes = np.asarray(metrics['episodes'], float)
    success = np.nan_to_num(np.asarray(metrics['success'], float)) * episodes
    returns = np.nan_to_num(np.asarray(metrics['episode_return'], float)) * episodes
    total = episodes.sum(axis=1)
    safe = np.maximum(total, 1)
    last = {
        k: np.asarray(metrics[k], float)[:, -1] for k in ('pool_count', 'zone_fill', 'zone_share')
    }
    with warnings.catch_warnings():  # NaN before learning starts
        warnings.simplefilter('ignore', RuntimeWarning)
        q_mean = np.nanmean(np.asarray(metrics['q_mean'], float), axis=1)
    rows = []
    for i, (structure, der_on) in enumerate(config.configurations):
        for s in range(config.num_seeds):
            k = i * config.num_seeds + s
            rows.append(
                {
                    'task': config.task,
                    'structure': structure,
                    'der': 'on' if der_on else 'off',
                    'seed': config.seed + s,
                    'iteration': iteration,
                    'env_steps': iteration * config.steps_per_iteration,
                    'episodes': int(total[k]),
                    'success_rate': success[k].sum() / safe[k] if total[k] else float('nan'),
                    'mean_return': returns[k].sum() / safe[k] if total[k] else float('nan'),
                    'pool_count': int(last['pool_count'][k]),
                    'zone_fill': round(float(last['zone_fill'][k]), 4),
                    'zone_share': round(float(last['zone_share'][k]), 4),
                    'q_mean': float(q_mean[k]),
                    'wall_clock_s': round(wall, 1),
                }
            )
    return rows


def read_rows(path: str) -> List[Dict[str, Any]]:
    """The rows of a `results.csv` with their numbers parsed (a torn last line is dropped)."""
    rows = run_dir.Records(path, CSV_FIELDS).read()
    for r in rows:
        for key in ('seed', 'iteration', 'env_steps', 'episodes', 'pool_count'):
            r[key] = int(r[key])
        for key in (
            'success_rate',
            'mean_return',
            'zone_fill',
            'zone_share',
            'q_mean',
            'wall_clock_s',
        ):
            r[key] = float(r[key]) if r[key] not in ('', 'nan') else float('nan')
    return rows


def load_demonstrations(config: StudyConfig, out_dir: str, demos_path: Optional[str], log):
    """The study's demonstrations: `demos_path`, else OUT/demos.npz, else recorded
    with the task's demonstrator (`demonstrations.default_demonstrator`: the
    human-like one on the assembly tasks) and saved there. Only successful
    episodes are used."""
    env = env_registry.make_env(config.env_config)
    path = demos_path or os.path.join(out_dir, 'demos.npz')
    if os.path.exists(path):
        demos, _ = demos_lib.load(path, config.task, env.obs_dim, env.action_dim, env.horizon)
        if demos.count < config.num_demos:
            raise ValueError(
                f'{path} holds {demos.count} successful demonstrations; the study needs '
                f'{config.num_demos}.'
            )
        log(f'Demonstrations: {path} ({demos.count} successful)')
        return jax.tree.map(lambda x: x[: config.num_demos], demos)
    if demos_path:
        raise FileNotFoundError(f'No demonstrations file at {demos_path!r}.')
    log(f"Recording {config.num_demos} demonstrations with the task's demonstrator...")
    demos, info = demonstrations.record(
        env, config.num_demos, jax.random.PRNGKey(config.seed), batch=8
    )
    if distributed.is_writer():  # every process records the same ones (same seed)
        demos_lib.save(
            path,
            demos,
            config.task,
            env_registry.config_to_dict(env.config),
            np.ones(demos.count, bool),
        )
    log(
        f'  wrote {path} (demonstrator success {100 * info["demonstrator_success_rate"]:.0f}%, '
        f'mean length {info["mean_length"]:.0f} steps)'
    )
    return demos


def run_study(
    config: StudyConfig,
    out_dir: str,
    demos_path: Optional[str] = None,
    log: Callable[[str], None] = print,
    max_new_iterations: Optional[int] = None,
    tensorboard: bool = True,
    keep: int = 2,
) -> Dict[str, Any]:
    """Runs (or resumes) the study and writes its outputs; returns the summary.

    `max_new_iterations` stops after that many iterations of this call (a
    time-boxed session); the next call resumes from the checkpoint.
    `tensorboard`: also write TensorBoard event files, one TensorBoard run
    per configuration and seed (`training.tensorboard`). `keep`: checkpoints
    kept (the newest).
    """
    writer = distributed.is_writer()  # process 0 of a multi-process study writes and logs
    log = distributed.writer_log(log)
    out = run_dir.RunDir(
        out_dir,
        dataclasses.asdict(config),
        'study.json',
        # a study from before a new setting resumes where its default is what it ran
        read_back=lambda stored: dataclasses.asdict(study_config_from_dict(stored)),
        writer=writer,
        keep=keep,
    )
    demos = load_demonstrations(config, out_dir, demos_path, log)
    runs = len(config.configurations) * config.num_seeds
    log(
        f'Compiling {config.task}: {len(config.configurations)} configurations x '
        f'{config.num_seeds} seeds = {runs} runs of {config.num_envs} environments...'
    )
    layout = distributed.make_layout(runs, config.num_envs)
    log(layout.describe())
    state = _initial_state(config, demos, layout)
    components = loop.make_components(config.train_config())
    train_fn = loop.make_train_fn(components, config.loop_iterations, layout)
    records = out.records('results.csv', CSV_FIELDS)
    state, done, wall_before = out.resume(state, records, log)
    last = config.iterations
    if max_new_iterations is not None:
        last = min(last, done + max_new_iterations)
    progress = run_dir.Progress(last, done, wall_before)
    board = tensorboard_lib.Board(
        out_dir,
        tensorboard and writer,
        purge_step=done * config.steps_per_iteration + 1,
        run_of=lambda row: f'{row["structure"]}_der_{row["der"]}/seed_{row["seed"]}',
    )
    for iteration in range(done + 1, last + 1):
        state, metrics = train_fn(state)
        metrics = distributed.to_host(metrics)
        wall = progress.wall()
        rows = _iteration_rows(config, metrics, iteration, wall)
        records.append(rows)
        board.records(rows)
        board.flush()
        out.save(iteration, state, {'iterations': iteration, 'wall_clock_s': wall})
        means = _config_means(config, rows, 'success_rate')
        line = ' '.join(
            f'{s}/{"on" if d else "off"} ' + ('  -' if np.isnan(v) else f'{100 * v:3.0f}%')
            for (s, d), v in means.items()
        )
        log(
            f'[iteration {iteration:>3}/{config.iterations}, {iteration * config.steps_per_iteration} '
            f'steps per run] success {line} | {wall:.0f} s, eta {progress.eta(iteration)}'
        )
    rows = read_rows(records.path)
    summary = summarize(config, rows)
    summary.update(num_devices=layout.num_devices, num_processes=jax.process_count())
    out.write_summary(summary, summary_markdown(summary))
    if writer:
        run_dir.write_text(out.file('effects.md'), effects_markdown(summary))
        plot_study(config, rows, out.file('der_study.png'))
    board.image('der_study', out.file('der_study.png'), last * config.steps_per_iteration)
    board.close()
    log('\n' + summary_markdown(summary))
    log(
        f'\nWrote {out_dir}/: results.csv, der_study.png, summary.md, summary.json, '
        'effects.md, checkpoints/' + (', tensorboard/' if tensorboard else '')
    )
    return summary


def _config_means(config, rows, key) -> Dict[Tuple[str, bool], float]:
    out = {}
    for structure, der_on in config.configurations:
        values = [
            r[key]
            for r in rows
            if r['structure'] == structure and r['der'] == ('on' if der_on else 'off')
        ]
        out[(structure, der_on)] = float(nanmean(values)) if values else float('nan')
    return out
