"""Dynamic Experience Replay (Luo & Li) on the device.

K prioritized replay buffers (default 6) live in one batched pytree, each
with a *demonstration zone*. The layout of buffer k's N slots:

  [0, Z*L)        the demonstration zone: Z fixed-size episode slots of L
                  transitions each (L: the environment's episode limit);
                  an episode shorter than L leaves the rest of its slot at
                  priority 0, so padding is never drawn (masks, no host trip)
  [Z*L, N)        the agent ring: finished agent episodes, oldest out

One sum tree per buffer covers all N slots, so the zone and the ring are
drawn from together in proportion to their priorities.

Before training, the zones are loaded according to the *structure*:
  'none'            no demonstrations
  'one_shot_all'    demonstration 0 in every buffer
  'all_shots_all'   every demonstration in every buffer
  'one_shot_each'   demonstration k (mod D) in buffer k

Collection (`add`) stages each environment's running episode (time
major, one slot of L steps per environment). When an episode ends, its n-step
transitions are computed over the whole episode and written to the ring of
one buffer chosen at random; a successful episode is also pushed into the
*success pool*, a ring of Q episode slots shared by the K buffers.

Training (`sample`, `set_priorities`) draws each batch from one buffer chosen
at random among those holding anything and updates that buffer's priorities
with |TD error|. Zone items get the buffer's top priority (the largest
priority so far; with `zone_top_priority` off, their |TD| + eps like any
other item), agent items p = |TD| + eps; sampling weights are
p^alpha and the importance weights follow `prioritized.py`.

With `der=True` (DER on), `refresh` runs every `refresh_every` updates
(`after_updates` catches up on all refreshes due): each buffer copies one
episode drawn uniformly from the pool into its oldest zone slot. Human
demonstrations are the oldest, so they are the first to go. With
`der=False` (DER off) the zone is never refreshed and the demonstrations
stay for the whole run, at top priority.

The pool keeps the Q most recent successes (the paper's pool is unbounded;
a device needs a fixed size). Every function is pure and vmaps over seeds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks, types
from insertion_jax.replay import base, nstep, prioritized, sumtree
from insertion_jax.replay import demos as demos_lib

STRUCTURES = ('none', 'one_shot_all', 'all_shots_all', 'one_shot_each')


@dataclasses.dataclass(frozen=True)
class DERConfig:
    """Static configuration of the DER buffers (their capacity comes with the
    run's `base.ReplaySpec`).

    Attributes:
      num_buffers: K replay buffers.
      zone_fraction: share of each buffer's capacity reserved for the
        demonstration zone (the paper: 1%); rounded down to whole episode slots.
      structure: one of STRUCTURES.
      der: DER on (refresh the zones from the success pool) or off.
      refresh_every: M, updates between zone refreshes.
      pool_episodes: Q, episodes the success pool holds (most recent kept).
      priority: prioritized sampling (the paper: alpha 0.5).
      zone_top_priority: zone items keep the buffer's top priority (the
        paper: "each buffer permanently keeps all the demonstrations with top
        priorities"); False gives them their |TD| like every other item, an
        ablation of how strongly zones are over-sampled.
    """

    num_buffers: int = 6
    zone_fraction: float = 0.01
    structure: str = 'none'
    der: bool = True
    refresh_every: int = 1_000
    pool_episodes: int = 64
    priority: prioritized.PrioritizedConfig = prioritized.PrioritizedConfig(alpha=0.5)
    zone_top_priority: bool = True

    def __post_init__(self):
        if self.structure not in STRUCTURES:
            raise ValueError(
                f'DERConfig.structure={self.structure!r} is unknown; valid structures: '
                f'{", ".join(STRUCTURES)}.'
            )
        checks.positive_int(
            'DERConfig',
            num_buffers=self.num_buffers,
            refresh_every=self.refresh_every,
            pool_episodes=self.pool_episodes,
        )
        if not 0.0 < self.zone_fraction < 1.0:
            raise ValueError(f'DERConfig.zone_fraction={self.zone_fraction!r} must be in (0, 1).')
        for name in ('der', 'zone_top_priority'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'DERConfig.{name}={getattr(self, name)!r} must be a bool.')


@dataclasses.dataclass(frozen=True)
class DERLayout:
    """Static sizes of the DER buffers (`make_layout` checks that they fit).

    Attributes:
      capacity: N, slots per buffer, zone included.
      episode_length: L, the environment's episode limit.
      num_envs: E, environments adding steps.
      n_step, discount: stored return length and per-step discount.
      zone_slots: Z, episode slots in each zone.
      zone_size: Z * L, the zone's transitions (slots [0, Z * L)).
      ring_capacity: N - Z * L, the agent ring's slots.
    """

    capacity: int
    episode_length: int
    num_envs: int
    n_step: int
    discount: float
    zone_slots: int
    zone_size: int
    ring_capacity: int


@struct.dataclass
class DERState:
    """All K buffers, the success pool and the staged episodes of one seed.

    Attributes:
      data: transitions, leaves (K, N, ...).
      tree: (K, 2P) sum trees of p^alpha per slot.
      max_priority: (K,) largest priority so far per buffer.
      ring_pos: (K,) next ring slot (0 .. ring - 1).
      ring_size: (K,) ring slots filled.
      zone_next: (K,) the zone's oldest episode slot (next to replace).
      zone_length: (K, Z) episode length in each zone slot (0: empty).
      pool: transitions of the success pool, leaves (Q, L, ...).
      pool_length: (Q,) episode lengths (0: empty).
      pool_next: () next pool slot.
      pool_count: () successful episodes pushed so far.
      staging: the running episode of each environment, `types.Step` leaves (L, E, ...).
      staging_length: (E,) steps staged per environment.
      updates: () `set_priorities` calls so far.
      refreshes: () zone refreshes done so far.
      der: bool (), DER on for this state (set from `DERConfig.der` at init;
        a state flag so that runs with DER on and off can share one compiled
        program, vmapped side by side).
    """

    data: Any
    tree: jax.Array
    max_priority: jax.Array
    ring_pos: jax.Array
    ring_size: jax.Array
    zone_next: jax.Array
    zone_length: jax.Array
    pool: Any
    pool_length: jax.Array
    pool_next: jax.Array
    pool_count: jax.Array
    staging: types.Step
    staging_length: jax.Array
    updates: jax.Array
    refreshes: jax.Array
    der: jax.Array


@struct.dataclass
class SampleInfo:
    """Where a batch came from: its buffer and slots (for `set_priorities`)."""

    buffer: jax.Array  # int32 ()
    indices: jax.Array  # (B,) slots in that buffer


@dataclasses.dataclass(frozen=True)
class DERBuffer:
    """The module's functions bound to one config and layout (module docstring)."""

    config: DERConfig
    layout: DERLayout
    init: Callable[..., DERState]
    add: Callable[..., DERState]
    sample: Callable[..., Tuple[types.Transition, SampleInfo]]
    set_priorities: Callable[..., DERState]
    refresh: Callable[..., DERState]
    after_updates: Callable[..., DERState]
    can_sample: Callable[[DERState], jax.Array]
    metrics: Callable[[DERState], dict]


def zone_assignment(structure: str, num_buffers: int, num_demos: int) -> Tuple[Tuple[int, ...]]:
    """Demonstration ids loaded into each buffer's zone, per structure."""
    if structure == 'none':
        return tuple(() for _ in range(num_buffers))
    if num_demos < 1:
        raise ValueError(f'structure={structure!r} needs at least one demonstration, got 0.')
    if structure == 'one_shot_all':
        return tuple((0,) for _ in range(num_buffers))
    if structure == 'all_shots_all':
        return tuple(tuple(range(num_demos)) for _ in range(num_buffers))
    return tuple((k % num_demos,) for k in range(num_buffers))


def make_layout(
    config: DERConfig,
    capacity: int,
    episode_length: int,
    num_envs: int,
    n_step: int,
    discount: float,
) -> DERLayout:
    """The sizes of DER buffers of `capacity` slots for episodes of at most
    `episode_length` steps from `num_envs` environments.

    Raises:
      ValueError naming the size that does not fit (a zone without a whole
      episode, a ring smaller than the episodes that can end at once, a pool
      smaller than the environments).
    """
    checks.positive_int(
        'DERBuffer',
        capacity=capacity,
        episode_length=episode_length,
        num_envs=num_envs,
        n_step=n_step,
    )
    zone_transitions = int(config.zone_fraction * capacity)
    zone_slots = zone_transitions // episode_length
    if zone_slots < 1:
        raise ValueError(
            f'The demonstration zone (zone_fraction {config.zone_fraction} x capacity '
            f'{capacity} = {zone_transitions} transitions) holds no whole '
            f'episode of {episode_length} steps; raise the capacity or DERConfig.zone_fraction.'
        )
    zone_size = zone_slots * episode_length
    ring_capacity = capacity - zone_size
    if ring_capacity < num_envs * episode_length:
        raise ValueError(
            f'capacity={capacity} leaves a ring of {ring_capacity} slots, fewer '
            f'than {num_envs} environments x {episode_length} steps that can finish at '
            'once; raise the capacity.'
        )
    if config.pool_episodes < num_envs:
        raise ValueError(
            f'DERConfig.pool_episodes={config.pool_episodes} must be >= num_envs='
            f'{num_envs} (every environment can succeed in the same step).'
        )
    return DERLayout(
        capacity=capacity,
        episode_length=episode_length,
        num_envs=num_envs,
        n_step=n_step,
        discount=discount,
        zone_slots=zone_slots,
        zone_size=zone_size,
        ring_capacity=ring_capacity,
    )


# --------------------------------------------------------------------- init
def init(
    config: DERConfig,
    layout: DERLayout,
    example_step: types.Step,
    demos: Optional[demos_lib.Demonstrations] = None,
) -> DERState:
    """Empty buffers with the zones loaded according to the structure.

    Args:
      config, layout: the buffers' settings and sizes.
      example_step: one `types.Step` without batch axes (shapes and dtypes).
      demos: demonstration episodes, `steps` leaves (D, L, ...) padded to L,
        `lengths` (D,); an episode whose `success` flag is False (when the
        flags are given) leaves its zone slot empty: only successful episodes
        enter a zone.
    """
    k, length = config.num_buffers, layout.episode_length
    num_demos = 0 if demos is None else int(demos.lengths.shape[0])
    assignment = zone_assignment(config.structure, k, num_demos)
    most = max((len(a) for a in assignment), default=0)
    if most > layout.zone_slots:
        raise ValueError(
            f'structure={config.structure!r} puts {most} demonstrations in a zone of '
            f'{layout.zone_slots} episode slots; raise the capacity or DERConfig.zone_fraction.'
        )
    example = nstep.transition_like(example_step)
    data = jax.tree.map(lambda x: jnp.zeros((k, layout.capacity) + x.shape, x.dtype), example)
    pool = jax.tree.map(
        lambda x: jnp.zeros((config.pool_episodes, length) + x.shape, x.dtype), example
    )
    staging = jax.tree.map(
        lambda x: jnp.zeros((length, layout.num_envs) + jnp.shape(x), jnp.asarray(x).dtype),
        example_step,
    )
    state = DERState(
        data=data,
        tree=sumtree.init(layout.capacity, rows=k),
        max_priority=jnp.ones((k,), jnp.float32),
        ring_pos=jnp.zeros((k,), jnp.int32),
        ring_size=jnp.zeros((k,), jnp.int32),
        zone_next=jnp.zeros((k,), jnp.int32),
        zone_length=jnp.zeros((k, layout.zone_slots), jnp.int32),
        pool=pool,
        pool_length=jnp.zeros((config.pool_episodes,), jnp.int32),
        pool_next=jnp.zeros((), jnp.int32),
        pool_count=jnp.zeros((), jnp.int32),
        staging=staging,
        staging_length=jnp.zeros((layout.num_envs,), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        refreshes=jnp.zeros((), jnp.int32),
        der=jnp.asarray(config.der),
    )
    if most == 0:
        return state
    padded = jax.tree.leaves(demos.steps)[0].shape[1]
    if padded != length:
        raise ValueError(
            f'Demonstrations are padded to {padded} steps; the buffers hold episodes of {length}.'
        )
    lengths = jnp.asarray(demos.lengths)
    successful = (
        jnp.ones((num_demos,), bool) if demos.success is None else jnp.asarray(demos.success, bool)
    )
    episodes = nstep.episode_transitions(
        jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), demos.steps),
        lengths,
        layout.n_step,
        layout.discount,
    )
    episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), episodes)  # (D, L, ...)
    episodes = episodes.replace(is_demo=jnp.ones_like(episodes.is_demo))
    for buffer, ids in enumerate(assignment):
        for slot, demo in enumerate(ids):
            state = write_zone(
                config,
                layout,
                state,
                jnp.asarray([buffer]),
                jnp.asarray([slot]),
                jax.tree.map(lambda x, d=demo: x[d][None], episodes),
                lengths[demo][None],
                successful[demo][None],
            )
    counts = jnp.asarray([len(a) for a in assignment], jnp.int32)
    return state.replace(zone_next=counts % layout.zone_slots)


# --------------------------------------------------------------- collection
def add(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    steps: types.Step,
    last: jax.Array,
    success: jax.Array,
    key: jax.Array,
) -> DERState:
    """Stages a (K, E) chunk of steps; every episode that ends goes to a random
    buffer's ring, and into the success pool if it succeeded.

    Args:
      config, layout: the buffers' settings and sizes.
      state: the buffers.
      steps: `types.Step` leaves (K, E, ...), time-major.
      last: (K, E) bool, the step ended its episode.
      success: (K, E) bool, the episode ending here succeeded.
      key: PRNG key.
    """

    def one(state, xs):
        step, last, success, key = xs
        return add_step(config, layout, state, step, last, success, key), None

    keys = jax.random.split(key, last.shape[0])
    state, _ = jax.lax.scan(one, state, (steps, last, success, keys))
    return state


def add_step(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    step: types.Step,
    last: jax.Array,
    success: jax.Array,
    key: jax.Array,
) -> DERState:
    """One step of the E environments (`types.Step` leaves (E, ...); last, success (E,))."""
    length, num_envs = layout.episode_length, layout.num_envs
    envs = jnp.arange(num_envs)
    t = jnp.minimum(state.staging_length, length - 1)
    staging = jax.tree.map(lambda s, x: s.at[t, envs].set(x), state.staging, step)
    lengths = t + 1
    state = state.replace(staging=staging, staging_length=jnp.where(last, 0, lengths))
    episodes = nstep.episode_transitions(staging, lengths, layout.n_step, layout.discount)
    episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), episodes)  # (E, L, ...)
    state = write_ring(config, layout, state, episodes, jnp.where(last, lengths, 0), key)
    return push_pool(config, state, episodes, lengths, last & success)


def write_ring(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    episodes: types.Transition,
    lengths: jax.Array,
    key: jax.Array,
) -> DERState:
    """Writes episodes (E, L, ...) of `lengths` (E,) (0: none) to random buffers' rings."""
    k, length, ring = config.num_buffers, layout.episode_length, layout.ring_capacity
    target = jax.random.randint(key, (layout.num_envs,), 0, k)
    one_hot = jax.nn.one_hot(target, k, dtype=jnp.int32) * lengths[:, None]
    offset = jnp.take_along_axis(jnp.cumsum(one_hot, axis=0) - one_hot, target[:, None], axis=1)[
        :, 0
    ]
    added = jnp.sum(one_hot, axis=0)
    t = jnp.arange(length)[None, :]
    valid = t < lengths[:, None]  # (E, L)
    slot = layout.zone_size + (state.ring_pos[target][:, None] + offset[:, None] + t) % ring
    rows = jnp.broadcast_to(target[:, None], valid.shape)
    state = write_slots(config, layout, state, rows, jnp.where(valid, slot, -1), episodes, valid)
    return state.replace(
        ring_pos=(state.ring_pos + added) % ring,
        ring_size=jnp.minimum(state.ring_size + added, ring),
    )


def write_slots(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    rows: jax.Array,
    slots: jax.Array,
    items: types.Transition,
    priority_mask: jax.Array,
) -> DERState:
    """Writes items at (rows, slots) (negative slot: skipped) and gives them the
    buffer's top priority where `priority_mask`, 0 elsewhere (all shaped alike)."""
    drop = jnp.where(slots >= 0, slots, layout.capacity)
    data = jax.tree.map(
        lambda d, x: d.at[rows, drop].set(x.astype(d.dtype), mode='drop'), state.data, items
    )
    top = state.max_priority[rows] ** config.priority.alpha
    tree = sumtree.update(
        state.tree,
        rows.reshape(-1),
        slots.reshape(-1),
        jnp.where(priority_mask, top, 0.0).reshape(-1),
        unique=True,
    )
    return state.replace(data=data, tree=tree)


def write_zone(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    buffers: jax.Array,
    zone_slots: jax.Array,
    episodes: types.Transition,
    lengths: jax.Array,
    mask: jax.Array,
) -> DERState:
    """Writes one episode (L, ...) per listed buffer (n,) into its zone slot (n,),
    where `mask` (n,) holds."""
    length = layout.episode_length
    t = jnp.arange(length)[None, :]
    slot = zone_slots[:, None] * length + t
    rows = jnp.broadcast_to(buffers[:, None], slot.shape)
    state = write_slots(
        config,
        layout,
        state,
        rows,
        jnp.where(mask[:, None], slot, -1),
        episodes,
        t < lengths[:, None],
    )
    zone_length = state.zone_length.at[buffers, zone_slots].set(
        jnp.where(mask, lengths, state.zone_length[buffers, zone_slots])
    )
    return state.replace(zone_length=zone_length)


def push_pool(
    config: DERConfig,
    state: DERState,
    episodes: types.Transition,
    lengths: jax.Array,
    push: jax.Array,
) -> DERState:
    """Copies the pushed episodes (E, L, ...) into the success pool (push (E,) bool)."""
    q = config.pool_episodes
    rank = jnp.cumsum(push) - push
    slot = jnp.where(push, (state.pool_next + rank) % q, q)
    pool = jax.tree.map(
        lambda p, x: p.at[slot].set(x.astype(p.dtype), mode='drop'), state.pool, episodes
    )
    pushed = jnp.sum(push.astype(jnp.int32))
    return state.replace(
        pool=pool,
        pool_length=state.pool_length.at[slot].set(lengths, mode='drop'),
        pool_next=(state.pool_next + pushed) % q,
        pool_count=state.pool_count + pushed,
    )


# ------------------------------------------------------------------ refresh
def refresh(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    key: jax.Array,
    run: jax.Array = True,
) -> DERState:
    """Each buffer copies one random pool episode into its oldest zone slot.

    Nothing is written while the pool is empty; with `run` False nothing at
    all happens (a masked refresh: only scatters, so under vmap the large
    arrays are never copied through a select).
    """
    k = config.num_buffers
    stored = jnp.minimum(state.pool_count, config.pool_episodes)
    pick = jax.random.randint(key, (k,), 0, jnp.maximum(stored, 1))
    episodes = jax.tree.map(lambda p: p[pick], state.pool)
    mask = jnp.broadcast_to(run & (stored > 0), (k,))
    buffers = jnp.arange(k)
    state = write_zone(
        config, layout, state, buffers, state.zone_next, episodes, state.pool_length[pick], mask
    )
    return state.replace(
        zone_next=jnp.where(mask, (state.zone_next + 1) % layout.zone_slots, state.zone_next),
        refreshes=state.refreshes + jnp.asarray(run, jnp.int32),
    )


def after_updates(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    key: jax.Array,
    max_refreshes: int = 1,
) -> DERState:
    """Runs the refreshes due after `state.updates` updates when `state.der`
    (DER on), else nothing.

    `max_refreshes` (static) bounds how many can be due at once: after u
    more updates at most u // refresh_every + 1 are. The refreshes run in a
    fixed-length loop, each masked by whether it is due.
    """
    due = state.updates // config.refresh_every

    def body(_, carry):
        state, key = carry
        key, sub = jax.random.split(key)
        return refresh(config, layout, state, sub, state.der & (state.refreshes < due)), key

    state, _ = jax.lax.fori_loop(0, max_refreshes, body, (state, key))
    return state


# ----------------------------------------------------------------- training
def sample(
    config: DERConfig, state: DERState, key: jax.Array, batch_size: int
) -> Tuple[types.Transition, SampleInfo]:
    """A batch (batch_size, ...) from one buffer drawn uniformly among the non-empty
    ones, with its importance weights in `batch.weight`."""
    cfg = config.priority
    key_buffer, key_draw = jax.random.split(key)
    filled = sumtree.total(state.tree) > 0
    buffer = jax.random.categorical(key_buffer, jnp.where(filled, 0.0, -jnp.inf))
    buffer = jnp.where(jnp.any(filled), buffer, 0).astype(jnp.int32)
    indices, probs = prioritized.draw(state.tree, buffer, key_draw, batch_size, cfg.stratified)
    size = state.ring_size[buffer] + jnp.sum(state.zone_length[buffer])
    weights = prioritized.importance_weights(probs, size, cfg.beta_at(state.updates))
    batch = jax.tree.map(lambda d: d[buffer, indices], state.data).replace(weight=weights)
    return batch, SampleInfo(buffer=buffer, indices=indices)


def set_priorities(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    info: SampleInfo,
    td_error: jax.Array,
) -> DERState:
    """Priorities |TD| + eps for the sampled agent items, the buffer's top priority
    (the largest so far, this batch included) for zone items unless
    `config.zone_top_priority` is False; the tree holds p^alpha. td_error: (B,)
    for `info.indices` (B,); a negative index is skipped."""
    cfg = config.priority
    b = info.buffer
    p = prioritized.leaf_priority(td_error, state.max_priority[b], cfg.eps)
    top = jnp.maximum(state.max_priority[b], jnp.max(p))
    if config.zone_top_priority:
        p = jnp.where(info.indices < layout.zone_size, top, p)
    tree = sumtree.update(state.tree, jnp.full_like(info.indices, b), info.indices, p**cfg.alpha)
    return state.replace(
        tree=tree,
        max_priority=state.max_priority.at[b].set(top),
        updates=state.updates + 1,
    )


def can_sample(state: DERState) -> jax.Array:
    """bool (): some buffer holds an item that can be drawn."""
    return jnp.any(sumtree.total(state.tree) > 0)


def metrics(layout: DERLayout, state: DERState) -> dict:
    """Fill levels for logging (scalars): buffer_size, zone_fill (the share of
    zone slots holding an episode), pool_count, and zone_share: the chance that
    a draw comes from a demonstration zone (the zones' share of each buffer's
    priority mass, averaged over the buffers that hold anything), which is
    what zone items' top priority does to the batches."""
    zone_mass = jnp.sum(sumtree.leaves(state.tree, layout.zone_size), axis=-1)
    total = sumtree.total(state.tree)
    filled = total > 0
    share = jnp.where(filled, zone_mass / jnp.where(filled, total, 1.0), 0.0)
    return {
        'buffer_size': jnp.sum(state.ring_size) + jnp.sum(state.zone_length),
        'zone_fill': jnp.mean((state.zone_length > 0).astype(jnp.float32)),
        'zone_share': jnp.sum(share) / jnp.maximum(jnp.sum(filled), 1),
        'pool_count': state.pool_count,
    }


def make_der_buffer(
    config: DERConfig,
    capacity: int,
    episode_length: int,
    num_envs: int,
    n_step: int,
    discount: float,
) -> DERBuffer:
    """The DER buffers of `capacity` slots each, for episodes of at most
    `episode_length` steps from `num_envs` environments, storing `n_step`
    transitions with per-step `discount` (raises for sizes that do not fit)."""
    layout = make_layout(config, capacity, episode_length, num_envs, n_step, discount)
    return DERBuffer(
        config=config,
        layout=layout,
        init=functools.partial(init, config, layout),
        add=functools.partial(add, config, layout),
        sample=functools.partial(sample, config),
        set_priorities=functools.partial(set_priorities, config, layout),
        refresh=functools.partial(refresh, config, layout),
        after_updates=functools.partial(after_updates, config, layout),
        can_sample=can_sample,
        metrics=functools.partial(metrics, layout),
    )


# ------------------------------------------------------------------- replay
def replay_set_priorities(
    config: DERConfig,
    layout: DERLayout,
    state: DERState,
    info: SampleInfo,
    td_error: jax.Array,
    apply: jax.Array,
) -> DERState:
    """`Replay.set_priorities`: `set_priorities` written only where `apply` holds
    (masked slots; the counters kept otherwise)."""
    masked = info.replace(indices=jnp.where(apply, info.indices, -1))
    return base.masked_counters(
        set_priorities(config, layout, state, masked, td_error), state, apply
    )


def validate(config: DERConfig, spec: base.ReplaySpec) -> None:
    """Raises ValueError for sizes that do not fit (see `make_layout`)."""
    make_layout(
        config, spec.capacity, spec.episode_length, spec.num_envs, spec.n_step, spec.discount
    )


def make_replay(config: DERConfig, spec: base.ReplaySpec) -> base.Replay:
    """DER as the training loop uses it (`base.Replay`): demonstrations go into the
    zones at init when the structure has any; refreshes after the updates."""
    layout = make_layout(
        config, spec.capacity, spec.episode_length, spec.num_envs, spec.n_step, spec.discount
    )
    max_refreshes = spec.updates_per_iteration // config.refresh_every + 1
    return base.Replay(
        config=config,
        takes_demonstrations=config.structure != 'none',
        init=functools.partial(init, config, layout),
        add=functools.partial(add, config, layout),
        sample=functools.partial(sample, config),
        set_priorities=functools.partial(replay_set_priorities, config, layout),
        after_updates=functools.partial(after_updates, config, layout, max_refreshes=max_refreshes),
        metrics=functools.partial(metrics, layout),
    )
