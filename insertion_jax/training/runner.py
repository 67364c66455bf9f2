"""The host side of a training run: call the jitted loop, log, evaluate, save, resume.

`train(train_config, run_config, out_dir)` runs every seed at once (vmapped)
and writes into `out_dir`:
  config.json         both configs, as given
  metrics.jsonl       one line per iteration and seed (training metrics, and
                      the evaluation on evaluation iterations)
  learning_curve.png  success vs environment steps, mean and 95% band
  summary.json / summary.md   final success per seed and their mean, with the
                      P-controller measured on the same evaluation episodes
  checkpoints/        the full training state, for resuming
  policy/             the final policy parameters (see `load_run`)
A run stopped at any point resumes from its newest checkpoint when started
again with the same configuration and `out_dir`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from insertion_jax import checks
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import registry
from insertion_jax.replay import der, prioritized
from insertion_jax.training import checkpoint, evaluate, logging, loop


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Host-side settings of a run.

    Attributes:
      total_steps: environment steps per seed (rounded up to whole device calls).
      num_seeds: seeds trained at once (vmapped), seed, seed + 1, ...
      seed: first seed.
      eval_every: environment steps between evaluations (and checkpoints).
      eval_episodes: executions per evaluation condition (the paper's 25).
      eval_noise_mm: goal noise of the noisy evaluation condition.
      iterations_per_call: iterations per jitted device call.
    """

    total_steps: int = 30_000
    num_seeds: int = 1
    seed: int = 0
    eval_every: int = 5_000
    eval_episodes: int = 25
    eval_noise_mm: float = 1.0
    iterations_per_call: int = 1

    def __post_init__(self):
        checks.positive_int(
            'RunConfig',
            total_steps=self.total_steps,
            num_seeds=self.num_seeds,
            eval_every=self.eval_every,
            eval_episodes=self.eval_episodes,
            iterations_per_call=self.iterations_per_call,
        )
        checks.non_negative('RunConfig', eval_noise_mm=self.eval_noise_mm)


def config_dict(train_config: loop.TrainConfig, run_config: RunConfig) -> Dict[str, Any]:
    """Both configs as JSON-ready nested dicts."""
    train = dataclasses.asdict(train_config)
    train['env'] = registry.config_to_dict(train_config.env)
    return {'train': train, 'run': dataclasses.asdict(run_config)}


def train_config_from_dict(d: Dict[str, Any]) -> loop.TrainConfig:
    """Inverse of the 'train' half of `config_dict` (fields added since a run was
    written take their defaults)."""
    d = dict(d)
    env = registry.config_from_dict(d.pop('env'))
    agent_cls = agent_registry.config_class(d['algo'])
    known = {f.name for f in dataclasses.fields(agent_cls)}
    agent = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop('agent').items()}
    agent = agent_cls(**{k: v for k, v in agent.items() if k in known})
    if 'priority' in d:
        d['priority'] = prioritized.PrioritizedConfig(**d['priority'])
    if 'der' in d:
        der_dict = dict(d['der'])
        der_dict['priority'] = prioritized.PrioritizedConfig(**der_dict['priority'])
        d['der'] = der.DERConfig(**der_dict)
    return loop.TrainConfig(env=env, agent=agent, **d)


DEFAULT_CONDITIONS = {'exact': 0.0, 'noisy': 1.0}


class ConfigMismatchError(ValueError):
    """The output directory holds a run with another configuration."""


@functools.lru_cache(maxsize=16)
def _rollout_fns(components: loop.Components):
    """Jitted rollouts of the trained policy (vmapped over seeds) and of the
    P-controller, built once per components."""
    policy = loop.make_eval_policy(components)
    rollout = jax.vmap(
        functools.partial(evaluate.rollout, components.env, policy), in_axes=(0, None, None)
    )
    p_controller = evaluate.make_rollout_fn(components.env, evaluate.p_controller_policy)
    return jax.jit(rollout), p_controller


class Evaluator:
    """The paper's protocol on every seed at once: `episodes` executions per
    condition, each condition a goal-noise level (by default the exact goal and
    up to +-1 mm), the same episodes at every evaluation (fixed key and
    offsets; every level scales the same offset directions)."""

    def __init__(
        self,
        components: loop.Components,
        episodes: int,
        seed: int,
        conditions: Mapping[str, float] = DEFAULT_CONDITIONS,
    ):
        self.episodes = episodes
        self.conditions = tuple(conditions)
        self._run, self._run_p_controller = _rollout_fns(components)
        key_env, key_goal = jax.random.split(jax.random.PRNGKey(seed + 1_000_003))
        unit = evaluate.goal_offsets_mm(key_goal, episodes, 1.0)
        self.key = key_env
        self.offsets = jnp.concatenate([unit * noise_mm for noise_mm in conditions.values()])

    def _per_condition(self, values: np.ndarray) -> Dict[str, np.ndarray]:
        """Means over each condition's block of episodes (the last axis)."""
        blocks = np.split(np.asarray(values, float), len(self.conditions), axis=-1)
        return {name: block.mean(-1) for name, block in zip(self.conditions, blocks, strict=True)}

    def __call__(self, params) -> Dict[str, np.ndarray]:
        """Per seed, for each condition c: success rate {c: (S,)} and mean final
        distance {'distance_<c>_mm': (S,)}."""
        out = jax.device_get(self._run(params, self.key, self.offsets))
        distance = self._per_condition(out.final_distance_mm)
        return {
            **self._per_condition(out.success),
            **{f'distance_{name}_mm': value for name, value in distance.items()},
        }

    def p_controller(self) -> Dict[str, float]:
        """The P-controller's success on the same episodes, per condition."""
        params = evaluate.p_controller_params()
        out = jax.device_get(self._run_p_controller(params, self.key, self.offsets))
        return {name: float(v) for name, v in self._per_condition(out.success).items()}


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train(
    train_config: loop.TrainConfig,
    run_config: RunConfig,
    out_dir: str,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Trains, evaluates and saves a run; returns the summary (see module docstring)."""
    os.makedirs(out_dir, exist_ok=True)
    config = config_dict(train_config, run_config)
    config_path = os.path.join(out_dir, 'config.json')
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        if json.loads(json.dumps(config)) != previous:
            raise ConfigMismatchError(
                f'{out_dir!r} holds a run with a different configuration; pick another --out '
                'or delete it.'
            )
    with open(config_path, 'w') as f:
        json.dump(config, f, indent=2)

    steps_per_call = train_config.env_steps_per_iteration * run_config.iterations_per_call
    num_calls = math.ceil(run_config.total_steps / steps_per_call)
    calls_per_eval = max(1, round(run_config.eval_every / steps_per_call))
    num_seeds = run_config.num_seeds

    log(
        f'Compiling {train_config.env.task} ({train_config.mode} {train_config.algo}, '
        f'{num_seeds} seed(s) x {train_config.num_envs} envs)...'
    )
    components = loop.make_components(train_config)
    demos = None
    if train_config.uses_demonstrations:
        demos, info = loop.make_demonstrations(components, jax.random.PRNGKey(run_config.seed))
        log(
            f'  {train_config.num_demos} demonstrations recorded (demonstrator success '
            f'{100 * info["demonstrator_success_rate"]:.0f}%)'
        )
    state = loop.init_states(components, run_config.seed, num_seeds, demos)
    manager = checkpoint.checkpoint_manager(out_dir)
    writer = logging.MetricsWriter(os.path.join(out_dir, 'metrics.jsonl'))
    calls_done, wall_before = 0, 0.0
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state, progress = restored
        calls_done, wall_before = progress['calls'], progress['wall_clock_s']
        writer.truncate_after(calls_done * run_config.iterations_per_call)
        log(f'  resumed from the checkpoint at {calls_done * steps_per_call} env steps')
    elif os.path.exists(writer.path):
        os.remove(writer.path)

    runner = loop.make_runner(components, run_config.iterations_per_call)
    evaluator = Evaluator(
        components,
        run_config.eval_episodes,
        run_config.seed,
        {'exact': 0.0, 'noisy': run_config.eval_noise_mm},
    )
    reference = evaluator.p_controller()
    start = time.time()
    last_eval: Optional[Dict[str, np.ndarray]] = None

    def wall() -> float:
        return wall_before + time.time() - start

    for call in range(calls_done, num_calls):
        state, metrics = runner(state)
        metrics = jax.device_get(metrics)  # (S, n, ...)
        is_last = call + 1 == num_calls
        evaluation = None
        if (call + 1) % calls_per_eval == 0 or is_last:
            evaluation = evaluator(loop.policy_params(components, state))
            last_eval = evaluation
        records = _records(metrics, call, run_config, train_config, wall(), evaluation)
        writer.write(records)
        if evaluation is not None:
            checkpoint.save(
                manager,
                (call + 1) * steps_per_call,
                state,
                {'calls': call + 1, 'wall_clock_s': wall()},
            )
        done = call + 1 - calls_done
        eta = (time.time() - start) / done * (num_calls - call - 1)
        train_success = np.nanmean(metrics['success'][:, -1])
        line = (
            f'[{(call + 1) * steps_per_call:>8}/{num_calls * steps_per_call} env steps] '
            f'train success {100 * train_success:5.1f}%'
        )
        if evaluation is not None:
            line += (
                f' | eval exact {100 * evaluation["exact"].mean():5.1f}%'
                f' noisy {100 * evaluation["noisy"].mean():5.1f}%'
            )
        log(line + f' | {wall():.0f} s, eta {_format_eta(eta)}')

    if last_eval is None:  # resumed after the final call: evaluate the final state
        last_eval = evaluator(loop.policy_params(components, state))
    params = loop.policy_params(components, state)
    checkpoint.save_policy(out_dir, params)
    summary = _summary(last_eval, reference, run_config, num_calls * steps_per_call, wall())
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    table = logging.summary_markdown(summary)
    with open(os.path.join(out_dir, 'summary.md'), 'w') as f:
        f.write(table + '\n')
    records = logging.read_jsonl(writer.path)
    title = (
        f'{train_config.env.task}: {train_config.mode} {train_config.algo.upper()}, '
        f'{train_config.env.reward} reward'
    )
    logging.plot_learning_curve(
        records, os.path.join(out_dir, 'learning_curve.png'), num_seeds, title, reference
    )
    log('\n' + table)
    log(
        f'\nWrote {out_dir}/: config.json, metrics.jsonl, learning_curve.png, summary.json, '
        'summary.md, policy/, checkpoints/'
    )
    return summary


def _records(metrics, call, run_config, train_config, wall_clock_s, evaluation) -> List[Dict]:
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
            record.update({k: logging.to_python(v[s, i]) for k, v in metrics.items()})
            if evaluation is not None and i == n - 1:
                record['eval/success_exact'] = float(evaluation['exact'][s])
                record['eval/success_noisy'] = float(evaluation['noisy'][s])
                record['eval/distance_exact_mm'] = float(evaluation['distance_exact_mm'][s])
                record['eval/distance_noisy_mm'] = float(evaluation['distance_noisy_mm'][s])
            records.append(record)
    return records


def _summary(evaluation, reference, run_config, env_steps, wall_clock_s) -> Dict[str, Any]:
    seeds = [
        {
            'seed': run_config.seed + s,
            'success_exact': float(evaluation['exact'][s]),
            'success_noisy': float(evaluation['noisy'][s]),
            'env_steps': int(env_steps),
            'wall_clock_s': round(wall_clock_s, 1),
        }
        for s in range(run_config.num_seeds)
    ]
    return {
        'eval_episodes': run_config.eval_episodes,
        'eval_noise_mm': run_config.eval_noise_mm,
        'seeds': seeds,
        'mean': {
            'success_exact': float(np.mean(evaluation['exact'])),
            'success_noisy': float(np.mean(evaluation['noisy'])),
            'env_steps': int(env_steps),
            'wall_clock_s': round(wall_clock_s, 1),
        },
        'p_controller': {
            'success_exact': reference['exact'],
            'success_noisy': reference['noisy'],
        },
    }


def load_run(run_dir: str):
    """(components, policy params with a leading seed axis, config dict) of a finished run."""
    with open(os.path.join(run_dir, 'config.json')) as f:
        config = json.load(f)
    train_config = train_config_from_dict(config['train'])
    components = loop.make_components(train_config)
    num_seeds = config['run']['num_seeds']
    like = jax.eval_shape(
        lambda: loop.policy_params(components, loop.init_states(components, 0, num_seeds))
    )
    return components, checkpoint.load_policy(run_dir, like), config
