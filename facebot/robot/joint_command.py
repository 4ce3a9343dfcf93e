"""One control tick's joint command and the ros2_control message payloads made from it.

Output forms for ros2_control (the node publishes whichever ``output.forms`` lists):

- ``forward_command``: ``std_msgs/Float64MultiArray.data`` for a
  ``forward_command_controller/ForwardCommandController`` (``interface_name: position``) on its
  ``~/commands`` topic; values in the controller's ``joints`` parameter order
  (``output.controller_joints``, or the configured joint order when empty). The controller
  writes them straight to the hardware's position command interfaces, so the limiting done
  by facebot.robot.head_controller is the only limiting there is.
- ``trajectory``: ``trajectory_msgs/JointTrajectory`` for a
  ``joint_trajectory_controller`` on its ``~/joint_trajectory`` topic (header stamp 0 = start on
  receipt; ``time_from_start`` relative to that start; a new message replaces the trajectory
  being executed from its start time). Points carry positions, velocities and accelerations.
- ``joint_state``: ``sensor_msgs/JointState`` (name, position, velocity, empty effort), e.g.
  for a ``joint_state_topic_hardware_interface``-style mock or for plotting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass
class JointCommand:
    """One control tick's command. ``stamp_ns``: send time (now); ``target_stamp_ns``: the show
    time it aims at (now + lead). Arrays are float64 in ``joint_names`` order."""

    stamp_ns: int
    target_stamp_ns: int
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    mode: str
    joint_names: tuple[str, ...] = ()



def _order(cmd: JointCommand, joints: Sequence[str] | None) -> np.ndarray:
    if not joints:
        return np.arange(len(cmd.positions))
    index = {n: i for i, n in enumerate(cmd.joint_names)}
    missing = [j for j in joints if j not in index]
    if missing:
        raise KeyError(f"command has no joint(s) {', '.join(missing)}")
    return np.array([index[j] for j in joints], dtype=np.int64)


def forward_command(cmd: JointCommand, joints: Sequence[str] | None = None) -> list[float]:
    """``std_msgs/Float64MultiArray.data`` for forward_command_controller's ``~/commands``:
    positions in the controller's ``joints`` order (default: the command's own order)."""
    return [float(x) for x in cmd.positions[_order(cmd, joints)]]


def trajectory_point(cmd: JointCommand, time_from_start_s: float, joints: Sequence[str] | None = None) -> dict:
    """One ``trajectory_msgs/JointTrajectoryPoint`` (``time_from_start`` in integer ns)."""
    idx = _order(cmd, joints)
    return {
        "positions": [float(x) for x in cmd.positions[idx]],
        "velocities": [float(x) for x in cmd.velocities[idx]],
        "accelerations": [float(x) for x in cmd.accelerations[idx]],
        "time_from_start_ns": int(round(float(time_from_start_s) * 1e9)),
    }


def trajectory(cmds: Iterable[JointCommand], joints: Sequence[str] | None = None) -> dict:
    """``trajectory_msgs/JointTrajectory`` for joint_trajectory_controller's
    ``~/joint_trajectory``: points timed from the first command's send time (send with header
    stamp 0, i.e. "start on receipt", right at that time)."""
    cmds = list(cmds)
    if not cmds:
        return {"joint_names": list(joints or ()), "points": []}
    names = list(joints) if joints else list(cmds[0].joint_names)
    t0 = cmds[0].stamp_ns
    return {"joint_names": names,
            "points": [trajectory_point(c, (c.stamp_ns - t0) * 1e-9, joints) for c in cmds]}


def joint_state(cmd: JointCommand) -> dict:
    """``sensor_msgs/JointState`` fields (the header stamp is ``cmd.stamp_ns``)."""
    return {"name": list(cmd.joint_names), "position": [float(x) for x in cmd.positions],
            "velocity": [float(x) for x in cmd.velocities], "effort": []}
