"""The metrics of a short fixed-seed residual SAC run do not move when code is reshaped.

`tests/data/small_run_metrics.jsonl` is the `metrics.jsonl` that the shared
SMALL run (conftest: residual SAC on USB, the learning test's configuration,
one seed, four iterations of 480 steps, updates from the second on, one
evaluation at the end) wrote once the environments were batched once under
the seed vmap (`envs.base.batched`). Batched twice, one seed's physics
compiled to other kernels, and contact amplified their last-bit differences
into other episodes from the first iteration on. Before that change the file
had been pinned at commit f40d199, before the training package was split.
Every record must match it: the same keys, integers exactly, floats to float32
rounding. A real change of behaviour (another key split, another update
order, another reward) moves these numbers by far more than that; a change
that is meant to move them must regenerate the files and say why.

One file per CPU family: XLA compiles for the host CPU, and an AMD EPYC with
AVX-512 rounds the physics differently in the last bit from the machine the
first file was made on (its first iteration's return already differs, and
the same machine repeats its own numbers exactly). The run must match one of
the files in full. A CPU that matches none gets a file of its own only after
the code has been shown unchanged on a CPU that matches one
(`small_run_metrics.<family>.jsonl`, BUILD_NOTES).
"""

import glob
import json
import os

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), 'data')
REFERENCES = sorted(glob.glob(os.path.join(DATA, 'small_run_metrics*.jsonl')))
# Wall-clock time is the only field that is not a function of the seed.
UNSEEDED = ('wall_clock_s',)


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mismatch(got, want):
    """The first difference between two metrics files, or None."""
    if len(got) != len(want):
        return f'{len(got)} records, the reference {len(want)}'
    for g, w in zip(got, want, strict=True):
        if set(g) != set(w):
            return f'keys differ: {sorted(set(g) ^ set(w))}'
        for key, expected in w.items():
            if key in UNSEEDED:
                continue
            value = g[key]
            where = f'iteration {w["iteration"]}, {key}: {value!r}, the reference {expected!r}'
            if expected is None or isinstance(expected, (bool, int)):
                if value != expected:
                    return where
            # float32 rounding: a few ulps of the value, relative.
            elif not np.allclose(value, expected, rtol=1e-5, atol=1e-7):
                return where
    return None


def test_small_run_metrics_match_a_pinned_reference(small_run_dir):
    assert len(REFERENCES) >= 2, REFERENCES
    got = read(os.path.join(small_run_dir, 'metrics.jsonl'))
    misses = {os.path.basename(path): mismatch(got, read(path)) for path in REFERENCES}
    assert None in misses.values(), misses


def test_the_comparison_sees_a_last_bit_change_and_a_missing_key():
    want = read(REFERENCES[0])
    assert mismatch(want, want) is None
    nudged = [dict(record) for record in want]
    nudged[-1]['critic_loss'] = float(np.float32(nudged[-1]['critic_loss']) * (1 + 1e-4))
    assert 'critic_loss' in mismatch(nudged, want)
    del nudged[0]['episode_return']
    assert 'keys differ' in mismatch(nudged, want)
