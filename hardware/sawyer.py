"""A Rethink Sawyer through Intera's SDK behind the `Robot` protocol.

As on the residual-RL paper's Sawyer: relative end-effector moves at 10 Hz
under Intera's interaction (impedance) control.

  in    `Limb.endpoint_pose()` (the hand frame: position, orientation
        x y z w) and `Limb.endpoint_effort()` (force, torque), base frame.
        The tool point is the hand frame plus `tool_offset_m`, given in the
        hand frame (the plug's mating face below the flange).
  out   `command(delta)`: the tool's target is where the tool is plus
        `delta` (as in the simulator), clipped to the workspace box; the
        hand's target holds the orientation the tool had when the adapter
        started; Intera's IK (`Limb.ik_request`, seeded with the current
        joints) turns it into joint angles, which become the impedance
        controller's reference (`Limb.set_joint_positions`). It returns at
        the next tick of `control_hz`. No IK solution: hold, stop, and a
        `SafetyStop` that says which target failed.
  keep  a thread republishes the interaction options (impedance mode on
        every axis, `stiffness`) and the latest joint reference at
        `publish_hz` (at least 10 Hz): Intera drops back to position mode
        when the options stop arriving, and holds when the joint commands
        stop.
  stop  hold the current joints, end the thread, send Intera's
        position-mode command; safe to call twice.

The wrench: Intera estimates the endpoint wrench from the joint torques, in
the base frame, as the wrench the arm applies; `wrench_sign=-1` turns it
into the protocol's (the environment on the tool). Check it on your arm
before a run (README, "Deploying to a robot": press the tool down by hand
and the observed force z reads positive).

`load_sdk()` imports Intera (rospy, intera_interface, intera_motion_interface,
geometry_msgs) only when a Sawyer is used; without it, `SDKMissing` says what
to install. Tests drive the adapter with a stand-in limb backed by the
MuJoCo twin (`tests/test_hardware.py`), since the SDK cannot run here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from hardware.robot import RobotState, Ticker
from hardware.safety import SafetyStop
from insertion_jax import checks


class SDKMissing(ImportError):
    """Intera's SDK (and ROS) cannot be imported here."""


@dataclasses.dataclass(frozen=True)
class SDK:
    """The pieces of Intera the adapter uses.

    Attributes:
      limb: an `intera_interface.Limb`.
      options: () -> a fresh `intera_motion_interface.InteractionOptions`.
      publisher: an `intera_motion_interface.InteractionPublisher`.
      pose: (position (3,), quaternion x y z w (4,)) -> a `geometry_msgs.Pose`.
    """

    limb: Any
    options: Callable[[], Any]
    publisher: Any
    pose: Callable[[np.ndarray, np.ndarray], Any]


def load_sdk(limb: str = 'right', node: str = 'insertion_jax') -> SDK:
    """Intera on a ROS 1 machine: starts a node (without ROS's own signal
    handlers, so that the safety layer's SIGINT handling runs), enables the
    robot and returns the `SDK`."""
    try:
        import intera_interface
        import rospy
        from geometry_msgs.msg import Point, Pose, Quaternion
        from intera_motion_interface import InteractionOptions, InteractionPublisher
    except ImportError as e:
        raise SDKMissing(
            f"--robot=sawyer needs Rethink's Intera SDK on ROS 1 ({e.name or e} is missing): "
            'build the intera_sdk workspace in a ROS Noetic environment on Python >= 3.10 '
            "(RoboStack's packages), run `source intera.sh` in it and rerun from that shell "
            '(README, "Deploying to a robot").'
        ) from e
    if not rospy.core.is_initialized():
        rospy.init_node(node, disable_signals=True)
    intera_interface.RobotEnable(intera_interface.CHECK_VERSION).enable()

    def pose(position, quaternion_xyzw):
        x, y, z = (float(v) for v in position)
        qx, qy, qz, qw = (float(v) for v in quaternion_xyzw)
        return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))

    return SDK(
        limb=intera_interface.Limb(limb),
        options=InteractionOptions,
        publisher=InteractionPublisher(),
        pose=pose,
    )


@dataclasses.dataclass(frozen=True)
class SawyerConfig:
    """The adapter's settings.

    Attributes:
      tip_name: Intera's endpoint (the hand frame the pose and IK refer to).
      tool_offset_m: (3,) the tool point in the hand frame, metres.
      stiffness: (translational N/m, rotational N m/rad) of the impedance.
      control_hz: the policy's rate (`command` returns at its ticks).
      publish_hz: how often the interaction options are republished (>= 10).
      wrench_sign: +1 or -1 (see the module docstring).
    """

    tip_name: str = 'right_hand'
    tool_offset_m: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    stiffness: Tuple[float, float] = (1300.0, 30.0)
    control_hz: float = 10.0
    publish_hz: float = 20.0
    wrench_sign: float = -1.0

    def __post_init__(self):
        owner = 'SawyerConfig'
        checks.positive(
            owner,
            control_hz=self.control_hz,
            stiffness_translation=self.stiffness[0],
            stiffness_rotation=self.stiffness[1],
        )
        if not self.publish_hz >= 10.0:
            raise ValueError(
                f'{owner}.publish_hz={self.publish_hz!r} must be >= 10: Intera leaves '
                'interaction control when its options arrive less often.'
            )
        if self.wrench_sign not in (1.0, -1.0):
            raise ValueError(f'{owner}.wrench_sign={self.wrench_sign!r} must be +1 or -1.')
        if len(self.tool_offset_m) != 3:
            raise ValueError(f'{owner}.tool_offset_m={self.tool_offset_m!r} must be x,y,z.')


def _rotate(quaternion_xyzw: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """`vector` rotated by the unit quaternion (x, y, z, w)."""
    u, w = np.asarray(quaternion_xyzw[:3], np.float64), float(quaternion_xyzw[3])
    return vector + 2.0 * np.cross(u, np.cross(u, vector) + w * vector)


def _xyz(point) -> np.ndarray:
    return np.array([point.x, point.y, point.z], np.float64)


class SawyerRobot:
    """A Sawyer arm behind the `Robot` protocol; see the module docstring."""

    def __init__(
        self,
        sdk: SDK,
        config: Optional[SawyerConfig] = None,
        box_m: Optional[Tuple[np.ndarray, np.ndarray]] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sdk = sdk
        self.config = config = config or SawyerConfig()
        self.box_m = box_m
        self._clock = clock
        self._offset = np.asarray(config.tool_offset_m, np.float64)
        self._ticker = Ticker(config.control_hz)
        self._lock = threading.Lock()
        self._reference: Optional[Dict[str, float]] = None
        self._stop_event = threading.Event()
        self.stopped = False
        options = sdk.options()
        options.set_interaction_control_active(True)
        options.set_K_impedance([config.stiffness[0]] * 3 + [config.stiffness[1]] * 3)
        options.set_max_impedance([False] * 6)
        options.set_interaction_control_mode([1] * 6)  # impedance on every axis
        options.set_in_endpoint_frame(False)
        options.set_endpoint_name(config.tip_name)
        self._options = options
        # The orientation every move holds: the hand's when the adapter starts.
        self._orientation = self._hand()[1]
        self._publish()
        self._thread = threading.Thread(target=self._keep, name='sawyer-options', daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ frames
    def _hand(self):
        pose = self.sdk.limb.endpoint_pose()
        q = pose['orientation']
        return _xyz(pose['position']), np.array([q.x, q.y, q.z, q.w], np.float64)

    def _tool(self):
        hand, q = self._hand()
        return hand + _rotate(q, self._offset), q

    # ------------------------------------------------------------ Robot
    def observe(self) -> RobotState:
        tool, q = self._tool()
        effort = self.sdk.limb.endpoint_effort()
        wrench = self.config.wrench_sign * np.concatenate(
            [_xyz(effort['force']), _xyz(effort['torque'])]
        )
        return RobotState(
            position_m=tool,
            orientation_wxyz=np.array([q[3], q[0], q[1], q[2]]),
            wrench=wrench,
            timestamp_s=self._clock(),
        )

    def command(self, delta_m: np.ndarray) -> None:
        if self.stopped:
            raise RuntimeError('SawyerRobot.command after stop(): start a new adapter.')
        delta_m = np.asarray(delta_m, np.float64)
        if delta_m.shape != (3,) or not np.all(np.isfinite(delta_m)):
            raise ValueError(f'command: delta_m={delta_m!r} must be 3 finite numbers (metres).')
        tool, _ = self._tool()
        target = tool + delta_m
        if self.box_m is not None:
            target = np.clip(target, *self.box_m)
        hand = target - _rotate(self._orientation, self._offset)
        joints = self.sdk.limb.ik_request(
            self.sdk.pose(hand, self._orientation),
            end_point=self.config.tip_name,
            joint_seed=self.sdk.limb.joint_angles(),
        )
        if not joints:
            self.stop()
            raise SafetyStop(
                f'Intera IK found no joint solution for the tool at {np.round(target * 1e3, 2)} '
                'mm (base frame): held and stopped'
            )
        self._set_reference(dict(joints))
        self._ticker.wait()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._set_reference(dict(self.sdk.limb.joint_angles()))
        self._stop_event.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self.sdk.publisher.send_position_mode_cmd()
        self.sdk.limb.exit_control_mode()

    close = stop

    # ------------------------------------------------------------ keeping control
    def _set_reference(self, joints: Dict[str, float]) -> None:
        with self._lock:
            self._reference = joints
            self.sdk.limb.set_joint_positions(joints)

    def _publish(self) -> None:
        with self._lock:
            self.sdk.publisher.send_command(self._options, 0)  # 0: publish once
            if self._reference is not None:
                self.sdk.limb.set_joint_positions(self._reference)

    def _keep(self) -> None:
        period = 1.0 / self.config.publish_hz
        while not self._stop_event.wait(period):
            self._publish()
