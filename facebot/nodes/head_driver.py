# Copyright 2025 facebot maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""FLAME frames -> head actuator commands for ros2_control (forward_command_controller /
joint_trajectory_controller), with watchdog and e-stop.

Wraps :class:`facebot.robot.actuators.HeadController`: every FLAME message is pushed as it
arrives; a timer at ``control_rate_hz`` ticks the controller with the node's clock (the
same time base as the FLAME stamps, which are show times) and publishes the forms listed in
``output_forms``:

- ``forward_command``: std_msgs/Float64MultiArray on ``head_position_controller/commands``
- ``trajectory``: trajectory_msgs/JointTrajectory on
  ``head_trajectory_controller/joint_trajectory`` (one point per tick, start on receipt)
- ``joint_state``: sensor_msgs/JointState of the commands on ``head/joint_commands``

E-stop: std_srvs/SetBool service ``head/set_estop`` or std_msgs/Bool on ``head/estop``.
Limits, gains, lead and filter settings change live through ``HeadController.reconfigure``:
joints brake within their old limits to a state the new ones allow, so no command steps
beyond either.
"""
from __future__ import annotations

import collections
import dataclasses
import time

from facebot import interfaces
from facebot.config import CONFIG_DIR, ConfigError
from facebot.msg import FlameParams
from facebot.nodes import _common as common
from facebot.nodes._common import Param
from facebot.pipeline.head import POSITION_CONTROLLER, TRAJECTORY_CONTROLLER
from facebot.robot.actuators import ESTOP_MODES, HeadController, load_head_config
from facebot.robot.actuators import OUTPUT_FORMS
from facebot.robot.joint_messages import forward_command_msg, joint_state_msg, trajectory_msg
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

COMMANDS_TOPIC = f'{POSITION_CONTROLLER}/commands'
TRAJECTORY_TOPIC = f'{TRAJECTORY_CONTROLLER}/joint_trajectory'
JOINT_COMMANDS_TOPIC = 'head/joint_commands'
ESTOP_TOPIC = 'head/estop'
ESTOP_SERVICE = 'head/set_estop'
JOINT_KEYS = {  # per-joint live parameters: joints.<name>.<key>, with their ranges
    'gain': (-20.0, 20.0), 'offset': (-3.2, 3.2), 'lower': (-3.2, 3.2),
    'upper': (-3.2, 3.2), 'max_velocity': (1e-3, 100.0), 'max_acceleration': (1e-3, 10000.0),
}


def params_for(cfg) -> tuple[Param, ...]:
    """The node's parameters, with defaults from the head configuration file."""
    specs = [
        Param('output_forms', list(dict.fromkeys(list(cfg.output.forms) + ['joint_state'])),
              'what to publish: forward_command, trajectory, joint_state', read_only=True),
        Param('control_rate_hz', float(cfg.control_rate_hz), 'command rate (Hz)', 1.0, 1000.0,
              read_only=True),
        Param('lead_ms', float(cfg.lead_ms), 'commands aim this far ahead of the audio (ms)',
              0.0, 1000.0, live=True),
        Param('watchdog_timeout_s', float(cfg.watchdog_timeout_s),
              'no FLAME frame for this long: ease to neutral', 0.01, 10.0, live=True),
        Param('neutral_ease_s', float(cfg.neutral_ease_s), 'duration of the ease to neutral',
              0.05, 10.0, live=True),
        Param('estop_mode', cfg.estop_mode, 'e-stop behaviour', choices=ESTOP_MODES, live=True),
        Param('filter_min_cutoff_hz', float(cfg.filter.min_cutoff_hz),
              'one-euro filter cutoff at rest (Hz): lower = smoother', 0.01, 100.0, live=True),
        Param('filter_beta', float(cfg.filter.beta),
              'one-euro filter speed coefficient: higher = less lag on fast motion',
              0.0, 1000.0, live=True),
        Param('trajectory_time_from_start_s', float(cfg.output.trajectory_time_from_start_s),
              'time_from_start of the trajectory point sent each tick', 0.0, 1.0, live=True),
    ]
    for j in cfg.joints:
        for key, (lo, hi) in JOINT_KEYS.items():
            specs.append(Param(f'joints.{j.name}.{key}', float(getattr(j, key)),
                               f'joint {j.name}: {key}', lo, hi, live=True))
    return tuple(specs)


def apply_params(cfg, values: dict):
    """A new, validated HeadConfig with the node parameters in ``values`` applied."""
    joints = []
    for j in cfg.joints:
        changes = {k: values[f'joints.{j.name}.{k}'] for k in JOINT_KEYS
                   if f'joints.{j.name}.{k}' in values}
        joints.append(dataclasses.replace(j, **changes) if changes else j)
    flt = dataclasses.replace(cfg.filter, min_cutoff_hz=values['filter_min_cutoff_hz'],
                              beta=values['filter_beta'])
    forms = tuple(f for f in values['output_forms'] if f != 'joint_state') or cfg.output.forms
    out = dataclasses.replace(cfg.output, forms=forms,
                              trajectory_time_from_start_s=values['trajectory_time_from_start_s'])
    return dataclasses.replace(
        cfg, joints=tuple(joints), control_rate_hz=values['control_rate_hz'],
        lead_ms=values['lead_ms'], watchdog_timeout_s=values['watchdog_timeout_s'],
        neutral_ease_s=values['neutral_ease_s'], estop_mode=values['estop_mode'],
        filter=flt, output=out)


class HeadDriverNode(Node):
    """Drives the head's actuators from FLAME frames."""

    def __init__(self, **kwargs) -> None:
        super().__init__('head_driver', **kwargs)
        path_spec = Param('head_config', '',
                          "head YAML (joints, limits, mapping); empty = head_reference.yaml",
                          read_only=True)
        path = common.declare(self, [path_spec])['head_config'] or str(
            CONFIG_DIR / 'head_reference.yaml')
        try:
            self.base_config = load_head_config(path)
        except ConfigError as err:
            self.get_logger().fatal(str(err))
            raise
        self.specs = params_for(self.base_config)
        self.params = common.declare(self, self.specs)
        bad = [f for f in self.params['output_forms'] if f not in OUTPUT_FORMS]
        if bad:
            raise ValueError(f'output_forms: unknown form(s) {bad} (known: {OUTPUT_FORMS})')
        self.forms = set(self.params['output_forms'])
        self.controller = HeadController(apply_params(self.base_config, self.params))
        self.live = common.LiveParams(self, self.specs, self._apply)
        self.log = common.RateLimitedLog(self.get_logger())
        self.counts = collections.Counter()
        self.latency = common.Latency()
        self._last_cmd = None
        qos = common.reliable_qos(10)
        self.pubs = {}
        if 'forward_command' in self.forms:
            self.pubs['forward_command'] = self.create_publisher(
                Float64MultiArray, COMMANDS_TOPIC, qos)
        if 'trajectory' in self.forms:
            self.pubs['trajectory'] = self.create_publisher(
                JointTrajectory, TRAJECTORY_TOPIC, qos)
        if 'joint_state' in self.forms:
            self.pubs['joint_state'] = self.create_publisher(
                JointState, JOINT_COMMANDS_TOPIC, qos)
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        # the dialogue holds the voice back by at least this lead + one face frame
        self.lead_pub = self.create_publisher(Float64, common.HEAD_LEAD, common.latched_qos())
        self.publish_lead()
        self.create_subscription(FlameParams, common.FLAME, self.on_flame,
                                 common.reliable_qos(50))
        self.create_subscription(Bool, ESTOP_TOPIC, self.on_estop_topic, qos)
        self.create_service(SetBool, ESTOP_SERVICE, self.on_estop_service)
        self.create_timer(1.0 / self.params['control_rate_hz'], self.on_tick)
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    # -- parameters ------------------------------------------------------------------------

    def _apply(self, changes: dict) -> str | None:
        values = {**self.params, **changes}
        config = apply_params(self.base_config, values)  # ValueError: refused with reason
        self.controller.reconfigure(config)
        self.params = values
        if 'lead_ms' in changes:
            self.publish_lead()
        return None

    def publish_lead(self) -> None:
        """Tells the dialogue (latched) how far ahead of the voice the motors are commanded."""
        msg = Float64()
        msg.data = float(self.controller.config.lead_ms)
        self.lead_pub.publish(msg)

    # -- input -----------------------------------------------------------------------------

    def on_flame(self, msg) -> None:
        """Pushes one FLAME frame; malformed or out-of-range frames are counted, not used."""
        try:
            frame = interfaces.flame_from_msg(msg)
        except ValueError as err:
            self.counts['flame_malformed'] += 1
            self.log.warning('flame', f'FLAME message refused: {err}')
            return
        if not self.controller.push(frame, received_ns=common.now_ns(self)):
            self.log.warning('refused', 'FLAME frame refused by the controller (see counters)')

    def on_estop_topic(self, msg) -> None:
        self._set_estop(bool(msg.data), 'topic')

    def on_estop_service(self, request, response):
        self._set_estop(bool(request.data), 'service')
        response.success = True
        response.message = f'e-stop {"engaged" if request.data else "released"} ' \
                           f'({self.controller.config.estop_mode})'
        return response

    def _set_estop(self, active: bool, via: str) -> None:
        # one call site per severity: rclpy refuses a log call whose severity changes
        if active and not self.controller.estop:
            self.get_logger().warning(f'e-stop ENGAGED via {via}')
        elif not active and self.controller.estop:
            self.get_logger().info(f'e-stop released via {via}')
        self.controller.set_estop(active)

    # -- output ----------------------------------------------------------------------------

    @common.until_shutdown
    def on_tick(self) -> None:
        """One control tick: the limited command for now, in every configured form."""
        t0 = time.perf_counter()
        now = common.now_ns(self)
        cmd = self.controller.tick(now)
        self._last_cmd = cmd
        ctl = self.controller
        if 'forward_command' in self.pubs:
            self.pubs['forward_command'].publish(
                forward_command_msg(ctl.forward_command(cmd), Float64MultiArray()))
        if 'trajectory' in self.pubs:
            one = {'joint_names': ctl.config.output.controller_joints or ctl.joint_names,
                   'points': [ctl.trajectory_point(cmd)]}
            self.pubs['trajectory'].publish(  # stamp 0: start on receipt
                trajectory_msg(one, 0, JointTrajectory(), JointTrajectoryPoint))
        if 'joint_state' in self.pubs:
            self.pubs['joint_state'].publish(
                joint_state_msg(ctl.joint_state(cmd), cmd.stamp_ns, JointState()))
        self.latency.add({'tick': (time.perf_counter() - t0) * 1000.0})

    @common.until_shutdown
    def publish_diagnostics(self) -> None:
        """Mode, e-stop, controller counters and tick latency."""
        ctl = self.controller
        values = {'mode': ctl.mode, 'estop': ctl.estop, 'lead ms': ctl.config.lead_ms,
                  'flame_malformed': self.counts['flame_malformed'],
                  'parameter changes refused': self.live.refused}
        values.update(ctl.counters)
        values.update(self.latency.summary())
        level = 'warn' if ctl.estop or ctl.mode == 'watchdog' else 'ok'
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'head actuators', level, ctl.mode, values))


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot head_driver``."""
    return common.run(HeadDriverNode, args)
