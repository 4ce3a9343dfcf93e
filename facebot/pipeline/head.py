"""Drives the head's actuators from the loop's FLAME frames on the session clock, causally.

A command aims at ``send time + lead``; the controller only knows the frames produced before
the tick, so each step first ticks up to "now" (the end of the input frame just captured)
with what it had, then hands over the new frames. For the motors to lead the voice, the voice
must be held back by at least the lead: the session's playout delay is raised to it.
"""
from __future__ import annotations

import numpy as np

from facebot.pipeline.duplex import StepResult
from facebot.robot.actuators import HeadController, JointCommand
from facebot.robot.joint_messages import forward_command_msg, joint_state_msg, trajectory_msg

POSITION_CONTROLLER = "head_position_controller"  # config/head_controllers.yaml
TRAJECTORY_CONTROLLER = "head_trajectory_controller"
TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    f"/{POSITION_CONTROLLER}/commands": "std_msgs/msg/Float64MultiArray",
    f"/{TRAJECTORY_CONTROLLER}/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
}


class HeadDriver:
    """Ticks the controller every control period of the capture timeline.

    A jump in the capture stamps is a discontinuity, not time to fill: forward, the head gets
    the commands of at most ``catch_up_ns`` (the watchdog trips and eases to neutral, as it
    would on the robot), then the timeline restarts at the new time; backward, the controller
    restarts from its last command on the new time base. Both are counted in
    ``timeline_restarts``, so a stamp 60 years ahead costs a few hundred commands, not 10^11.
    """

    def __init__(self, controller: HeadController) -> None:
        self.controller = controller
        cfg = controller.config
        self.period_ns = int(round(1e9 / cfg.control_rate_hz))
        self.catch_up_ns = int((cfg.watchdog_timeout_s + cfg.neutral_ease_s + 1.0) * 1e9)
        self.timeline_restarts = 0
        self._next_tick: int | None = None
        self._last: JointCommand | None = None

    @property
    def lead_ms(self) -> float:
        return float(self.controller.config.lead_ms)

    def advance(self, result: StepResult, now_ns: int) -> list[JointCommand]:
        """Ticks up to ``now_ns``, then takes the step's frames (which arrive at ``now_ns``)."""
        if self._next_tick is None:
            self._next_tick = result.capture_stamp_ns
        elif result.capture_stamp_ns < self._next_tick - 2 * self.period_ns:
            self._restart_backward(result.capture_stamp_ns)
        commands = []
        if now_ns - self._next_tick > self.catch_up_ns:
            commands += self._ticks_until(self._next_tick + self.catch_up_ns)
            self.timeline_restarts += 1
            self._next_tick = now_ns
        commands += self._ticks_until(now_ns)
        for frame in result.flame:
            self.controller.push(frame, received_ns=now_ns)
        return commands

    def _ticks_until(self, end_ns: int) -> list[JointCommand]:
        commands = []
        while self._next_tick <= end_ns:
            commands.append(self.controller.tick(self._next_tick))
            self._next_tick += self.period_ns
        if commands:
            self._last = commands[-1]
        return commands

    def _restart_backward(self, stamp_ns: int) -> None:
        """The clock went back: frames and ticks of the old time base mean nothing now."""
        last = self._last
        self.controller.reset(None if last is None else last.positions, None if last is None else last.velocities)
        self.timeline_restarts += 1
        self._next_tick = stamp_ns


def command_messages(commands: list[JointCommand], controller: HeadController) -> list[tuple[str, int, object]]:
    """(topic, stamp_ns, message) for the bag: joint states and both controllers' inputs."""
    if not commands:
        return []
    out = []
    for cmd in commands:
        out.append(("/joint_states", cmd.stamp_ns, joint_state_msg(controller.joint_state(cmd), cmd.stamp_ns)))
        out.append((f"/{POSITION_CONTROLLER}/commands", cmd.stamp_ns,
                    forward_command_msg(controller.forward_command(cmd))))
    first = commands[0].stamp_ns
    out.append((f"/{TRAJECTORY_CONTROLLER}/joint_trajectory", first,
                trajectory_msg(controller.trajectory(commands), first)))
    return out


def csv_header(joint_names) -> str:
    cols = ["send_time_s", "show_time_s", "mode"]
    for j in joint_names:
        cols += [f"{j}.pos", f"{j}.vel", f"{j}.acc"]
    return ",".join(cols) + "\n"


def csv_rows(commands: list[JointCommand], t0_ns: int) -> str:
    lines = []
    for c in commands:
        values = np.stack([c.positions, c.velocities, c.accelerations], axis=1).reshape(-1)
        lines.append(f"{(c.stamp_ns - t0_ns) / 1e9:.4f},{(c.target_stamp_ns - t0_ns) / 1e9:.4f},{c.mode},"
                     + ",".join(f"{v:.6f}" for v in values))
    return "".join(line + "\n" for line in lines)
