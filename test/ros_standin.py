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

"""A small in-process stand-in for the rclpy API that facebot's nodes use (tests only).

:func:`install` puts modules into ``sys.modules`` (rclpy and its submodules, the message
packages, ``std_srvs``); :func:`uninstall` takes them out again. Signatures follow rclpy
on Humble and Jazzy (checked against ros2/rclpy ``node.py``, ``lifecycle/node.py``,
``parameter.py``, ``qos.py``); behaviour that the nodes rely on is reproduced:

- parameters: declare with a default (whose type becomes the parameter's type) and a
  descriptor; an override of another type is refused; ranges and read-only are enforced;
  on-set callbacks run on declare and on set, and a refusal leaves the value unchanged;
  an empty list default is a BYTE_ARRAY, as in rclpy.
- messages: classes generated from the real definitions (rosbags type store: ROS 2
  Humble's standard messages plus facebot's msg/). Field assignment is checked the way
  rosidl_generator_py's setters check it: floats must be float, integers in range, numeric
  sequences are ``array.array`` (numpy arrays refused), fixed arrays are numpy arrays of the
  right length, nested messages of the right class. :func:`to_rosbags` converts a message
  for a CDR round trip through the real definition.
- lifecycle: the four primary states, transitions via ``trigger_*``; lifecycle publishers
  drop messages while inactive.
- time: :data:`CLOCK` is the ROS clock of every node; tests set it.
Timers and subscriptions are not run by an executor: tests call the callbacks.
"""
from __future__ import annotations

import array
import collections
import enum
import math
import re
import sys
import types
from typing import Any, NamedTuple

import numpy as np
import yaml

from facebot import interfaces

_MODULES: dict[str, types.ModuleType] = {}
_SAVED: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------
# messages

_INT_RANGES = {
    'int8': (-2**7, 2**7 - 1), 'uint8': (0, 2**8 - 1), 'int16': (-2**15, 2**15 - 1),
    'uint16': (0, 2**16 - 1), 'int32': (-2**31, 2**31 - 1), 'uint32': (0, 2**32 - 1),
    'int64': (-2**63, 2**63 - 1), 'uint64': (0, 2**64 - 1), 'char': (0, 255),
}
_TYPECODES = {'int8': 'b', 'uint8': 'B', 'int16': 'h', 'uint16': 'H', 'int32': 'i',
              'uint32': 'I', 'int64': 'q', 'uint64': 'Q', 'float32': 'f', 'float64': 'd'}
_FLOATS = ('float32', 'float64')
_NODETYPE_BASE, _NODETYPE_NAME, _NODETYPE_ARRAY, _NODETYPE_SEQUENCE = 1, 2, 3, 4


class Message:
    """Base of the generated message classes (``__slots__``: unknown fields are refused)."""

    __slots__ = ('_values',)
    _typename = ''
    _fields: dict = {}

    def __init__(self, **kwargs):
        object.__setattr__(self, '_values', {})
        for name, spec in self._fields.items():
            self._values[name] = _default(spec)
        for name, value in kwargs.items():
            if name not in self._fields:
                raise AssertionError(f'Invalid arguments passed to constructor: {name}')
            setattr(self, name, value)

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, '_values')[name]
        except KeyError:
            raise AttributeError(f'{self._typename} has no field {name!r}') from None

    def __setattr__(self, name, value):
        spec = self._fields.get(name)
        if spec is None:
            raise AttributeError(f'{self._typename} has no field {name!r}')
        self._values[name] = _check(spec, value, f'{self._typename}.{name}')

    def __eq__(self, other):
        if type(other) is not type(self):
            return False
        return all(_equal(self._values[k], other._values[k]) for k in self._fields)

    def __repr__(self):
        return f'{self._typename}({", ".join(f"{k}={v!r}" for k, v in self._values.items())})'


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return a == b


def _default(spec):
    kind, arg = spec
    if kind == _NODETYPE_BASE:
        base = arg[0]
        if base == 'bool':
            return False
        if base in _FLOATS:
            return 0.0
        if base == 'string':
            return ''
        if base == 'byte':
            return b'\x00'
        return 0
    if kind == _NODETYPE_NAME:
        return message_class(arg)()
    inner, size = arg
    ikind, iarg = inner
    if kind == _NODETYPE_ARRAY:
        if ikind == _NODETYPE_BASE and iarg[0] in _TYPECODES:
            return np.zeros(size, dtype=_np_dtype(iarg[0]))
        return [_default(inner) for _ in range(size)]
    if ikind == _NODETYPE_BASE and iarg[0] in _TYPECODES:
        return array.array(_TYPECODES[iarg[0]])
    return []


def _np_dtype(base: str):
    return np.dtype({'float32': np.float32, 'float64': np.float64}.get(base, base))


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple, set, collections.UserList)) and \
        not isinstance(value, str)


def _check_base(base: str, value, where: str):
    if base == 'bool':
        assert isinstance(value, bool), f"The '{where}' field must be of type 'bool'"
    elif base in _FLOATS:
        assert isinstance(value, float), f"The '{where}' field must be of type 'float'"
    elif base == 'string':
        assert isinstance(value, str), f"The '{where}' field must be of type 'str'"
    elif base == 'byte':
        assert isinstance(value, bytes) and len(value) == 1, \
            f"The '{where}' field must be of type 'bytes' of length 1"
    else:
        lo, hi = _INT_RANGES[base]
        assert isinstance(value, int) and not isinstance(value, bool), \
            f"The '{where}' field must be of type 'int'"
        assert lo <= value <= hi, f"The '{where}' field must be an integer in [{lo}, {hi}]"
    return value


def _check(spec, value, where: str):
    kind, arg = spec
    if kind == _NODETYPE_BASE:
        if arg[0] == 'string' and arg[1]:
            assert isinstance(value, str) and len(value) <= arg[1], \
                f"The '{where}' field must be a string of at most {arg[1]} characters"
        return _check_base(arg[0], value, where)
    if kind == _NODETYPE_NAME:
        assert isinstance(value, message_class(arg)), \
            f"The '{where}' field must be a sub message of type '{arg}'"
        return value
    inner, size = arg
    ikind, iarg = inner
    numeric = ikind == _NODETYPE_BASE and iarg[0] in _TYPECODES
    if kind == _NODETYPE_ARRAY and numeric:
        dtype = _np_dtype(iarg[0])
        if isinstance(value, np.ndarray):
            assert value.dtype == dtype, f"The '{where}' numpy array must have dtype {dtype}"
            assert value.size == size, f"The '{where}' numpy array must have size {size}"
            return value
        assert _is_sequence(value) and len(value) == size, \
            f"The '{where}' field must be a sequence with length {size}"
        for v in value:
            _check_base(iarg[0], v, where)
        return np.array(value, dtype=dtype)
    if numeric:  # unbounded or bounded sequence -> array.array
        code = _TYPECODES[iarg[0]]
        if isinstance(value, array.array):
            assert value.typecode == code, f"The '{where}' array.array must have typecode {code}"
            out = value
        else:
            assert _is_sequence(value) or isinstance(value, (bytes, bytearray)), \
                f"The '{where}' field must be a set or sequence (numpy arrays are not)"
            for v in value:
                _check_base(iarg[0], v, where)
            out = array.array(code, value)
        assert not size or len(out) <= size, f"The '{where}' field has more than {size} values"
        return out
    assert _is_sequence(value), f"The '{where}' field must be a set or sequence"
    assert kind != _NODETYPE_ARRAY or len(value) == size, \
        f"The '{where}' field must have length {size}"
    assert not size or kind == _NODETYPE_ARRAY or len(value) <= size, \
        f"The '{where}' field has more than {size} values"
    for v in value:
        _check(inner, v, where)
    return list(value)


_CLASSES: dict[str, type] = {}


def message_class(typename: str) -> type:
    """The stand-in class of a message type (built once from the real definition)."""
    cls = _CLASSES.get(typename)
    if cls is not None:
        return cls
    consts, fields = interfaces.typestore().fielddefs[typename]
    attrs = {'__slots__': (), '_typename': typename,
             '_fields': {name: (int(spec[0]), spec[1]) for name, spec in fields}}
    for name, ctype, value in consts:
        attrs[name] = bytes([value]) if ctype == 'byte' else value
    cls = type(typename.rsplit('/', 1)[-1], (Message,), attrs)
    cls.__module__ = typename.rsplit('/', 1)[0].replace('/', '.')
    _CLASSES[typename] = cls
    return cls


def to_rosbags(msg: Message):
    """The rosbags message equal to ``msg`` (for a CDR round trip with the real definition)."""
    store = interfaces.typestore()
    cls = store.types[msg._typename]
    kwargs = {}
    for name, (kind, arg) in msg._fields.items():
        value = msg._values[name]
        if kind == _NODETYPE_BASE:
            value = value[0] if arg[0] == 'byte' else value
        elif kind == _NODETYPE_NAME:
            value = to_rosbags(value)
        else:
            ikind, iarg = arg[0]
            if ikind == _NODETYPE_BASE and iarg[0] in _TYPECODES:
                value = np.asarray(value, dtype=_np_dtype(iarg[0]))
            elif ikind == _NODETYPE_NAME:
                value = [to_rosbags(v) for v in value]
            else:
                value = list(value)
        kwargs[name] = value
    return cls(**kwargs)


def cdr_round_trip(msg: Message):
    """Serialises ``msg`` with the real definition and reads it back (rosbags message)."""
    ros = to_rosbags(msg)
    return interfaces.deserialize(interfaces.serialize(ros, msg._typename), msg._typename)


class _SetBoolRequest:
    __slots__ = ('data',)

    def __init__(self, data: bool = False):
        self.data = data


class _SetBoolResponse:
    __slots__ = ('success', 'message')

    def __init__(self, success: bool = False, message: str = ''):
        self.success, self.message = success, message


class SetBool:
    """std_srvs/srv/SetBool: ``bool data`` -> ``bool success, string message``."""

    Request = _SetBoolRequest
    Response = _SetBoolResponse


# ------------------------------------------------------------------------------------------
# rclpy: qos, parameters, time, logging


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class DurabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


class QoSProfile:
    """rclpy.qos.QoSProfile: keyword-only; ``depth`` (or ``history``) is required."""

    def __init__(self, *, depth=None, history=None, reliability=ReliabilityPolicy.RELIABLE,
                 durability=DurabilityPolicy.VOLATILE, **_others):
        if depth is None and history is None:
            raise TypeError('QoSProfile needs depth or history')
        self.depth = 0 if depth is None else int(depth)
        self.history = HistoryPolicy.KEEP_LAST if history is None else history
        self.reliability = reliability
        self.durability = durability

    def __repr__(self):
        return f'QoSProfile(depth={self.depth}, reliability={self.reliability.name})'


qos_profile_sensor_data = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
qos_profile_system_default = QoSProfile(depth=10)
qos_profile_services_default = QoSProfile(depth=10)


class ParameterNotDeclaredException(Exception):
    pass


class ParameterAlreadyDeclaredException(Exception):
    pass


class InvalidParameterTypeException(Exception):
    pass


class InvalidParameterValueException(Exception):
    pass


class ParameterImmutableException(Exception):
    pass


class Parameter:
    """rclpy.parameter.Parameter(name, type_=None, value=None)."""

    class Type(enum.Enum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, value):
            """The type rclpy infers from a Python value ([] is a BYTE_ARRAY there too)."""
            if value is None:
                return cls.NOT_SET
            for t, kind in ((cls.BOOL, bool), (cls.INTEGER, int), (cls.DOUBLE, float),
                            (cls.STRING, str)):
                if isinstance(value, kind):
                    return t
            if isinstance(value, (list, tuple, array.array)):
                for t, kind in ((cls.BYTE_ARRAY, bytes), (cls.BOOL_ARRAY, bool),
                                (cls.INTEGER_ARRAY, int), (cls.DOUBLE_ARRAY, float),
                                (cls.STRING_ARRAY, str)):
                    if all(isinstance(v, kind) for v in value):
                        return t
            raise TypeError(f'The given value is not one of the allowed types {value!r}')

    def __init__(self, name, type_=None, value=None):
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError("type must be an instance of 'Parameter.Type'")
        self._name, self._type, self._value = name, type_, value

    name = property(lambda self: self._name)
    type_ = property(lambda self: self._type)
    value = property(lambda self: self._value)


class Time:
    """rclpy.time.Time (nanoseconds only)."""

    def __init__(self, *, seconds=0, nanoseconds=0):
        self.nanoseconds = int(seconds * 1e9) + int(nanoseconds)

    def to_msg(self):
        return interfaces.ns_to_stamp(self.nanoseconds, message_class(
            'builtin_interfaces/msg/Time')())


class _Clock:
    """The ROS clock of all stand-in nodes: :attr:`ns` is what ``now()`` returns."""

    def __init__(self):
        self.ns = 1_700_000_000_000_000_000

    def now(self) -> Time:
        return Time(nanoseconds=self.ns)

    def advance(self, ns: int) -> None:
        self.ns += int(ns)


CLOCK = _Clock()


class Logger:
    """Records every line as ``(level, message)``."""

    def __init__(self, name: str):
        self.name = name
        self.lines: list[tuple[str, str]] = []

    def _log(self, level, message, **_kwargs):  # throttle_duration_sec, once, skip_first
        self.lines.append((level, str(message)))
        return True

    def debug(self, message, **kw):
        return self._log('debug', message, **kw)

    def info(self, message, **kw):
        return self._log('info', message, **kw)

    def warning(self, message, **kw):
        return self._log('warn', message, **kw)

    warn = warning

    def error(self, message, **kw):
        return self._log('error', message, **kw)

    def fatal(self, message, **kw):
        return self._log('fatal', message, **kw)


# ------------------------------------------------------------------------------------------
# rclpy: entities and the node

_NAME_RE = re.compile(r'^(~/)?[A-Za-z_][A-Za-z0-9_/]*$|^/[A-Za-z_][A-Za-z0-9_/]*$')


class Publisher:
    """Keeps what was published (``messages``)."""

    def __init__(self, node, msg_type, topic, qos):
        self.node, self.msg_type, self.topic, self.qos = node, msg_type, topic, qos
        self.messages: list = []
        self.enabled = True

    def publish(self, msg):
        if not isinstance(msg, self.msg_type):
            raise TypeError(f'publish on {self.topic}: expected {self.msg_type.__name__}, '
                            f'got {type(msg).__name__}')
        self.messages.append(msg)

    @property
    def topic_name(self):
        return self.topic


class LifecyclePublisher(Publisher):
    """Publishes only while activated (otherwise logs and drops, as rclpy does)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.enabled = False
        self.dropped = 0

    def on_activate(self, state):
        self.enabled = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state):
        self.enabled = False
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        return TransitionCallbackReturn.SUCCESS

    on_cleanup = on_shutdown = on_error = on_configure

    def publish(self, msg):
        if not self.enabled:
            self.dropped += 1
            self.node.get_logger().warning(
                f"Trying to publish on the topic '{self.topic}', but the publisher is not "
                'activated')
            return
        super().publish(msg)


class Subscription:
    def __init__(self, msg_type, topic, callback, qos, callback_group):
        self.msg_type, self.topic, self.callback, self.qos = msg_type, topic, callback, qos
        self.callback_group = callback_group


class Service:
    def __init__(self, srv_type, name, callback):
        self.srv_type, self.srv_name, self.callback = srv_type, name, callback

    def call(self, request):
        """What a client call does: the callback fills a fresh response."""
        return self.callback(request, self.srv_type.Response())


class Timer:
    def __init__(self, period_s, callback, callback_group):
        self.timer_period_ns = int(round(period_s * 1e9))
        self.callback, self.callback_group = callback, callback_group
        self.canceled = False
        self.destroyed = False

    def cancel(self):
        self.canceled = True

    def reset(self):
        self.canceled = False

    def is_canceled(self):
        return self.canceled


class CallbackGroup:
    pass


class MutuallyExclusiveCallbackGroup(CallbackGroup):
    pass


class ReentrantCallbackGroup(CallbackGroup):
    pass


class Node:
    """rclpy.node.Node: the parts facebot uses, with rclpy's signatures."""

    def __init__(self, node_name, *, context=None, cli_args=None, namespace=None,
                 use_global_arguments=True, enable_rosout=True, start_parameter_services=True,
                 parameter_overrides=None, allow_undeclared_parameters=False,
                 automatically_declare_parameters_from_overrides=False):
        if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', node_name):
            raise ValueError(f'invalid node name {node_name!r}')
        self._name = node_name
        ns = namespace or ''
        self._namespace = '/' + ns.strip('/') if ns.strip('/') else '/'
        self._overrides = {p.name: p for p in (parameter_overrides or [])}
        self._params: dict[str, Parameter] = {}
        self._descriptors: dict[str, Any] = {}
        self._on_set: list = []
        self._logger = Logger(node_name)
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self.services: list[Service] = []
        self.timers: list[Timer] = []
        self.default_callback_group = MutuallyExclusiveCallbackGroup()
        self.declare_parameter('use_sim_time', False)

    # names, logging, time
    def get_name(self):
        return self._name

    def get_namespace(self):
        return self._namespace

    def get_fully_qualified_name(self):
        return (self._namespace.rstrip('/') + '/' + self._name)

    def get_logger(self):
        return self._logger

    def get_clock(self):
        return CLOCK

    def resolve_topic_name(self, topic, *, only_expand=False):
        if not _NAME_RE.match(topic) or '//' in topic or topic.endswith('/'):
            raise ValueError(f'invalid topic name {topic!r}')
        if topic.startswith('/'):
            return topic
        if topic.startswith('~/'):
            return self.get_fully_qualified_name() + topic[1:]
        return self._namespace.rstrip('/') + '/' + topic

    # parameters
    def declare_parameter(self, name, value=None, descriptor=None, ignore_override=False):
        if name in self._params:
            raise ParameterAlreadyDeclaredException(name)
        descriptor = descriptor or message_class('rcl_interfaces/msg/ParameterDescriptor')()
        declared_type = Parameter.Type.from_parameter_value(value)
        param = Parameter(name, value=value)
        override = None if ignore_override else self._overrides.get(name)
        if override is not None:
            if override.type_ != declared_type and not descriptor.dynamic_typing \
                    and declared_type != Parameter.Type.NOT_SET:
                raise InvalidParameterTypeException(
                    f'{name}: expected {declared_type.name}, got {override.type_.name}')
            param = Parameter(name, value=override.value)
        reason = self._check_descriptor(param, descriptor)
        if reason:
            raise InvalidParameterValueException(f'{name}: {reason}')
        self._descriptors[name] = descriptor
        result = self._call_on_set([param])
        if not result.successful:
            del self._descriptors[name]
            raise InvalidParameterValueException(f'{name}: {result.reason}')
        self._params[name] = param
        return param

    def declare_parameters(self, namespace, parameters, ignore_override=False):
        out = []
        for item in parameters:
            name = f'{namespace}.{item[0]}' if namespace else item[0]
            value = item[1] if len(item) > 1 else None
            desc = item[2] if len(item) > 2 else None
            out.append(self.declare_parameter(name, value, desc, ignore_override))
        return out

    def has_parameter(self, name):
        return name in self._params

    def get_parameter(self, name):
        if name not in self._params:
            raise ParameterNotDeclaredException(name)
        return self._params[name]

    def get_parameters(self, names):
        return [self.get_parameter(n) for n in names]

    def describe_parameter(self, name):
        if name not in self._descriptors:
            raise ParameterNotDeclaredException(name)
        return self._descriptors[name]

    def add_on_set_parameters_callback(self, callback):
        self._on_set.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback):
        self._on_set.remove(callback)

    def set_parameters(self, parameter_list):
        return [self._set_one(p) for p in parameter_list]

    def _result(self, ok, reason=''):
        r = message_class('rcl_interfaces/msg/SetParametersResult')()
        r.successful, r.reason = ok, reason
        return r

    def _set_one(self, param):
        if param.name not in self._params:
            raise ParameterNotDeclaredException(param.name)
        desc = self._descriptors[param.name]
        if desc.read_only:
            return self._result(False, f'Trying to set a read-only parameter: {param.name}.')
        current = self._params[param.name].type_
        if param.type_ != current and not desc.dynamic_typing:
            return self._result(False, f'Wrong parameter type, expected {current.name}')
        reason = self._check_descriptor(param, desc)
        if reason:
            return self._result(False, reason)
        result = self._call_on_set([param])
        if result.successful:
            self._params[param.name] = param
        return result

    def _call_on_set(self, params):
        for cb in self._on_set:
            result = cb(params)
            if not result.successful:
                return result
        return self._result(True)

    @staticmethod
    def _check_descriptor(param, desc):
        v = param.value
        for rng in desc.floating_point_range:
            if isinstance(v, float) and not (
                    rng.from_value <= v <= rng.to_value
                    or math.isclose(v, rng.from_value) or math.isclose(v, rng.to_value)):
                return f'Parameter {param.name} out of range [{rng.from_value}, {rng.to_value}]'
        for rng in desc.integer_range:
            if isinstance(v, int) and not rng.from_value <= v <= rng.to_value:
                return f'Parameter {param.name} out of range [{rng.from_value}, {rng.to_value}]'
        return None

    # entities
    @staticmethod
    def _qos(qos_profile):
        if isinstance(qos_profile, QoSProfile):
            return qos_profile
        if isinstance(qos_profile, int) and not isinstance(qos_profile, bool):
            if qos_profile < 0:
                raise ValueError('history depth must be greater than or equal to zero')
            return QoSProfile(depth=qos_profile)
        raise TypeError(f'Expected QoSProfile or int, but received {type(qos_profile)!r}')

    @staticmethod
    def _msg_type(msg_type):
        if not (isinstance(msg_type, type) and issubclass(msg_type, Message)):
            raise TypeError(f'{msg_type!r} is not a ROS message type')

    def create_publisher(self, msg_type, topic, qos_profile, *, callback_group=None,
                         event_callbacks=None, qos_overriding_options=None,
                         publisher_class=Publisher):
        self._msg_type(msg_type)
        pub = publisher_class(self, msg_type, self.resolve_topic_name(topic),
                              self._qos(qos_profile))
        self.publishers.append(pub)
        return pub

    def create_subscription(self, msg_type, topic, callback, qos_profile, *,
                            callback_group=None, event_callbacks=None,
                            qos_overriding_options=None, raw=False):
        self._msg_type(msg_type)
        sub = Subscription(msg_type, self.resolve_topic_name(topic), callback,
                           self._qos(qos_profile), callback_group)
        self.subscriptions.append(sub)
        return sub

    def create_service(self, srv_type, srv_name, callback, *,
                       qos_profile=qos_profile_services_default, callback_group=None):
        if not hasattr(srv_type, 'Request') or not hasattr(srv_type, 'Response'):
            raise TypeError(f'{srv_type!r} is not a ROS service type')
        srv = Service(srv_type, self.resolve_topic_name(srv_name), callback)
        self.services.append(srv)
        return srv

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None):
        timer = Timer(timer_period_sec, callback, callback_group)
        self.timers.append(timer)
        return timer

    def destroy_publisher(self, publisher):
        if publisher in self.publishers:
            self.publishers.remove(publisher)
            return True
        return False

    def destroy_subscription(self, subscription):
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)
            return True
        return False

    def destroy_timer(self, timer):
        if timer in self.timers:
            timer.destroyed = True
            self.timers.remove(timer)
            return True
        return False

    def destroy_node(self):
        self.publishers, self.subscriptions, self.timers, self.services = [], [], [], []

    # test helpers (not rclpy API)
    def publisher(self, topic):
        """The publisher on a resolved topic name."""
        return next(p for p in self.publishers if p.topic == topic)

    def subscription(self, topic):
        return next(s for s in self.subscriptions if s.topic == topic)


# ------------------------------------------------------------------------------------------
# rclpy.lifecycle


class TransitionCallbackReturn(enum.Enum):
    SUCCESS = 'success'
    FAILURE = 'failure'
    ERROR = 'error'


class LifecycleState(NamedTuple):
    label: str
    state_id: int


_STATE_IDS = {'unconfigured': 1, 'inactive': 2, 'active': 3, 'finalized': 4}
# transition -> (allowed from, intermediate callback, goal on success)
_TRANSITIONS = {
    'configure': (('unconfigured',), 'on_configure', 'inactive'),
    'cleanup': (('inactive',), 'on_cleanup', 'unconfigured'),
    'activate': (('inactive',), 'on_activate', 'active'),
    'deactivate': (('active',), 'on_deactivate', 'inactive'),
    'shutdown': (('unconfigured', 'inactive', 'active'), 'on_shutdown', 'finalized'),
}


class LifecycleNode(Node):
    """rclpy.lifecycle.Node (alias LifecycleNode): primary states and transitions."""

    def __init__(self, node_name, *, enable_communication_interface=True, **kwargs):
        super().__init__(node_name, **kwargs)
        self._state = 'unconfigured'
        self._managed: set = set()

    @property
    def lifecycle_state(self):
        """The current primary state's label (test helper)."""
        return self._state

    def _change(self, transition):
        allowed, callback, goal = _TRANSITIONS[transition]
        if self._state not in allowed:
            raise RuntimeError(f'transition {transition} is not available from {self._state}')
        previous = LifecycleState(self._state, _STATE_IDS[self._state])
        try:
            ret = getattr(self, callback)(previous)
        except Exception:  # rclpy turns an exception into ERROR
            ret = TransitionCallbackReturn.ERROR
        if ret == TransitionCallbackReturn.SUCCESS:
            self._state = goal
        elif ret == TransitionCallbackReturn.ERROR:
            err = self.on_error(previous)
            self._state = 'unconfigured' if err == TransitionCallbackReturn.SUCCESS \
                else 'finalized'
        return ret

    def trigger_configure(self):
        return self._change('configure')

    def trigger_cleanup(self):
        return self._change('cleanup')

    def trigger_activate(self):
        return self._change('activate')

    def trigger_deactivate(self):
        return self._change('deactivate')

    def trigger_shutdown(self):
        return self._change('shutdown')

    def _each_managed(self, name, state):
        for entity in list(self._managed):
            ret = getattr(entity, name)(state)
            if ret != TransitionCallbackReturn.SUCCESS:
                return ret
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        return self._each_managed('on_configure', state)

    def on_cleanup(self, state):
        return self._each_managed('on_cleanup', state)

    def on_shutdown(self, state):
        return self._each_managed('on_shutdown', state)

    def on_activate(self, state):
        return self._each_managed('on_activate', state)

    def on_deactivate(self, state):
        return self._each_managed('on_deactivate', state)

    def on_error(self, state):
        return self._each_managed('on_error', state)

    def add_managed_entity(self, entity):
        self._managed.add(entity)

    def create_lifecycle_publisher(self, *args, **kwargs):
        if 'publisher_class' in kwargs:
            raise TypeError("create_publisher() got an unexpected keyword argument "
                            "'publisher_class'")
        pub = Node.create_publisher(self, *args, **kwargs, publisher_class=LifecyclePublisher)
        self._managed.add(pub)
        return pub

    def destroy_lifecycle_publisher(self, publisher):
        self._managed.discard(publisher)
        return Node.destroy_publisher(self, publisher)


# ------------------------------------------------------------------------------------------
# executors and the rclpy module


class Executor:
    def __init__(self, *, context=None):
        self.nodes = []

    def add_node(self, node):
        self.nodes.append(node)
        return True

    def spin(self):
        raise KeyboardInterrupt  # nothing to run in-process: behave like Ctrl-C

    def shutdown(self, timeout_sec=None):
        return True


class SingleThreadedExecutor(Executor):
    pass


class MultiThreadedExecutor(Executor):
    def __init__(self, num_threads=None, *, context=None):
        super().__init__(context=context)
        self.num_threads = num_threads


_STATE = {'initialized': False}


def _init(*, args=None, context=None, domain_id=None, signal_handler_options=None):
    _STATE['initialized'] = True


def _shutdown(*, context=None, uninstall_handlers=None):
    if not _STATE['initialized']:
        raise RuntimeError('rclpy.shutdown() called before init')
    _STATE['initialized'] = False


def _ok(*, context=None):
    return _STATE['initialized']


def _spin(node, executor=None):
    raise KeyboardInterrupt


def params_from_yaml(path, node_name: str, namespace: str = '/') -> list[Parameter]:
    """Parameter overrides for one node from a ROS 2 parameter file, as rcl reads it:
    keys ``/**``, the node name, or its fully qualified name (``/**/name`` included);
    nested mappings become dotted names."""
    data = yaml.safe_load(open(path).read()) or {}
    fqn = namespace.rstrip('/') + '/' + node_name
    values: dict = {}
    for key in ('/**', '/**/' + node_name, node_name, fqn.lstrip('/'), fqn):
        section = data.get(key)
        if isinstance(section, dict):
            values.update(_flatten(section.get('ros__parameters') or {}))
    return [Parameter(k, value=v) for k, v in values.items()]


def _flatten(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    _MODULES[name] = mod
    return mod


def _message_module(pkg: str, names: list[str]) -> None:
    classes = {n.rsplit('/', 1)[-1]: message_class(n) for n in names}
    _module(pkg)
    _module(f'{pkg}.msg', **classes)


def install() -> None:
    """Registers the stand-in modules in ``sys.modules`` (saving what was there)."""
    store = interfaces.typestore()
    by_pkg: dict[str, list[str]] = collections.defaultdict(list)
    for typename in store.fielddefs:
        pkg, kind, _ = typename.split('/')
        if kind == 'msg':
            by_pkg[pkg].append(typename)
    for pkg in ('std_msgs', 'sensor_msgs', 'trajectory_msgs', 'diagnostic_msgs',
                'builtin_interfaces', 'rcl_interfaces', 'lifecycle_msgs', 'rosgraph_msgs'):
        _message_module(pkg, by_pkg[pkg])
    _module('facebot.msg', **{n.rsplit('/', 1)[-1]: message_class(n)
                              for n in by_pkg['facebot']})
    _module('std_srvs')
    _module('std_srvs.srv', SetBool=SetBool)
    rclpy = _module('rclpy', init=_init, shutdown=_shutdown, ok=_ok, spin=_spin,
                    try_shutdown=lambda **kw: _STATE.update(initialized=False))
    rclpy.node = _module('rclpy.node', Node=Node)
    rclpy.qos = _module('rclpy.qos', QoSProfile=QoSProfile,
                        ReliabilityPolicy=ReliabilityPolicy, HistoryPolicy=HistoryPolicy,
                        DurabilityPolicy=DurabilityPolicy,
                        qos_profile_sensor_data=qos_profile_sensor_data,
                        qos_profile_system_default=qos_profile_system_default,
                        qos_profile_services_default=qos_profile_services_default)
    rclpy.parameter = _module('rclpy.parameter', Parameter=Parameter)
    rclpy.time = _module('rclpy.time', Time=Time)
    rclpy.exceptions = _module(
        'rclpy.exceptions', ParameterNotDeclaredException=ParameterNotDeclaredException,
        ParameterAlreadyDeclaredException=ParameterAlreadyDeclaredException,
        InvalidParameterTypeException=InvalidParameterTypeException,
        InvalidParameterValueException=InvalidParameterValueException,
        ParameterImmutableException=ParameterImmutableException)
    rclpy.callback_groups = _module(
        'rclpy.callback_groups', CallbackGroup=CallbackGroup,
        MutuallyExclusiveCallbackGroup=MutuallyExclusiveCallbackGroup,
        ReentrantCallbackGroup=ReentrantCallbackGroup)
    rclpy.executors = _module('rclpy.executors', Executor=Executor,
                              SingleThreadedExecutor=SingleThreadedExecutor,
                              MultiThreadedExecutor=MultiThreadedExecutor)
    rclpy.lifecycle = _module('rclpy.lifecycle', Node=LifecycleNode,
                              LifecycleNode=LifecycleNode, State=LifecycleState,
                              LifecycleState=LifecycleState, Publisher=LifecyclePublisher,
                              LifecyclePublisher=LifecyclePublisher,
                              TransitionCallbackReturn=TransitionCallbackReturn)
    for name, mod in _MODULES.items():
        _SAVED[name] = sys.modules.get(name)
        sys.modules[name] = mod


def uninstall() -> None:
    """Restores ``sys.modules`` and forgets node modules imported against the stand-in."""
    for name, old in _SAVED.items():
        if old is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = old
    for name in [n for n in sys.modules if n.startswith('facebot.nodes.')]:
        del sys.modules[name]
    _SAVED.clear()
    _MODULES.clear()
