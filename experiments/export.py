r"""Exports a trained run's deterministic policy for the robot loop.

  python -m experiments.export --run=runs/usb_residual_sac --out=exports/usb_sac

Writes policy.bin (the policy serialized by `jax.export`: StableHLO for the
CPU and CUDA, the actor's parameters and the observation normalizer inside,
any batch size) and policy.json (task, observation fields and units, command
units and scale, control rate, mode and P-controller gains, jax and jaxlib
versions, source run, date) into --out. `hardware.policy.load(--out)` runs
it with jax and numpy alone; `python -m hardware.run_policy --policy=--out`
drives a robot with it.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import common
from insertion_jax.training import export, run_dir

_RUN = flags.DEFINE_string('run', None, 'Directory of a finished training run.')
_OUT = flags.DEFINE_string('out', None, 'Directory to write policy.bin and policy.json into.')
_SEED_INDEX = flags.DEFINE_integer(
    'seed_index', 0, "Which of the run's seeds to export (0 = its first).", lower_bound=0
)
_PLATFORMS = flags.DEFINE_list(
    'platforms', list(export.PLATFORMS), 'Platforms the export runs on (cpu, cuda, rocm, tpu).'
)
_JSON = flags.DEFINE_bool('json', False, 'Print policy.json as one JSON line at the end.')

KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if not _RUN.value or not os.path.isfile(os.path.join(_RUN.value, 'config.json')):
        raise app.UsageError(f'--run={_RUN.value!r} is not a training run (no config.json there).')
    if not _OUT.value:
        raise app.UsageError('--out is required: the directory to write the export into.')
    bad = [p for p in _PLATFORMS.value if p not in KNOWN_PLATFORMS]
    if bad or not _PLATFORMS.value:
        raise app.UsageError(
            f'--platforms={",".join(_PLATFORMS.value)}: choose from {", ".join(KNOWN_PLATFORMS)}.'
        )
    try:
        spec = export.export_run(_RUN.value, _OUT.value, _SEED_INDEX.value, _PLATFORMS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(
        f'Exported {spec["task"]} ({spec["algo"]}, {spec["mode"]["name"]}, seed {spec["seed_index"]}) '
        f'from {_RUN.value} to {_OUT.value}: policy.bin, policy.json '
        f'(platforms {", ".join(spec["platforms"])})'
    )
    if _JSON.value:
        print(run_dir.dumps(spec))


if __name__ == '__main__':
    app.run(main)
