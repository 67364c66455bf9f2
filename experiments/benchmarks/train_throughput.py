r"""Environment steps per second of the whole training loop (physics + updates).

  python -m experiments.benchmarks.train_throughput [--seeds=1,4,16] [--json]

Times `loop.make_train_fn` (collection, replay and gradient updates in one jitted
call) at UTD 1 on the residual-SAC USB configuration that `experiments.train`
builds from its flags (defaults unless given here, e.g. --num_envs=64), with
1, 4 and 16 vmapped seeds. It also reports how long
the default run (`make train`, read from --run_dir; trained there first if
missing) took to reach 90% success with the exact goal and with +-1 mm goal
noise (mean over its seeds, wall-clock including compilation).

Scaling over devices (`--devices=all`, the default, or a count): with
`--seeds_per_device=1,4,16,64` seeds on each device, the seeds laid out over
the devices (`distributed.make_layout`) and, for the speed-up, the same seeds
on one device. To try it on a CPU, force host devices:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m experiments.benchmarks.train_throughput --devices=all --seeds_per_device=1,4 --json

The last line (with --json) is one JSON object: env_steps_per_s by seed count
(one device), updates_per_s, num_devices, seeds_per_device ({k: seeds,
env_steps_per_s on the devices and on one, speedup}), seconds_to_90pct and
seconds_to_90pct_noisy.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
from absl import app, flags

from experiments import common
from experiments import train as train_experiment
from insertion_jax.training import distributed, loop, plots, runner
from insertion_jax.training import run_dir as run_dir_lib

_SEEDS = flags.DEFINE_list('seeds', ['1', '4', '16'], 'Seed counts to time.')
_CALLS = flags.DEFINE_integer('calls', 3, 'Timed device calls per seed count.', lower_bound=1)
_RUN_DIR = flags.DEFINE_string(
    'run_dir', 'runs/usb_residual_sac', 'Default run to read the time to 90% from.'
)
_JSON = flags.DEFINE_bool('json', False, 'Print the results as JSON on the last line.')
_DEVICES = flags.DEFINE_string(
    'devices', 'all', "Devices to lay the seeds over: 'all' or a count (the first N)."
)
_PER_DEVICE = flags.DEFINE_list(
    'seeds_per_device', ['1', '4', '16', '64'], 'Seeds per device to time over the devices.'
)


def _devices(value: str):
    available = jax.devices()
    if value == 'all':
        return available
    if not value.isdigit() or not 1 <= int(value) <= len(available):
        raise app.UsageError(
            f"--devices={value}: 'all' or a count from 1 to {len(available)} (the devices here)."
        )
    return available[: int(value)]


def time_calls(run, state, calls: int) -> float:
    """Seconds per call of `run` after two untimed ones (compile; learning starts)."""
    state, _ = run(state)
    state, _ = run(state)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(calls):
        state, metrics = run(state)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / calls


def scaling(components, devices, per_device, calls) -> dict:
    """{k: seeds, env steps/s over `devices` and on the first alone, speed-up}
    for k seeds per device."""
    steps_per_call = components.config.env_steps_per_iteration
    out = {}
    for k in per_device:
        seeds = k * len(devices)
        rates = {}
        for name, used in (('devices', devices), ('one_device', devices[:1])):
            if name == 'one_device' and len(devices) == 1:
                rates[name] = rates['devices']  # the same run: timed once
                continue
            layout = distributed.make_layout(seeds, components.config.num_envs, used)
            state = loop.init_states(components, 0, seeds, layout=layout)
            seconds = time_calls(loop.make_train_fn(components, 1, layout), state, calls)
            rates[name] = seeds * steps_per_call / seconds
            del state
        out[str(k)] = {
            'seeds': seeds,
            'env_steps_per_s': round(rates['devices'], 1),
            'env_steps_per_s_one_device': round(rates['one_device'], 1),
            'speedup': round(rates['devices'] / rates['one_device'], 3),
        }
        print(
            f'{k:>3} seed(s) per device x {len(devices)} device(s): '
            f'{rates["devices"]:8.1f} env steps/s; one device {rates["one_device"]:8.1f}; '
            f'speed-up {rates["devices"] / rates["one_device"]:.2f}x',
            flush=True,
        )
    return out


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    try:
        seed_counts = [int(s) for s in _SEEDS.value]
    except ValueError as e:
        raise app.UsageError(f'--seeds={",".join(_SEEDS.value)} must be integers.') from e
    if min(seed_counts) <= 0:
        raise app.UsageError(f'--seeds={",".join(_SEEDS.value)} must be positive.')
    per_device = common.batch_sizes(_PER_DEVICE.value, 'seeds_per_device')
    devices = _devices(_DEVICES.value)
    run_dir, calls, as_json = _RUN_DIR.value, _CALLS.value, _JSON.value
    common.enable_compilation_cache()
    train_config, run_config = train_experiment.build_configs()
    bench_config = dataclasses.replace(train_config, utd=1.0)
    components = loop.make_components(bench_config)
    run = loop.make_train_fn(components, 1)
    result = {
        'device': str(jax.devices()[0].device_kind),
        'utd': 1.0,
        'num_envs': bench_config.num_envs,
        'env_steps_per_s': {},
        'updates_per_s': {},
    }
    for seeds in seed_counts:
        seconds = time_calls(run, loop.init_states(components, 0, seeds), calls)
        steps = seeds * bench_config.env_steps_per_iteration
        updates = seeds * bench_config.updates_per_iteration
        result['env_steps_per_s'][str(seeds)] = round(steps / seconds, 1)
        result['updates_per_s'][str(seeds)] = round(updates / seconds, 1)
        print(
            f'{seeds:>3} seed(s): {steps / seconds:8.1f} env steps/s, '
            f'{updates / seconds:8.1f} updates/s (all seeds)',
            flush=True,
        )
    result['num_devices'] = len(devices)
    result['seeds_per_device'] = scaling(components, devices, per_device, calls)

    if not os.path.exists(os.path.join(run_dir, 'summary.json')):
        print(f'{run_dir} has no finished run: training the default configuration there...')
        runner.train(train_config, run_config, run_dir)
    records = run_dir_lib.Records(os.path.join(run_dir, 'metrics.jsonl')).read()
    num_seeds = run_dir_lib.read_json(os.path.join(run_dir, 'config.json'))['run']['num_seeds']
    for key, name in (('eval/success_exact', ''), ('eval/success_noisy', '_noisy')):
        steps, seconds = plots.first_reaching(records, key, 0.9, num_seeds)
        result[f'seconds_to_90pct{name}'] = seconds
        result[f'env_steps_to_90pct{name}'] = steps
    result['run_dir'] = run_dir
    print(
        f'default run in {run_dir}: 90% exact after {result["seconds_to_90pct"]} s, '
        f'90% with ±1 mm noise after {result["seconds_to_90pct_noisy"]} s'
    )
    if as_json:
        print(run_dir_lib.dumps(result))


if __name__ == '__main__':
    app.run(main)
