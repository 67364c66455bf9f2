"""A trained run's deterministic policy, exported for the robot loop.

`export_run(run_dir, out_dir, seed_index, platforms)` writes what
`hardware.policy.load` reads (see that module): policy.bin, the policy
serialized by `jax.export` with its parameters and normalizer as constants
and a symbolic batch size, and policy.json, what the robot loop needs to
know about it. The exported function is `loop.make_policy`'s, the policy
every evaluation runs: raw observation in, the executed command out (under
residual RL the P-controller's move is added inside, as in training).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Dict, Sequence

import jax
import jaxlib
from jax import export as jax_export

from insertion_jax import observations
from insertion_jax.envs import controllers, insertion
from insertion_jax.training import loop, run_dir, runner

FORMAT = 1  # hardware.policy.FORMAT reads it
POLICY_FILE = 'policy.bin'
SPEC_FILE = 'policy.json'
PLATFORMS = ('cpu', 'cuda')


def _symbolic_batch(spec: Any) -> Any:
    """`spec` (one observation's ShapeDtypeStructs) with a leading batch 'b'."""
    (batch,) = jax_export.symbolic_shape('b')
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((batch, *s.shape), s.dtype), spec)


def _inputs(spec: Any):
    """[{'key', 'shape', 'dtype'}] of one observation ('' for a plain vector)."""
    items = spec.items() if isinstance(spec, dict) else [('', spec)]
    return [{'key': k, 'shape': list(s.shape), 'dtype': str(s.dtype)} for k, s in items]


def policy_spec(components: loop.Components, run: str, seed_index: int, platforms) -> Dict:
    """What policy.json says (see `hardware.policy`)."""
    cfg, env = components.config, components.env
    spec = env.observation_spec
    observation = {
        'inputs': _inputs(spec),
        'state_fields': [
            {'name': name, 'size': size, 'unit': unit} for name, size, unit in env.obs_fields
        ],
        # Where the state vector is: the whole observation, or a dict key
        # ('controller' when only the P-controller reads it).
        'state_key': ''
        if not isinstance(spec, dict)
        else (observations.STATE if observations.STATE in spec else observations.CONTROLLER),
    }
    if isinstance(spec, dict):
        image = spec[observations.IMAGE]
        observation['image'] = {
            'key': observations.IMAGE,
            'shape': list(image.shape),
            'dtype': str(image.dtype),
            'layout': 'rows, columns, frames (the newest last); grayscale 0-255',
        }
    env_config = env.config
    mode = {'name': cfg.mode}
    if cfg.mode == 'residual':
        mode['base_controller'] = (
            {'kind': 'p_controller (eq. 5)', 'kp': list(controllers.DEFAULT_KP)}
            if isinstance(env, insertion.InsertionEnv)
            else {'kind': f'{type(env).__name__}.base_action'}
        )
    return {
        'format': FORMAT,
        'task': getattr(env_config, 'task', type(env).__name__),
        'algo': cfg.algo,
        'mode': mode,
        'seed_index': seed_index,
        'observation': observation,
        'command': {
            'size': env.action_dim,
            'unit': 'm',
            'meaning': 'relative end-effector move per control step'
            + (' (the P-controller move included)' if cfg.mode == 'residual' else ''),
            'action_scale': [float(x) for x in env.action_scale],
            'agent_action_clip': [-1.0, 1.0],
            'max_move_per_axis': getattr(env_config, 'max_action_m', None),
        },
        'control_hz': getattr(env_config, 'control_hz', None),
        'env_config': run_dir.json_ready(dataclasses.asdict(env_config)),
        'platforms': list(platforms),
        'versions': {'jax': jax.__version__, 'jaxlib': jaxlib.__version__},
        'source_run': os.path.abspath(run),
        'exported_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }


def export_policy(
    components: loop.Components, params: Any, platforms: Sequence[str] = PLATFORMS
) -> jax_export.Exported:
    """`loop.make_policy`'s policy with `params` (one seed's) baked in."""
    policy = loop.make_policy(components)

    def run(obs):
        return policy(params, obs)

    spec = _symbolic_batch(components.env.observation_spec)
    return jax_export.export(jax.jit(run), platforms=tuple(platforms))(spec)


def export_run(
    run: str, out_dir: str, seed_index: int = 0, platforms: Sequence[str] = PLATFORMS
) -> Dict[str, Any]:
    """Exports seed `seed_index` of the finished run `run` into `out_dir`;
    returns policy.json's contents."""
    components, params, (_, run_config) = runner.load_run(run)
    if not 0 <= seed_index < run_config.num_seeds:
        raise ValueError(
            f'seed_index={seed_index}: the run has {run_config.num_seeds} seed(s), '
            f'0 to {run_config.num_seeds - 1}.'
        )
    one = jax.tree.map(lambda x: x[seed_index], params)
    exported = export_policy(components, one, platforms)
    os.makedirs(out_dir, exist_ok=True)
    run_dir.write_bytes(os.path.join(out_dir, POLICY_FILE), bytes(exported.serialize()))
    spec = policy_spec(components, run, seed_index, platforms)
    run_dir.write_json(os.path.join(out_dir, SPEC_FILE), spec)
    return spec
