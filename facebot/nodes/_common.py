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

"""What every facebot node shares: parameter declaration, live updates, diagnostics.

Only rclpy and message packages that exist on Humble and Jazzy are used. Parameters are
declared from :class:`Param` specs with a ``ParameterDescriptor`` (description, range,
read-only). rclpy itself refuses read-only and out-of-range values; the node's own check
(usually: build the component's config dataclass with the new value) refuses the rest,
with the reason the dataclass gives.
"""
from __future__ import annotations

import collections
import ctypes
import functools
import math
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException
import rclpy.logging
from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile

from facebot import interfaces
from facebot.config import ConfigError

DIAGNOSTICS_TOPIC = '/diagnostics'
DIAGNOSTICS_PERIOD_S = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Topic names (relative: a namespace applies; remap at launch).
AUDIO_IN = 'audio/in'
AUDIO_OUT = 'audio/out'
AUDIO_PLAYED = 'audio/played'
CAMERA = 'camera/image_raw'
FLAME = 'face/flame'
FACE_IMAGE = 'face/image'
DIALOGUE_TEXT = 'dialogue/text'
DIALOGUE_STATE = 'dialogue/state'
# The head driver's lead (std_msgs/Float64, ms, latched): the dialogue holds the voice back by
# at least this + one face frame so that the motors move first.
HEAD_LEAD = 'head/lead_ms'


def sensor_qos() -> QoSProfile:
    """SensorDataQoS (best effort, keep last 5): microphone and camera streams."""
    return qos_profile_sensor_data


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, keep last ``depth``: robot output that must not be lost in transit."""
    return QoSProfile(depth=depth)


def latched_qos() -> QoSProfile:
    """Reliable, transient local, keep last 1: a value a late subscriber still gets."""
    return QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class Param:
    """One ROS parameter: its default (which fixes its type), description and limits.

    ``live``: applied while the node runs; otherwise read at start-up (or, for a lifecycle
    node, at the next configure). ``read_only`` parameters cannot be changed after start-up.
    ``choices``: allowed values of a string parameter.
    """

    name: str
    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    read_only: bool = False
    live: bool = False
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        """The ``rcl_interfaces/ParameterDescriptor`` rclpy enforces for this parameter."""
        desc = ParameterDescriptor()
        desc.description = self.description
        desc.read_only = bool(self.read_only)
        notes = []
        if self.choices:
            notes.append('one of: ' + ', '.join(self.choices))
        notes.append('changes apply live' if self.live else 'read at start-up / configure')
        desc.additional_constraints = '; '.join(notes)
        if self.lo is not None and self.hi is not None:
            if isinstance(self.default, bool):
                raise TypeError(f'{self.name}: a bool parameter has no range')
            if isinstance(self.default, int):
                rng = IntegerRange()
                rng.from_value, rng.to_value, rng.step = int(self.lo), int(self.hi), 0
                desc.integer_range = [rng]
            else:
                rng = FloatingPointRange()
                rng.from_value, rng.to_value, rng.step = float(self.lo), float(self.hi), 0.0
                desc.floating_point_range = [rng]
        return desc

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None (rclpy checks ranges too; this repeats it
        so that a refusal always names the parameter and the limits)."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}, got {value!r}'
        if isinstance(value, float) and not math.isfinite(value):
            return f'{self.name} must be finite, got {value!r}'
        if self.lo is not None and self.hi is not None and not self.lo <= value <= self.hi:
            return f'{self.name} must be within [{self.lo}, {self.hi}], got {value!r}'
        if self.lo is not None and self.hi is None and value < self.lo:
            return f'{self.name} must be >= {self.lo}, got {value!r}'
        if self.hi is not None and self.lo is None and value > self.hi:
            return f'{self.name} must be <= {self.hi}, got {value!r}'
        return None


def setting_param(name: str, key: str, description: str, *, live: bool = False,
                  default: Any = None, choices: tuple[str, ...] | None = None) -> Param:
    """A parameter that sets the pipeline setting ``key`` (facebot.config.pipeline): its
    default, range and choices come from the settings schema, declared there once.
    ``choices=()`` leaves the choice to the configure step (a lifecycle node then fails its
    transition with the reason instead of refusing to start)."""
    from facebot.config.pipeline import setting_field
    from facebot.config.schema import bounds
    from facebot.config.schema import choices as schema_choices
    from facebot.config.schema import default as default_of

    cls, field = setting_field(key)
    lo, hi = bounds(cls, field)
    value = default_of(cls, field) if default is None else default
    allowed = schema_choices(cls, field) if choices is None else choices
    return Param(name, value, description, lo, hi, live=live, choices=allowed)


def declare(node, specs: Iterable[Param]) -> dict[str, Any]:
    """Declares every spec on ``node``; returns ``{name: value}`` (overrides applied)."""
    values = {}
    for spec in specs:
        values[spec.name] = node.declare_parameter(spec.name, spec.default,
                                                   spec.descriptor()).value
        reason = spec.check(values[spec.name])
        if reason is not None:
            raise ValueError(reason)
    return values


class LiveParams:
    """The node's ``add_on_set_parameters_callback``: checks each change, then applies it.

    ``apply(changes)`` gets ``{name: value}`` of the accepted live changes and returns None
    or the reason for refusing them (e.g. the component's config dataclass raised).
    Changes to non-live parameters are accepted and logged as taking effect later.
    """

    def __init__(self, node, specs: Iterable[Param],
                 apply: Callable[[dict[str, Any]], str | None]) -> None:
        self.node = node
        self.specs = {s.name: s for s in specs}
        self.apply = apply
        self.refused = 0
        node.add_on_set_parameters_callback(self)

    def __call__(self, params) -> SetParametersResult:
        result = SetParametersResult()
        result.successful = True
        live: dict[str, Any] = {}
        for p in params:
            spec = self.specs.get(p.name)
            if spec is None:  # e.g. use_sim_time or qos overrides: not ours to judge
                continue
            reason = spec.check(p.value)
            if reason is not None:
                return self._refuse(result, reason)
            if spec.live:
                live[p.name] = p.value
            else:
                self.node.get_logger().info(
                    f'{p.name} = {p.value!r} takes effect at the next start-up / configure')
        if live:
            try:
                reason = self.apply(live)
            except (ValueError, TypeError) as err:
                reason = str(err)
            if reason:
                return self._refuse(result, reason)
            self.node.get_logger().info(
                'updated ' + ', '.join(f'{k}={v!r}' for k, v in live.items()))
        return result

    def _refuse(self, result, reason: str):
        self.refused += 1
        self.node.get_logger().warning(f'parameter change refused: {reason}')
        result.successful = False
        result.reason = reason
        return result


class RateLimitedLog:
    """At most one log line per key per ``period_s``; the rest are counted and summarised."""

    def __init__(self, logger, period_s: float = 2.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()

    def warning(self, key: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] += 1
            return
        more = self._suppressed.pop(key, 0)
        suffix = f' ({more} more since the last report)' if more else ''
        self._last[key] = now
        self.logger.warning(message + suffix)


class Latency:
    """Recent per-stage timings (ms) for diagnostics: p50, p99 and max of the last N."""

    def __init__(self, keep: int = 250) -> None:
        self.keep = keep
        self.values: dict[str, collections.deque] = {}

    def add(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.values.setdefault(stage, collections.deque(maxlen=self.keep)).append(float(ms))

    def summary(self) -> dict[str, str]:
        out = {}
        for stage, vals in self.values.items():
            if vals:
                arr = np.asarray(vals)
                out[f'{stage} ms p50/p99/max'] = (
                    f'{np.percentile(arr, 50):.2f}/{np.percentile(arr, 99):.2f}/{arr.max():.2f}')
        return out


def diagnostic_array(node, stamp_ns: int, name: str, level: str, message: str,
                     values: dict[str, Any]):
    """A ``DiagnosticArray`` with one status (``level``: ok, warn, error)."""
    status = DiagnosticStatus()
    status.level = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN,
                    'error': DiagnosticStatus.ERROR}[level]
    status.name = f'{node.get_name()}: {name}'
    status.message = message
    status.hardware_id = node.get_fully_qualified_name()
    kvs = []
    for key, value in values.items():
        kv = KeyValue()
        kv.key = str(key)
        kv.value = f'{value:.4g}' if isinstance(value, float) else str(value)
        kvs.append(kv)
    status.values = kvs
    arr = DiagnosticArray()
    interfaces.make_header(stamp_ns, '', arr.header)
    arr.status = [status]
    return arr


def until_shutdown(method):
    """Decorates a timer callback or thread body that publishes.

    A signal shuts the rclpy context down between any two lines of a running callback; the
    next ``publish`` then raises (``publisher's context is invalid``). That is the node
    stopping, not an error: the callback ends quietly. While the context is valid, errors
    propagate as before.
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:
            if self.context.ok():
                raise
            return None
    return wrapper


def now_ns(node) -> int:
    """The node's clock (ROS time: simulated time when ``use_sim_time`` is true)."""
    return int(node.get_clock().now().nanoseconds)


def run(node_factory: Callable[[], Any], args=None) -> int:
    """``rclpy.init``, build the node, spin it (multi-threaded where asked), shut down.

    Exit status: 0 after SIGINT or SIGTERM (what ``ros2 launch`` sends on shutdown: rclpy's
    signal handler shuts the context down and spin raises ``ExternalShutdownException``, or a
    callback caught mid-publish raises because its context is gone), 1 with one log line when
    the node cannot be built from its parameters (a missing config file, a bad value).
    """
    _stop_with_parent()
    rclpy.init(args=args)
    try:
        node = node_factory()
    except (ConfigError, ValueError, OSError) as err:
        rclpy.logging.get_logger('facebot').error(f'cannot start: {err}')
        _shutdown()
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        _shutdown()
        return 0
    try:
        executor = getattr(node, 'make_executor', None)
        if executor is not None:
            ex = executor()
            ex.add_node(node)
            try:
                ex.spin()
            finally:
                ex.shutdown(timeout_sec=1.0)
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # else the context was shut down under a running callback (e.g. a timer publishing
        # on a publisher the shutdown invalidated): the node is stopping anyway
    finally:
        # not the node's logger: its /rosout publisher died with the context
        logger = rclpy.logging.get_logger(f'facebot.{node.get_name()}')
        close = getattr(node, 'close', None)
        if close is not None:
            close()
        node.destroy_node()
        logger.info('stopped cleanly')
        _shutdown()
    return 0


def _stop_with_parent() -> None:
    """Asks Linux for a SIGTERM when the parent process ends.

    ``ros2 launch`` stopped by SIGTERM (a systemd stop, a container stop) dies at once without
    stopping its nodes (rclpy's signal handler replaces launch's own), and orphaned nodes
    would keep driving the motors. With this, they shut down like on SIGINT.
    """
    if not sys.platform.startswith('linux'):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return


def _shutdown() -> None:
    if rclpy.ok():
        rclpy.shutdown()
