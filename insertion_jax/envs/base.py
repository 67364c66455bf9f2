"""What every task shares: its `State`, the `Env` protocol and the MJX physics step.

`State` is the one environment state of every task; `Env` is the interface the
training loop, the evaluator and the demonstration recorder use, whatever the
task. `physics_step` is the substep scan of the MJX tasks (insertion and
assembly): it also tracks the deepest rigid-contact penetration and whether the
simulation stayed finite, and `mask_nonfinite` is how a task hides a diverged
step's values from the learner and from evaluation averages.

This module imports MJX (as `mjx`, silenced: see below); the modules that need
MJX take it from here.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, runtime_checkable

import jax
import jax.numpy as jnp
from flax import struct
from jax import custom_batching

# MJX prints a notice on stdout at import when its optional Warp backend is
# missing. This package uses MJX's JAX backend on every platform, so the
# notice is noise; every module of the package imports MJX from here.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx

# MJX's stages of `mjx.forward`, for `forward_at_rest` (mujoco-mjx is pinned).
from mujoco.mjx._src import forward as mjx_forward  # noqa: E402
from mujoco.mjx._src import sensor as mjx_sensor  # noqa: E402
from mujoco.mjx._src import smooth as mjx_smooth  # noqa: E402


@struct.dataclass
class State:
    """Environment state; every field is a JAX array or a pytree of them.

    Attributes:
      data: physics state: `mjx.Data` for the MJX tasks, a dict of arrays for
        pure-JAX tasks.
      obs: observation: shape (obs_dim,), or a dict with an image
        (`observations.observation_parts`).
      reward: reward of the last step, float32 ().
      done: episode over (horizon reached, task ended or physics diverged), bool ().
      metrics: named float32 scalars of the last step (reward terms, success,
        force...); always holds 'nonfinite' (1.0 when the physics diverged),
        and every value is finite (see `mask_nonfinite`).
      info: per-episode quantities of the task; always holds 'step' (int32 ())
        and 'success' (bool (), the task's success at this step). The connector
        task adds 'goal' ((3,)), 'goal_observed' ((3,)), 'friction' (()),
        'ft_bias' ((3,)) and 'ever_success' (bool ()); with the camera on,
        also 'camera_view' (`camera.View`), 'camera_key' (the pixel noise's
        PRNG key) and 'goal_image' (uint8 (R, R)).
    """

    data: Any
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: Dict[str, jax.Array]
    info: Dict[str, Any]


@runtime_checkable
class Env(Protocol):
    """The task interface: what the training loop, evaluator and recorder use.

    Every function is pure (jit- and vmap-able; no Python state changes), and
    works on one environment: batch with `jax.vmap`. `isinstance(env, Env)`
    checks that the members exist (not their signatures).

    Attributes:
      obs_dim: size of one observation.
      action_dim: size of one agent action.
      obs_scale: (obs_dim,) typical magnitude of each observation entry (the
        agents' fixed input scale).
      obs_fields: the state vector's layout, ((name, size, unit), ...) in
        order (what an exported policy's policy.json tells the robot loop).
      action_scale: (action_dim,) physical command per unit agent action (an
        agent acts in [-1, 1]).
      has_base_controller: whether `base_action` exists (residual RL).
      horizon: the episode limit in control steps.
    """

    obs_dim: int
    action_dim: int
    obs_scale: Tuple[float, ...]
    obs_fields: Tuple[Tuple[str, int, str], ...]
    has_base_controller: bool

    @property
    def action_scale(self) -> jax.Array: ...

    @property
    def horizon(self) -> int: ...

    @property
    def observation_spec(self) -> Any:
        """Shape and dtype of one observation: (obs_dim,) float32, or a dict
        of such specs when the task observes an image (`observations.IMAGE`)."""
        ...

    @property
    def action_spec(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of one agent action, (action_dim,) float32."""
        ...

    def reset(self, key: jax.Array) -> State:
        """Starts an episode from PRNG `key` (tasks may take keyword overrides)."""
        ...

    def reset_args(self, key: jax.Array) -> Dict[str, jax.Array]:
        """Keyword arguments of `reset` as `reset(key)` draws them (`VectorTask`)."""
        ...

    def step(self, state: State, command: jax.Array) -> State:
        """Advances one control step with `command` (action_dim,), in physical units."""
        ...

    def terminal(self, state: State) -> jax.Array:
        """bool (): the episode ended without bootstrap (not a time limit)."""
        ...

    def success(self, state: State) -> jax.Array:
        """bool (): the task's own success at this step (connected, assembled, reached)."""
        ...

    def base_action(self, obs: Any) -> jax.Array:
        """The hand-designed controller's command (action_dim,) for `obs` (it
        reads `observations.state_vector(obs)`)."""
        ...


def vector_spec(size: int) -> jax.ShapeDtypeStruct:
    """The spec of one float32 vector of `size` entries: shape (size,)."""
    return jax.ShapeDtypeStruct((size,), jnp.float32)


def batched(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`jax.vmap(fn)` over a leading environment axis, batched once under any
    number of outer vmaps.

    The training loop runs seeds (and the DER study configurations) as vmaps
    around the environments' own batch. Batched twice, the MJX step compiled
    to slower kernels than the same step batched once over all the worlds
    (USB on a 2-core CPU, one seed: a training iteration of 16 environments
    took 2.9 s instead of 1.9 s, an evaluation of 50 episodes 9.4 s instead
    of 4.0 s). Under an outer vmap of size S, `batched(fn)` therefore merges
    that axis into the environment axis, (S, E, ...) -> (S * E, ...), runs
    `fn` batched once, and splits the result back: the worlds step as one
    plain batch of S * E. Keyword arguments are batched like positional ones;
    leaves that the outer vmap does not batch are broadcast along its axis.
    """
    return merge_outer_vmaps(jax.vmap(fn))


def merge_outer_vmaps(batch_fn: Callable[..., Any]) -> Callable[..., Any]:
    """`batch_fn`, a function of arrays with a leading batch axis, called
    once with every outer vmap's axis merged into that axis (see `batched`):
    it sees the whole batch of worlds, whatever vmaps wrap the call."""

    @custom_batching.custom_vmap
    def run(args, kwargs):
        return batch_fn(*args, **kwargs)

    @run.def_vmap
    def merged(axis_size, in_batched, args, kwargs):
        def merge(x, is_batched):
            if not is_batched:
                x = jnp.broadcast_to(x, (axis_size,) + x.shape)
            return x.reshape((axis_size * x.shape[1],) + x.shape[2:])

        flat = jax.tree.map(merge, (args, kwargs), tuple(in_batched))
        out = run(*flat)  # batched again if more vmaps wrap this one
        split = jax.tree.map(
            lambda y: y.reshape((axis_size, y.shape[0] // axis_size) + y.shape[1:]), out
        )
        return split, jax.tree.map(lambda _: True, split)

    return lambda *args, **kwargs: run(args, kwargs)


class VectorTask:
    """The parts of `Env` that follow from a task's sizes and config, written once:
    `horizon` (`config.horizon`) and the specs of one observation and one
    action (float32 vectors of `obs_dim` and `action_dim`). The tasks inherit it."""

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def reset_args(self, key: jax.Array) -> Dict[str, jax.Array]:
        """Per-episode keyword arguments of `reset` as `reset(key)` draws them:
        `reset(key, **reset_args(key))` is `reset(key)`, and a caller may change
        them (a start pose). Empty by default; the connectors draw their goal
        offset, the assembly tasks a start pose."""
        del key
        return {}

    @property
    def observation_spec(self) -> jax.ShapeDtypeStruct:
        return vector_spec(self.obs_dim)

    @property
    def action_spec(self) -> jax.ShapeDtypeStruct:
        return vector_spec(self.action_dim)


def forward_at_rest(model: mjx.Model, data: mjx.Data) -> mjx.Data:
    """`mjx.forward` for a state in which no two bodies touch: a reset.

    Every task starts its pieces apart (the configs refuse a start height that
    would not), so a reset's forward dynamics has no contact to find and no
    constraint to solve. This runs `mjx.forward`'s stages without collision
    detection, constraint assembly and the solver, whose answer with no
    active constraint is `qacc_smooth`: positions and velocities are the same
    as `mjx.forward`'s bit for bit, accelerations and sensor readings to the
    rounding noise that the solver may add when it runs anyway (3e-6 m/s^2
    seen; on 256 resets of each connector they were bit for bit the same).
    tests/test_env_pure.py and tests/test_assembly.py check every task's
    resets against MuJoCo's own `mj_forward` (float64, collision and solver
    included): nothing touches, and the state agrees to float32 rounding. The contact
    and constraint fields keep `mjx.make_data`'s values; the first `mjx.step`
    computes them. A reset then compiles in less than half the time (14 -> 6 s
    for USB on the 2-core CPU), and so does the reset inside every program
    that starts episodes (collection, evaluation, initialization).
    """
    for stage in _STAGES_AT_REST:
        data = stage(model, data)
    return mjx_sensor.sensor_acc(model, data.replace(qacc=data.qacc_smooth))


# `mjx.forward`'s stages in its order, less collision, constraints and solver.
_STAGES_AT_REST = (
    mjx_smooth.kinematics,
    mjx_smooth.com_pos,
    mjx_smooth.camlight,
    mjx_smooth.tendon,
    mjx_smooth.crb,
    mjx_smooth.tendon_armature,
    mjx_smooth.factor_m,
    mjx_smooth.transmission,
    mjx_sensor.sensor_pos,
    mjx_forward.fwd_velocity,
    mjx_sensor.sensor_vel,
    mjx_forward.fwd_actuation,
    mjx_forward.fwd_acceleration,
)


def physics_step(
    model: mjx.Model,
    data: mjx.Data,
    substeps: int,
    rigid_pair: Optional[jax.Array] = None,
) -> Tuple[mjx.Data, jax.Array, jax.Array]:
    """Runs `substeps` MJX steps and reports penetration and finiteness.

    Args:
      model: the MJX model (with any per-episode parameters already set).
      data: the MJX state to advance (its controls already set).
      substeps: physics steps per control step (static).
      rigid_pair: optional bool (ngeom, ngeom), True where a contact between
        the two geoms counts as rigid. Soft pairs (an O-ring squeezing the plug
        by design) are left out of the penetration; None counts every contact.

    Returns:
      (data after the last substep, the deepest rigid-contact interpenetration
      over all substeps in metres, float32 () >= 0, and whether every joint
      position and velocity is finite, bool ()).
    """

    def substep(carry, _):
        d, penetration_m = carry
        d = mjx.step(model, d)
        contact = d._impl.contact
        if rigid_pair is None:
            deepest = jnp.max(-contact.dist, initial=0.0)
        else:
            rigid = rigid_pair[contact.geom[:, 0], contact.geom[:, 1]]
            deepest = jnp.max(jnp.where(rigid, -contact.dist, 0.0), initial=0.0)
        return (d, jnp.maximum(penetration_m, deepest)), None

    # 0 computed from the state, so that under vmap it is batched like the
    # rest of the carry and the (large) scan body is batched once; a constant
    # zero, batched only after the first pass, made JAX batch it twice.
    start = (data, 0.0 * data.time)
    (data, penetration_m), _ = jax.lax.scan(substep, start, None, length=substeps)
    finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
    return data, penetration_m, finite


def mask_nonfinite(
    finite: jax.Array,
    obs: jax.Array,
    reward: jax.Array,
    metrics: Dict[str, jax.Array],
    last_metrics: Dict[str, jax.Array],
) -> Tuple[jax.Array, jax.Array, Dict[str, jax.Array]]:
    """Hides the values of a step whose physics diverged (`finite` False).

    A diverged step ends its episode (`done`); what it computed from NaN
    positions must not reach the learner or an evaluation average. Its
    observation, reward and reward terms ('reward/...' metrics, which add up to
    the reward) become 0. 'nonfinite' (1.0) and 'success' (False: a task's
    success requires a finite state) are computed with the finiteness flag and
    stay as they are. Every other metric keeps its value of the step before
    (`last_metrics`, finite), so that a final distance or force averaged over
    episodes reports where the episode was when it diverged.

    Args:
      finite: bool (), the step stayed finite.
      obs: observation after the step (any pytree of arrays).
      reward: () reward of the step.
      metrics: the step's metrics, each ().
      last_metrics: the metrics of the state before the step, same keys.

    Returns:
      (obs, reward, metrics), unchanged where `finite`.
    """
    obs = jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), obs)
    reward = jnp.where(finite, reward, 0.0)
    masked = {}
    for name, value in metrics.items():
        if name in ('nonfinite', 'success'):
            masked[name] = value
        elif name.startswith('reward/'):
            masked[name] = jnp.where(finite, value, 0.0)
        else:
            masked[name] = jnp.where(finite, value, last_metrics[name])
    return obs, reward, masked
