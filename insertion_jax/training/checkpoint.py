"""Saving and restoring training runs with orbax.

A run directory holds `checkpoints/<env_steps>/` with two items (the newest
`keep` steps are kept; each is written to a temporary directory and renamed
when complete, so a process killed mid-save leaves the previous one intact):
  * 'state': the whole vmapped `TrainState` (parameters, optimizer states,
    replay buffers, environments, RNG, counters): resuming continues exactly
    where the run stopped;
  * 'progress': JSON with the host's counters (iteration, env steps, wall-clock
    seconds spent so far).
and `policy/`: the final policy parameters of every seed (actor + observation
normalizer), small enough to ship to the robot loop.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp

CHECKPOINTS = 'checkpoints'
POLICY = 'policy'


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`'s leaves; a leaf without one
    (`jax.eval_shape`'s) goes to this process's first device, whatever
    devices wrote it (a run trained over several reads back on one)."""
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        spec = ocp.utils.to_shape_dtype_struct(x)
        if getattr(spec, 'sharding', None) is None:
            spec = jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=here)
        return spec

    return jax.tree.map(leaf, tree)


# Orbax refuses zero-size arrays, and MJX's Data has some (e.g. `act` for a
# model without actuator activations, the contact fields of a state at rest).
# The state is saved as a flat dict of its non-empty leaves and rebuilt from
# the structure of a like-shaped state, whose zero-size leaves (no data) are
# taken as they are: placed as the like state's, so that jit runs the
# restored state in the program it compiled for the fresh one.
def _pack(tree: Any) -> Dict[str, Any]:
    leaves = jax.tree.leaves(tree)
    return {f'{i:05d}': leaf for i, leaf in enumerate(leaves) if leaf.size}


def _unpack(packed: Dict[str, Any], like: Any) -> Any:
    leaves, treedef = jax.tree.flatten(like)
    restored = [packed[f'{i:05d}'] if leaf.size else leaf for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, restored)


def checkpoint_manager(run_dir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """Synchronous manager of `run_dir/checkpoints`, keeping the newest `max_to_keep`."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        create=True,
        # a save killed midway leaves a temporary directory: removed at the next start
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(run_dir, CHECKPOINTS)),
        options=options,
        item_names=('state', 'progress'),
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, progress: Dict[str, Any]) -> None:
    """Writes checkpoint `step` (the env steps so far) and waits until it is on disk."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_pack(state)), progress=ocp.args.JsonSave(progress)
        ),
    )
    manager.wait_until_finished()


def restore_latest(
    manager: ocp.CheckpointManager, like_state: Any
) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """(state, progress) of the newest checkpoint, shaped like `like_state`; None if none."""
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(_pack(like_state))),
            progress=ocp.args.JsonRestore(),
        ),
    )
    return _unpack(restored.state, like_state), dict(restored.progress)


def save_policy(run_dir: str, params: Any) -> str:
    """Writes the policy parameters (leading seed axis) to `run_dir/policy`; returns the path."""
    path = os.path.abspath(os.path.join(run_dir, POLICY))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params, force=True)
    checkpointer.wait_until_finished()
    return path


def load_policy(run_dir: str, like_params: Any) -> Any:
    """Reads `run_dir/policy`, shaped like `like_params`."""
    path = os.path.abspath(os.path.join(run_dir, POLICY))
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{path} does not exist: is {run_dir!r} a finished training run?')
    return ocp.StandardCheckpointer().restore(path, _abstract(like_params))
