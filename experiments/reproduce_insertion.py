r"""Reproduces the residual-RL paper's results table in simulation.

  python -m experiments.reproduce_insertion --preset=cpu --out=runs/reproduce
  python -m experiments.reproduce_insertion --preset=paper --out=runs/reproduce_paper  # a GPU
  python -m experiments.reproduce_insertion --preset=cpu --connectors=usb \
      --methods=p_controller,residual_sac_dense,pure_sac_dense --seeds=3 --out=runs/usb_only

Trains and evaluates every cell (connector x method) of the paper's table,
and USB's pure RL with the sparse reward, which effect 4 needs (19 of the 27
pairs; --cells=all runs every pair), each in its own run directory under --out/runs/ (seeds vmapped), and judges
each final policy with the paper's protocol: the exact goal and the goal told
up to ±1 mm off, on the P-controller's episodes (`insertion_jax.training.
reproduction`). The same command skips finished cells and resumes a stopped
one from its checkpoint. Writes into --out: table.csv (a row per connector
and method: connector, method, exact, noisy, their Wilson 95% bounds
exact_low, exact_high, noisy_low, noisy_high, paper_exact, paper_noisy,
seeds, episodes, steps_to_high), table.md, table.png (the paper's layout),
curves_CONNECTOR.png and effects.md (the paper's five effects, each shown,
not shown or not run, with the numbers that decide it).

Presets: toy (the test suite's, seconds), cpu (those 19 cells on a 2-core
CPU in about 1 h 45 min; BUILD_NOTES says what it scales down), paper (a
GPU). A finished cell that differs only in its
length (fewer steps) is extended, not read back. Each cell's seeds lie over
every device; --coordinator_address, --num_processes and --process_id run the
table over several processes or hosts (README, "Scaling out").
"""

from __future__ import annotations

from absl import app, flags

from experiments import common
from insertion_jax.training import paper_table, reproduction

_PRESET = flags.DEFINE_enum('preset', 'cpu', list(reproduction.PRESETS), 'Run sizes.')
_OUT = flags.DEFINE_string('out', 'runs/reproduce_insertion', 'Output directory.')
common.define_run_flags(__name__)
common.define_process_flags(__name__)
_CONNECTORS = flags.DEFINE_list(
    'connectors', list(paper_table.CONNECTORS), 'Connectors (rows of the table).'
)
_METHODS = flags.DEFINE_list('methods', list(paper_table.METHODS), 'Methods (columns).')
_SEEDS = flags.DEFINE_integer(
    'seeds', None, "Seeds per cell (default: the preset's).", lower_bound=1
)
_SEED = flags.DEFINE_integer('seed', 0, 'First seed (and the evaluation episodes).')
_CELLS = flags.DEFINE_enum(
    'cells',
    'paper',
    ['paper', 'all'],
    "paper: the connector x method pairs the paper's table reports, and the one its effect 4 "
    'needs (19); all: every pair.',
)


def _choices(flag: str, values, allowed) -> tuple:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise app.UsageError(
            f'--{flag}={",".join(values)}: {", ".join(bad) or "empty"} not among '
            f'{", ".join(allowed)}.'
        )
    return tuple(dict.fromkeys(values))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.join_processes()
    connectors = _choices('connectors', _CONNECTORS.value, paper_table.CONNECTORS)
    methods = _choices('methods', _METHODS.value, paper_table.METHODS)
    common.enable_compilation_cache()
    try:
        reproduction.run(
            reproduction.PRESETS[_PRESET.value],
            _OUT.value,
            connectors,
            methods,
            seeds=_SEEDS.value,
            seed=_SEED.value,
            paper_cells_only=_CELLS.value == 'paper',
            train_kwargs=common.run_kwargs(),
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e


if __name__ == '__main__':
    app.run(main)
