"""The residual-RL paper's results table, reproduced cell by cell.

Every (connector, method) cell of `paper_table` is a run directory of its
own, `OUT/runs/CONNECTOR/METHOD`:
  * a learned method trains `seeds` seeds at once (`runner.train`, vmapped)
    and is judged by its final evaluation: the deterministic policy of every
    seed on `eval_episodes` episodes with the exact goal and as many told the
    goal up to ±1 mm off, the episodes on which the run also evaluates the
    P-controller (`Evaluator.reference`);
  * `p_controller` evaluates the P-controller on those same episodes.
A finished cell is read back, not run again (a finished run of another
configuration is refused, not reported as this one); a stopped one resumes
from its checkpoint (`runner.train`). `run` then writes the table
(`table.csv`, `table.md`), the grouped bar chart (`table.png`), the learning
curves per connector (`curves_CONNECTOR.png`) and `effects.md`, the paper's
five effects decided from the table (`paper_table.effects`), over the cells
it ran and every other cell of OUT finished with the same preset and seeds:
running a part adds to the outputs of the whole.

A cell's rate is its seeds' mean over the same evaluation episodes, with the
Wilson 95% interval of that many episodes (the seeds share them, so they
are not independent trials).

`PRESETS` size the runs: 'toy' (the test suite's: one USB cell is the shared
SMALL run's configuration), 'cpu' (the whole table on a 2-core CPU in
about 1 h 45 min; BUILD_NOTES says what it scales down and why)
and 'paper' (for a GPU).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import insertion
from insertion_jax.training import distributed, evaluate, loop, paper_table, plots, run_dir, runner
from insertion_jax.training.config import IMAGE_PRESETS, TrainConfig
from insertion_jax.training.plots import plt

# method -> (algo, mode, reward, observation)
METHOD_SPECS: Dict[str, Tuple[str, str, str, str]] = {
    'residual_sac_dense': ('sac', 'residual', 'dense', 'state'),
    'residual_sac_sparse': ('sac', 'residual', 'sparse', 'state'),
    'residual_sac_image': ('sac', 'residual', 'image', 'image'),
    'residual_td3_image': ('td3', 'residual', 'image', 'image'),
    'lfd_td3_sparse': ('td3', 'lfd', 'sparse', 'state'),
    'lfd_td3_image': ('td3', 'lfd', 'image', 'image'),
    'pure_sac_dense': ('sac', 'pure', 'dense', 'state'),
    'pure_sac_sparse': ('sac', 'pure', 'sparse', 'state'),
}
NOISE_MM = 1.0  # the paper's noisy condition, and the training episodes' goal noise


@dataclasses.dataclass(frozen=True)
class Preset:
    """How big each cell's run is.

    Attributes:
      steps: environment steps per seed of a state method.
      image_steps: the same for an image method.
      seeds: default seeds per cell.
      num_envs: environments per seed.
      hidden: hidden layer widths of every network.
      utd: gradient updates per environment step.
      learning_starts: environment steps before updates.
      eval_episodes: episodes per condition of each evaluation (the final one
        decides the table).
      evaluations: evaluations along a run (the learning curves' points).
    """

    steps: int
    image_steps: int
    seeds: int
    num_envs: int = 16
    hidden: Tuple[int, ...] = (64, 64)
    utd: float = 0.5
    learning_starts: int = 960
    eval_episodes: int = 100
    evaluations: int = 4


PRESETS = {
    # The suite's: a USB residual_sac_sparse cell is conftest's SMALL run.
    'toy': Preset(steps=4 * 480, image_steps=4 * 480, seeds=1, eval_episodes=25, evaluations=1),
    # The 19 cells on a 2-core CPU: about 1 h 45 min alone (3 min per state
    # cell, 11 min per image cell, measured; BUILD_NOTES), within the 3
    # hours it is meant for. The seven image cells take most of it, so they
    # get 19,200 steps x 2 seeds (residual SAC from pixels on USB: 63-71% at
    # 16,000 steps, 83-94% at 24,000, one seed each). An evaluation (100 episodes per condition
    # and seed) costs as much as 5,000 training steps of a state cell, so a
    # run evaluates twice, halfway and at the end; its training episodes
    # give the learning curve at every iteration.
    'cpu': Preset(steps=16_000, image_steps=19_200, seeds=2, evaluations=2),
    'paper': Preset(
        steps=96_000, image_steps=96_000, seeds=5, num_envs=64, hidden=(256, 256), evaluations=12
    ),
}


def cell_configs(
    connector: str, method: str, preset: Preset, seeds: int, seed: int
) -> Tuple[TrainConfig, runner.RunConfig]:
    """The run of one learned cell."""
    algo, mode, reward, obs = METHOD_SPECS[method]
    env = insertion.InsertionConfig(task=connector, reward=reward, goal_noise_mm=NOISE_MM, obs=obs)
    agent_cls = agent_registry.config_class(algo)
    agent = agent_cls(hidden=preset.hidden, **({'bc_weight': 1.0} if mode == 'lfd' else {}))
    extra = {'batch_size': IMAGE_PRESETS['batch_size']} if obs != 'state' else {}
    train_config = TrainConfig(
        env=env,
        algo=algo,
        agent=agent,
        mode=mode,
        num_envs=preset.num_envs,
        utd=preset.utd,
        learning_starts=preset.learning_starts,
        **extra,
    )
    steps = preset.image_steps if obs != 'state' else preset.steps
    run_config = runner.RunConfig(
        total_steps=steps,
        num_seeds=seeds,
        seed=seed,
        eval_every=max(1, steps // preset.evaluations),
        eval_episodes=preset.eval_episodes,
        eval_noise_mm=NOISE_MM,
    )
    return train_config, run_config


def _cell_dir(out: str, connector: str, method: str) -> str:
    return os.path.join(out, 'runs', connector, method)


def p_controller_cell(
    connector: str, preset: Preset, seeds: int, seed: int, out: str, train: bool = True
) -> Optional[paper_table.Row]:
    """The P-controller on the learned cells' evaluation episodes (those of
    `seed`); cached in its cell directory, and computed again when the seed or
    the number of episodes differs from the cached one's (with `train` False:
    None instead)."""
    path = os.path.join(_cell_dir(out, connector, 'p_controller'), 'result.json')
    episodes = preset.eval_episodes
    counts = run_dir.read_json(path) if os.path.exists(path) else {}
    if (counts.get('seed'), counts.get('episodes')) != (seed, episodes):
        if not train:
            return None
        # The state cell's components: its environment, and the evaluation
        # programs a run of it compiles.
        train_config, _ = cell_configs(connector, 'residual_sac_sparse', preset, seeds, seed)
        components = loop.make_components(train_config)
        conditions = evaluate.conditions_for(components.env, NOISE_MM)
        success = evaluate.Evaluator(components, episodes, seed, conditions).reference()
        counts = {
            'exact': int(round(success['exact'] * episodes)),
            'noisy': int(round(success['noisy'] * episodes)),
            'episodes': episodes,
            'seed': seed,
        }
        if distributed.is_writer():
            run_dir.write_json(path, counts)
    episodes = counts['episodes']
    return paper_table.row_from_rates(
        connector,
        'p_controller',
        counts['exact'] / episodes,
        counts['noisy'] / episodes,
        episodes,
        1,
    )


def learned_cell(
    connector: str,
    method: str,
    preset: Preset,
    seeds: int,
    seed: int,
    out: str,
    log: Callable[[str], None],
    train: bool = True,
    train_kwargs: Optional[Mapping[str, Any]] = None,
) -> Optional[paper_table.Row]:
    """Trains the cell unless it has finished (resuming a stopped one), and
    reads its final evaluation; with `train` False, None unless finished.
    `train_kwargs`: `runner.train`'s further arguments (keep, tensorboard)."""
    train_config, run_config = cell_configs(connector, method, preset, seeds, seed)
    cell = _cell_dir(out, connector, method)
    summary = runner.finished_summary(cell, train_config, run_config)
    if summary is None:
        if not train:
            return None
        summary = runner.train(
            train_config,
            run_config,
            cell,
            log=lambda line: log('    ' + line),
            **(train_kwargs or {}),
        )
    per_seed = summary['seeds']
    records = run_dir.Records(os.path.join(cell, 'metrics.jsonl')).read()
    steps_to_high, _ = plots.first_reaching(
        records, 'success', paper_table.HIGH_SUCCESS, len(per_seed)
    )
    # Every seed runs the same episodes: the seeds' mean success over them.
    return paper_table.row_from_rates(
        connector,
        method,
        float(np.mean([s['success_exact'] for s in per_seed])),
        float(np.mean([s['success_noisy'] for s in per_seed])),
        summary['eval_episodes'],
        len(per_seed),
        steps_to_high,
        summary['mean']['env_steps'],
    )


def run(
    preset: Preset,
    out: str,
    connectors: Sequence[str] = paper_table.CONNECTORS,
    methods: Sequence[str] = paper_table.METHODS,
    seeds: Optional[int] = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    paper_cells_only: bool = True,
    train_kwargs: Optional[Mapping[str, Any]] = None,
) -> List[paper_table.Row]:
    """Every requested cell (see the module docstring), then the outputs.

    With `paper_cells_only` a (connector, method) pair runs only where the
    paper's table reports it or an effect needs it (`paper_table.CELLS`: 19
    of the 27 pairs)."""
    seeds = seeds or preset.seeds
    writer = distributed.is_writer()  # process 0 of a multi-process run writes and logs
    log = distributed.writer_log(log)
    cells = [
        (c, m)
        for c, m in _all_pairs()
        if c in connectors
        and m in methods
        and (not paper_cells_only or (c, m) in paper_table.CELLS)
    ]
    if not cells:
        raise ValueError(
            f'The paper reports none of connectors {", ".join(connectors)} x methods '
            f'{", ".join(methods)}; run them with cells=all.'
        )

    def row_of(cell: Tuple[str, str], train: bool) -> Optional[paper_table.Row]:
        connector, method = cell
        if method == 'p_controller':
            return p_controller_cell(connector, preset, seeds, seed, out, train)
        return learned_cell(connector, method, preset, seeds, seed, out, log, train, train_kwargs)

    # Finished cells are read back first, so the ETA counts only the cells
    # that run in this session.
    finished = {cell: row_of(cell, False) for cell in cells}
    pending = [cell for cell in cells if finished[cell] is None]
    rows, progress = [], run_dir.Progress(len(pending))
    for number, cell in enumerate(cells, 1):
        row = finished[cell]
        head = f'[{number}/{len(cells)}] {cell[0]} {cell[1]}'
        if row is None:
            ran = pending.index(cell)
            eta = f', eta {progress.eta(ran)}' if ran else ''
            log(f'{head} ({progress.wall():.0f} s{eta})')
            row = row_of(cell, True)
            # Each cell compiles its own programs; a process that kept them
            # all would run out of memory mappings (runner.release_compiled_code).
            runner.release_compiled_code()
        else:
            log(f'{head}: finished, read back')
        rows.append(row)
        log(f'    exact {row.cell("exact")}, ±1 mm {row.cell("noisy")}')
    rows = _with_other_finished_cells(rows, out, row_of, log)
    if writer:
        write_outputs(rows, out)
    log(
        f'\nWrote {out}/: table.csv, table.md, table.png, '
        f'{", ".join(f"curves_{c}.png" for c in dict.fromkeys(r.connector for r in rows))}, '
        'effects.md, runs/'
    )
    return rows


def _with_other_finished_cells(
    rows: List[paper_table.Row],
    out: str,
    row_of: Callable[[Tuple[str, str], bool], Optional[paper_table.Row]],
    log: Callable[[str], None],
) -> List[paper_table.Row]:
    """`rows` and every other cell of `out` that has finished with the same
    preset, seeds and first seed (`row_of(cell, False)`: read back, never
    trained), in the table's order: running a part (say
    `connectors=['model_e']`) after the whole table adds to its outputs
    instead of replacing them. A cell of another configuration is left out,
    with a line in the log."""
    ran = {(r.connector, r.method) for r in rows}
    rows = list(rows)
    for cell in _all_pairs():
        if cell in ran or not os.path.isdir(_cell_dir(out, *cell)):
            continue
        try:
            row = row_of(cell, False)
        except run_dir.ConfigMismatchError as e:
            log(f'Left out of the table: {e}')
            continue
        if row is not None:
            rows.append(row)
    order = {(c, m): i for i, (c, m) in enumerate(_all_pairs())}
    return sorted(rows, key=lambda r: order[(r.connector, r.method)])


def _all_pairs() -> List[Tuple[str, str]]:
    return [(c, m) for c in paper_table.CONNECTORS for m in paper_table.METHODS]


# ------------------------------------------------------------ outputs
def write_outputs(rows: Sequence[paper_table.Row], out: str) -> None:
    run_dir.write_text(os.path.join(out, 'table.csv'), paper_table.table_csv(rows))
    run_dir.write_text(os.path.join(out, 'table.md'), paper_table.table_markdown(rows) + '\n')
    run_dir.write_text(
        os.path.join(out, 'effects.md'), paper_table.effects_markdown(paper_table.effects(rows))
    )
    plot_table(rows, os.path.join(out, 'table.png'))
    for connector in dict.fromkeys(r.connector for r in rows):
        plot_curves(out, connector, [r.method for r in rows if r.connector == connector])


def plot_table(rows: Sequence[paper_table.Row], path: str) -> None:
    """The paper's layout: a panel per connector, a group of bars per method
    (exact goal, ±1 mm), 95% intervals as error bars, the paper's rates as
    black ticks."""
    connectors = list(dict.fromkeys(r.connector for r in rows))
    fig, axes = plt.subplots(
        1, len(connectors), figsize=(5.5 * len(connectors), 4.2), squeeze=False, sharey=True
    )
    for ax, connector in zip(axes[0], connectors, strict=True):
        cells = [r for r in rows if r.connector == connector]
        x = np.arange(len(cells))
        for offset, condition, colour in (
            (-0.2, 'exact', 'tab:blue'),
            (0.2, 'noisy', 'tab:orange'),
        ):
            values = np.array([100 * getattr(r, condition) for r in cells])
            low = np.array([100 * r.interval(condition)[0] for r in cells])
            high = np.array([100 * r.interval(condition)[1] for r in cells])
            label = 'exact goal' if condition == 'exact' else '±1 mm goal'
            ax.bar(x + offset, values, 0.38, color=colour, label=label)
            ax.errorbar(
                x + offset, values, yerr=[values - low, high - values], fmt='none', ecolor='k', lw=1
            )
            paper = [getattr(r, f'paper_{condition}') for r in cells]
            px = [xi + offset for xi, p in zip(x, paper, strict=True) if p is not None]
            py = [100 * p for p in paper if p is not None]
            ax.scatter(
                px,
                py,
                marker='_',
                s=300,
                color='k',
                zorder=3,
                label='paper' if condition == 'exact' else None,
            )
        ax.set_xticks(
            x,
            [paper_table.METHOD_TITLES[r.method] for r in cells],
            rotation=35,
            ha='right',
            fontsize=8,
        )
        ax.set_title(connector)
        ax.set_ylim(0, 105)
        ax.grid(axis='y', alpha=0.3)
    axes[0][0].set_ylabel('success (%), 95% interval')
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    plots.save_figure(fig, path)


def plot_curves(out: str, connector: str, methods: Sequence[str]) -> None:
    """Evaluation success against environment steps, per learned method of
    `connector` (mean over seeds, bootstrap 95% band), with the
    P-controller's success on the same episodes as a dashed line."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    p_result = os.path.join(_cell_dir(out, connector, 'p_controller'), 'result.json')
    if os.path.exists(p_result):
        counts = run_dir.read_json(p_result)
        for ax, condition in zip(axes, ('exact', 'noisy'), strict=True):
            rate = 100 * counts[condition] / counts['episodes']
            ax.axhline(rate, color='k', ls='--', lw=1, label='P-controller')
    for method in methods:
        path = os.path.join(_cell_dir(out, connector, method), 'metrics.jsonl')
        if method == 'p_controller' or not os.path.exists(path):
            continue
        records = run_dir.Records(path).read()
        num_seeds = len({r['seed'] for r in records})
        for ax, condition in zip(axes, ('exact', 'noisy'), strict=True):
            steps, values = plots.curves(records, f'eval/success_{condition}', num_seeds)
            if not steps.size:
                continue
            mean, low, high = plots.mean_and_band(100 * values)
            (line,) = ax.plot(
                steps, mean, marker='o', ms=3, label=paper_table.METHOD_TITLES[method]
            )
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    for ax, title in zip(axes, ('exact goal', '±1 mm goal'), strict=True):
        ax.set_title(f'{connector}, {title}')
        ax.set_xlabel('environment steps per seed')
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('evaluation success (%)')
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    plots.save_figure(fig, os.path.join(out, f'curves_{connector}.png'))
