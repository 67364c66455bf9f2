"""An exported policy, loaded for the robot loop with jax and numpy alone.

  policy = load('exports/usb_sac')       # what experiments.export wrote
  command = policy(obs)                  # numpy in, numpy out

`experiments.export` writes two files into its directory:
  policy.bin   the deterministic policy serialized by `jax.export`
               (StableHLO; the actor's parameters and the observation
               normalizer are constants inside it; a symbolic batch size),
  policy.json  what the robot loop needs to feed it and read it: the task,
               the observation's fields with their units, the command's units,
               scale and clip, the control rate, the mode (residual with the
               P-controller's gains, or pure), the jax and jaxlib versions that
               exported it, the source run and the date.

The command is what the training policy executes: a relative end-effector
move in metres, with the task's P-controller already added under residual RL
(u = u_H + u_RL, composed inside the exported function as in training).

This module imports jax and numpy only (no flax, optax, orbax, mujoco or
insertion_jax), so a robot PC needs none of the training stack
(tests/test_hardware.py checks it in a fresh interpreter).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

import jax
import numpy as np
from jax import export as jax_export

FORMAT = 1  # the layout of policy.json this loader reads
POLICY_FILE = 'policy.bin'
SPEC_FILE = 'policy.json'


class PolicyLoadError(ValueError):
    """The export cannot run here: missing files, a newer format or jax, a platform."""


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in text.split('.')[:3] if part.isdigit())


class ExportedPolicy:
    """A loaded export: `policy(obs) -> command`, numpy in and out.

    `obs` is one observation or a batch of them: an array (obs_dim,) or
    (B, obs_dim), or for an image policy a dict of such arrays (the keys and
    shapes of `spec['observation']`). The command is float32, (3,) or (B, 3).
    """

    def __init__(self, exported: Any, spec: Dict[str, Any]):
        self._exported = exported
        self.spec = spec
        self._inputs = {item['key']: item for item in spec['observation']['inputs']}

    @property
    def task(self) -> str:
        return self.spec['task']

    def _check(self, obs: Any) -> Tuple[Any, bool]:
        """(obs as the exported function takes it, whether it was one observation)."""
        if set(self._inputs) == {''}:
            if isinstance(obs, dict):
                raise ValueError(
                    f'observation: got a dict with keys {sorted(obs)}; this policy takes '
                    f'one array of shape {tuple(self._inputs[""]["shape"])} (or a batch of them).'
                )
            arrays = {'': obs}
        elif isinstance(obs, dict) and set(obs) == set(self._inputs):
            arrays = obs
        else:
            got = sorted(obs) if isinstance(obs, dict) else 'an array'
            raise ValueError(
                f'observation: got {got}; this policy takes a dict with keys {sorted(self._inputs)}.'
            )
        single = None
        out = {}
        for key, value in arrays.items():
            want = self._inputs[key]
            value = np.asarray(value)
            shape = tuple(want['shape'])
            if value.shape == shape:
                one = True
            elif value.ndim == len(shape) + 1 and value.shape[1:] == shape:
                one = False
            else:
                name = f'observation[{key!r}]' if key else 'observation'
                raise ValueError(
                    f'{name} has shape {value.shape}; this policy takes {shape} '
                    f'or (batch, {", ".join(map(str, shape))}).'
                )
            if single is not None and one != single:
                raise ValueError('observation: give every part one observation, or all a batch.')
            single = one
            out[key] = value.astype(want['dtype'])[None] if one else value.astype(want['dtype'])
        return (out[''] if '' in out else out), bool(single)

    def __call__(self, obs: Any) -> np.ndarray:
        batch, single = self._check(obs)
        command = np.asarray(self._exported.call(batch))
        return command[0] if single else command


def read_spec(export_dir: str) -> Dict[str, Any]:
    """policy.json of `export_dir`, checked against this loader and this jax."""
    path = os.path.join(export_dir, SPEC_FILE)
    if not os.path.isfile(path):
        raise PolicyLoadError(
            f'{path} not found: export a run first (python -m experiments.export).'
        )
    with open(path) as f:
        spec = json.load(f)
    if spec.get('format', 0) > FORMAT:
        raise PolicyLoadError(
            f'{path} has format {spec.get("format")}; this loader reads format {FORMAT} '
            'or older: update insertion_jax on this machine.'
        )
    exported_with = spec['versions']['jax']
    if _version(jax.__version__) < _version(exported_with):
        # jax.export reads what older jax versions wrote, not newer ones.
        raise PolicyLoadError(
            f'{export_dir} was exported with jax {exported_with}; this machine has jax '
            f'{jax.__version__}: install jax>={exported_with} here, or export with this version.'
        )
    return spec


def load(export_dir: str) -> ExportedPolicy:
    """The policy `experiments.export` wrote into `export_dir`."""
    spec = read_spec(export_dir)
    path = os.path.join(export_dir, POLICY_FILE)
    with open(path, 'rb') as f:
        blob = f.read()
    try:
        exported = jax_export.deserialize(bytearray(blob))
    except Exception as e:  # noqa: BLE001 (the reason is in the message)
        raise PolicyLoadError(
            f'{path} cannot be read by jax {jax.__version__} (exported with '
            f'{spec["versions"]["jax"]}): {e}'
        ) from e
    platform = jax.default_backend()
    names = {'gpu': ('cuda', 'rocm')}.get(platform, (platform,))
    if not any(name in exported.platforms for name in names):
        raise PolicyLoadError(
            f'{path} was exported for {", ".join(exported.platforms)}; this machine runs '
            f'{platform}: export again with --platforms including {platform}.'
        )
    return ExportedPolicy(exported, spec)
