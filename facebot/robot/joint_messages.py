"""The head's joint commands as ROS messages, one builder per message type.

The controller gives its output forms as plain data (``HeadController.joint_state``,
``forward_command``, ``trajectory_point`` / ``trajectory``); these builders turn them into
sensor_msgs/JointState, std_msgs/Float64MultiArray (forward_command_controller's
``~/commands``) and trajectory_msgs/JointTrajectory (joint_trajectory_controller's
``~/joint_trajectory``). As in :mod:`facebot.interfaces`, a builder returns a rosbags message
(what the recorder writes to the bag) unless ``out=`` passes a message to fill (the head_driver
node's rclpy messages), so the node and the bag cannot disagree on a field.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from facebot.interfaces import make_header, msg_class, ns_to_stamp

__all__ = ["joint_state_msg", "forward_command_msg", "trajectory_point_msg", "trajectory_msg"]

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_MULTI_ARRAY = "std_msgs/msg/Float64MultiArray"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
JOINT_TRAJECTORY_POINT = "trajectory_msgs/msg/JointTrajectoryPoint"

_NONE = np.zeros(0, np.float64)


def _fill(msg: Any, **fields: Any) -> Any:
    """Set ``fields``; float arrays go in as numpy (rosbags) or as lists where the message
    holds another container (rclpy's ``array.array``, which it builds from a list)."""
    for name, value in fields.items():
        if isinstance(value, np.ndarray) and not isinstance(getattr(msg, name), np.ndarray):
            value = value.tolist()
        setattr(msg, name, value)
    return msg


def _floats(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, np.float64)


def joint_state_msg(state: dict, stamp_ns: int, out: Any = None) -> Any:
    """sensor_msgs/JointState from ``HeadController.joint_state(cmd)``, stamped ``stamp_ns``."""
    if out is None:
        out = msg_class(JOINT_STATE)(header=make_header(stamp_ns), name=[], position=_NONE,
                                     velocity=_NONE, effort=_NONE)
    make_header(stamp_ns, "", out.header)
    return _fill(out, name=list(state["name"]), position=_floats(state["position"]),
                 velocity=_floats(state["velocity"]), effort=_NONE)


def forward_command_msg(positions: Sequence[float], out: Any = None) -> Any:
    """std_msgs/Float64MultiArray from ``HeadController.forward_command(cmd)``."""
    if out is None:
        layout = msg_class("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
        out = msg_class(FLOAT64_MULTI_ARRAY)(layout=layout, data=_NONE)
    return _fill(out, data=_floats(positions))


def trajectory_point_msg(point: dict, out: Any = None) -> Any:
    """trajectory_msgs/JointTrajectoryPoint from ``HeadController.trajectory_point(cmd)``."""
    if out is None:
        duration = msg_class("builtin_interfaces/msg/Duration")(sec=0, nanosec=0)
        out = msg_class(JOINT_TRAJECTORY_POINT)(positions=_NONE, velocities=_NONE, accelerations=_NONE,
                                                effort=_NONE, time_from_start=duration)
    ns_to_stamp(point["time_from_start_ns"], out.time_from_start)  # Duration: sec, nanosec as Time
    return _fill(out, positions=_floats(point["positions"]), velocities=_floats(point["velocities"]),
                 accelerations=_floats(point["accelerations"]), effort=_NONE)


def trajectory_msg(trajectory: dict, stamp_ns: int, out: Any = None,
                   new_point: Optional[Callable[[], Any]] = None) -> Any:
    """trajectory_msgs/JointTrajectory from ``{"joint_names", "points"}`` (as
    ``HeadController.trajectory(cmds)`` gives), header stamped ``stamp_ns`` (0: start on
    receipt). ``new_point`` makes the empty point messages to fill when ``out`` is given."""
    if out is None:
        out = msg_class(JOINT_TRAJECTORY)(header=make_header(stamp_ns), joint_names=[], points=[])
    make_header(stamp_ns, "", out.header)
    out.joint_names = list(trajectory["joint_names"])
    out.points = [trajectory_point_msg(p, None if new_point is None else new_point())
                  for p in trajectory["points"]]
    return out
