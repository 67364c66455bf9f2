"""Demonstrations mixed into every batch, as a replay composed around another one.

Learning from demonstrations (the residual-RL paper's LfD baseline) keeps the
demonstrations in a buffer of their own and draws a fixed share of every
batch from it. `make_mixed(inner, demo_fraction, spec)` wraps any replay
(flashbax's mixer idea): of a batch of B,

  the first B - d items come from `inner.sample(state.inner, key, B - d)`,
  the last d = round(demo_fraction * B) uniformly from the demonstrations,
    drawn with `jax.random.fold_in(key, 1)`; they carry is_demo 1, weight 1.

`set_priorities` hands the first B - d TD errors to the inner replay; the
demonstrations have no priorities. `init(example_step, demos)` stores the
n-step transitions of every demonstration step on the device (inside the
jitted, seed-vmapped init), the valid ones first in episode-major order.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from insertion_jax import types
from insertion_jax.replay import base, nstep, uniform
from insertion_jax.replay import demos as demos_lib


@struct.dataclass
class MixedState:
    """The inner replay's state and the demonstrations' transitions.

    Attributes:
      inner: the state of the wrapped replay.
      demos: `uniform.BufferState` of D * L transitions, the `size` valid ones
        first (episode-major), the padding after them (never drawn).
    """

    inner: Any
    demos: uniform.BufferState


def demo_batch_size(demo_fraction: float, batch_size: int) -> int:
    """d, the demonstration items in a batch of `batch_size`."""
    return int(round(demo_fraction * batch_size))


def demo_storage(
    example_step: types.Step,
    demos: demos_lib.Demonstrations,
    n_step: int,
    discount: float,
) -> uniform.BufferState:
    """The demonstrations' n-step transitions as a uniform buffer (traceable).

    Args:
      example_step: one `types.Step` without batch axes (the stored dtypes).
      demos: episodes with `steps` leaves (D, L, ...), `lengths` (D,), and
        optionally `success` (D,) (failed episodes count as padding).
      n_step, discount: return length and per-step discount.

    Returns:
      `uniform.BufferState` of capacity D * L: the valid transitions (t <
      length of a successful episode) first, in episode-major order, marked
      is_demo 1; `size` their number, so a uniform draw over [0, size) never
      reaches the padding.
    """
    steps = jax.tree.map(lambda x: jnp.swapaxes(jnp.asarray(x), 0, 1), demos.steps)
    lengths = jnp.asarray(demos.lengths)
    episodes = nstep.episode_transitions(steps, lengths, n_step, discount)  # (L, D, ...)
    num_steps, num_demos = episodes.reward.shape
    valid = jnp.arange(num_steps)[None, :] < lengths[:, None]  # (D, L)
    if demos.success is not None:
        valid = valid & jnp.asarray(demos.success, bool)[:, None]
    # A stable sort keeps the episode-major order among the valid transitions.
    order = jnp.argsort(jnp.logical_not(valid.reshape(-1)).astype(jnp.int32), stable=True)
    example = nstep.transition_like(example_step)
    data = jax.tree.map(
        lambda e, x: (
            jnp.swapaxes(x, 0, 1)
            .reshape((num_demos * num_steps,) + x.shape[2:])[order]
            .astype(e.dtype)
        ),
        example,
        episodes.replace(is_demo=jnp.ones_like(episodes.is_demo)),
    )
    return uniform.BufferState(
        data=data, insert_pos=jnp.zeros((), jnp.int32), size=jnp.sum(valid).astype(jnp.int32)
    )


def init(
    inner: base.Replay,
    spec: base.ReplaySpec,
    example_step: types.Step,
    demos: Optional[demos_lib.Demonstrations] = None,
) -> MixedState:
    """`Replay.init`: the inner replay empty, the demonstrations stored."""
    if demos is None:
        raise ValueError('A mixed replay (mode=lfd) needs demonstrations.')
    return MixedState(
        inner=inner.init(example_step),
        demos=demo_storage(example_step, demos, spec.n_step, spec.discount),
    )


def add(
    inner: base.Replay,
    state: MixedState,
    steps: types.Step,
    last: jax.Array,
    success: jax.Array,
    key: jax.Array,
) -> MixedState:
    """`Replay.add`: the collected chunk goes to the inner replay."""
    return state.replace(inner=inner.add(state.inner, steps, last, success, key))


def sample(
    inner: base.Replay,
    demo_fraction: float,
    state: MixedState,
    key: jax.Array,
    batch_size: int,
) -> Tuple[types.Transition, Any]:
    """`Replay.sample`: B - d inner items (key `key`), then d demonstration items
    (key `fold_in(key, 1)`); the inner replay's sample info."""
    d = demo_batch_size(demo_fraction, batch_size)
    batch, info = inner.sample(state.inner, key, batch_size - d)
    demo = uniform.sample(state.demos, jax.random.fold_in(key, 1), d)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), batch, demo), info


def set_priorities(
    inner: base.Replay,
    demo_fraction: float,
    state: MixedState,
    info: Any,
    td_error: jax.Array,
    apply: jax.Array,
) -> MixedState:
    """`Replay.set_priorities`: the first B - d errors of td_error (B,) go to the inner replay."""
    agent_size = td_error.shape[0] - demo_batch_size(demo_fraction, td_error.shape[0])
    return state.replace(
        inner=inner.set_priorities(state.inner, info, td_error[:agent_size], apply)
    )


def after_updates(inner: base.Replay, state: MixedState, key: jax.Array) -> MixedState:
    """`Replay.after_updates` of the inner replay."""
    return state.replace(inner=inner.after_updates(state.inner, key))


def metrics(inner: base.Replay, state: MixedState) -> Dict[str, jax.Array]:
    """The inner replay's metrics."""
    return inner.metrics(state.inner)


def make_mixed(inner: base.Replay, demo_fraction: float, spec: base.ReplaySpec) -> base.Replay:
    """`inner` with demonstrations mixed into every batch (see the module docstring).

    Args:
      inner: the replay of the agent's own experience (takes no demonstrations).
      demo_fraction: share of each batch drawn from the demonstrations, in (0, 1).
      spec: the run's replay spec (n-step return of the demonstrations).
    """
    if not 0.0 < demo_fraction < 1.0:
        raise ValueError(f'demo_fraction={demo_fraction!r} must be in (0, 1).')
    if inner.takes_demonstrations:
        raise ValueError(
            'The inner replay of a mixed replay must not take demonstrations itself '
            '(a DER structure other than none).'
        )
    return base.Replay(
        config=inner.config,
        takes_demonstrations=True,
        init=functools.partial(init, inner, spec),
        add=functools.partial(add, inner),
        sample=functools.partial(sample, inner, demo_fraction),
        set_priorities=functools.partial(set_priorities, inner, demo_fraction),
        after_updates=functools.partial(after_updates, inner),
        metrics=functools.partial(metrics, inner),
    )
