"""FLAME -> robot head: actuator commands for ros2_control (limits, lead, watchdog, e-stop)
and the calibration of the FLAME-to-joint map. ROS-free; the ROS node wraps these."""
from facebot.robot.actuators import (
    HeadConfig,
    HeadController,
    JointCommand,
    JointConfig,
    Term,
    forward_command,
    joint_state,
    load_head_config,
    trajectory,
    trajectory_point,
)

__all__ = [
    "HeadConfig", "HeadController", "JointCommand", "JointConfig", "Term", "forward_command",
    "joint_state", "load_head_config", "trajectory", "trajectory_point",
]
