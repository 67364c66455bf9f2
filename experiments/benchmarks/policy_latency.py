r"""How long the robot loop waits for an exported policy: one call at batch 1.

  python -m experiments.benchmarks.policy_latency --policy=EXPORT_DIR --json

Loads the export as the robot loop does (`hardware.policy.load`), calls it
--warmup times (the first compiles), then times --calls calls, each on a
new observation as numpy in and numpy out (what `hardware.run_policy` pays
per control step: the input check, the transfer, the call, the result back).
Prints p50, p99 and the maximum in milliseconds, and with --json one JSON
object on the last line. Targets on a 2-core CPU: p99 under 1 ms for a state
policy, under 3 ms for an image policy.
"""

from __future__ import annotations

import json
import platform
import time

import jax
import numpy as np
from absl import app, flags

from hardware import policy as hw_policy

_POLICY = flags.DEFINE_string('policy', None, 'An export directory (experiments.export).')
_CALLS = flags.DEFINE_integer('calls', 2000, 'Timed calls.', lower_bound=10)
_WARMUP = flags.DEFINE_integer('warmup', 50, 'Calls before timing.', lower_bound=1)
_JSON = flags.DEFINE_bool('json', False, 'Print the result as JSON on the last line.')


def random_observations(spec, n: int, seed: int = 0):
    """`n` observations in the shapes and dtypes of policy.json's inputs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        obs = {}
        for item in spec['observation']['inputs']:
            shape, dtype = tuple(item['shape']), np.dtype(item['dtype'])
            if dtype == np.uint8:
                obs[item['key']] = rng.integers(0, 256, shape).astype(np.uint8)
            else:
                obs[item['key']] = rng.normal(0.0, 5.0, shape).astype(dtype)
        out.append(obs[''] if '' in obs else obs)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if not _POLICY.value:
        raise app.UsageError('--policy is required: an export directory (experiments.export).')
    try:
        policy = hw_policy.load(_POLICY.value)
    except hw_policy.PolicyLoadError as e:
        raise app.UsageError(str(e)) from e
    observations = random_observations(policy.spec, _WARMUP.value + _CALLS.value)
    for obs in observations[: _WARMUP.value]:
        policy(obs)
    times = []
    for obs in observations[_WARMUP.value :]:
        start = time.perf_counter()
        policy(obs)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    has_image = any(item['dtype'] == 'uint8' for item in policy.spec['observation']['inputs'])
    result = {
        'policy': _POLICY.value,
        'task': policy.task,
        'observation': 'image' if has_image else 'state',
        'device': str(jax.devices()[0].device_kind),
        'platform': jax.default_backend(),
        'cpu': platform.processor() or platform.machine(),
        'calls': _CALLS.value,
        'p50_ms': round(float(np.percentile(ms, 50)), 4),
        'p99_ms': round(float(np.percentile(ms, 99)), 4),
        'max_ms': round(float(ms.max()), 4),
        'target_p99_ms': 3.0 if has_image else 1.0,
    }
    print(
        f'{policy.task} ({result["observation"]} policy), batch 1: p50 {result["p50_ms"]:.3f} ms, '
        f'p99 {result["p99_ms"]:.3f} ms, max {result["max_ms"]:.3f} ms over {_CALLS.value} calls'
    )
    if _JSON.value:
        print(json.dumps(result))


if __name__ == '__main__':
    app.run(main)
