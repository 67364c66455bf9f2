"""Assembly tasks: aligned pieces assemble, misaligned ones jam, nothing diverges;
the human-like demonstrator and the demonstrations file format.

Every test of a task shares one compiled recorder
(`demonstrations.make_recorder`: B resets from given poses and the recording
from them), the program `experiments.record_demos` runs with a batch of B:
the drivers below are `HumanDemonstrator` settings, a pytree, not new
programs.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insertion_jax.envs import assembly, registry
from insertion_jax.replay import demos
from insertion_jax.training import demonstrations, loop
from tests import cli, conftest

B = 8  # episodes per recorder call: every call in this module has this batch

# A driver that aligns exactly before going down, without shake or pauses.
PRECISE = demos.HumanDemonstrator(gain_spread=0.0, jitter=0.0, pause_prob=0.0)
# A driver that goes straight down without aligning anything.
BLIND = demos.HumanDemonstrator(
    gain=1e-9,
    gain_spread=0.0,
    jitter=0.0,
    pause_prob=0.0,
    yaw_tolerance_deg=1e9,
    xy_tolerance_mm=1e9,
    stuck_force_n=1e9,
)
# Random stick deflections on every axis, nothing else.
RANDOM = demos.HumanDemonstrator(
    gain=1e-9,
    gain_spread=0.0,
    jitter=2.0,
    pause_prob=0.0,
    yaw_tolerance_deg=1e-9,
    xy_tolerance_mm=1e-9,
    stuck_force_n=1e9,
)

_ENVS = {}


def env_of(task):
    if task not in _ENVS:
        _ENVS[task] = registry.make_env(assembly.AssemblyConfig(task=task))
    return _ENVS[task]


def starts(task, key, poses):
    """B start states from `poses` ('yaw_deg' (B,), 'ground_xy_mm' (B, 2)),
    as the recorder resets them."""
    return record(task, PRECISE, key, poses, with_starts=True)[3]


def draw_poses(task, key):
    """B start poses drawn as the task draws them."""
    return jax.vmap(env_of(task).reset_args)(jax.random.split(key, B))


def record(task, driver, key, poses, with_starts=False):
    """(Demonstrations, success (B,), metrics (B, T)) of `driver` from `poses`
    (and the start states, `with_starts`)."""
    key_start, key_run = jax.random.split(key)
    reset_keys = jax.random.split(key_start, B)
    out = demonstrations.make_recorder(env_of(task))(driver, key_run, reset_keys, poses)
    return jax.device_get(out if with_starts else out[:3])


def run(task, driver, yaw_deg, ground_xy_mm=None, seed=0):
    yaw = jnp.broadcast_to(jnp.asarray(yaw_deg, jnp.float32), (B,))
    xy = (
        jnp.zeros((B, 2))
        if ground_xy_mm is None
        else jnp.broadcast_to(jnp.asarray(ground_xy_mm, jnp.float32), (B, 2))
    )
    return record(task, driver, jax.random.PRNGKey(seed), {'yaw_deg': yaw, 'ground_xy_mm': xy})


def assert_sound(metrics, lengths, max_penetration_mm=0.5):
    alive = np.arange(metrics['nonfinite'].shape[1])[None, :] < lengths[:, None]
    assert float(np.max(metrics['nonfinite'])) == 0.0
    assert float(np.max(np.where(alive, metrics['max_penetration_mm'], 0))) < max_penetration_mm


# ------------------------------------------------------------------ physics
def test_aligned_peg_goes_in_at_any_start_yaw():
    yaws = np.array([0.0, 37.0, 90.0, 133.0, 181.0, 226.0, 290.0, 359.0])
    out, success, metrics = run('peg_in_hole', PRECISE, yaws)
    assert np.all(success), metrics['yaw_error_deg'][:, -1]
    assert np.all(out.lengths < env_of('peg_in_hole').horizon)  # success ends the episode
    last = out.lengths - 1
    np.testing.assert_array_equal(out.steps.terminal[np.arange(B), last], True)
    # The DER reward: -distance (cm) + 1000 on the assembling step.
    final_reward = out.steps.reward[np.arange(B), last]
    assert np.all(final_reward > 1000 - 0.2) and np.all(final_reward <= 1000)
    assert np.all(out.steps.reward[:, 0] < -2.5)  # starts 30 mm from the goal
    assert_sound(metrics, out.lengths)


@pytest.mark.parametrize('yaw', [45.0, 20.0, 3.0])
def test_misaligned_peg_jams_on_the_chamfer(yaw):
    """The hole takes the peg within about 1.4 degrees of a quarter turn only."""
    out, success, metrics = run('peg_in_hole', BLIND, yaw + 90.0 * np.arange(B) % 360)
    assert not np.any(success)
    height = metrics['height_mm'][:, -1]
    assert np.all(height > 12.0), height  # caught at the hole's mouth, 20 mm deep
    assert np.all(metrics['force_n'][:, -1] > 8.0)  # pressing against it
    assert_sound(metrics, out.lengths)


def test_lap_joint_assembles_only_when_aligned_to_the_ground_beam():
    poses = np.array([[-2.0, 2.0, 2.0], [0.0, -2.0, 2.0], [-1.0, 0.0, 0.0], [-0.3, -2.0, -2.0]])
    yaw = np.tile(poses[:, 0], 2)
    xy = np.tile(poses[:, 1:], (2, 1))
    out, success, metrics = run('lap_joint', PRECISE, yaw, xy)
    assert np.all(success)
    assert_sound(metrics, out.lengths)
    final_reward = out.steps.reward[np.arange(B), out.lengths - 1]
    assert np.all(final_reward > 100 - 0.2) and np.all(final_reward <= 100)
    # Straight down from the nominal pose: the 1 mm of tolerance (with the
    # rig's compliance) does not forgive a 1 mm offset or a 2 degree turn of
    # the ground beam.
    blind_yaw = np.array([-2.0, -1.8, 0.0, 0.0, 0.0, 0.0, -1.5, 0.0])
    blind_xy = np.array([[0, 0], [0, 0], [1.5, 0], [0, 1.5], [-1.5, 0], [1.0, 0], [-2, -2], [2, 2]])
    out, success, metrics = run('lap_joint', BLIND, blind_yaw, blind_xy)
    assert not np.any(success)
    assert np.all(metrics['height_mm'][:, -1] > 15.0)
    assert_sound(metrics, out.lengths)


@pytest.mark.parametrize('task', assembly_tasks := ('peg_in_hole', 'lap_joint'))
def test_no_nan_over_1600_random_command_steps(task):
    """Random full-stick commands on every axis (the set-point leads by up to
    4 mm and 8 degrees) never diverge or push one piece into the other."""
    for seed in range(2):
        out, _, metrics = run(task, RANDOM, np.zeros(B), seed=seed)
        assert np.all(np.isfinite(out.steps.obs))
        assert_sound(metrics, out.lengths, max_penetration_mm=1.0)
        assert np.abs(out.steps.action).max() > 0.9  # the commands were large


def test_nan_commands_give_finite_metrics_and_flag_the_divergence():
    """A NaN command diverges the physics on the first step: the episode ends
    there, flagged, and no metric is NaN, so evaluation means stay finite."""
    out, success, metrics = run('peg_in_hole', RANDOM.replace(jitter=float('nan')), np.zeros(B))
    np.testing.assert_array_equal(out.lengths, 1)
    assert not np.any(success)
    np.testing.assert_array_equal(metrics['nonfinite'][:, 0], 1.0)
    for name, values in metrics.items():
        assert np.all(np.isfinite(values)), name
    assert np.all(np.isfinite(out.steps.obs)) and np.all(np.isfinite(out.steps.reward))


def test_observation_layout():
    env = env_of('lap_joint')
    poses = draw_poses('lap_joint', jax.random.PRNGKey(0))  # the ground beam varies
    obs = np.asarray(starts('lap_joint', jax.random.PRNGKey(1), poses).obs)
    assert obs.shape == (B, 13) and env.observation_spec.shape == (13,)
    np.testing.assert_allclose(obs[:, :3], [[0.0, 0.0, 50.0]] * B, atol=1e-3)  # 10 mm above
    np.testing.assert_allclose(np.linalg.norm(obs[:, 3:7], axis=1), 1.0, atol=1e-5)  # unit quat
    np.testing.assert_allclose(obs[:, 7:], 0.0, atol=1e-6)  # F/T bias removed at reset
    assert registry.kind_of(env.config) == 'assembly'
    with pytest.raises(ValueError, match="AssemblyConfig.task='mortise' is unknown"):
        assembly.AssemblyConfig(task='mortise')


@pytest.mark.parametrize('task', assembly_tasks)
def test_reset_physics_is_mujoco_forward_with_nothing_touching(task):
    """As for the connectors (test_env_pure): the resets, ground beam moved
    and turned, are what MuJoCo's `mj_forward` computes."""
    poses = draw_poses(task, jax.random.PRNGKey(3))
    conftest.assert_rest_is_mujoco_forward(
        env_of(task), starts(task, jax.random.PRNGKey(2), poses).data
    )


# ------------------------------------------------------------ demonstrator
@pytest.mark.parametrize('task', assembly_tasks)
def test_human_demonstrator_succeeds_slowly_and_unevenly(task):
    poses = draw_poses(task, jax.random.PRNGKey(5))
    human, success, metrics = record(task, demos.HumanDemonstrator(), jax.random.PRNGKey(6), poses)
    assert success.mean() >= 7 / 8, success
    precise, p_success, _ = record(task, PRECISE, jax.random.PRNGKey(6), poses)
    assert np.all(p_success)
    ok = success & p_success
    assert np.mean(human.lengths[ok]) > np.mean(precise.lengths[ok])  # slower
    assert np.std(human.lengths[ok]) > 0  # uneven
    assert_sound(metrics, human.lengths)


# ------------------------------------------------------------- file format
@pytest.fixture(scope='module')
def peg_file(tmp_path_factory):
    env = env_of('peg_in_hole')
    recorded, info = demonstrations.record(env, 3, jax.random.PRNGKey(1), batch=B)
    path = str(tmp_path_factory.mktemp('demos') / 'peg.npz')
    demos.save(path, recorded, 'peg_in_hole', registry.config_to_dict(env.config), np.ones(3, bool))
    return path, recorded, info


def test_demonstrations_round_trip(peg_file):
    path, recorded, info = peg_file
    assert info['demonstrator_success_rate'] > 0.5
    loaded, meta = demos.load(path, 'peg_in_hole', 13, 6, 100)
    np.testing.assert_array_equal(loaded.lengths, recorded.lengths)
    # Values and dtypes (those of the replay's steps): recorded and loaded
    # demonstrations run the same compiled programs.
    example = loop.example_step(env_of('peg_in_hole'))
    for a, b, c in zip(*map(jax.tree.leaves, (loaded.steps, recorded.steps, example)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype == c.dtype
    assert meta['env_config']['task'] == 'peg_in_hole'
    assert np.all(meta['success'])


def _rewrite(src, dst, **changes):
    with np.load(src) as f:
        data = {k: f[k] for k in f.files}
    data.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del data[k]
    np.savez(dst, **data)
    return dst


def test_bad_demonstration_files_are_refused_with_the_reason(peg_file, tmp_path):
    path = peg_file[0]
    with np.load(path) as f:
        n, starts = f['rewards'].shape[0], f['episode_starts']
        actions = f['actions']
    cases = {
        'task=': dict(task=np.str_('lap_joint')),
        'format_version=7': dict(format_version=np.int64(7)),
        "missing keys \\['terminals'\\]": dict(terminals=None),
        'obs has shape': dict(obs=np.zeros((n, 12), np.float32)),
        'episode_starts do not follow': dict(episode_starts=starts + 1),
        'actions reach 3': dict(actions=actions * 0 + 3.0),
        'dones are not set': dict(dones=np.zeros(n, bool)),
    }
    for i, (message, change) in enumerate(cases.items()):
        bad = _rewrite(path, str(tmp_path / f'bad{i}.npz'), **change)
        with pytest.raises(demos.DemoFormatError, match=message):
            demos.load(bad, 'peg_in_hole', 13, 6, 100)
    with pytest.raises(demos.DemoFormatError, match='lengths'):
        demos.load(path, 'peg_in_hole', 13, 6, 20)  # episodes longer than the limit
    (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
    with pytest.raises(demos.DemoFormatError, match='not a readable'):
        demos.load(str(tmp_path / 'junk.npz'), 'peg_in_hole', 13, 6, 100)


def test_record_demos_cli_writes_a_loadable_file(tmp_path):
    out = str(tmp_path / 'lap.npz')
    record_demos = cli.host('experiments.record_demos', JAX_PLATFORMS='cpu')
    result = record_demos.run('--task=lap_joint', '--num=2', f'--batch={B}', f'--out={out}')
    assert result.returncode == 0, result.stderr[-2000:]
    loaded, meta = demos.load(out, 'lap_joint', 13, 6, 100)
    assert loaded.count == 2 and json.dumps(meta['env_config'])
    bad = record_demos.run('--task=usb', f'--out={out}')
    assert bad.returncode != 0 and 'peg_in_hole, lap_joint' in bad.stderr
    assert 'Traceback' not in bad.stdout + bad.stderr
