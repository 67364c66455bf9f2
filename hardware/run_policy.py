r"""Runs a policy on a robot: the MuJoCo twin, a KUKA arm over RSI, or a Sawyer.

  python -m hardware.run_policy --robot=sim --policy=exports/usb_sac --task=usb --episodes=25 --json
  python -m hardware.run_policy --robot=kuka_rsi --policy=exports/usb_sac \
      --goal_mm=612.0,-40.5,212.3 --listen=0.0.0.0:49152 --episodes=5 --log_dir=logs/kuka
  python -m hardware.run_policy --robot=sawyer --policy=exports/usb_sac \
      --goal_mm=650.0,120.0,-45.0 --sawyer_tool_offset_mm=0,0,95 --episodes=5

--policy is an export directory (`experiments.export`) or 'p_controller'
(the connector P-controller, eq. 5). Every command passes through the
safety layer (`hardware.safety`; its flags below). In residual mode the
export already composes u_H + u_RL, as in training. Each episode runs the
task's horizon at its control rate; between episodes the tool goes back up
to the start height above the goal.

The twin (`--robot=sim`) draws its episodes as the MJX env does (start,
friction, and a goal told up to --goal_noise_mm off) and knows when the
plug is connected. A real robot is told `--goal_mm` (its base frame, mm),
perturbed by up to --goal_noise_mm; whether it connected is the
operator's to judge (successes: null).

Writes into --log_dir, when given: one file per episode in the
demonstrations format (`episode_000.npz`; it loads as demonstrations for LfD
and DER), latency.png (histograms of the policy call and, over RSI, the
responder's reply) and summary.json. Prints a line per episode and, with
--json, the summary as one JSON object on the last line. Exit status: 0 done,
1 a bad flag (absl's usage, the reason on its last line), 2 the robot cannot
serve the policy (no Intera SDK, no force over RSI for a policy that needs
it; one line), 3 the robot fell silent, 4 a safety stop.

A Sawyer (`--robot=sawyer`, `hardware.sawyer`) runs under Intera's
interaction control; --sawyer_tool_offset_mm places the plug's mating face
in the hand frame, and the run needs a shell where Intera's SDK imports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np
from absl import app, flags

from hardware import kuka_rsi, loop, safety, sawyer, sim_robot
from hardware import policy as hw_policy
from insertion_jax import types
from insertion_jax.envs import connector_obs, connectors, insertion
from insertion_jax.replay import demos as demos_lib
from insertion_jax.training import run_dir

ROBOTS = ('sim', 'kuka_rsi', 'sawyer')

_ROBOT = flags.DEFINE_enum(
    'robot', 'sim', list(ROBOTS), 'The robot: the MuJoCo twin, KUKA RSI or a Sawyer (Intera).'
)
_POLICY = flags.DEFINE_string('policy', 'p_controller', "An export directory or 'p_controller'.")
_TASK = flags.DEFINE_string(
    'task', None, "Connector task (default: the export's; usb for p_controller)."
)
_EPISODES = flags.DEFINE_integer('episodes', 1, 'Episodes to run.', lower_bound=1)
_GOAL_MM = flags.DEFINE_list('goal_mm', None, 'Real robots: the goal x,y,z in the base frame, mm.')
_GOAL_NOISE_MM = flags.DEFINE_float(
    'goal_noise_mm', 0.0, 'The goal the robot is told is up to this far off, mm.', lower_bound=0.0
)
_SEED = flags.DEFINE_integer('seed', 0, "PRNG seed (the twin's episodes, the goal noise).")
_REAL_TIME = flags.DEFINE_bool(
    'real_time', False, 'The twin at its control rate, not as fast as it goes.'
)
# --log_dir is absl's own flag (absl.logging defines it; absl writes no log
# files there unless asked to): episode logs, latency.png, summary.json.
_LOG_DIR = flags.FLAGS['log_dir']
_JSON = flags.DEFINE_bool('json', False, 'Print the summary as JSON on the last line.')
# KUKA RSI.
_LISTEN = flags.DEFINE_string('listen', '0.0.0.0:49152', 'RSI: HOST:PORT to receive packets on.')
_SEN_TYPE = flags.DEFINE_string('sen_type', 'ImFree', "RSI: the replies' Type attribute.")
_MAX_STEP_MM = flags.DEFINE_float(
    'max_step_mm', 0.5, 'RSI: largest correction per axis per cycle, mm.'
)
_ROBOT_TIMEOUT_MS = flags.DEFINE_float(
    'robot_timeout_ms', 100.0, 'RSI: silence from the robot that stops the run, ms.'
)
_CONNECT_TIMEOUT_S = flags.DEFINE_float(
    'connect_timeout_s', 30.0, 'RSI: wait for the first packet, s.'
)
# Sawyer (Intera).
SAWYER = sawyer.SawyerConfig()
_TOOL_OFFSET_MM = flags.DEFINE_list(
    'sawyer_tool_offset_mm', '0,0,0', 'Sawyer: the tool point in the hand frame, x,y,z mm.'
)
_STIFFNESS = flags.DEFINE_float(
    'sawyer_stiffness', SAWYER.stiffness[0], 'Sawyer: translational impedance stiffness, N/m.'
)
_WRENCH_SIGN = flags.DEFINE_float(
    'sawyer_wrench_sign',
    SAWYER.wrench_sign,
    "Sawyer: -1 reads Intera's endpoint wrench as the environment's on the tool.",
)
# Safety (defaults: `safety.SafetyConfig`'s).
DEFAULTS = safety.SafetyConfig()
_WORKSPACE_MM = flags.DEFINE_float(
    'workspace_mm', DEFAULTS.workspace_mm, 'Safety: half-width of the box around the goal, mm.'
)
_MAX_MOVE_MM = flags.DEFINE_float(
    'max_move_mm', DEFAULTS.max_step_mm, 'Safety: largest move per axis per control step, mm.'
)
_MAX_FORCE_N = flags.DEFINE_float(
    'max_force_n', DEFAULTS.max_force_n, 'Safety: retract and stop above this force, N.'
)
_DEADLINE_MS = flags.DEFINE_float(
    'deadline_ms', DEFAULTS.deadline_s * 1e3, 'Safety: a later policy call holds position, ms.'
)
_MAX_LATE = flags.DEFINE_integer(
    'max_late', DEFAULTS.max_late, 'Safety: late calls in a row that stop the run.'
)

EXIT_CANNOT_SERVE, EXIT_SILENT, EXIT_SAFETY = 2, 3, 4


def _fail(code: int, message: str):
    print(message, file=sys.stderr)
    sys.exit(code)


def _task_and_policy():
    """(task, policy obs -> command, the export's spec or None)."""
    if _POLICY.value == 'p_controller':
        task = _TASK.value or 'usb'
        return task, loop.p_controller, None
    try:
        policy = hw_policy.load(_POLICY.value)
    except hw_policy.PolicyLoadError as e:
        raise app.UsageError(str(e)) from e
    spec = policy.spec
    if _TASK.value and _TASK.value != spec['task']:
        raise app.UsageError(
            f'--task={_TASK.value} but {_POLICY.value} is a {spec["task"]} policy.'
        )
    if spec['observation'].get('image'):
        raise app.UsageError(
            f'{_POLICY.value} observes a camera image; the robot loop runs state policies '
            'only so far (the twin renders no camera yet).'
        )
    return spec['task'], policy, spec


def _safety_config() -> safety.SafetyConfig:
    try:
        return safety.SafetyConfig(
            workspace_mm=_WORKSPACE_MM.value,
            max_step_mm=_MAX_MOVE_MM.value,
            max_force_n=_MAX_FORCE_N.value,
            deadline_s=_DEADLINE_MS.value * 1e-3,
            max_late=_MAX_LATE.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e


def _host_port(text: str):
    host, _, port = text.rpartition(':')
    if not host or not port.isdigit():
        raise app.UsageError(f'--listen={text!r} must be HOST:PORT.')
    return host, int(port)


def _no_force(spec) -> None:
    """The robot reports no wrench: a policy that observes force cannot
    run (exit status 2); any other runs without the force limit."""
    if spec and any(f['name'].startswith('f_') for f in spec['observation']['state_fields']):
        _fail(
            EXIT_CANNOT_SERVE,
            f'{_POLICY.value} observes the contact force, and the RSI packets carry none: '
            'add the <FTS> element to the RSI context (README, "Deploying to a robot").',
        )
    print(
        'warning: the RSI packets carry no force (no <FTS> element): the force limit '
        f'(--max_force_n={_MAX_FORCE_N.value:g}) is off and the policy reads f_z = 0.',
        file=sys.stderr,
        flush=True,
    )


def _metres(name: str, values: Optional[List[str]]) -> np.ndarray:
    """The flag --NAME=x,y,z (mm) as metres (3,)."""
    try:
        if values is None or len(values) != 3:
            raise ValueError
        return np.array([float(v) for v in values]) * 1e-3
    except ValueError:
        raise app.UsageError(
            f'--{name}={",".join(values or [])}: x,y,z, three numbers in mm.'
        ) from None


def _goal_base() -> np.ndarray:
    """--goal_mm as metres (3,)."""
    if not _GOAL_MM.value:
        raise app.UsageError(
            '--goal_mm=x,y,z (the goal in the base frame, mm) is required for a real robot.'
        )
    return _metres('goal_mm', _GOAL_MM.value)


def _kuka(config: insertion.InsertionConfig, box_m) -> kuka_rsi.KukaRSIRobot:
    try:
        rsi_config = kuka_rsi.RSIConfig(
            listen=_host_port(_LISTEN.value),
            sen_type=_SEN_TYPE.value,
            max_step_mm=_MAX_STEP_MM.value,
            robot_timeout_ms=_ROBOT_TIMEOUT_MS.value,
            connect_timeout_s=_CONNECT_TIMEOUT_S.value,
            control_hz=config.control_hz,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    return kuka_rsi.KukaRSIRobot(rsi_config, box_mm=tuple(bound * 1e3 for bound in box_m))


def _sawyer(config: insertion.InsertionConfig, box_m) -> sawyer.SawyerRobot:
    offset = _metres('sawyer_tool_offset_mm', _TOOL_OFFSET_MM.value)
    try:
        sawyer_config = sawyer.SawyerConfig(
            tool_offset_m=tuple(offset),
            stiffness=(_STIFFNESS.value, SAWYER.stiffness[1]),
            control_hz=config.control_hz,
            wrench_sign=_WRENCH_SIGN.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    try:
        sdk = sawyer.load_sdk()
    except sawyer.SDKMissing as e:
        _fail(EXIT_CANNOT_SERVE, str(e))
    return sawyer.SawyerRobot(sdk, sawyer_config, box_m=box_m)


def _episode_demo(log: loop.EpisodeLog, scale: np.ndarray, success: bool):
    """One episode as `demos.Demonstrations` (agent-space actions)."""
    obs = np.array(log.observations, np.float32)
    final = log.final_observation[None]  # s_T, after the last step
    n = len(obs)
    actions = np.clip(np.array(log.sent) / scale, -1.0, 1.0).astype(np.float32)[:n]
    rewards = np.zeros(n, np.float32)
    terminal = np.zeros(n, bool)
    if success and n:
        rewards[-1], terminal[-1] = 1.0, True
    steps = types.Step(
        obs=obs[None],
        action=actions[None],
        reward=rewards[None],
        terminal=terminal[None],
        next_obs=np.concatenate([obs[1:], final])[None],
    )
    return demos_lib.Demonstrations(steps=steps, lengths=np.array([n], np.int32))


def _percentiles(values_s: List[float]) -> Optional[Dict[str, float]]:
    if not values_s:
        return None
    ms = np.asarray(values_s) * 1e3
    return {
        'p50': round(float(np.percentile(ms, 50)), 4),
        'p99': round(float(np.percentile(ms, 99)), 4),
    }


def _latency_plot(path: str, policy_s: List[float], reply_s: List[float]) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [('policy call', policy_s)] + ([('RSI reply', reply_s)] if reply_s else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        ms = np.asarray(values) * 1e3
        ax.hist(ms, bins=40, color='tab:blue')
        ax.axvline(np.percentile(ms, 99), color='tab:red', linestyle='--', label='p99')
        ax.set_xlabel(f'{name} (ms)')
        ax.set_ylabel('count')
        ax.legend()
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    task, policy, spec = _task_and_policy()
    if task not in connectors.task_names():
        raise app.UsageError(
            f'--task={task!r}: the robot loop runs the connector tasks '
            f'({", ".join(connectors.task_names())}).'
        )
    config = insertion.InsertionConfig(task=task, goal_noise_mm=_GOAL_NOISE_MM.value)
    safety_config = _safety_config()
    rng = np.random.default_rng(_SEED.value)
    if _ROBOT.value == 'sim':
        robot = sim_robot.SimRobot(config, seed=_SEED.value, real_time=_REAL_TIME.value)
        goal_base = None
    else:
        goal_base = _goal_base()
        box = safety.box_m(goal_base, safety_config)
        robot = (_kuka if _ROBOT.value == 'kuka_rsi' else _sawyer)(config, box)
    scale = np.full(3, config.max_action_m)
    results, policy_s = [], []
    policy(np.zeros(connector_obs.OBS_DIM, np.float32))  # compiled before a robot waits on it
    stopped = None
    try:
        for episode in range(_EPISODES.value):
            if goal_base is None:
                drawn = robot.reset()
                goal, true_goal = drawn.goal_observed_m, drawn.goal_m
            else:
                offset = rng.uniform(-_GOAL_NOISE_MM.value, _GOAL_NOISE_MM.value, 2) * 1e-3
                goal = goal_base + np.concatenate([offset, [0.0]])
                true_goal = goal_base
                if episode == 0 and _ROBOT.value == 'kuka_rsi':
                    robot.wait_for_robot()
                    if robot.observe().wrench is None:
                        _no_force(spec)
            log = loop.run_episode(robot, policy, goal, config.horizon, safety_config)
            policy_s += log.call_s
            success = robot.connected() if goal_base is None else None
            final_mm = float(np.linalg.norm(log.final_state.position_m - true_goal) * 1e3)
            results.append(
                {
                    'success': success,
                    'final_distance_mm': round(final_mm, 3),
                    'steps': len(log.sent),
                    'stopped': log.stopped,
                }
            )
            print(
                f'episode {episode}: {len(log.sent)} steps, final distance {final_mm:.2f} mm'
                + ('' if success is None else f', {"connected" if success else "not connected"}')
                + (f'; stopped: {log.stopped}' if log.stopped else ''),
                flush=True,
            )
            if _LOG_DIR.value:
                demo = _episode_demo(log, scale, bool(success))
                demos_lib.save(
                    os.path.join(_LOG_DIR.value, f'episode_{episode:03d}.npz'),
                    demo,
                    task,
                    run_dir.json_ready(dataclasses.asdict(config)),
                    np.array([bool(success)]),
                )
            if log.stopped:
                stopped = log.stopped
                break
            if goal_base is not None and episode + 1 < _EPISODES.value:
                loop.retract(robot, goal, config.reset_height_mm * 1e-3, safety_config)
    except kuka_rsi.RobotSilent as e:
        stopped = f'robot silent: {e}'
        robot_silent = True
    except safety.SafetyStop as e:  # while retracting between episodes
        stopped = str(e)
        robot_silent = False
    else:
        robot_silent = False
    finally:
        robot.stop()
        reply_s = robot.responder.reply_s if hasattr(robot, 'responder') else []
        if hasattr(robot, 'close'):
            robot.close()
    successes = [r['success'] for r in results]
    known = all(s is not None for s in successes)
    summary = {
        'robot': _ROBOT.value,
        'policy': _POLICY.value,
        'task': task,
        'episodes': len(results),
        'successes': int(sum(successes)) if known and results else None,
        'success_rate': float(np.mean(successes)) if known and results else None,
        'success': successes,
        'final_distance_mm': [r['final_distance_mm'] for r in results],
        'latency_ms': {'policy_call': _percentiles(policy_s), 'rsi_reply': _percentiles(reply_s)},
        'stopped': stopped,
    }
    if _LOG_DIR.value:
        run_dir.write_json(os.path.join(_LOG_DIR.value, 'summary.json'), summary)
        if policy_s:
            _latency_plot(os.path.join(_LOG_DIR.value, 'latency.png'), policy_s, reply_s)
    if _JSON.value:
        print(json.dumps(summary))
    if robot_silent:
        _fail(EXIT_SILENT, stopped)
    if stopped:
        _fail(EXIT_SAFETY, f'safety stop: {stopped}')


if __name__ == '__main__':
    app.run(main)
