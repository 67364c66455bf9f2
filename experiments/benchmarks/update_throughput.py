r"""Gradient updates per second of SAC, TD3 and DDPG, against this machine's limit.

  python -m experiments.benchmarks.update_throughput [--shapes=256x256:256,64x64:512] [--json]

For each network shape (hidden widths : batch size) and agent, times
`agent.update` run `--updates` times inside one jitted `lax.scan` over
pre-drawn batches (state observations of the insertion task: 4-D obs, 3-D
actions). The machine's limit for that update is measured in the same run:
XLA's FLOP count of one update (its cost analysis) divided by the GFLOP/s this
machine reaches on plain jitted matmuls with the update's layer shapes (each
layer's forward product and the two products of its backward pass).
`fraction_of_limit` is the measured rate over that limit.

Image SAC (`--image_shape`, default 64x64:128) is timed the same way on
32x32 grayscale image observations (uint8, the CNN encoder of
`agents.networks`, random-shift augmentation as the training loop applies
it), without a FLOP limit: image_sac_updates_per_s.

The last line (with --json) is one JSON object: {shape: {algo_updates_per_s,
algo_fraction_of_limit, ...}, plus the matmul GFLOP/s}, and the top-level keys
sac_updates_per_s, td3_updates_per_s, ddpg_updates_per_s as dicts by shape,
and image_sac_updates_per_s.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import common
from insertion_jax import observations, types
from insertion_jax.agents import registry as agent_registry
from insertion_jax.training import loop

_SHAPES = flags.DEFINE_list(
    'shapes', ['256x256:256', '64x64:512'], 'Network shapes as WIDTHxWIDTH:BATCH.'
)
_ALGOS = flags.DEFINE_list('algos', ['sac', 'td3', 'ddpg'], 'Agents to time.')
_UPDATES = flags.DEFINE_integer('updates', 200, 'Updates per timed call.', lower_bound=1)
_MIN_SECONDS = flags.DEFINE_float('min_seconds', 3.0, 'Time each case at least this long.')
_IMAGE_SHAPE = flags.DEFINE_string(
    'image_shape', '64x64:128', 'Shape of the image SAC case (WIDTHxWIDTH:BATCH); empty: skip.'
)
_JSON = flags.DEFINE_bool('json', False, 'Print the results as JSON on the last line.')

OBS_DIM, ACTION_DIM = 4, 3


def parse_shape(text: str) -> Tuple[Tuple[int, ...], int]:
    """'256x256:256' -> ((256, 256), 256)."""
    try:
        widths, batch = text.split(':')
        hidden = tuple(int(w) for w in widths.split('x'))
        batch = int(batch)
    except ValueError as e:
        raise app.UsageError(f'--shapes entry {text!r} is not WIDTHxWIDTH:BATCH ({e}).') from e
    if batch <= 0 or min(hidden) <= 0:
        raise app.UsageError(f'--shapes entry {text!r}: sizes must be positive.')
    return hidden, batch


def timed(fn: Callable, *args, min_seconds: float) -> float:
    """Seconds per call of a jitted `fn` (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    calls, start = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn(*args))
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def flops_of(jitted: Callable, *args) -> float:
    """XLA's FLOP count (cost analysis) of one call of the jitted `jitted(*args)`."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis['flops'])


def matmul_gflops(hidden: Tuple[int, ...], batch: int, repeats: int, min_seconds: float) -> float:
    """GFLOP/s of jitted matmuls with the shapes of a training step of a critic
    (obs+act -> hidden... -> 1): per layer (B, a) @ (a, b) forward, and the
    backward pass's (B, b) @ (b, a) and (a, B) @ (B, b)."""
    dims = (OBS_DIM + ACTION_DIM,) + tuple(hidden) + (1,)
    layers = list(zip(dims[:-1], dims[1:], strict=True))
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 3 * len(layers)))
    operands = [
        (
            jax.random.normal(next(keys), (batch, a), jnp.float32),
            jax.random.normal(next(keys), (a, b), jnp.float32) / a**0.5,
            jax.random.normal(next(keys), (batch, b), jnp.float32),
        )
        for a, b in layers
    ]

    @jax.jit
    def products(operands):
        def body(total, _):
            # Operands depend on the carry so that XLA cannot hoist the
            # products out of the loop.
            shift = 1e-20 * total
            for x, w, dy in operands:
                x, dy = x + shift, dy + shift
                total = total + jnp.sum(x @ w) + jnp.sum(dy @ w.T) + jnp.sum(x.T @ dy)
            return total * 0.5, None

        return jax.lax.scan(body, jnp.zeros(()), None, length=repeats)[0]

    seconds = timed(products, operands, min_seconds=min_seconds)
    flops = repeats * sum(3 * 2 * batch * a * b for a, b in layers)
    return flops / seconds / 1e9


STATE_SPEC = jax.ShapeDtypeStruct((OBS_DIM,), jnp.float32)
IMAGE_SPEC = {
    observations.IMAGE: jax.ShapeDtypeStruct((32, 32, 1), jnp.uint8),
    observations.CONTROLLER: STATE_SPEC,
}


def random_obs(key: jax.Array, spec, lead: Tuple[int, ...]):
    """Random observations shaped like `spec` with leading axes `lead`."""

    def draw(key, s):
        if s.dtype == jnp.uint8:
            return jax.random.randint(key, lead + s.shape, 0, 256).astype(jnp.uint8)
        return jax.random.normal(key, lead + s.shape, s.dtype)

    leaves, tree = jax.tree.flatten(spec)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [draw(k, s) for k, s in zip(keys, leaves, strict=True)])


def bench_agent(
    algo: str,
    hidden: Tuple[int, ...],
    batch: int,
    updates: int,
    min_seconds: float,
    obs_spec=STATE_SPEC,
) -> Tuple[float, float]:
    """(updates per second, FLOPs per update) of agent `algo` with `hidden`
    widths on batches of `batch` random transitions with observations of
    `obs_spec`, `updates` scanned updates per timed call. Image batches get the
    training loop's random shift (2 pixels) inside the timed update."""
    agent = agent_registry.make_agent(
        algo, agent_registry.config_class(algo)(hidden=hidden), ACTION_DIM
    )
    state = agent.init(
        jax.random.PRNGKey(0), obs_spec, jax.ShapeDtypeStruct((ACTION_DIM,), jnp.float32)
    )
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    batches = types.make_transition(
        obs=random_obs(keys[0], obs_spec, (updates, batch)),
        action=jax.random.uniform(keys[1], (updates, batch, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(keys[2], (updates, batch)),
        discount=jnp.full((updates, batch), 0.99),
        next_obs=random_obs(keys[3], obs_spec, (updates, batch)),
    )

    def augment(batch, key):
        if not observations.has_image(obs_spec):
            return batch
        key_obs, key_next = jax.random.split(key)

        def shift(obs, key):
            return {**obs, observations.IMAGE: loop.random_shift(obs[observations.IMAGE], 2, key)}

        return batch.replace(
            obs=shift(batch.obs, key_obs), next_obs=shift(batch.next_obs, key_next)
        )

    @jax.jit
    def many(state, batches, key):
        def body(state, xs):
            batch, key = xs
            return agent.update(state, augment(batch, key), key)[0], None

        return jax.lax.scan(body, state, (batches, jax.random.split(key, updates)))[0]

    @jax.jit
    def one(state, batch, key):
        return agent.update(state, batch, key)[0]

    seconds = timed(many, state, batches, keys[4], min_seconds=min_seconds)
    flops = flops_of(one, state, jax.tree.map(lambda x: x[0], batches), keys[4])
    return updates / seconds, flops


def main(argv: Sequence[str]) -> None:
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    shapes = [parse_shape(s) for s in _SHAPES.value]
    common.enable_compilation_cache()
    for algo in _ALGOS.value:
        try:
            agent_registry.validate_algo(algo)
        except ValueError as e:
            raise app.UsageError(str(e)) from e
    result = {'device': str(jax.devices()[0].device_kind), 'shapes': {}}
    for hidden, batch in shapes:
        name = f'{"x".join(map(str, hidden))}_batch{batch}'
        gflops = matmul_gflops(hidden, batch, 500, _MIN_SECONDS.value)
        entry = {'matmul_gflops': round(gflops, 2)}
        for algo in _ALGOS.value:
            rate, flops = bench_agent(algo, hidden, batch, _UPDATES.value, _MIN_SECONDS.value)
            limit = gflops * 1e9 / flops
            entry[f'{algo}_updates_per_s'] = round(rate, 1)
            entry[f'{algo}_mflops_per_update'] = round(flops / 1e6, 2)
            entry[f'{algo}_limit_updates_per_s'] = round(limit, 1)
            entry[f'{algo}_fraction_of_limit'] = round(rate / limit, 3)
            print(
                f'{name:>18} {algo:>4}: {rate:8.1f} updates/s, limit {limit:8.1f} '
                f'({100 * rate / limit:5.1f}%), {flops / 1e6:.1f} MFLOP/update, '
                f'matmul {gflops:.1f} GFLOP/s',
                flush=True,
            )
        result['shapes'][name] = entry
    for algo in _ALGOS.value:
        result[f'{algo}_updates_per_s'] = {
            name: entry[f'{algo}_updates_per_s'] for name, entry in result['shapes'].items()
        }
    if _IMAGE_SHAPE.value:
        hidden, batch = parse_shape(_IMAGE_SHAPE.value)
        name = f'image32_{"x".join(map(str, hidden))}_batch{batch}'
        rate, flops = bench_agent(
            'sac', hidden, batch, max(1, _UPDATES.value // 10), _MIN_SECONDS.value, IMAGE_SPEC
        )
        result['image_sac_updates_per_s'] = {name: round(rate, 1)}
        result['image_sac_mflops_per_update'] = {name: round(flops / 1e6, 1)}
        print(f'{name:>18}  sac: {rate:8.1f} updates/s, {flops / 1e6:.1f} MFLOP/update', flush=True)
    if _JSON.value:
        print(json.dumps(result))


if __name__ == '__main__':
    app.run(main)
