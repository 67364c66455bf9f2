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
that is meant to move them must regenerate the file and say why.
"""

import json
import os

import numpy as np

REFERENCE = os.path.join(os.path.dirname(__file__), 'data', 'small_run_metrics.jsonl')
# Wall-clock time is the only field that is not a function of the seed.
UNSEEDED = ('wall_clock_s',)


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_small_run_metrics_match_the_pinned_reference(small_run_dir):
    got = read(os.path.join(small_run_dir, 'metrics.jsonl'))
    want = read(REFERENCE)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w), sorted(set(g) ^ set(w))
        for key, expected in w.items():
            if key in UNSEEDED:
                continue
            value = g[key]
            where = f'iteration {w["iteration"]}, {key}'
            if expected is None or isinstance(expected, (bool, int)):
                assert value == expected, (where, value, expected)
            else:
                # float32 rounding: a few ulps of the value, relative.
                np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7, err_msg=where)
