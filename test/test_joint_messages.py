"""The head's joint messages: one builder per message type for the bag (rosbags messages) and the
head_driver node (``out=`` an rclpy message, stood in for here by its containers)."""
from __future__ import annotations

import array
import dataclasses
from types import SimpleNamespace

import numpy as np

from facebot import interfaces
from facebot.config import CONFIG_DIR
from facebot.face.flame import FlameFrame
from facebot.robot.actuators import HeadController, load_head_config
from facebot.robot.joint_messages import (
    forward_command_msg,
    joint_state_msg,
    trajectory_msg,
    trajectory_point_msg,
)

MS = 1_000_000


def _controller_and_commands(controller_joints=("jaw", "neck_yaw")):
    cfg = load_head_config(CONFIG_DIR / "head_reference.yaml")
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, controller_joints=controller_joints))
    hc = HeadController(cfg)
    f = FlameFrame.neutral(stamp_ns=60 * MS)
    f.jaw_pose[0] = 0.3
    hc.push(f)
    return hc, [hc.tick(k * 10 * MS) for k in range(1, 6)]


def _round_trip(msg, typename):
    return interfaces.deserialize(interfaces.serialize(msg, typename), typename)


def test_bag_messages_carry_the_controller_forms():
    hc, cmds = _controller_and_commands()
    c = cmds[-1]
    js = _round_trip(joint_state_msg(hc.joint_state(c), c.stamp_ns), "sensor_msgs/msg/JointState")
    assert interfaces.stamp_to_ns(js.header.stamp) == c.stamp_ns and js.header.frame_id == ""
    assert list(js.name) == list(hc.joint_names)
    np.testing.assert_array_equal(js.position, c.positions)
    np.testing.assert_array_equal(js.velocity, c.velocities)
    assert js.effort.size == 0
    fc = _round_trip(forward_command_msg(hc.forward_command(c)), "std_msgs/msg/Float64MultiArray")
    assert list(fc.data) == hc.forward_command(c) and len(fc.data) == 2
    tr = _round_trip(trajectory_msg(hc.trajectory(cmds), cmds[0].stamp_ns),
                     "trajectory_msgs/msg/JointTrajectory")
    assert list(tr.joint_names) == ["jaw", "neck_yaw"]
    assert interfaces.stamp_to_ns(tr.header.stamp) == cmds[0].stamp_ns
    assert [p.time_from_start.sec * 10**9 + p.time_from_start.nanosec for p in tr.points] == \
        [0, 10 * MS, 20 * MS, 30 * MS, 40 * MS]
    np.testing.assert_array_equal(tr.points[-1].accelerations, hc.trajectory_point(c)["accelerations"])


def test_a_point_past_one_second_splits_into_sec_and_nanosec():
    hc, cmds = _controller_and_commands()
    pt = trajectory_point_msg(hc.trajectory_point(cmds[-1], 1.25))
    assert (pt.time_from_start.sec, pt.time_from_start.nanosec) == (1, 250_000_000)


def _rclpy_like_point():
    return SimpleNamespace(positions=array.array("d"), velocities=array.array("d"),
                           accelerations=array.array("d"), effort=array.array("d"),
                           time_from_start=SimpleNamespace(sec=0, nanosec=0))


def test_out_fills_an_rclpy_like_message_with_lists():
    """rclpy holds float sequences in ``array.array`` and builds them from lists: the builders
    hand lists to such a message and numpy arrays to rosbags ones."""
    hc, cmds = _controller_and_commands(controller_joints=())
    c = cmds[-1]
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="x")
    out = SimpleNamespace(header=header, name=[], position=array.array("d"),
                          velocity=array.array("d"), effort=array.array("d"))
    assert joint_state_msg(hc.joint_state(c), c.stamp_ns, out) is out
    assert out.position == [float(x) for x in c.positions] and out.effort == []
    assert interfaces.stamp_to_ns(out.header.stamp) == c.stamp_ns and out.header.frame_id == ""
    fc = forward_command_msg(hc.forward_command(c), SimpleNamespace(data=array.array("d")))
    assert fc.data == [float(x) for x in c.positions]
    traj = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=5, nanosec=5), frame_id=""),
                           joint_names=[], points=[])
    one = {"joint_names": hc.joint_names, "points": [hc.trajectory_point(c)]}
    trajectory_msg(one, 0, traj, _rclpy_like_point)
    assert (traj.header.stamp.sec, traj.header.stamp.nanosec) == (0, 0)  # start on receipt
    assert traj.joint_names == list(hc.joint_names) and len(traj.points) == 1
    assert traj.points[0].velocities == [float(x) for x in c.velocities]
    assert traj.points[0].time_from_start.nanosec == hc.trajectory_point(c)["time_from_start_ns"]
