"""FLAME -> robot head: actuator commands for ros2_control (limits, lead, watchdog, e-stop)
and the calibration of the FLAME-to-joint map. ROS-free; the ROS node wraps these."""
from facebot.robot.head_config import HeadConfig, JointConfig, Term, load_head_config
from facebot.robot.head_controller import HeadController
from facebot.robot.joint_command import JointCommand, forward_command, joint_state, trajectory, trajectory_point

__all__ = [
    "HeadConfig", "HeadController", "JointCommand", "JointConfig", "Term", "forward_command",
    "joint_state", "load_head_config", "trajectory", "trajectory_point",
]
