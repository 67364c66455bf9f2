"""Demonstrations: the file format, its validating loader, a scripted human-like demonstrator.

File format (version 1): one `.npz` holding D episodes, their steps
concatenated (N = sum of the lengths):

  format_version    int, 1
  task              str, the task name ('peg_in_hole', 'usb', ...)
  env_config        str, JSON of the environment config the episodes ran in
  obs               (N, obs_dim) float32, s_t
  actions           (N, action_dim) float32, the agent-space action a_t in
                    [-1, 1] (the command divided by `env.action_scale`)
  rewards           (N,) float32, r_t
  next_obs          (N, obs_dim) float32, s_{t+1} (before any reset)
  dones             (N,) bool, step t ended its episode (goal or time limit)
  terminals         (N,) bool, step t ended it without bootstrap (goal reached)
  episode_starts    (D,) int64, index of each episode's first step
  episode_lengths   (D,) int64
  success           (D,) bool, the episode reached the goal

`save` writes it; `load` checks everything (a readable archive, version,
task, dtypes, dimensions, boundaries, finiteness, action range) before it
returns anything, so a malformed file (truncated, damaged, empty, a wrong
key or value) raises a `DemoFormatError` whose one-line message names the
file and what is wrong, and nothing is loaded half-way. `load` returns only
the episodes marked successful (a demonstration zone takes successes only)
and refuses a file without any. `hardware.run_policy --log_dir` writes
each robot episode in this format.

`HumanDemonstrator` drives a task the way a person with a game controller
does: it sees where the parts are (the paper's demonstrations were given by
visual inspection, without haptics), corrects a fraction of the error per
step with a gain drawn per episode, shakes the stick (`jitter`), lets go of
it now and then (`pause_prob`), only descends once the parts look aligned to
the eye (`*_tolerance`), and lifts a little when it feels stuck. It is slow
and noisy, not optimal, and it succeeds on both assembly tasks. It is
recorded by `training.demonstrations.record` (the one rollout, `acting.py`).
"""

from __future__ import annotations

import io
import json
import os
import tokenize
import zipfile
import zlib
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from insertion_jax import checks, types

FORMAT_VERSION = 1
KEYS = (
    'format_version',
    'task',
    'env_config',
    'obs',
    'actions',
    'rewards',
    'next_obs',
    'dones',
    'terminals',
    'episode_starts',
    'episode_lengths',
    'success',
)


class DemoFormatError(ValueError):
    """A demonstrations file that does not match the format or the task."""


@struct.dataclass
class Demonstrations:
    """Episodes padded to a common length L (steps after an episode's end are 0).

    Attributes:
      steps: `types.Step` with leaves (D, L, ...).
      lengths: (D,) int32 episode lengths.
      success: (D,) bool, the episode reached the goal; None: all did. Only
        successful episodes enter a DER zone or an LfD batch.
    """

    steps: types.Step
    lengths: jax.Array
    success: Optional[jax.Array] = None

    @property
    def count(self) -> int:
        return int(self.lengths.shape[0])


# ------------------------------------------------------------------ files
def save(
    path: str,
    demos: Demonstrations,
    task: str,
    env_config: Dict[str, Any],
    success: Optional[np.ndarray] = None,
) -> None:
    """Writes `demos` in the file format (see the module docstring).

    `success` (D,) defaults to `demos.success`, and to all True when that is None.
    """
    lengths = np.asarray(demos.lengths, np.int64)
    if success is None:
        success = np.ones(lengths.shape, bool) if demos.success is None else demos.success
    mask = np.arange(np.asarray(demos.steps.reward).shape[1])[None, :] < lengths[:, None]
    flat = jax.tree.map(lambda x: np.asarray(x)[mask], demos.steps)
    dones = np.zeros(int(lengths.sum()), bool)
    dones[np.cumsum(lengths) - 1] = True
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        np.savez_compressed(
            f,
            format_version=np.int64(FORMAT_VERSION),
            task=np.str_(task),
            env_config=np.str_(json.dumps(env_config)),
            obs=flat.obs.astype(np.float32),
            actions=flat.action.astype(np.float32),
            rewards=flat.reward.astype(np.float32),
            next_obs=flat.next_obs.astype(np.float32),
            dones=dones,
            terminals=flat.terminal.astype(bool),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            episode_lengths=lengths,
            success=np.asarray(success, bool),
        )


def _fail(path: str, message: str, cause: Optional[BaseException] = None):
    """Raises DemoFormatError('PATH: message'), on one line."""
    raise DemoFormatError(' '.join(f'{path}: {message}'.split())) from cause


# What reading a damaged .npz raises, layer by layer (measured on truncated
# and bit-flipped files): the zip directory, the deflate stream, the file
# itself, numpy's array header (parsed as a Python literal) and its data.
_DAMAGED_ARCHIVE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    SyntaxError,
    tokenize.TokenError,
)


def _read(path: str) -> Dict[str, np.ndarray]:
    """Every array of the archive at `path`, decompressed (DemoFormatError if unreadable).

    Each member is read whole, so that its CRC-32 is checked: numpy's own
    reader stops at the array's last byte and never reaches the check, and a
    flipped byte in the compressed data can then load as a wrong value.
    """
    data = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                raw = archive.read(name)
                key = name[: -len('.npy')] if name.endswith('.npy') else name
                data[key] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except _DAMAGED_ARCHIVE as e:
        # A damaged archive surfaces as whatever the layer that trips over it
        # raises (measured on truncated and bit-flipped files); nothing but
        # decoding runs inside, so each of these is a format error.
        kind = type(e).__name__
        if type(e).__module__ != 'builtins':
            kind = f'{type(e).__module__}.{kind}'
        _fail(path, f'not a readable .npz file ({kind}: {e}).', e)
    return data


def _check_kind(path: str, data: Dict[str, np.ndarray], kinds: str, what: str, *keys: str):
    for key in keys:
        if data[key].dtype.kind not in kinds:
            _fail(path, f'{key} has dtype {data[key].dtype}; expected {what}.')


def load(
    path: str, task: str, obs_dim: int, action_dim: int, max_length: int
) -> Tuple[Demonstrations, Dict[str, Any]]:
    """Reads and checks a demonstrations file for `task`; keeps the successful episodes.

    Args:
      path: the `.npz` file.
      task: the task the episodes must come from.
      obs_dim, action_dim: the task's sizes.
      max_length: the episode limit L the episodes are padded to.

    Returns:
      (Demonstrations of the K successful episodes padded to max_length, with
      `success` None (all succeeded), {'env_config': dict, 'success': (K,) all
      True, 'dropped_failed': the number of episodes marked failed, left out}).

    Raises:
      DemoFormatError naming the file and the first problem (unreadable or
      damaged archive, a missing key, a wrong version, dtype, shape or value,
      no successful episode); FileNotFoundError.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f'No demonstrations file at {path!r}.')
    data = _read(path)
    missing = [k for k in KEYS if k not in data]
    if missing:
        _fail(path, f'missing keys {missing}; a version-{FORMAT_VERSION} file has {list(KEYS)}.')
    for key in ('format_version', 'task', 'env_config'):
        if data[key].shape != ():
            _fail(path, f'{key} has shape {data[key].shape}; expected a scalar.')
    if data['format_version'].dtype.kind not in 'iu':
        _fail(
            path,
            f'format_version={data["format_version"].item()!r} (dtype '
            f'{data["format_version"].dtype}) is not an integer; this version reads '
            f'{FORMAT_VERSION}.',
        )
    version = int(data['format_version'])
    if version != FORMAT_VERSION:
        _fail(path, f'format_version={version}; this version reads {FORMAT_VERSION} only.')
    _check_kind(path, data, 'U', 'a string', 'task', 'env_config')
    if str(data['task']) != task:
        _fail(path, f"task={str(data['task'])!r}, but the run's task is {task!r}.")
    _check_kind(path, data, 'fiu', 'numbers', 'obs', 'actions', 'rewards', 'next_obs')
    _check_kind(path, data, 'biu', 'booleans', 'dones', 'terminals', 'success')
    _check_kind(path, data, 'iu', 'integers', 'episode_starts', 'episode_lengths')
    starts, lengths = data['episode_starts'], data['episode_lengths']
    if starts.ndim != 1 or starts.size == 0:
        _fail(path, f'episode_starts has shape {starts.shape}; expected (D,) with D >= 1.')
    if data['rewards'].ndim != 1:
        _fail(path, f'rewards has shape {data["rewards"].shape}; expected (N,).')
    n = data['rewards'].shape[0]
    expected = {
        'obs': (n, obs_dim),
        'actions': (n, action_dim),
        'rewards': (n,),
        'next_obs': (n, obs_dim),
        'dones': (n,),
        'terminals': (n,),
        'episode_lengths': starts.shape,
        'success': starts.shape,
    }
    for key, shape in expected.items():
        if data[key].shape != shape:
            _fail(path, f'{key} has shape {data[key].shape}; expected {shape}.')
    for key in ('dones', 'terminals', 'success'):
        if not np.all((data[key] == 0) | (data[key] == 1)):
            _fail(path, f'{key} holds values other than 0 and 1.')
    if lengths.min() < 1 or lengths.max() > max_length:
        _fail(path, f'episode_lengths {lengths.tolist()} must lie in [1, {max_length}].')
    if not (starts[0] == 0 and np.all(starts[1:] == np.cumsum(lengths)[:-1])):
        _fail(
            path, 'episode_starts do not follow from episode_lengths (episodes must be contiguous).'
        )
    if int(lengths.sum()) != n:
        _fail(path, f'episode_lengths add up to {int(lengths.sum())} steps, the arrays hold {n}.')
    ends = np.zeros(n, bool)
    ends[np.cumsum(lengths) - 1] = True
    if not np.array_equal(data['dones'].astype(bool), ends):
        _fail(path, 'dones are not set exactly at the episode ends.')
    for key in ('obs', 'actions', 'rewards', 'next_obs'):
        if not np.all(np.isfinite(data[key])):
            _fail(path, f'{key} holds non-finite values.')
    if n and np.abs(data['actions']).max() > 1.0 + 1e-6:
        _fail(path, f'actions reach {np.abs(data["actions"]).max():.3g}; they must lie in [-1, 1].')
    try:
        env_config = json.loads(str(data['env_config']))
    except json.JSONDecodeError as e:
        _fail(path, f'env_config is not JSON ({e}).', e)
    if not isinstance(env_config, dict):
        _fail(path, f'env_config is JSON {type(env_config).__name__}, not an object.')

    success = data['success'].astype(bool)
    if not success.any():
        _fail(
            path,
            f'all {success.size} episodes are marked failed; demonstrations must be '
            'successful episodes.',
        )
    starts, lengths = starts[success], lengths[success]
    d = starts.size
    index = starts[:, None] + np.minimum(np.arange(max_length)[None, :], lengths[:, None] - 1)
    valid = np.arange(max_length)[None, :] < lengths[:, None]

    def pad(x):
        out = x[index]
        return np.where(valid.reshape(valid.shape + (1,) * (out.ndim - 2)), out, 0).astype(x.dtype)

    steps = types.Step(
        obs=pad(data['obs'].astype(np.float32)),
        action=pad(data['actions'].astype(np.float32)),
        reward=pad(data['rewards'].astype(np.float32)),
        terminal=pad(data['terminals'].astype(bool)),
        next_obs=pad(data['next_obs'].astype(np.float32)),
    )
    demos = Demonstrations(steps=steps, lengths=lengths.astype(np.int32).reshape(d))
    return demos, {
        'env_config': env_config,
        'success': np.ones(d, bool),
        'dropped_failed': int(success.size - d),
    }


# ----------------------------------------------------------- demonstrator
@struct.dataclass
class HumanDemonstrator:
    """A person with a game controller (see the module docstring).

    A pytree of scalars, so one compiled recorder serves every setting
    (including the deliberately bad drivers the physics tests use).

    Attributes:
      gain: share of the seen error corrected per step, at full attention.
      gain_spread: per-episode gain factor, uniform in [1 - spread, 1 + spread].
      jitter: std of the stick's shake, in units of full stick.
      pause_prob: chance per step of letting go of the stick.
      max_pause: longest pause, steps (>= 1).
      descent: stick deflection used to move down.
      yaw_tolerance_deg, xy_tolerance_mm: how aligned the parts must look
        before the person moves down.
      stuck_force_n: contact force at which the person lifts a little.
    """

    gain: float = 0.5
    gain_spread: float = 0.3
    jitter: float = 0.03
    pause_prob: float = 0.08
    max_pause: int = 3
    descent: float = 0.6
    yaw_tolerance_deg: float = 0.25
    xy_tolerance_mm: float = 0.2
    stuck_force_n: float = 8.0

    def validate(self) -> 'HumanDemonstrator':
        """Raises ValueError naming a setting outside its range; returns self."""
        owner = 'HumanDemonstrator'
        checks.positive(
            owner,
            gain=self.gain,
            descent=self.descent,
            yaw_tolerance_deg=self.yaw_tolerance_deg,
            xy_tolerance_mm=self.xy_tolerance_mm,
            stuck_force_n=self.stuck_force_n,
        )
        checks.unit_interval(owner, gain_spread=self.gain_spread, pause_prob=self.pause_prob)
        checks.non_negative(owner, jitter=self.jitter)
        checks.positive_int(owner, max_pause=self.max_pause)
        return self

    def init(self, key: jax.Array) -> Dict[str, jax.Array]:
        """Per-episode memory: gain and steps of pause left."""
        factor = jax.random.uniform(
            key, (), minval=1 - self.gain_spread, maxval=1 + self.gain_spread
        )
        return {'gain': self.gain * factor, 'pause': jnp.zeros((), jnp.int32)}

    def act(self, env, state, memory, key) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """The stick deflection in [-1, 1] (agent space) for one environment."""
        key_jitter, key_pause, key_len = jax.random.split(key, 3)
        per_step = env.action_scale / env.config.control_hz  # full stick, one step
        data, info = state.data, state.info
        err_xy = info['goal'][:2] - env.tip_position(data)[:2]
        err_yaw = -env.yaw_error(data, info)
        gain = memory['gain']
        stick = jnp.zeros((env.action_dim,))
        stick = stick.at[:2].set(gain * err_xy / per_step[:2])
        stick = stick.at[5].set(gain * err_yaw / per_step[5])
        looks_aligned = (jnp.abs(err_yaw) < jnp.deg2rad(self.yaw_tolerance_deg)) & (
            jnp.linalg.norm(err_xy) < self.xy_tolerance_mm * 1e-3
        )
        stuck = state.metrics['force_n'] > self.stuck_force_n
        stick = stick.at[2].set(jnp.where(looks_aligned, -self.descent, jnp.where(stuck, 0.3, 0.0)))
        stick = stick + self.jitter * jax.random.normal(key_jitter, stick.shape)
        start_pause = jax.random.uniform(key_pause) < self.pause_prob
        pause_len = jax.random.randint(key_len, (), 1, self.max_pause + 1)
        pause = jnp.where(
            memory['pause'] > 0, memory['pause'] - 1, jnp.where(start_pause, pause_len, 0)
        )
        stick = jnp.where(pause > 0, 0.0, stick)
        return jnp.clip(stick, -1.0, 1.0), {**memory, 'pause': pause}
