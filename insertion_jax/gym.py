"""Every task as a gymnasium environment: `import insertion_jax.gym`.

Importing this module registers each task of the package (the connectors
usb, dsub and model_e, the assembly tasks peg_in_hole and lap_joint, and the
diagnostic point_reach; `tasks()` lists them) with gymnasium as
`insertion_jax/<task>`:

    import gymnasium
    import insertion_jax.gym  # noqa: F401 (registers the ids)

    env = gymnasium.make('insertion_jax/usb', reward='dense', goal_noise_mm=1.0)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    envs = gymnasium.make_vec('insertion_jax/usb', num_envs=16)  # one vmapped MJX call per step
    obs, info = envs.reset(seed=0)  # obs (16, 4)

Keyword arguments of `make` and `make_vec` are fields of the task's config
(`envs.insertion.InsertionConfig`, `envs.assembly.AssemblyConfig` or
`envs.point_reach.PointReachConfig`): reward, goal_noise_mm, obs, horizon,
... A nested config takes a dict of its fields (`dense={'beta': 0.005}`). An unknown name, a value of the wrong type or one the config refuses
raises a one-line ValueError that names it and what is allowed. The task is
the id's: the registered keyword `task` (gymnasium merges a `task=` given to
`make` into it, so make the id of the task you mean).

Units and spaces are the JAX env's own. An action is the command the task
executes, in physical units: a connector's relative move of the plug in
metres, each axis within +-`max_action_m`; an assembly task's linear (m/s)
and angular (rad/s) velocity within its speed limits; point_reach's move in
[-1, 1] (in units of its `step_size`). `action_space` is that Box (-`action_scale`, +`action_scale`); an
action outside it is clipped to it, as the JAX env clips. An observation
is the env's float32 state vector in a Box (unbounded: the JAX env bounds
none of its entries), or, with `obs='image'` or `'state+image'`, a Dict of
'image' (uint8 (R, R, frames), a Box in [0, 255]) and the state vector
('controller' or 'state', see `insertion_jax.observations`). Residual RL adds
the policy's move to the task's hand-designed controller: `base_action(obs)`
(the P-controller of the connectors and point_reach) gives its command.

Episodes. `terminated` is the JAX env's `terminal`: an end without
bootstrap (an assembly task assembled, point_reach reached with
`terminate_on_success`, an MJX simulation diverged). `truncated` is every other
end: the horizon (`config.horizon` control steps). A connector episode never
terminates on success: it runs to its horizon, as in the paper.

`info` holds the env's metrics of the step as Python floats (e.g. the
connectors' 'distance_mm', 'f_z_n' and reward terms 'reward/...', the
assembly tasks' 'distance_mm' and 'force_n', point_reach's 'distance';
'nonfinite' everywhere), and 'success' (bool, the task's success at this
step, `env.success`), 'is_success' (the same; Stable-Baselines3 logs its
mean at episode ends as rollout/success_rate) and 'step' (int, the
episode's control step). The vector env's info holds the same keys as
arrays (num_envs,), each with its mask '_<key>', as gymnasium's own vector
envs do.

Seeding. `reset(seed=s)` starts a chain of JAX PRNG keys at
`jax.random.PRNGKey(s % 2**32)`; every reset splits it into (the rest of the
chain, the episode's key) and calls the JAX env's `reset` with the episode's
key. A reset without a seed continues the chain (the first one draws s from
`np_random`). Same seed and actions, same trajectory. `reset(options=...)`
takes the task's per-episode reset arguments (`reset_args`): the connectors'
'goal_offset_mm' (2,), the assembly tasks' 'yaw_deg' () and 'ground_xy_mm'
(2,); what is not given is drawn as `reset(key)` draws it.

The vector env (`InsertionJaxVectorEnv`, `make_vec`'s default for these ids)
keeps the batch of env states on the device and steps all of them in one
jitted, vmapped call. It resets a finished episode inside that same call,
as the training loop does (`training.acting.rollout`): gymnasium's
`AutoresetMode.SAME_STEP`. The step that ends an episode returns the new
episode's first observation and info, the last observation in
`info['final_obs']` (an object array, None where no episode ended) and the
last step's info in `info['final_info']`, each with its mask
(`info['_final_obs']`). `reset(seed=s)` seeds sub-env i with s + i (or with
the i-th entry of a list of seeds; None, and a reset without a seed,
continues the env's chain), and sub-env i then runs exactly what a single
env reset with that seed runs, autoresets included. Options take one
env's shape (every env gets it) or a leading num_envs axis, and 'reset_mask'
(bool (num_envs,)) resets only the masked envs.

Compiled programs are cached per config (configs are frozen and hashable), as
`envs.registry.make_env` caches the env: a second env of the same settings
compiles nothing. There is no render mode: inside the package the only
renderer is the image observation's camera (`obs='image'`); pictures with
MuJoCo's own renderer are experiments/render.py's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from insertion_jax.envs import registry as env_registry

NAMESPACE = 'insertion_jax'


def tasks() -> Tuple[str, ...]:
    """Every task registered as `insertion_jax/<task>` (`envs.registry.task_names`)."""
    return env_registry.task_names()


def env_id(task: str) -> str:
    """The gymnasium id of `task`: 'insertion_jax/<task>'."""
    return f'{NAMESPACE}/{task}'


def task_config(task: str, **overrides: Any) -> Any:
    """The config of `task` with `overrides` (config fields) applied.

    Raises:
      ValueError (one line): an unknown task or field, a value of the wrong
        type, or one the config itself refuses.
    """
    config = env_registry.default_config(task)
    where = env_id(task)
    names = [f.name for f in dataclasses.fields(config) if f.name != 'task']
    values = {}
    for name, value in overrides.items():
        if name not in names:
            raise ValueError(f'{where}: unknown option {name!r}; options: {", ".join(names)}.')
        values[name] = _checked(where, name, value, getattr(config, name))
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{where}: {err}') from None


def _checked(where: str, name: str, value: Any, default: Any) -> Any:
    """`value` for config field `name` whose default is `default`, converted
    to the default's type (lists become tuples, a dict a nested config), or
    ValueError."""

    def refuse(kind: str):
        raise ValueError(f'{where}: {name}={value!r} must be {kind} (default {default!r}).')

    if isinstance(default, (bool, np.bool_)):
        if not isinstance(value, (bool, np.bool_)):
            refuse('a bool')
        return bool(value)
    if isinstance(value, (bool, np.bool_)) and default is not None:
        refuse(f'a {type(default).__name__}')
    if isinstance(default, int):
        if not isinstance(value, (int, np.integer)):
            refuse('an integer')
        return int(value)
    if isinstance(default, float):
        if not isinstance(value, (int, float, np.integer, np.floating)):
            refuse('a number')
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            refuse('a string')
        return value
    if dataclasses.is_dataclass(default):
        if isinstance(value, type(default)):
            return value
        if not isinstance(value, dict):
            refuse(f'a {type(default).__name__} or a dict of its fields')
        fields = [f.name for f in dataclasses.fields(default)]
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(
                f'{where}: {name} has no field {unknown[0]!r}; its fields: {", ".join(fields)}.'
            )
        nested = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        try:
            return dataclasses.replace(default, **nested)
        except (TypeError, ValueError) as err:
            raise ValueError(f'{where}: {name}: {err}') from None
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(np.asarray(value).tolist())
    if isinstance(default, tuple):
        refuse('a sequence')
    return value


# ---------------------------------------------------------------- programs
def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per environment: `new` where `mask` (E,), else `old`, for pytrees of (E, ...)."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


def _seed_key(seed: jax.Array) -> jax.Array:
    """The key that starts a seed's chain: `jax.random.PRNGKey(seed)`, seed uint32."""
    return jax.random.PRNGKey(seed)


class _Programs(NamedTuple):
    """A config's env and its jitted functions (see `programs`)."""

    env: Any
    reset_args: Dict[str, jax.ShapeDtypeStruct]
    reset: Callable
    step: Callable
    vreset: Callable
    vstep: Callable
    voutputs: Callable
    select: Callable
    base_action: Callable


@functools.lru_cache(maxsize=32)
def programs(config: Any) -> _Programs:
    """The env of `config` and its jitted reset and step, single and vmapped.

    Cached per config, so every gymnasium env of the same settings shares the
    compiled programs. Each returns, besides the new state, what the host
    reads in one transfer (`_outputs`).

      reset(seed, reseed, chain, values, given) -> (chain, state, out): the
        chain restarts at PRNGKey(seed) where `reseed`, is split into (chain,
        episode key), and the episode starts with the reset arguments
        `values` where `given`, else with those the key draws;
      step(state, action) -> (state, out);
      vreset: `reset` vmapped over (E,) envs;
      vstep(chain, state, action) -> (chain, state, out_final, out): steps
        E envs and resets the finished ones in the same call (`out_final`
        is the step's, `out` that of the returned states);
      voutputs(state) -> out: of E envs' states;
      select(mask, new, old): `new` where `mask` (E,), else `old`.
    """
    env = env_registry.make_env(config)
    reset_args = jax.eval_shape(env.reset_args, jax.random.PRNGKey(0))

    def outputs(state):
        return {
            'obs': state.obs,
            'reward': state.reward,
            'done': state.done,
            'terminal': env.terminal(state),
            'success': env.success(state),
            'step': state.info['step'],
            'metrics': state.metrics,
        }

    def reset(seed, reseed, chain, values, given):
        chain = jnp.where(reseed, _seed_key(seed), chain)
        chain, episode = jax.random.split(chain)
        drawn = env.reset_args(episode)
        args = {k: jnp.where(given[k], values[k], drawn[k]) for k in drawn}
        state = env.reset(episode, **args)
        return chain, state, outputs(state)

    def step(state, action):
        state = env.step(state, action)
        return state, outputs(state)

    vreset = jax.vmap(reset)

    def vstep(chain, state, action):
        final = jax.vmap(env.step)(state, action)
        done = final.done

        def restart(_):
            next_chain, episode = jax.vmap(jax.random.split, out_axes=1)(chain)
            fresh = jax.vmap(env.reset)(episode)
            return _where(done, next_chain, chain), _where(done, fresh, final)

        chain, state = jax.lax.cond(jnp.any(done), restart, lambda _: (chain, final), None)
        return chain, state, jax.vmap(outputs)(final), jax.vmap(outputs)(state)

    def base_action(obs):
        return env.base_action(obs)

    return _Programs(
        env=env,
        reset_args=reset_args,
        reset=jax.jit(reset),
        step=jax.jit(step),
        vreset=jax.jit(vreset),
        vstep=jax.jit(vstep),
        voutputs=jax.jit(jax.vmap(outputs)),
        select=jax.jit(_where),
        base_action=jax.jit(base_action),
    )


# ------------------------------------------------------------------ spaces
def _box(spec: jax.ShapeDtypeStruct) -> spaces.Box:
    if spec.dtype == jnp.uint8:
        return spaces.Box(0, 255, spec.shape, np.uint8)
    return spaces.Box(-np.inf, np.inf, spec.shape, np.float32)


def observation_space(env: Any) -> spaces.Space:
    """One observation of `env` (`base.Env`): a float32 Box, or a Dict with
    an 'image' uint8 Box."""
    spec = env.observation_spec
    if isinstance(spec, dict):
        return spaces.Dict({name: _box(part) for name, part in spec.items()})
    return _box(spec)


def action_space(env: Any) -> spaces.Box:
    """One command of `env` in its own units: Box(-action_scale, action_scale)."""
    scale = np.asarray(env.action_scale, np.float32)
    return spaces.Box(-scale, scale, dtype=np.float32)


def _numpy_obs(obs: Any, space: spaces.Space) -> Any:
    """A host observation (or batch) as fresh writable numpy arrays of the space's dtypes."""
    if isinstance(space, spaces.Dict):
        return {name: np.array(obs[name], space[name].dtype) for name in space.keys()}
    return np.array(obs, space.dtype)


def _reset_options(
    where: str, specs: Dict[str, jax.ShapeDtypeStruct], options: Optional[dict], batch: int = 0
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(values, given) of the reset arguments in `options`: each value of one
    env's shape, or with a leading `batch` axis when batch > 0."""
    options = dict(options or {})
    lead = (batch,) if batch else ()
    unknown = sorted(set(options) - set(specs))
    if unknown:
        allowed = ', '.join(specs) or 'none'
        raise ValueError(f'{where}: unknown reset option {unknown[0]!r}; options: {allowed}.')
    values, given = {}, {}
    for name, spec in specs.items():
        value = np.zeros(lead + spec.shape, spec.dtype)
        if name in options:
            raw = np.asarray(options[name], spec.dtype)
            if raw.shape == spec.shape or (batch and raw.shape == lead + spec.shape):
                value[...] = raw
            else:
                shapes = f'{spec.shape}' + (f' or {lead + spec.shape}' if batch else '')
                raise ValueError(
                    f'{where}: reset option {name!r} has shape {raw.shape}; expected {shapes}.'
                )
        values[name] = value
        given[name] = np.full(lead, name in options)
    return values, given


def _action(where: str, action: Any, shape: Tuple[int, ...]) -> np.ndarray:
    action = np.asarray(action, np.float32)
    if action.shape != shape:
        raise ValueError(f'{where}: action of shape {action.shape}; expected {shape}.')
    return action


def _info(out: Dict[str, Any]) -> Dict[str, Any]:
    """One env's info from the host copy of its outputs."""
    info = {name: float(value) for name, value in out['metrics'].items()}
    success = bool(out['success'])
    info.update(success=success, is_success=success, step=int(out['step']))
    return info


def _batch_info(out: Dict[str, Any], mask: np.ndarray) -> Dict[str, Any]:
    """A vector env's info (each key with its `_key` mask) from the host copy of its outputs."""
    success = np.array(out['success'], bool)
    info = {name: np.array(value, np.float32) for name, value in out['metrics'].items()}
    info.update(success=success, is_success=success.copy(), step=np.array(out['step'], np.int64))
    for name in list(info):
        info[f'_{name}'] = mask.copy()
    return info


def _check_render_mode(where: str, render_mode: Optional[str]) -> None:
    if render_mode is not None:
        raise ValueError(
            f'{where}: render_mode={render_mode!r} is not available; these envs have no '
            "render mode (obs='image' gives the camera's frames)."
        )


# --------------------------------------------------------------------- envs
def _set_up(env: Any, task: str, render_mode: Optional[str], overrides: Mapping[str, Any]):
    """What the single and the vector env share: the task, its config, its
    compiled programs and JAX env; no state until `reset`."""
    env.task, env._where = task, env_id(task)
    _check_render_mode(env._where, render_mode)
    env.render_mode = None
    env.config = task_config(task, **overrides)
    env._programs = programs(env.config)
    env.jax_env = env._programs.env
    env.state = None  # the JAX env's `State` (batched in the vector env), on the device
    env._chain = None  # the PRNG chain (one per env in the vector env)


class InsertionJaxEnv(gymnasium.Env):
    """One env of a task, stepped by jitted JAX calls (see the module docstring).

    Args:
      task: one of `tasks()` (`gymnasium.make` passes the id's).
      render_mode: None (no render mode exists).
      **overrides: fields of the task's config (`task_config`).
    """

    metadata = {'render_modes': []}

    def __init__(self, task: str, render_mode: Optional[str] = None, **overrides: Any):
        _set_up(self, task, render_mode, overrides)
        self.observation_space = observation_space(self.jax_env)
        self.action_space = action_space(self.jax_env)

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[dict] = None
    ) -> Tuple[Any, Dict[str, Any]]:
        """Starts an episode (see the module docstring's "Seeding")."""
        super().reset(seed=seed)
        reseed = seed is not None or self._chain is None
        if seed is None and self._chain is None:
            seed = int(self.np_random.integers(2**32))
        values, given = _reset_options(self._where, self._programs.reset_args, options)
        chain = self._chain if self._chain is not None else _seed_key(np.uint32(0))
        self._chain, self.state, out = self._programs.reset(
            np.uint32((seed or 0) % 2**32), reseed, chain, values, given
        )
        out = jax.device_get(out)
        return _numpy_obs(out['obs'], self.observation_space), _info(out)

    def step(self, action: Any) -> Tuple[Any, float, bool, bool, Dict[str, Any]]:
        """One control step with `action` (clipped to `action_space`)."""
        if self.state is None:
            raise RuntimeError(f'{self._where}: call reset() before step().')
        action = _action(self._where, action, self.action_space.shape)
        self.state, out = self._programs.step(self.state, action)
        out = jax.device_get(out)
        terminated = bool(out['terminal'])
        truncated = bool(out['done']) and not terminated
        obs = _numpy_obs(out['obs'], self.observation_space)
        return obs, float(out['reward']), terminated, truncated, _info(out)

    def base_action(self, obs: Any) -> np.ndarray:
        """The task's hand-designed controller's command for `obs` (one
        observation or a batch), in `action_space` units: residual RL executes
        base_action(obs) + the policy's action. ValueError for the assembly
        tasks, which have none."""
        if not self.jax_env.has_base_controller:
            raise ValueError(f'{self._where} has no hand-designed controller.')
        return np.array(self._programs.base_action(obs), np.float32)


class InsertionJaxVectorEnv(VectorEnv):
    """`num_envs` envs of a task stepped in one jitted, vmapped call, with
    same-step autoreset (see the module docstring).

    Args:
      task: one of `tasks()` (`gymnasium.make_vec` passes the id's).
      num_envs: how many envs.
      render_mode: None (no render mode exists).
      **overrides: fields of the task's config (`task_config`).
    """

    metadata = {'render_modes': [], 'autoreset_mode': AutoresetMode.SAME_STEP}

    def __init__(
        self, task: str, num_envs: int = 1, render_mode: Optional[str] = None, **overrides: Any
    ):
        if not (isinstance(num_envs, (int, np.integer)) and num_envs > 0):
            raise ValueError(f'{env_id(task)}: num_envs={num_envs!r} must be a positive integer.')
        self.num_envs = int(num_envs)
        _set_up(self, task, render_mode, overrides)
        self.single_observation_space = observation_space(self.jax_env)
        self.single_action_space = action_space(self.jax_env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(
        self,
        *,
        seed: Optional[int | Sequence[Optional[int]]] = None,
        options: Optional[dict] = None,
    ) -> Tuple[Any, Dict[str, Any]]:
        """Starts episodes in every env, or in those of `options['reset_mask']`."""
        n = self.num_envs
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(
                    f'{self._where}: {len(seeds)} seeds for num_envs={n}; give one per env.'
                )
            for s in seeds:
                if s is not None and not (isinstance(s, (int, np.integer)) and s >= 0):
                    raise ValueError(
                        f'{self._where}: seed {s!r} must be a non-negative integer or None.'
                    )
        options = dict(options or {})
        mask = options.pop('reset_mask', None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"{self._where}: options['reset_mask'] must be a bool array of shape "
                    f'({n},) with a True entry.'
                )
            if self.state is None:
                raise ValueError(f"{self._where}: options['reset_mask'] needs a reset() first.")
        if self._chain is None:  # never seeded: draw the seeds left out
            seeds = [int(self.np_random.integers(2**32)) if s is None else s for s in seeds]
            chain = jax.vmap(_seed_key)(jnp.zeros(n, jnp.uint32))
        else:
            chain = self._chain
        reseed = np.array([s is not None for s in seeds])
        seed_array = np.array([(s or 0) % 2**32 for s in seeds], np.uint32)
        values, given = _reset_options(self._where, self._programs.reset_args, options, n)
        new_chain, state, out = self._programs.vreset(seed_array, reseed, chain, values, given)
        if mask is None:
            mask = np.ones(n, bool)
            self._chain, self.state = new_chain, state
        else:
            select, where = self._programs.select, jnp.asarray(mask)
            out = select(where, out, self._programs.voutputs(self.state))
            self._chain = select(where, new_chain, self._chain)
            self.state = select(where, state, self.state)
        out = jax.device_get(out)
        obs = _numpy_obs(out['obs'], self.single_observation_space)
        return obs, _batch_info(out, mask)

    def step(self, actions: Any) -> Tuple[Any, np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
        """One control step of every env; a finished episode restarts in the same call."""
        if self.state is None:
            raise RuntimeError(f'{self._where}: call reset() before step().')
        actions = _action(self._where, actions, self.action_space.shape)
        self._chain, self.state, final, out = self._programs.vstep(self._chain, self.state, actions)
        final, out = jax.device_get((final, out))
        terminated = np.array(final['terminal'], bool)
        truncated = np.array(final['done'], bool) & ~terminated
        ended = terminated | truncated
        space = self.single_observation_space
        info = _batch_info(out, np.ones(self.num_envs, bool))
        if ended.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            last = _numpy_obs(final['obs'], space)
            for i in np.flatnonzero(ended):
                final_obs[i] = jax.tree.map(lambda x, i=i: x[i].copy(), last)
            info.update(
                final_obs=final_obs,
                _final_obs=ended.copy(),
                final_info=_batch_info(final, ended),
                _final_info=ended.copy(),
            )
        rewards = np.array(final['reward'], np.float32)
        return _numpy_obs(out['obs'], space), rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.state = None


def register() -> None:
    """Registers `insertion_jax/<task>` for every task (done on import; ids
    already registered are left as they are)."""
    for task in tasks():
        if env_id(task) in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id(task),
            entry_point=f'{__name__}:InsertionJaxEnv',
            vector_entry_point=f'{__name__}:InsertionJaxVectorEnv',
            kwargs={'task': task},
        )


register()
