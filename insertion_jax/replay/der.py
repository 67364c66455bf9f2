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

Collection (`add_chunk`) stages each environment's running episode (time
major, one slot of L steps per environment). When an episode ends, its n-step
transitions are computed over the whole episode and written to the ring of
one buffer chosen at random; a successful episode is also pushed into the
*success pool*, a ring of Q episode slots shared by the K buffers.

Training (`sample`, `set_priorities`) draws each batch from one buffer chosen
at random among those holding anything and updates that buffer's priorities
with |TD error|. Zone items always get the buffer's top priority (the
largest priority so far), agent items p = |TD| + eps; sampling weights are
p^alpha and the importance weights follow `prioritized.py`.

With `dynamic=True` (DER on), `refresh` runs every `refresh_every` updates
(`after_updates` catches up on all refreshes due): each buffer copies one
episode drawn uniformly from the pool into its oldest zone slot. Human
demonstrations are the oldest, so they are the first to go. With
`dynamic=False` (DER off) the zone is never refreshed and the demonstrations
stay for the whole run, at top priority.

The pool keeps the Q most recent successes (the paper's pool is unbounded;
a device needs a fixed size). Every function is pure and vmaps over seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import checks, types
from insertion_jax.replay import nstep, prioritized, sumtree

STRUCTURES = ('none', 'one_shot_all', 'all_shots_all', 'one_shot_each')


@dataclasses.dataclass(frozen=True)
class DERConfig:
    """Static configuration of the DER buffers (their capacity comes with the
    training configuration, `make_der_buffer`'s `capacity`).

    Attributes:
      num_buffers: K replay buffers.
      zone_fraction: share of each buffer's capacity reserved for the
        demonstration zone (the paper: 1%); rounded down to whole episode slots.
      structure: one of STRUCTURES.
      dynamic: DER on (refresh the zones from the success pool) or off.
      refresh_every: M, updates between zone refreshes.
      pool_episodes: Q, episodes the success pool holds (most recent kept).
      priority: prioritized sampling (the paper: alpha 0.5).
    """

    num_buffers: int = 6
    zone_fraction: float = 0.01
    structure: str = 'none'
    dynamic: bool = True
    refresh_every: int = 1_000
    pool_episodes: int = 64
    priority: prioritized.PrioritizedConfig = prioritized.PrioritizedConfig(alpha=0.5)

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
      staging: the running episode of each environment, `nstep.Step` leaves (L, E, ...).
      staging_length: (E,) steps staged per environment.
      updates: () `set_priorities` calls so far.
      refreshes: () zone refreshes done so far.
      dynamic: bool (), DER on for this state (set from `DERConfig.dynamic`
        at init; a state flag so that runs with DER on and off can share one
        compiled program, vmapped side by side).
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
    staging: nstep.Step
    staging_length: jax.Array
    updates: jax.Array
    refreshes: jax.Array
    dynamic: jax.Array


@struct.dataclass
class SampleInfo:
    """Where a batch came from: its buffer and slots (for `set_priorities`)."""

    buffer: jax.Array  # int32 ()
    indices: jax.Array  # (B,) slots in that buffer


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


@dataclasses.dataclass(frozen=True)
class DERBuffer:
    """The DER buffers' pure functions and their static sizes (see module docstring)."""

    config: DERConfig
    capacity: int  # N, slots per buffer, zone included
    episode_length: int  # L
    num_envs: int  # E
    n_step: int
    discount: float

    def __post_init__(self):
        cfg, length = self.config, self.episode_length
        checks.positive_int(
            'DERBuffer',
            capacity=self.capacity,
            episode_length=length,
            num_envs=self.num_envs,
            n_step=self.n_step,
        )
        if self.zone_slots < 1:
            raise ValueError(
                f'The demonstration zone (zone_fraction {cfg.zone_fraction} x capacity '
                f'{self.capacity} = {self.zone_transitions} transitions) holds no whole '
                f'episode of {length} steps; raise the capacity or DERConfig.zone_fraction.'
            )
        if self.ring_capacity < self.num_envs * length:
            raise ValueError(
                f'capacity={self.capacity} leaves a ring of {self.ring_capacity} slots, fewer '
                f'than {self.num_envs} environments x {length} steps that can finish at '
                'once; raise the capacity.'
            )
        if cfg.pool_episodes < self.num_envs:
            raise ValueError(
                f'DERConfig.pool_episodes={cfg.pool_episodes} must be >= num_envs='
                f'{self.num_envs} (every environment can succeed in the same step).'
            )

    # ---------------------------------------------------------------- sizes
    @property
    def zone_transitions(self) -> int:
        return int(self.config.zone_fraction * self.capacity)

    @property
    def zone_slots(self) -> int:
        """Z, episode slots in each zone."""
        return self.zone_transitions // self.episode_length

    @property
    def zone_size(self) -> int:
        """Z * L, the zone's transitions."""
        return self.zone_slots * self.episode_length

    @property
    def ring_capacity(self) -> int:
        return self.capacity - self.zone_size

    @property
    def slots(self) -> int:
        """N, slots per buffer."""
        return self.capacity

    # ----------------------------------------------------------------- init
    def init(
        self,
        example_step: nstep.Step,
        demos: Optional[nstep.Step] = None,
        demo_lengths: Optional[jax.Array] = None,
    ) -> DERState:
        """Empty buffers with the zones loaded according to the structure.

        Args:
          example_step: one `nstep.Step` without batch axes (shapes and dtypes).
          demos: demonstration episodes, `nstep.Step` leaves (D, L, ...) padded to L.
          demo_lengths: (D,) their lengths.
        """
        cfg, k, length = self.config, self.config.num_buffers, self.episode_length
        num_demos = 0 if demos is None else int(demo_lengths.shape[0])
        assignment = zone_assignment(cfg.structure, k, num_demos)
        most = max((len(a) for a in assignment), default=0)
        if most > self.zone_slots:
            raise ValueError(
                f'structure={cfg.structure!r} puts {most} demonstrations in a zone of '
                f'{self.zone_slots} episode slots; raise the capacity or DERConfig.zone_fraction.'
            )
        example = nstep.transition_like(example_step)
        data = jax.tree.map(lambda x: jnp.zeros((k, self.slots) + x.shape, x.dtype), example)
        pool = jax.tree.map(
            lambda x: jnp.zeros((cfg.pool_episodes, length) + x.shape, x.dtype), example
        )
        staging = jax.tree.map(
            lambda x: jnp.zeros((length, self.num_envs) + jnp.shape(x), jnp.asarray(x).dtype),
            example_step,
        )
        state = DERState(
            data=data,
            tree=sumtree.init(self.slots, rows=k),
            max_priority=jnp.ones((k,), jnp.float32),
            ring_pos=jnp.zeros((k,), jnp.int32),
            ring_size=jnp.zeros((k,), jnp.int32),
            zone_next=jnp.zeros((k,), jnp.int32),
            zone_length=jnp.zeros((k, self.zone_slots), jnp.int32),
            pool=pool,
            pool_length=jnp.zeros((cfg.pool_episodes,), jnp.int32),
            pool_next=jnp.zeros((), jnp.int32),
            pool_count=jnp.zeros((), jnp.int32),
            staging=staging,
            staging_length=jnp.zeros((self.num_envs,), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            refreshes=jnp.zeros((), jnp.int32),
            dynamic=jnp.asarray(cfg.dynamic),
        )
        if most == 0:
            return state
        if jax.tree.leaves(demos)[0].shape[1] != length:
            raise ValueError(
                f'Demonstrations are padded to {jax.tree.leaves(demos)[0].shape[1]} steps; '
                f'the buffers hold episodes of {length}.'
            )
        episodes = nstep.episode_transitions(
            jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), demos),
            demo_lengths,
            self.n_step,
            self.discount,
        )
        episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), episodes)  # (D, L, ...)
        episodes = episodes.replace(is_demo=jnp.ones_like(episodes.is_demo))
        for buffer, ids in enumerate(assignment):
            for slot, demo in enumerate(ids):
                state = self._write_zone(
                    state,
                    jnp.asarray([buffer]),
                    jnp.asarray([slot]),
                    jax.tree.map(lambda x, d=demo: x[d][None], episodes),
                    demo_lengths[demo][None],
                    jnp.ones((1,), bool),
                )
        counts = jnp.asarray([len(a) for a in assignment], jnp.int32)
        return state.replace(zone_next=counts % self.zone_slots)

    # ------------------------------------------------------------ collection
    def add_chunk(
        self,
        state: DERState,
        steps: nstep.Step,
        last: jax.Array,
        success: jax.Array,
        key: jax.Array,
    ) -> DERState:
        """Stages a (K, E) chunk of steps; every episode that ends goes to a random
        buffer's ring, and into the success pool if it succeeded.

        Args:
          steps: `nstep.Step` leaves (K, E, ...), time-major.
          last: (K, E) bool, the step ended its episode.
          success: (K, E) bool, the episode ending here succeeded.
          key: PRNG key.
        """

        def one(state, xs):
            step, last, success, key = xs
            return self.add_step(state, step, last, success, key), None

        keys = jax.random.split(key, last.shape[0])
        state, _ = jax.lax.scan(one, state, (steps, last, success, keys))
        return state

    def add_step(
        self, state: DERState, step: nstep.Step, last: jax.Array, success: jax.Array, key: jax.Array
    ) -> DERState:
        """One step of the E environments (`nstep.Step` leaves (E, ...))."""
        length, num_envs = self.episode_length, self.num_envs
        envs = jnp.arange(num_envs)
        t = jnp.minimum(state.staging_length, length - 1)
        staging = jax.tree.map(lambda s, x: s.at[t, envs].set(x), state.staging, step)
        lengths = t + 1
        state = state.replace(staging=staging, staging_length=jnp.where(last, 0, lengths))
        episodes = nstep.episode_transitions(staging, lengths, self.n_step, self.discount)
        episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), episodes)  # (E, L, ...)
        state = self._write_ring(state, episodes, jnp.where(last, lengths, 0), key)
        return self._push_pool(state, episodes, lengths, last & success)

    def _write_ring(self, state, episodes, lengths, key):
        """Writes episodes (E, L, ...) of `lengths` (0: none) to random buffers' rings."""
        k, length, ring = self.config.num_buffers, self.episode_length, self.ring_capacity
        target = jax.random.randint(key, (self.num_envs,), 0, k)
        one_hot = jax.nn.one_hot(target, k, dtype=jnp.int32) * lengths[:, None]
        offset = jnp.take_along_axis(
            jnp.cumsum(one_hot, axis=0) - one_hot, target[:, None], axis=1
        )[:, 0]
        added = jnp.sum(one_hot, axis=0)
        t = jnp.arange(length)[None, :]
        valid = t < lengths[:, None]  # (E, L)
        slot = self.zone_size + (state.ring_pos[target][:, None] + offset[:, None] + t) % ring
        rows = jnp.broadcast_to(target[:, None], valid.shape)
        state = self._write_slots(state, rows, jnp.where(valid, slot, -1), episodes, valid)
        return state.replace(
            ring_pos=(state.ring_pos + added) % ring,
            ring_size=jnp.minimum(state.ring_size + added, ring),
        )

    def _write_slots(self, state, rows, slots, items, priority_mask):
        """Writes items at (rows, slots) (negative slot: skipped) and gives them the
        buffer's top priority where `priority_mask`, 0 elsewhere."""
        drop = jnp.where(slots >= 0, slots, self.slots)
        data = jax.tree.map(
            lambda d, x: d.at[rows, drop].set(x.astype(d.dtype), mode='drop'), state.data, items
        )
        top = state.max_priority[rows] ** self.config.priority.alpha
        tree = sumtree.update(
            state.tree,
            rows.reshape(-1),
            slots.reshape(-1),
            jnp.where(priority_mask, top, 0.0).reshape(-1),
            unique=True,
        )
        return state.replace(data=data, tree=tree)

    def _write_zone(self, state, buffers, zone_slots, episodes, lengths, mask):
        """Writes one episode (L, ...) per listed buffer into its zone slot."""
        length = self.episode_length
        t = jnp.arange(length)[None, :]
        slot = zone_slots[:, None] * length + t
        rows = jnp.broadcast_to(buffers[:, None], slot.shape)
        state = self._write_slots(
            state, rows, jnp.where(mask[:, None], slot, -1), episodes, t < lengths[:, None]
        )
        zone_length = state.zone_length.at[buffers, zone_slots].set(
            jnp.where(mask, lengths, state.zone_length[buffers, zone_slots])
        )
        return state.replace(zone_length=zone_length)

    def _push_pool(self, state, episodes, lengths, push):
        """Copies the pushed episodes (E, L, ...) into the success pool."""
        q = self.config.pool_episodes
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

    # -------------------------------------------------------------- refresh
    def refresh(self, state: DERState, key: jax.Array, run: jax.Array = True) -> DERState:
        """Each buffer copies one random pool episode into its oldest zone slot.

        Nothing is written while the pool is empty; with `run` False nothing at
        all happens (a masked refresh: only scatters, so under vmap the large
        arrays are never copied through a select).
        """
        k = self.config.num_buffers
        stored = jnp.minimum(state.pool_count, self.config.pool_episodes)
        pick = jax.random.randint(key, (k,), 0, jnp.maximum(stored, 1))
        episodes = jax.tree.map(lambda p: p[pick], state.pool)
        mask = jnp.broadcast_to(run & (stored > 0), (k,))
        buffers = jnp.arange(k)
        state = self._write_zone(
            state, buffers, state.zone_next, episodes, state.pool_length[pick], mask
        )
        return state.replace(
            zone_next=jnp.where(mask, (state.zone_next + 1) % self.zone_slots, state.zone_next),
            refreshes=state.refreshes + jnp.asarray(run, jnp.int32),
        )

    def after_updates(self, state: DERState, key: jax.Array, max_refreshes: int = 1) -> DERState:
        """Runs the refreshes due after `state.updates` updates when `state.dynamic`
        (DER on), else nothing.

        `max_refreshes` (static) bounds how many can be due at once: after u
        more updates at most u // refresh_every + 1 are. The refreshes run in a
        fixed-length loop, each masked by whether it is due.
        """
        due = state.updates // self.config.refresh_every

        def body(_, carry):
            state, key = carry
            key, sub = jax.random.split(key)
            return self.refresh(state, sub, state.dynamic & (state.refreshes < due)), key

        state, _ = jax.lax.fori_loop(0, max_refreshes, body, (state, key))
        return state

    # ------------------------------------------------------------- training
    def sample(
        self, state: DERState, key: jax.Array, batch_size: int
    ) -> Tuple[types.Transition, SampleInfo]:
        """A batch from one buffer drawn uniformly among the non-empty ones, with its
        importance weights in `batch.weight`."""
        cfg = self.config.priority
        key_buffer, key_draw = jax.random.split(key)
        filled = sumtree.total(state.tree) > 0
        buffer = jax.random.categorical(key_buffer, jnp.where(filled, 0.0, -jnp.inf))
        buffer = jnp.where(jnp.any(filled), buffer, 0).astype(jnp.int32)
        indices, probs = prioritized.draw(state.tree, buffer, key_draw, batch_size, cfg.stratified)
        size = state.ring_size[buffer] + jnp.sum(state.zone_length[buffer])
        weights = prioritized.importance_weights(probs, size, cfg.beta_at(state.updates))
        batch = jax.tree.map(lambda d: d[buffer, indices], state.data).replace(weight=weights)
        return batch, SampleInfo(buffer=buffer, indices=indices)

    def set_priorities(self, state: DERState, info: SampleInfo, td_error: jax.Array) -> DERState:
        """Priorities |TD| + eps for the sampled agent items, top priority for zone items."""
        cfg = self.config.priority
        b = info.buffer
        p = prioritized.leaf_priority(td_error, state.max_priority[b], cfg.eps)
        top = jnp.maximum(state.max_priority[b], jnp.max(p))
        p = jnp.where(info.indices < self.zone_size, top, p)
        tree = sumtree.update(
            state.tree, jnp.full_like(info.indices, b), info.indices, p**cfg.alpha
        )
        return state.replace(
            tree=tree,
            max_priority=state.max_priority.at[b].set(top),
            updates=state.updates + 1,
        )

    def can_sample(self, state: DERState) -> jax.Array:
        return jnp.any(sumtree.total(state.tree) > 0)

    def metrics(self, state: DERState) -> dict:
        """Fill levels for logging."""
        return {
            'buffer_size': jnp.sum(state.ring_size) + jnp.sum(state.zone_length),
            'zone_fill': jnp.mean((state.zone_length > 0).astype(jnp.float32)),
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
    transitions with per-step `discount`."""
    return DERBuffer(config, capacity, episode_length, num_envs, n_step, discount)
