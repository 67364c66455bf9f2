r"""Throughput of the prioritized replay against flashbax's, and DER's share of an update.

  python -m experiments.benchmarks.replay_throughput [--capacity=1000000] [--batch=512] [--json]

Both buffers hold `--capacity` transitions of the assembly tasks (13-D
observations, 6-D actions, reward, discount, next observation) with priority
exponent 0.6 and are filled before timing. Each operation runs `--reps` times
inside one jitted `lax.scan` with the buffer state donated, so dispatch does
not count:

  add             `--batch` new transitions per call
  sample          a batch of `--batch` transitions (with importance weights
                  for ours; flashbax returns probabilities)
  set_priorities  `--batch` new priorities at random slots

and prints items per second for each, for ours
(`insertion_jax.replay.prioritized`) and for flashbax's prioritised flat
buffer (a bench-only dependency: `pip install -e .[bench]`), and
`ratio_vs_flashbax` = ours / flashbax per operation.

`der_overhead` is the share of an Ape-X DDPG update step (64x64 networks,
batch `--batch`) spent in DER bookkeeping: drawing the batch from one of 6
prioritized buffers (1,000,000 transitions in all), writing the |TD errors|
back, and the zone refreshes (one every 1,000 updates), timed as the training
loop runs them (`--der_updates` updates, then the refreshes due), i.e.
1 - t(updates on a ready batch) / t(the same with DER bookkeeping).
"""

from __future__ import annotations

import json
import platform
import time

from absl import app, flags

from experiments import common

_CAPACITY = flags.DEFINE_integer('capacity', 1_000_000, 'Buffer capacity.', lower_bound=1)
_BATCH = flags.DEFINE_integer('batch', 512, 'Items per operation.', lower_bound=1)
_REPS = flags.DEFINE_integer('reps', 200, 'Operations per timed call.', lower_bound=1)
_MIN_SECONDS = flags.DEFINE_float('min_seconds', 2.0, 'Time each case at least this long.')
_DER_UPDATES = flags.DEFINE_integer(
    'der_updates', 1_000, 'Updates per timed call for der_overhead.', lower_bound=1
)
_JSON = flags.DEFINE_bool('json', False, 'Print the results as JSON on the last line.')

OBS_DIM, ACTION_DIM = 13, 6


def timed(fn, state, *args, min_seconds: float):
    """(seconds per call, final state) of a jitted, state-donating `fn`."""
    import jax  # pylint: disable=import-outside-toplevel

    state, out = fn(state, *args)
    jax.block_until_ready(out)
    calls, start = 0, time.perf_counter()
    while True:
        state, out = fn(state, *args)
        jax.block_until_ready(out)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls, state


def transitions(key, n):
    import jax  # pylint: disable=import-outside-toplevel

    from insertion_jax.agents import base  # pylint: disable=import-outside-toplevel

    k = jax.random.split(key, 4)
    return base.make_transition(
        obs=jax.random.normal(k[0], (n, OBS_DIM)),
        action=jax.random.uniform(k[1], (n, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        discount=jax.numpy.full((n,), 0.97),
        next_obs=jax.random.normal(k[3], (n, OBS_DIM)),
    )


def timed_ops(add, sample, set_priorities, probe, capacity, batch, reps):
    """Jitted, state-donating scans of `reps` operations of a buffer:
    (add, sample, set_priorities), each `(state, arg) -> (state, output)`.

    add(state, items) -> state; sample(state, key) -> a scalar that depends on
    the batch (so nothing is optimized away); set_priorities(state, indices,
    priorities) -> state; probe(state) -> an array to wait on."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    def adds(state, items):
        state = jax.lax.fori_loop(0, reps, lambda i, s: add(s, items), state)
        return state, probe(state)

    def samples(state, key):
        def body(acc, k):
            return acc + sample(state, k), None

        acc, _ = jax.lax.scan(body, jnp.zeros(()), jax.random.split(key, reps))
        return state, acc

    def sets(state, key):
        def body(s, k):
            k1, k2 = jax.random.split(k)
            idx = jax.random.randint(k1, (batch,), 0, capacity)
            return set_priorities(s, idx, jax.random.uniform(k2, (batch,))), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, reps))
        return state, probe(state)

    return tuple(jax.jit(f, donate_argnums=0) for f in (adds, samples, sets))


def ops_ours(capacity, batch, reps):
    """(ops, args, full state) of our prioritized buffer."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from insertion_jax.replay import prioritized  # pylint: disable=import-outside-toplevel

    buffer = prioritized.make_prioritized_buffer(capacity, alpha=0.6)
    items = transitions(jax.random.PRNGKey(0), batch)

    def sample(state, key):
        batch_items, idx, w = buffer.sample(state, key, batch)
        return jnp.sum(batch_items.reward * w) + jnp.sum(idx)

    ops = timed_ops(
        buffer.add, sample, buffer.set_priorities, lambda s: s.tree, capacity, batch, reps
    )
    state = buffer.init(jax.tree.map(lambda x: x[0], items))
    fill = jax.jit(buffer.add, donate_argnums=0)
    chunk = transitions(jax.random.PRNGKey(1), min(capacity, 65_536))
    for _ in range(-(-capacity // chunk.reward.shape[0])):
        state = fill(state, chunk)
    return ops, (items, jax.random.PRNGKey(2), jax.random.PRNGKey(3)), state


def ops_flashbax(capacity, batch, reps):
    """The same for flashbax's prioritised flat buffer (the same fields)."""
    import flashbax as fbx  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    buffer = fbx.make_prioritised_flat_buffer(
        max_length=capacity,
        min_length=batch,
        sample_batch_size=batch,
        add_batch_size=batch,
        priority_exponent=0.6,
        device=jax.default_backend(),
    )
    t = transitions(jax.random.PRNGKey(0), batch)
    fields = ('obs', 'action', 'reward', 'discount', 'next_obs')
    items = {name: getattr(t, name) for name in fields}

    def sample(state, key):
        out = buffer.sample(state, key)
        return jnp.sum(out.experience.first['reward'] * out.probabilities) + jnp.sum(out.indices)

    ops = timed_ops(
        buffer.add,
        sample,
        buffer.set_priorities,
        lambda s: s.sum_tree_state.nodes,
        capacity,
        batch,
        reps,
    )
    state = buffer.init(jax.tree.map(lambda x: x[0], items))
    fill = jax.jit(buffer.add, donate_argnums=0)
    for _ in range(-(-capacity // batch)):
        state = fill(state, items)
    return ops, (items, jax.random.PRNGKey(2), jax.random.PRNGKey(3)), state


def measure(ops, args, state, batch, reps, min_seconds):
    """Items/s of add, sample and set_priorities (state threaded through)."""
    out = {}
    for name, fn, arg in zip(('add', 'sample', 'set_priorities'), ops, args, strict=True):
        seconds, state = timed(fn, state, arg, min_seconds=min_seconds)
        out[name] = batch * reps / seconds
    return out


def der_overhead(batch, reps, min_seconds):
    """1 - t(Ape-X DDPG update on a ready batch) / t(the same with DER bookkeeping)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from insertion_jax import agents  # pylint: disable=import-outside-toplevel
    from insertion_jax.replay import der, nstep  # pylint: disable=import-outside-toplevel

    agent = agents.make_agent('apex_ddpg', agents.config_class('apex_ddpg')(), ACTION_DIM)

    def fresh_agent():
        state = agent.init(
            jax.random.PRNGKey(0),
            jax.ShapeDtypeStruct((OBS_DIM,), jnp.float32),
            jax.ShapeDtypeStruct((ACTION_DIM,), jnp.float32),
        )
        return jax.tree.map(jnp.copy, state)  # targets alias the online params: unshare

    horizon, envs = 100, 16
    buffer = der.make_der_buffer(
        der.DERConfig(num_buffers=6, refresh_every=1_000),
        capacity=1_000_000 // 6,
        episode_length=horizon,
        num_envs=envs,
        n_step=3,
        discount=0.99,
    )
    example = nstep.Step(
        obs=jnp.zeros(OBS_DIM),
        action=jnp.zeros(ACTION_DIM),
        reward=jnp.zeros(()),
        terminal=jnp.zeros((), bool),
        next_obs=jnp.zeros(OBS_DIM),
    )
    state = buffer.init(example)
    # Fill every ring with whole episodes and the pool with successes.
    key = jax.random.PRNGKey(1)
    steps = nstep.Step(
        obs=jax.random.normal(key, (horizon, envs, OBS_DIM)),
        action=jax.random.uniform(key, (horizon, envs, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(key, (horizon, envs)),
        terminal=jnp.zeros((horizon, envs), bool),
        next_obs=jax.random.normal(key, (horizon, envs, OBS_DIM)),
    )
    last = jnp.zeros((horizon, envs), bool).at[-1].set(True)
    add = jax.jit(buffer.add_chunk, donate_argnums=0)
    for i in range(20):
        state = add(state, steps, last, last, jax.random.PRNGKey(i))
    fixed = jax.tree.map(lambda x: x[0, :batch], state.data)  # a ready batch with the same shapes

    def plain(agent_state, key):
        def body(a, k):
            a, metrics = agent.update(a, fixed, k)
            return a, metrics['critic_loss']

        return jax.lax.scan(body, agent_state, jax.random.split(key, reps))

    def with_der(carry, key):
        # As the training loop does it: the updates of an iteration, each on a
        # batch drawn from a random buffer with its priorities written back,
        # then the zone refreshes that came due.
        def body(carry, k):
            a, s = carry
            k1, k2 = jax.random.split(k)
            b, info = buffer.sample(s, k1, batch)
            a, metrics = agent.update(a, b, k2)
            s = buffer.set_priorities(s, info, jnp.abs(metrics['td_error']))
            return (a, s), metrics['critic_loss']

        key, key_refresh = jax.random.split(key)
        (a, s), losses = jax.lax.scan(body, carry, jax.random.split(key, reps))
        s = buffer.after_updates(s, key_refresh, reps // buffer.config.refresh_every + 1)
        return (a, s), losses

    t_plain, _ = timed(
        jax.jit(plain, donate_argnums=0),
        fresh_agent(),
        jax.random.PRNGKey(5),
        min_seconds=min_seconds,
    )
    t_der, _ = timed(
        jax.jit(with_der, donate_argnums=0),
        (fresh_agent(), state),
        jax.random.PRNGKey(6),
        min_seconds=min_seconds,
    )
    return 1.0 - t_plain / t_der, reps / t_plain, reps / t_der


def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.enable_compilation_cache()
    import jax  # pylint: disable=import-outside-toplevel

    try:
        import flashbax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
        raise app.UsageError(
            'This benchmark compares against flashbax, a bench-only dependency: '
            "pip install -e '.[bench]' (make bench does it)."
        ) from e
    capacity, batch, reps = _CAPACITY.value, _BATCH.value, _REPS.value
    ours = measure(*ops_ours(capacity, batch, reps), batch, reps, _MIN_SECONDS.value)
    theirs = measure(*ops_flashbax(capacity, batch, reps), batch, reps, _MIN_SECONDS.value)
    overhead, plain_rate, der_rate = der_overhead(batch, _DER_UPDATES.value, _MIN_SECONDS.value)
    result = {
        'capacity': capacity,
        'batch': batch,
        'device': f'{jax.default_backend()} ({jax.devices()[0].device_kind}, {platform.machine()})',
        'items_per_s': ours,
        'flashbax_items_per_s': theirs,
        'ratio_vs_flashbax': {k: ours[k] / theirs[k] for k in ours},
        'der_overhead': overhead,
        'apex_updates_per_s': {'ready_batch': plain_rate, 'with_der': der_rate},
    }
    print(f'Prioritized replay, capacity {capacity:,}, batch {batch}, {result["device"]}:')
    print(f'  {"operation":<16}{"ours (items/s)":>16}{"flashbax":>14}{"ratio":>8}')
    for k in ours:
        print(f'  {k:<16}{ours[k]:>16,.0f}{theirs[k]:>14,.0f}{ours[k] / theirs[k]:>8.2f}')
    print(
        f'  DER bookkeeping: {100 * overhead:.1f}% of an Ape-X DDPG update '
        f'({plain_rate:.0f} updates/s on a ready batch, {der_rate:.0f}/s with DER)'
    )
    if _JSON.value:
        print(json.dumps(result))


if __name__ == '__main__':
    app.run(main)
