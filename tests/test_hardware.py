"""The robot side: an exported policy (`experiments.export`, `hardware.policy`).

The exports come from the SMALL run (conftest), so this file shares its
worker and that run with test_cli.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from hardware import policy as hw_policy
from insertion_jax.agents import sac
from insertion_jax.envs import point_reach
from insertion_jax.training import config, export, loop, runner
from tests import cli


@pytest.fixture(scope='module')
def exported(small_run_dir, tmp_path_factory):
    """(export directory, policy.json) of the SMALL run's seed 0."""
    out = str(tmp_path_factory.mktemp('export') / 'usb')
    result = cli.host('experiments.export').run(f'--run={small_run_dir}', f'--out={out}', '--json')
    assert result.returncode == 0, result.stderr[-3000:]
    spec = json.loads(result.stdout.strip().splitlines()[-1])
    return out, spec


def observations(n, seed=0):
    """`n` connector observations spread over what an approach sees: the tool
    point within 10 mm of the goal sideways, 0-50 mm above it, 0-30 N."""
    rng = np.random.default_rng(seed)
    low, high = [-10.0, -10.0, -2.0, 0.0], [10.0, 10.0, 50.0, 30.0]
    return rng.uniform(low, high, (n, 4)).astype(np.float32)


def test_the_export_is_the_training_policy_with_what_the_robot_needs_to_know(
    exported, small_run_dir
):
    out, spec = exported
    assert sorted(os.listdir(out)) == ['policy.bin', 'policy.json']
    assert spec['task'] == 'usb' and spec['algo'] == 'sac'
    assert spec['mode'] == {
        'name': 'residual',
        'base_controller': {'kind': 'p_controller (eq. 5)', 'kp': [1.0, 1.0, 0.3]},
    }
    assert [f['name'] for f in spec['observation']['state_fields']] == [
        'ee_pos_rel_goal_mm',
        'f_z_n',
    ]
    assert [f['unit'] for f in spec['observation']['state_fields']] == ['mm', 'N']
    assert spec['command']['unit'] == 'm' and spec['control_hz'] == 10.0
    assert spec['platforms'] == ['cpu', 'cuda']
    assert spec['versions']['jax'] == jax.__version__
    assert spec['source_run'] == os.path.abspath(small_run_dir)
    # The exported function against the policy every evaluation runs.
    components, params, _ = runner.load_run(small_run_dir)
    seed0 = jax.tree.map(lambda x: x[0], params)
    obs = observations(64)
    want = np.asarray(jax.jit(loop.make_policy(components))(seed0, obs))
    policy = hw_policy.load(out)
    np.testing.assert_allclose(policy(obs), want, atol=1e-7)
    np.testing.assert_allclose(policy(obs[3]), want[3], atol=1e-7)  # one observation
    assert policy(obs).dtype == np.float32 and policy(obs[3]).shape == (3,)
    # Residual: the P-controller's move is inside (a 40 mm approach moves down).
    assert np.all(policy(np.array([[0.0, 0.0, 40.0, 0.0]], np.float32))[:, 2] < 0)


LOAD_ALONE = """
import json, sys
import numpy as np
from hardware import policy
run = policy.load(sys.argv[1])
command = run(np.array([[1.0, -2.0, 30.0, 0.0]], np.float32))
banned = ('flax', 'optax', 'orbax', 'mujoco', 'insertion_jax')
print(json.dumps({
    'command': command.tolist(),
    'loaded': sorted(m for m in sys.modules if m.split('.')[0] in banned),
}))
"""


def test_the_exported_policy_runs_in_a_fresh_interpreter_with_jax_and_numpy_alone(exported):
    out, _ = exported
    result = subprocess.run(
        [sys.executable, '-c', LOAD_ALONE, out],
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed['loaded'] == []  # no flax, optax, orbax, mujoco or insertion_jax
    here = hw_policy.load(out)(np.array([[1.0, -2.0, 30.0, 0.0]], np.float32))
    np.testing.assert_allclose(printed['command'], here, atol=1e-7)


def test_a_wrong_observation_or_an_export_this_machine_cannot_run_is_refused(exported, tmp_path):
    out, _ = exported
    policy = hw_policy.load(out)
    for bad in (np.zeros(5), np.zeros((2, 3)), np.zeros((2, 2, 4))):
        with pytest.raises(ValueError, match='this policy takes \\(4,\\) or \\(batch, 4\\)'):
            policy(bad)
    with pytest.raises(ValueError, match="got a dict with keys \\['image'\\]; this policy takes"):
        policy({'image': np.zeros((32, 32, 1))})
    # A policy.json from a newer jax, or a newer format; a missing export.
    copy = str(tmp_path / 'copy')
    shutil.copytree(out, copy)
    spec_path = os.path.join(copy, 'policy.json')
    spec = json.load(open(spec_path))
    json.dump({**spec, 'versions': {**spec['versions'], 'jax': '99.1.0'}}, open(spec_path, 'w'))
    with pytest.raises(hw_policy.PolicyLoadError, match='exported with jax 99.1.0; this machine'):
        hw_policy.load(copy)
    json.dump({**spec, 'format': hw_policy.FORMAT + 1}, open(spec_path, 'w'))
    with pytest.raises(hw_policy.PolicyLoadError, match='format 2; this loader reads format 1'):
        hw_policy.load(copy)
    with pytest.raises(hw_policy.PolicyLoadError, match='not found: export a run first'):
        hw_policy.load(str(tmp_path / 'nothing'))
    with open(os.path.join(copy, 'policy.bin'), 'wb') as f:
        f.write(b'not a policy')
    json.dump(spec, open(spec_path, 'w'))
    with pytest.raises(hw_policy.PolicyLoadError, match='cannot be read by jax'):
        hw_policy.load(copy)


def test_export_rejects_bad_values_without_a_traceback(small_run_dir, tmp_path):
    host = cli.host('experiments.export')
    cases = [
        ((f'--run={tmp_path}', f'--out={tmp_path}/x'), 'is not a training run'),
        ((f'--run={small_run_dir}',), '--out is required'),
        ((f'--run={small_run_dir}', f'--out={tmp_path}/x', '--platforms=metal'), 'choose from'),
        ((f'--run={small_run_dir}', f'--out={tmp_path}/x', '--seed_index=3'), 'the run has 1 seed'),
    ]
    for args, message in cases:
        result = host.run(*args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr[-500:])
        assert 'Traceback' not in result.stderr


def test_an_image_policy_exports_with_its_dict_observation():
    """An image policy (point_reach's picture, residual over its P-controller)
    exports and loads; its dict observation keeps the image uint8."""
    cfg = config.TrainConfig(
        env=point_reach.PointReachConfig(obs='image', image_size=8),
        algo='sac',
        agent=sac.SACConfig(hidden=(8,), encoder_channels=(4,)),
        mode='residual',
    )
    components = loop.make_components(cfg)
    state = jax.tree.map(lambda x: x[0], loop.init_states(components, 0, 1))
    params = loop.policy_params(components, state)
    exported_fn = export.export_policy(components, params, ('cpu',))
    policy = hw_policy.ExportedPolicy(exported_fn, export.policy_spec(components, '.', 0, ('cpu',)))
    rng = np.random.default_rng(1)
    obs = {
        'image': rng.integers(0, 256, (5, 8, 8, 1)).astype(np.uint8),
        'controller': rng.uniform(-0.5, 0.5, (5, 4)).astype(np.float32),
    }
    want = jax.jit(loop.make_policy(components))(params, obs)
    np.testing.assert_allclose(policy(obs), want, atol=1e-6)
    spec = policy.spec['observation']
    assert spec['image']['shape'] == [8, 8, 1] and spec['image']['dtype'] == 'uint8'
    assert spec['state_key'] == 'controller'
    with pytest.raises(ValueError, match="observation\\['image'\\] has shape"):
        policy({**obs, 'image': obs['image'][:, :4]})
