r"""Throughput of the prioritized replay against flashbax's, and DER's share of an update.

  python -m experiments.benchmarks.replay_throughput [--capacity=1000000] [--batch=512] [--json]

Both buffers hold `--capacity` transitions of the assembly tasks (13-D
observations, 6-D actions, reward, discount, next observation) with priority
exponent 0.6 and are filled before timing. Each operation runs `--reps` times
inside one jitted `lax.scan` with the buffer state donated, so dispatch does
not count:

  add             `--batch` new transitions per call
  sample          a batch of `--batch` transitions (with importance weights
                  for ours; flashbax returns probabilities), every field of
                  the batch reduced into the timed output, so that the
                  compiled program keeps every gather (obs, action, reward,
                  discount, next_obs: flashbax's `first` item; ours also
                  gathers is_demo and weight)
  set_priorities  `--batch` new priorities at random slots

and prints items per second for each (the best of `--rounds` rounds that
alternate between the buffers, so that drift in the machine's speed does not
bias the ratio), for ours
(`insertion_jax.replay.prioritized`) and for flashbax's prioritised flat
buffer (a bench-only dependency: `pip install -e .[bench]`), and
`ratio_vs_flashbax` = ours / flashbax per operation.

`der_overhead` is the share of an Ape-X DDPG update step (64x64 networks,
batch `--batch`) spent in DER bookkeeping: drawing the batch from one of 6
prioritized buffers (1,000,000 transitions in all), writing the |TD errors|
back, and the zone refreshes (one every 1,000 updates), timed as the training
loop runs them (`--der_updates` updates, then the refreshes due):
t(that loop with the update replaced by a stand-in that only reads the batch)
/ t(the loop with the real update). The batch gather counts as bookkeeping.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import common
from insertion_jax import types
from insertion_jax.agents import registry as agent_registry
from insertion_jax.replay import der, prioritized

try:  # a bench-only dependency: main() says how to install it when absent
    import flashbax as fbx
except ImportError:
    fbx = None

_CAPACITY = flags.DEFINE_integer('capacity', 1_000_000, 'Buffer capacity.', lower_bound=1)
_BATCH = flags.DEFINE_integer('batch', 512, 'Items per operation.', lower_bound=1)
_REPS = flags.DEFINE_integer('reps', 200, 'Operations per timed call.', lower_bound=1)
_MIN_SECONDS = flags.DEFINE_float(
    'min_seconds', 3.0, 'Time each case at least this long, over all rounds.'
)
_ROUNDS = flags.DEFINE_integer(
    'rounds', 3, 'Alternating rounds per comparison; the best round counts.', lower_bound=1
)
_DER_UPDATES = flags.DEFINE_integer(
    'der_updates', 1_000, 'Updates per timed call for der_overhead.', lower_bound=1
)
_JSON = flags.DEFINE_bool('json', False, 'Print the results as JSON on the last line.')

OBS_DIM, ACTION_DIM = 13, 6


def timed(fn: Callable, state: Any, *args: Any, min_seconds: float) -> Tuple[float, Any]:
    """(seconds per call, final state) of a jitted, state-donating `fn`."""
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


def transitions(key: jax.Array, n: int) -> types.Transition:
    """n random transitions of the assembly tasks' sizes (leaves (n, ...))."""
    k = jax.random.split(key, 4)
    return types.make_transition(
        obs=jax.random.normal(k[0], (n, OBS_DIM)),
        action=jax.random.uniform(k[1], (n, ACTION_DIM), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        discount=jnp.full((n,), 0.97),
        next_obs=jax.random.normal(k[3], (n, OBS_DIM)),
    )


def consume(tree: Any) -> jax.Array:
    """A scalar that depends on every element of every leaf of `tree`, so that
    no gather that produced them can be dropped from the compiled program."""
    return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(tree))


def timed_ops(
    add: Callable,
    sample: Callable,
    set_priorities: Callable,
    probe: Callable,
    capacity: int,
    batch: int,
    reps: int,
) -> Tuple[Callable, Callable, Callable]:
    """Jitted, state-donating scans of `reps` operations of a buffer:
    (add, sample, set_priorities), each `(state, arg) -> (state, output)`.

    add(state, items) -> state; sample(state, key) -> a scalar that depends on
    every element of the batch (`consume`, so nothing is optimized away);
    set_priorities(state, indices, priorities) -> state; probe(state) -> an
    array to wait on."""

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


def ops_ours(capacity: int, batch: int, reps: int) -> Tuple[Tuple, Tuple, Any]:
    """(ops, args, full state) of our prioritized buffer."""
    buffer = prioritized.make_prioritized_buffer(capacity, prioritized.PrioritizedConfig(alpha=0.6))
    items = transitions(jax.random.PRNGKey(0), batch)

    def sample(state, key):
        return consume(buffer.sample(state, key, batch))  # items, indices, weights

    ops = timed_ops(
        buffer.add, sample, buffer.set_priorities, lambda s: s.tree, capacity, batch, reps
    )
    state = buffer.init(jax.tree.map(lambda x: x[0], items))
    fill = jax.jit(buffer.add, donate_argnums=0)
    chunk = transitions(jax.random.PRNGKey(1), min(capacity, 65_536))
    for _ in range(-(-capacity // chunk.reward.shape[0])):
        state = fill(state, chunk)
    return ops, (items, jax.random.PRNGKey(2), jax.random.PRNGKey(3)), state


def ops_flashbax(capacity: int, batch: int, reps: int) -> Tuple[Tuple, Tuple, Any]:
    """The same for flashbax's prioritised flat buffer (the same fields)."""
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
        # `first` holds every field of our transition (next_obs included);
        # `second`, the item stored after it, has no counterpart in ours.
        return consume((out.experience.first, out.indices, out.probabilities))

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


def best_of(cases: Dict[str, list], rounds: int, min_seconds: float) -> Dict[str, float]:
    """Seconds per call of each case, the best of `rounds` alternating rounds.

    `cases` maps a name to `[fn, state, arg]` (the state is threaded through).
    Alternating the cases round by round spreads any drift of the machine's
    speed over all of them, so their ratios are fair."""
    best = dict.fromkeys(cases, float('inf'))
    for _ in range(rounds):
        for name, case in cases.items():
            fn, state, arg = case
            seconds, case[1] = timed(fn, state, arg, min_seconds=min_seconds / rounds)
            best[name] = min(best[name], seconds)
    return best


def measure(
    buffers: Dict[str, Tuple], batch: int, reps: int, rounds: int, min_seconds: float
) -> Dict[str, Dict[str, float]]:
    """Items/s of add, sample and set_priorities per buffer.

    `buffers` maps a name to `(ops, args, full state)`; the operations of the
    buffers are timed side by side, `rounds` alternating rounds each."""
    out = {name: {} for name in buffers}
    states = {name: state for name, (_, _, state) in buffers.items()}
    for i, op in enumerate(('add', 'sample', 'set_priorities')):
        cases = {name: [ops[i], states[name], args[i]] for name, (ops, args, _) in buffers.items()}
        seconds = best_of(cases, rounds, min_seconds)
        for name in buffers:
            out[name][op] = batch * reps / seconds[name]
            states[name] = cases[name][1]
    return out


def der_overhead(batch: int, reps: int, rounds: int, min_seconds: float) -> Tuple[float, float]:
    """(share of an Ape-X DDPG update step spent in DER bookkeeping, updates/s)."""
    agent = agent_registry.make_agent(
        'apex_ddpg', agent_registry.config_class('apex_ddpg')(), ACTION_DIM
    )

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
    example = types.Step(
        obs=jnp.zeros(OBS_DIM),
        action=jnp.zeros(ACTION_DIM),
        reward=jnp.zeros(()),
        terminal=jnp.zeros((), bool),
        next_obs=jnp.zeros(OBS_DIM),
    )
    state = buffer.init(example)
    # Fill every ring with whole episodes (random, all different: nothing a
    # critic can fit exactly) and the pool with successes.
    last = jnp.zeros((horizon, envs), bool).at[-1].set(True)
    add = jax.jit(buffer.add, donate_argnums=0)
    for i in range(20):
        k = jax.random.split(jax.random.PRNGKey(100 + i), 4)
        steps = types.Step(
            obs=jax.random.normal(k[0], (horizon, envs, OBS_DIM)),
            action=jax.random.uniform(k[1], (horizon, envs, ACTION_DIM), minval=-1, maxval=1),
            reward=jax.random.normal(k[2], (horizon, envs)),
            terminal=jnp.zeros((horizon, envs), bool),
            next_obs=jax.random.normal(k[3], (horizon, envs, OBS_DIM)),
        )
        state = add(state, steps, last, last, jax.random.PRNGKey(i))

    def der_loop(update):
        """The updates of an iteration as the training loop runs them, each on a
        batch drawn from a random buffer with |TD error| written back, then the
        zone refreshes that came due; `update(agent, batch, key) -> (agent,
        metrics with td_error and critic_loss)`."""

        def run(carry, key):
            def body(carry, k):
                a, s = carry
                k1, k2 = jax.random.split(k)
                b, info = buffer.sample(s, k1, batch)
                a, metrics = update(a, b, k2)
                s = buffer.set_priorities(s, info, jnp.abs(metrics['td_error']))
                return (a, s), metrics['critic_loss']

            key, key_refresh = jax.random.split(key)
            (a, s), losses = jax.lax.scan(body, carry, jax.random.split(key, reps))
            s = buffer.after_updates(s, key_refresh, reps // buffer.config.refresh_every + 1)
            return (a, s), losses

        return jax.jit(run, donate_argnums=0)

    def no_update(agent_state, b, key):
        # A "TD error" that reads every field of the batch, so that the whole
        # gather counts as bookkeeping (nothing is optimized away).
        del key
        fields = [b.obs, b.action, b.next_obs, b.reward[:, None], b.discount[:, None]]
        td = jnp.sum(jnp.concatenate(fields, axis=-1), axis=-1) * b.weight
        return agent_state, {'td_error': td, 'critic_loss': jnp.mean(td)}

    seconds = best_of(
        {
            'update': [der_loop(agent.update), (fresh_agent(), state), jax.random.PRNGKey(5)],
            'bookkeeping': [
                der_loop(no_update),
                (fresh_agent(), jax.tree.map(jnp.copy, state)),
                jax.random.PRNGKey(6),
            ],
        },
        rounds,
        min_seconds,
    )
    return seconds['bookkeeping'] / seconds['update'], reps / seconds['update']


def main(argv: Any) -> None:
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.enable_compilation_cache()
    if fbx is None:
        raise app.UsageError(
            'This benchmark compares against flashbax, a bench-only dependency: '
            "pip install -e '.[bench]' (make bench does it)."
        )
    capacity, batch, reps = _CAPACITY.value, _BATCH.value, _REPS.value
    rounds, min_seconds = _ROUNDS.value, _MIN_SECONDS.value
    rates = measure(
        {'ours': ops_ours(capacity, batch, reps), 'flashbax': ops_flashbax(capacity, batch, reps)},
        batch,
        reps,
        rounds,
        min_seconds,
    )
    ours, theirs = rates['ours'], rates['flashbax']
    overhead, der_rate = der_overhead(batch, _DER_UPDATES.value, rounds, min_seconds)
    result = {
        'capacity': capacity,
        'batch': batch,
        'device': f'{jax.default_backend()} ({jax.devices()[0].device_kind}, {platform.machine()})',
        'items_per_s': ours,
        'flashbax_items_per_s': theirs,
        'ratio_vs_flashbax': {k: ours[k] / theirs[k] for k in ours},
        'der_overhead': overhead,
        'apex_updates_per_s': der_rate,
    }
    print(f'Prioritized replay, capacity {capacity:,}, batch {batch}, {result["device"]}:')
    print(f'  {"operation":<16}{"ours (items/s)":>16}{"flashbax":>14}{"ratio":>8}')
    for k in ours:
        print(f'  {k:<16}{ours[k]:>16,.0f}{theirs[k]:>14,.0f}{ours[k] / theirs[k]:>8.2f}')
    print(
        f'  DER bookkeeping: {100 * overhead:.1f}% of an Ape-X DDPG update step '
        f'({der_rate:.0f} updates/s with DER)'
    )
    if _JSON.value:
        print(json.dumps(result))


if __name__ == '__main__':
    app.run(main)
