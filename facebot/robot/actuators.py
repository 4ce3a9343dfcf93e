"""FLAME frames -> head actuator commands for ros2_control (ROS-free, numpy in and out).

Pipeline, run once per control tick (``control_rate_hz``, 100 Hz by default)::

    FLAME frames (25 fps, stamped with their show time, pushed as they arrive)
      -> frame buffer (refuses non-finite / out-of-range / absurdly stamped frames, counts them;
         keeps out-of-order frames in stamp order, a duplicate stamp replaces the older copy)
      -> sample at  now + lead   (cubic Hermite / Catmull-Rom through the frames; holds the
         first/last frame outside them, never extrapolates)
      -> linear map per joint:  offset + gain * sum(weight * field[index])
      -> one-euro filter (adaptive cutoff; see facebot.robot.filters for why)
      -> clamp to the position limits
      -> second-order limiter (velocity, acceleration and "can always stop" position limits)
      -> JointCommand (positions, velocities, accelerations in joint order, mode)

Lead: a command is sent ``lead_ms`` before the show time it aims at, covering the motor and
driver delay, so the jaw moves when the matching audio is heard. ``JointCommand.stamp_ns`` is
the send time (``now``), ``target_stamp_ns`` the show time it aims at (``now + lead``).

The limiter (``SecondOrderLimiter``) integrates ``v' = v + a dt``, ``p' = p + v' dt`` with
``|a| <= max_acceleration``, ``|v'| <= max_velocity`` and keeps the invariant that the joint
can always brake to rest inside ``[lower, upper]`` (``p + v|v| / (2 max_acceleration)`` stays
within the limits). Braking at full deceleration always satisfies every constraint and keeps
the invariant, so a feasible command exists at every tick, whatever the input or the tick
period. Within those bounds it tracks the target dead-beat (the commanded position equals the
target whenever the target is reachable at the limits), so it adds no lag to feasible motion;
far from the target it follows the time-optimal braking curve, so it never overshoots.
Live limit changes (``HeadController.reconfigure``, the node's parameters): a joint whose
state satisfies the new limits follows them at once; any other joint first brakes to rest at
the acceleration limit it was moving under, inside the range it was moving in (its invariant
guarantees that), its speed never growing; if it then rests outside the new range, it moves
straight into it at the smaller of the old and new velocity and acceleration limits, within
the hull of both ranges. From its first state that satisfies the new limits on, it follows
them. So no command steps beyond the old limits while braking, the stricter of the two while
moving into the new range, and the new ones after.
Acceleration is bang-bang when saturated (no jerk limit): "jerk-free-ish" only in that the
target path itself is C1 (Hermite interpolation, one-euro smoothing, min-jerk ease).
Measured on the reference head (test/test_actuators.py): syllable-like jaw motion at 3-6 Hz,
0..0.35 rad, commands lag the FLAME jaw at their aimed-at show time by about 2 ms (the one-euro
filter; the limiter adds none unless acceleration saturates: 4 ms on a full-range 6 Hz sine).

Modes: ``idle`` (no frame yet: hold neutral), ``tracking``, ``watchdog`` (no new frame for
``watchdog_timeout_s``, or the stream's newest frame is that far behind the target time: each
joint brakes to rest, then follows a min-jerk ease to neutral that ends within
``neutral_ease_s``), ``estop`` (``set_estop(True)``: ``hold`` brakes to rest at full
deceleration and stays; ``neutral`` eases to neutral like the watchdog). The configuration is
refused if some joint cannot make the ease in time within its limits.

Output forms for ros2_control (the node publishes whichever ``output.forms`` lists):

- ``forward_command``: ``std_msgs/Float64MultiArray.data`` for a
  ``forward_command_controller/ForwardCommandController`` (``interface_name: position``) on its
  ``~/commands`` topic; values in the controller's ``joints`` parameter order
  (``output.controller_joints``, or the configured joint order when empty). The controller
  writes them straight to the hardware's position command interfaces, so the limiting done
  here is the only limiting there is.
- ``trajectory``: ``trajectory_msgs/JointTrajectory`` for a
  ``joint_trajectory_controller`` on its ``~/joint_trajectory`` topic (header stamp 0 = start on
  receipt; ``time_from_start`` relative to that start; a new message replaces the trajectory
  being executed from its start time). Points carry positions, velocities and accelerations.
- ``joint_state``: ``sensor_msgs/JointState`` (name, position, velocity, empty effort), e.g.
  for a ``joint_state_topic_hardware_interface``-style mock or for plotting.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facebot.config import ConfigError, from_dict, load_yaml
from facebot.face.flame import FPS, MAX_EXPRESSION, FlameFrame
from facebot.robot.filters import OneEuroFilter, PassThrough

FIELDS: tuple[str, ...] = ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids")
FIELD_SIZES: dict[str, int] = {"expression": MAX_EXPRESSION, "jaw_pose": 3, "neck_pose": 3,
                               "eye_pose": 6, "eyelids": 2}
_FIELD_OFFSET: dict[str, int] = {}
_off = 0
for _name in FIELDS:
    _FIELD_OFFSET[_name] = _off
    _off += FIELD_SIZES[_name]
FEATURE_DIM = _off  # 114: every FLAME field concatenated, expression padded to MAX_EXPRESSION
MODES = ("tracking", "watchdog", "estop", "idle")
ESTOP_MODES = ("hold", "neutral")
OUTPUT_FORMS = ("forward_command", "trajectory", "joint_state")
FILTER_KINDS = ("one_euro", "none")
# Peaks of the min-jerk profile s(u) = 10u^3 - 15u^4 + 6u^5 over distance D and time T:
MINJERK_PEAK_VELOCITY = 15.0 / 8.0  # * D / T
MINJERK_PEAK_ACCELERATION = 10.0 / math.sqrt(3.0)  # * D / T^2


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


# ------------------------------------------------------------------------------------------
# configuration


@dataclass
class Term:
    """One term of a joint's expression: ``weight * <field>[index]``."""

    field: str
    index: int
    weight: float

    def __post_init__(self) -> None:
        if self.field not in FIELDS:
            raise ValueError(f"term field must be one of {', '.join(FIELDS)}, got {self.field!r}")
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ValueError(f"term index must be an integer, got {self.index!r}")
        if not 0 <= self.index < FIELD_SIZES[self.field]:
            raise ValueError(f"{self.field} index must be within [0, {FIELD_SIZES[self.field]}), got {self.index}")
        self.weight = _finite("term weight", self.weight)


@dataclass
class JointConfig:
    """One actuated joint: limits (radians, rad/s, rad/s^2), neutral pose and its FLAME map.

    Position target = ``offset + gain * sum(term.weight * frame.<term.field>[term.index])``.
    ``min_cutoff_hz`` / ``beta`` override the global one-euro settings for this joint.
    """

    name: str
    lower: float
    upper: float
    max_velocity: float
    max_acceleration: float
    neutral: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    expression: tuple = ()
    min_cutoff_hz: float | None = None
    beta: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"joint name must be a non-empty string, got {self.name!r}")
        n = self.name
        for key in ("lower", "upper", "max_velocity", "max_acceleration", "neutral", "gain", "offset"):
            setattr(self, key, _finite(f"joint {n}: {key}", getattr(self, key)))
        if not self.lower < self.upper:
            raise ValueError(f"joint {n}: lower ({self.lower}) must be below upper ({self.upper})")
        if not self.max_velocity > 0 or not self.max_acceleration > 0:
            raise ValueError(f"joint {n}: max_velocity and max_acceleration must be > 0")
        if not self.lower <= self.neutral <= self.upper:
            raise ValueError(f"joint {n}: neutral {self.neutral} is outside [{self.lower}, {self.upper}]")
        for key in ("min_cutoff_hz", "beta"):
            value = getattr(self, key)
            if value is not None:
                value = _finite(f"joint {n}: {key}", value)
                if value < 0 or (key == "min_cutoff_hz" and value == 0):
                    raise ValueError(f"joint {n}: {key} must be {'> 0' if key == 'min_cutoff_hz' else '>= 0'}")
                setattr(self, key, value)
        terms = []
        for i, term in enumerate(self.expression or ()):
            if isinstance(term, dict):
                term = from_dict(Term, term, f"joint {n}: expression[{i}]")
            if not isinstance(term, Term):
                raise ValueError(f"joint {n}: expression[{i}] must be a mapping with field, index, weight")
            terms.append(term)
        self.expression = tuple(terms)


@dataclass
class FilterConfig:
    """Smoothing of each joint's target. ``kind``: ``one_euro`` or ``none``."""

    kind: str = "one_euro"
    min_cutoff_hz: float = 1.5
    beta: float = 0.5
    d_cutoff_hz: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in FILTER_KINDS:
            raise ValueError(f"filter kind must be one of {', '.join(FILTER_KINDS)}, got {self.kind!r}")
        self.min_cutoff_hz = _finite("filter min_cutoff_hz", self.min_cutoff_hz)
        self.beta = _finite("filter beta", self.beta)
        self.d_cutoff_hz = _finite("filter d_cutoff_hz", self.d_cutoff_hz)
        if self.min_cutoff_hz <= 0 or self.beta < 0 or self.d_cutoff_hz <= 0:
            raise ValueError("filter needs min_cutoff_hz > 0, beta >= 0, d_cutoff_hz > 0")


@dataclass
class InputLimits:
    """Frames outside these are refused (and counted), not clipped: a value this far out is a
    broken producer, and following it would move the head for no reason."""

    max_abs_expression: float = 10.0
    max_abs_pose_rad: float = 3.2
    eyelid_min: float = -0.5
    eyelid_max: float = 1.5
    # stamps further than this past the current target time are refused
    max_ahead_s: float = 10.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _finite(f"input {f.name}", getattr(self, f.name)))
        if self.max_abs_expression <= 0 or self.max_abs_pose_rad <= 0 or self.max_ahead_s <= 0:
            raise ValueError("input limits must be > 0")
        if not self.eyelid_min < self.eyelid_max:
            raise ValueError("input eyelid_min must be below eyelid_max")


@dataclass
class OutputConfig:
    """What the ROS node publishes. ``forms``: any of forward_command, trajectory, joint_state.
    ``controller_joints``: the ros2_control controller's ``joints`` parameter (order of the
    forward_command array); empty = the configured joints in order."""

    forms: tuple = ("forward_command",)
    controller_joints: tuple = ()
    # time_from_start of the single point the node sends per tick to joint_trajectory_controller
    trajectory_time_from_start_s: float = 0.02

    def __post_init__(self) -> None:
        forms = tuple(self.forms)
        bad = [f for f in forms if f not in OUTPUT_FORMS]
        if bad or not forms:
            raise ValueError(f"output forms must be a non-empty list of {', '.join(OUTPUT_FORMS)}, got {list(forms)}")
        self.forms = forms
        self.controller_joints = tuple(str(j) for j in self.controller_joints)
        self.trajectory_time_from_start_s = _finite("output trajectory_time_from_start_s",
                                                    self.trajectory_time_from_start_s)
        if self.trajectory_time_from_start_s < 0:
            raise ValueError("output trajectory_time_from_start_s must be >= 0")


@dataclass
class HeadConfig:
    """The whole head: joints plus timing, filter, watchdog, e-stop and output settings."""

    joints: tuple = ()
    control_rate_hz: float = 100.0
    lead_ms: float = 60.0
    watchdog_timeout_s: float = 0.2
    neutral_ease_s: float = 0.8
    estop_mode: str = "hold"
    filter: FilterConfig = field(default_factory=FilterConfig)
    input: InputLimits = field(default_factory=InputLimits)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        joints = []
        for i, j in enumerate(self.joints or ()):
            if isinstance(j, dict):
                j = from_dict(JointConfig, j, f"joints[{i}]")
            if not isinstance(j, JointConfig):
                raise ValueError(f"joints[{i}] must be a mapping")
            joints.append(j)
        if not joints:
            raise ValueError("at least one joint is needed")
        names = [j.name for j in joints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate joint name(s): {', '.join(dup)}")
        self.joints = tuple(joints)
        for key in ("control_rate_hz", "lead_ms", "watchdog_timeout_s", "neutral_ease_s"):
            setattr(self, key, _finite(key, getattr(self, key)))
        if not 1.0 <= self.control_rate_hz <= 10000.0:
            raise ValueError(f"control_rate_hz must be within [1, 10000], got {self.control_rate_hz}")
        if not 0.0 <= self.lead_ms <= 1000.0:
            raise ValueError(f"lead_ms must be within [0, 1000], got {self.lead_ms}")
        if not self.watchdog_timeout_s > 0:
            raise ValueError("watchdog_timeout_s must be > 0")
        if self.estop_mode not in ESTOP_MODES:
            raise ValueError(f"estop_mode must be one of {', '.join(ESTOP_MODES)}, got {self.estop_mode!r}")
        if isinstance(self.filter, dict):
            self.filter = FilterConfig(**self.filter)
        if isinstance(self.input, dict):
            self.input = InputLimits(**self.input)
        if isinstance(self.output, dict):
            self.output = OutputConfig(**self.output)
        unknown = [j for j in self.output.controller_joints if j not in names]
        if unknown:
            raise ValueError(f"output controller_joints names unknown joint(s): {', '.join(unknown)}")
        self._check_ease()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def ease_duration_s(self) -> float:
        """Length of the min-jerk ease to neutral, after braking to rest: what is left of
        ``neutral_ease_s`` once the slowest joint has stopped from full speed, minus two ticks."""
        brake = max(j.max_velocity / j.max_acceleration for j in self.joints)
        return self.neutral_ease_s - brake - 2.0 / self.control_rate_hz

    def _check_ease(self) -> None:
        t = self.ease_duration_s
        if t <= 0:
            raise ValueError(f"neutral_ease_s {self.neutral_ease_s} is shorter than braking from full speed")
        for j in self.joints:
            d = max(j.upper - j.neutral, j.neutral - j.lower)
            v, a = MINJERK_PEAK_VELOCITY * d / t, MINJERK_PEAK_ACCELERATION * d / t ** 2
            if v > j.max_velocity or a > j.max_acceleration:
                raise ValueError(
                    f"neutral_ease_s {self.neutral_ease_s} is too short for joint {j.name}: easing "
                    f"{d:.3g} rad in {t:.3g} s needs {v:.3g} rad/s and {a:.3g} rad/s^2 "
                    f"(limits {j.max_velocity:g}, {j.max_acceleration:g})"
                )


def load_head_config(path: str | Path, section_name: str = "head") -> HeadConfig:
    """``HeadConfig`` from the ``head:`` section of a YAML file, strictly (facebot.config)."""
    path = Path(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - {section_name})
    if unknown:
        raise ConfigError(f"{path.name}: unknown section(s) {', '.join(unknown)} (known: {section_name})")
    raw = data.get(section_name)
    where = f"{path.name}:{section_name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with joints")
    raw = dict(raw)
    joints = raw.get("joints")
    if joints is not None:
        if not isinstance(joints, list):
            raise ConfigError(f"{where}.joints: expected a list of joints")
        raw["joints"] = [from_dict(JointConfig, j, f"{where}.joints[{i}]") for i, j in enumerate(joints)]
    return from_dict(HeadConfig, raw, where)


def config_to_dict(config: HeadConfig) -> dict:
    """The plain ``{"head": {...}}`` mapping that ``load_head_config`` reads back."""
    def joint(j: JointConfig) -> dict:
        d = {"name": j.name, "lower": j.lower, "upper": j.upper, "max_velocity": j.max_velocity,
             "max_acceleration": j.max_acceleration, "neutral": j.neutral, "gain": j.gain,
             "offset": j.offset,
             "expression": [{"field": t.field, "index": t.index, "weight": t.weight} for t in j.expression]}
        if j.min_cutoff_hz is not None:
            d["min_cutoff_hz"] = j.min_cutoff_hz
        if j.beta is not None:
            d["beta"] = j.beta
        return d

    return {"head": {
        "control_rate_hz": config.control_rate_hz,
        "lead_ms": config.lead_ms,
        "watchdog_timeout_s": config.watchdog_timeout_s,
        "neutral_ease_s": config.neutral_ease_s,
        "estop_mode": config.estop_mode,
        "filter": dataclasses.asdict(config.filter),
        "input": dataclasses.asdict(config.input),
        "output": {"forms": list(config.output.forms),
                   "controller_joints": list(config.output.controller_joints),
                   "trajectory_time_from_start_s": config.output.trajectory_time_from_start_s},
        "joints": [joint(j) for j in config.joints],
    }}


# ------------------------------------------------------------------------------------------
# mapping


def frame_features(frame: FlameFrame) -> np.ndarray:
    """All FLAME fields of a frame as one ``(FEATURE_DIM,)`` float64 vector (expression
    zero-padded to ``MAX_EXPRESSION``)."""
    out = np.zeros(FEATURE_DIM)
    for name in FIELDS:
        values = np.asarray(getattr(frame, name), np.float64).reshape(-1)[:FIELD_SIZES[name]]
        out[_FIELD_OFFSET[name]:_FIELD_OFFSET[name] + values.shape[0]] = values
    return out


def feature_index(field_name: str, index: int) -> int:
    return _FIELD_OFFSET[field_name] + index


def mapping_matrix(config: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(M [J, FEATURE_DIM], b [J])`` with ``targets = b + M @ frame_features(frame)``."""
    m = np.zeros((len(config.joints), FEATURE_DIM))
    b = np.zeros(len(config.joints))
    for i, j in enumerate(config.joints):
        b[i] = j.offset
        for t in j.expression:
            m[i, feature_index(t.field, t.index)] += j.gain * t.weight
    return m, b


def map_frame(config: HeadConfig, frame: FlameFrame) -> np.ndarray:
    """Unlimited joint position targets for one frame (no filter, no clamp)."""
    m, b = mapping_matrix(config)
    return b + m @ frame_features(frame)


# ------------------------------------------------------------------------------------------
# limiter


def _reach_velocity(e: np.ndarray, dt: float, amax: np.ndarray) -> np.ndarray:
    """Signed velocity ``w`` with ``w dt + w|w| / (2 amax) = e``: move this step, then brake at
    ``amax``, and cover exactly ``e``. Dead-beat (``e / dt``) for small ``e``, the braking curve
    ``sqrt(2 amax |e|)`` for large; written in the cancellation-free form."""
    return 2.0 * e / (dt + np.sqrt(dt * dt + 2.0 * np.abs(e) / amax))


SETTLED, BRAKING, ENTERING = 0, 1, 2  # per-joint phase of a live limit change


class SecondOrderLimiter:
    """Position/velocity/acceleration limiter with the "can always stop" invariant.

    State: position ``p`` and velocity ``v`` per joint. ``step(v_desired, dt)`` picks the
    velocity nearest ``v_desired`` in the set allowed by: ``|v' - v| <= amax dt``,
    ``|v'| <= vmax``, and the braking distance from ``p + v' dt`` staying inside
    ``[lower, upper]``; then integrates ``p' = p + v' dt``. ``track(x, xd, dt)`` is the
    desired velocity that reaches target ``x`` (moving at ``xd``) this step when it can, and
    otherwise approaches it on the braking curve without overshoot.

    ``retarget(...)`` changes the limits live without a step beyond them (see its docstring).
    """

    def __init__(self, lower, upper, vmax, amax) -> None:
        self._set_limits(lower, upper, vmax, amax)
        self.p = np.clip(np.zeros_like(self.lower), self.lower, self.upper)
        self.v = np.zeros_like(self.lower)
        self._settle()

    def _set_limits(self, lower, upper, vmax, amax) -> None:
        self.lower = np.asarray(lower, np.float64).copy()
        self.upper = np.asarray(upper, np.float64).copy()
        self.vmax = np.asarray(vmax, np.float64).copy()
        self.amax = np.asarray(amax, np.float64).copy()

    def _settle(self) -> None:
        """Every joint under the current limits: no live change in progress."""
        self.phase = np.full(self.lower.shape, SETTLED)
        self._base = self.limits

    @property
    def limits(self) -> tuple[np.ndarray, ...]:
        """The configured ``(lower, upper, vmax, amax)`` arrays."""
        return self.lower.copy(), self.upper.copy(), self.vmax.copy(), self.amax.copy()

    def reset(self, positions, velocities=None) -> None:
        p = np.asarray(positions, np.float64).copy()
        p[~np.isfinite(p)] = 0.0
        self.p = np.clip(p, self.lower, self.upper)
        v = np.zeros_like(self.p) if velocities is None else np.asarray(velocities, np.float64).copy()
        v[~np.isfinite(v)] = 0.0
        v = np.clip(v, -self.vmax, self.vmax)
        # keep the invariant: only velocities from which the joint can still stop inside
        v_hi = np.sqrt(2.0 * self.amax * (self.upper - self.p))
        v_lo = -np.sqrt(2.0 * self.amax * (self.p - self.lower))
        self.v = np.clip(v, v_lo, v_hi)
        self._settle()

    def feasible(self, limits=None) -> np.ndarray:
        """Per joint: whether the state satisfies ``limits`` (default: the configured ones),
        invariant included (within 1e-9 for rounding)."""
        lo, hi, vmax, amax = self.limits if limits is None else limits
        stop = self.p + self.v * np.abs(self.v) / (2.0 * amax)
        tol = 1e-9
        return ((self.p >= lo - tol) & (self.p <= hi + tol) & (np.abs(self.v) <= vmax + tol)
                & (stop >= lo - tol) & (stop <= hi + tol))

    def retarget(self, lower, upper, vmax, amax) -> None:
        """Live limit change. A joint whose state satisfies the new limits switches at once.
        Any other joint first brakes to rest within the limits it moved under (``BRAKING``:
        their invariant makes that stop inside their range), then, if it rests outside the
        new range, moves into it at the stricter of both velocity and acceleration limits
        (``ENTERING``); it switches to the new limits at the first state that satisfies
        them. A change during a change starts from the limits of the joint's last step."""
        used = self._step_limits()
        self._set_limits(lower, upper, vmax, amax)
        ok = self.feasible()
        self._base = tuple(np.where(ok, n, u) for n, u in zip(self.limits, used))
        self.phase = np.where(ok, SETTLED, np.where(self.v == 0.0, ENTERING, BRAKING))

    def _advance_phase(self) -> None:
        """Joints that now satisfy the new limits switch; braking joints at rest start entering."""
        ok = self.feasible()
        braked = (self.phase == BRAKING) & (self.v == 0.0)
        self.phase = np.where(ok, SETTLED, np.where(braked, ENTERING, self.phase))

    def _step_limits(self) -> tuple[np.ndarray, ...]:
        """Per joint, the limits of the next step: configured (settled), the base ones
        (braking), or entering: the hull of both ranges, the smaller vmax and amax."""
        new, base = self.limits, self._base
        entering = (np.minimum(base[0], new[0]), np.maximum(base[1], new[1]),
                    np.minimum(base[2], new[2]), np.minimum(base[3], new[3]))
        return tuple(np.where(self.phase == SETTLED, n, np.where(self.phase == BRAKING, b, e))
                     for n, b, e in zip(new, base, entering))

    def stopping_point(self) -> np.ndarray:
        return self.p + self.v * np.abs(self.v) / (2.0 * self.amax)

    def track(self, x: np.ndarray, xd: np.ndarray, dt: float, amax: np.ndarray | None = None) -> np.ndarray:
        e = (x - self.p) - xd * dt
        return xd + _reach_velocity(e, dt, self.amax if amax is None else amax)

    def step(self, v_desired: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if np.any(self.phase != SETTLED):
            self._advance_phase()
        lower, upper, vmax, amax = self._step_limits()
        p, v = self.p, self.v
        vd = np.where(np.isfinite(v_desired), v_desired, 0.0)
        if np.any(self.phase != SETTLED):  # braking joints stop; entering ones head for the new range
            inside = np.clip(p, self.lower, self.upper)
            vd = np.where(self.phase == BRAKING, 0.0, vd)
            vd = np.where(self.phase == ENTERING, self.track(inside, np.zeros_like(p), dt, amax), vd)
        dv = amax * dt
        lo = np.maximum(np.maximum(v - dv, -vmax), _reach_velocity(lower - p, dt, amax))
        hi = np.minimum(np.minimum(v + dv, vmax), _reach_velocity(upper - p, dt, amax))
        v_new = np.minimum(np.maximum(vd, lo), hi)
        # rounding can make the set look empty right at a bound: brake, which is always allowed
        brake = v - np.sign(v) * np.minimum(dv, np.abs(v))
        v_new = np.where(lo <= hi, v_new, brake)
        p_new = np.clip(p + v_new * dt, lower, upper)
        v_new = (p_new - p) / dt  # exactly what consecutive positions show
        a = np.clip((v_new - v) / dt, -amax, amax)
        if not (np.isfinite(p_new).all() and np.isfinite(v_new).all()):
            raise FloatingPointError("limiter produced a non-finite state")
        self.p, self.v = p_new, v_new
        return p_new.copy(), v_new.copy(), a


def min_jerk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-jerk profile ``s(u)`` and ``ds/du`` for ``u`` clipped to [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u ** 3 * (10.0 - 15.0 * u + 6.0 * u * u), 30.0 * u * u * (1.0 - u) ** 2


# ------------------------------------------------------------------------------------------
# runtime


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


COUNTER_NAMES = (
    "frames_accepted", "frames_refused", "refused_non_finite", "refused_out_of_range",
    "refused_bad_stamp", "refused_late", "frames_duplicate", "frames_out_of_order",
    "watchdog_trips", "estop_activations", "clock_stalls", "ticks", "limiter_faults",
    "live_changes",
)


class HeadController:
    """FLAME stream -> limited joint commands; see the module docstring.

    ``push(frame)`` whenever a frame arrives (any order, any rate); ``tick(now_ns)`` at
    ``control_rate_hz`` with a monotonic clock in the same time base as the frame stamps.
    Never raises on bad frames: they are refused and counted in ``counters``.
    """

    def __init__(self, config: HeadConfig) -> None:
        self._configure(config)
        self._filter = self._make_filter(config)
        self._limiter = SecondOrderLimiter(self.lower, self.upper, self.max_velocity, self.max_acceleration)
        self.counters: dict[str, int] = {name: 0 for name in COUNTER_NAMES}
        self.reset()

    def _configure(self, config: HeadConfig) -> None:
        """Everything derived from the configuration alone (no stream or motion state)."""
        self.config = config
        joints = config.joints
        self.joint_names: tuple[str, ...] = config.joint_names
        self.neutral = np.array([j.neutral for j in joints])
        self.lower = np.array([j.lower for j in joints])
        self.upper = np.array([j.upper for j in joints])
        self.max_velocity = np.array([j.max_velocity for j in joints])
        self.max_acceleration = np.array([j.max_acceleration for j in joints])
        self._m, self._b = mapping_matrix(config)
        self._period_s = 1.0 / config.control_rate_hz
        self._lead_ns = int(round(config.lead_ms * 1e6))
        self._timeout_ns = int(round(config.watchdog_timeout_s * 1e9))
        self._ease_s = config.ease_duration_s

    @staticmethod
    def _make_filter(config: HeadConfig):
        f, joints = config.filter, config.joints
        if f.kind == "one_euro":
            return OneEuroFilter(
                len(joints),
                [f.min_cutoff_hz if j.min_cutoff_hz is None else j.min_cutoff_hz for j in joints],
                [f.beta if j.beta is None else j.beta for j in joints],
                f.d_cutoff_hz,
            )
        return PassThrough(len(joints))

    def reconfigure(self, config: HeadConfig) -> None:
        """Live change of limits, mapping, filter, timing: keeps the motion, the stream, the
        e-stop and the counters. The limits change through ``SecondOrderLimiter.retarget``
        (joints brake within their old limits to a state the new ones allow, then follow the
        new ones), so no command steps beyond them. Frames already received are re-mapped; the
        filter restarts from its current output. The joints themselves cannot change."""
        if config.joint_names != self.joint_names:
            raise ValueError("a live change cannot add, remove or reorder joints "
                             f"(have {', '.join(self.joint_names)})")
        filtered = self._filter.value
        self.counters["live_changes"] += 1
        self._configure(config)
        self._filter = self._make_filter(config)
        self._filter.reset(filtered)
        self._limiter.retarget(self.lower, self.upper, self.max_velocity, self.max_acceleration)
        self._ease = None  # re-planned under the new limits at the next easing tick

    # -- state -------------------------------------------------------------------------------

    def reset(self, positions=None, velocities=None) -> None:
        """Forget the stream; start at ``positions`` (e.g. the measured joint states) or neutral."""
        self._limiter.reset(self.neutral if positions is None else positions, velocities)
        self._filter.reset()
        self._stamps: list[int] = []
        self._features: list[np.ndarray] = []  # frame_features of each kept frame
        self._last_tick_ns: int | None = None
        self._last_rx_ns: int | None = None
        self._rx_pending = False
        self._last_target_ns: int | None = None
        self._estop = False
        self._mode = "idle"
        self._ease: tuple | None = None
        p = self._limiter.p
        self._last_cmd = JointCommand(0, self._lead_ns, p.copy(), np.zeros_like(p), np.zeros_like(p),
                                      "idle", self.joint_names)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def joints_changing_limits(self) -> int:
        """How many joints are still braking or moving into the limits of a live change."""
        return int(np.count_nonzero(self._limiter.phase != SETTLED))

    @property
    def estop(self) -> bool:
        return self._estop

    def set_estop(self, active: bool) -> None:
        """Engage (``True``) or release the e-stop. Engaged: per ``estop_mode``, ``hold`` brakes
        each joint to rest at its acceleration limit and stays; ``neutral`` eases to neutral."""
        active = bool(active)
        if active and not self._estop:
            self.counters["estop_activations"] += 1
        self._estop = active

    # -- input -------------------------------------------------------------------------------

    def push(self, frame: FlameFrame, received_ns: int | None = None) -> bool:
        """Offers one frame; returns whether it was accepted. ``received_ns`` (same clock as
        ``tick``) is when it arrived; by default the next tick's time."""
        reason = self._check(frame)
        if reason is not None:
            self.counters["frames_refused"] += 1
            self.counters[reason] += 1
            return False
        stamp = int(frame.stamp_ns)
        features = frame_features(frame)
        if not np.isfinite(self._b + self._m @ features).all():  # cannot happen within the input limits; be sure
            self.counters["frames_refused"] += 1
            self.counters["refused_non_finite"] += 1
            return False
        i = bisect.bisect_left(self._stamps, stamp)
        if i < len(self._stamps) and self._stamps[i] == stamp:
            self._features[i] = features
            self.counters["frames_duplicate"] += 1
        else:
            if i < len(self._stamps):
                self.counters["frames_out_of_order"] += 1
            self._stamps.insert(i, stamp)
            self._features.insert(i, features)
            if len(self._stamps) > 4 * FPS * 10:  # 10 s at four times the frame rate
                del self._stamps[0], self._features[0]
        self.counters["frames_accepted"] += 1
        if received_ns is not None:
            self._last_rx_ns = int(received_ns) if self._last_rx_ns is None else max(self._last_rx_ns, int(received_ns))
        else:
            self._rx_pending = True
        return True

    def _check(self, frame) -> str | None:
        lim = self.config.input
        try:
            stamp = frame.stamp_ns
            stamp_ok = isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool) and 0 <= stamp < 2 ** 63
            arrays = {n: np.asarray(getattr(frame, n), np.float64).reshape(-1) for n in FIELDS}
        except (AttributeError, TypeError, ValueError):
            return "refused_non_finite"
        if any(a.shape[0] != FIELD_SIZES[n] for n, a in arrays.items() if n != "expression") or \
                not 1 <= arrays["expression"].shape[0] <= MAX_EXPRESSION:
            return "refused_out_of_range"
        if not all(np.isfinite(a).all() for a in arrays.values()):
            return "refused_non_finite"
        if np.abs(arrays["expression"]).max() > lim.max_abs_expression or \
                max(np.abs(arrays[n]).max() for n in ("jaw_pose", "neck_pose", "eye_pose")) > lim.max_abs_pose_rad or \
                arrays["eyelids"].min() < lim.eyelid_min or arrays["eyelids"].max() > lim.eyelid_max:
            return "refused_out_of_range"
        if not stamp_ok:
            return "refused_bad_stamp"
        if self._last_target_ns is not None:
            if stamp > self._last_target_ns + int(lim.max_ahead_s * 1e9):
                return "refused_bad_stamp"
            if self._stamps and stamp < self._stamps[0]:
                return "refused_late"
        return None

    # -- sampling ----------------------------------------------------------------------------

    def _sample(self, t_ns: int) -> np.ndarray:
        """Targets at ``t_ns``: cubic Hermite through the frames (Catmull-Rom tangents from the
        neighbours, one-sided at the ends), holding the end frames outside; drops frames no
        longer needed (keeps two before ``t_ns`` for the tangent)."""
        s, y = self._stamps, self._features
        i = bisect.bisect_right(s, t_ns)
        if i == 0:
            return self._b + self._m @ y[0]
        if i == len(s):
            out = y[-1].copy()
        else:
            t0, t1 = s[i - 1], s[i]
            y0, y1 = y[i - 1], y[i]
            h = (t1 - t0) * 1e-9
            chord = (y1 - y0) / h
            m0 = (y1 - y[i - 2]) / ((t1 - s[i - 2]) * 1e-9) if i >= 2 else chord
            m1 = (y[i + 1] - y0) / ((s[i + 1] - t0) * 1e-9) if i + 1 < len(s) else chord
            u = (t_ns - t0) / (t1 - t0)
            u2, u3 = u * u, u * u * u
            out = ((2 * u3 - 3 * u2 + 1) * y0 + (u3 - 2 * u2 + u) * h * m0
                   + (-2 * u3 + 3 * u2) * y1 + (u3 - u2) * h * m1)
        if i > 2:
            del s[:i - 2], y[:i - 2]
        return self._b + self._m @ out

    # -- control -----------------------------------------------------------------------------

    def _select_mode(self, now: int, target: int) -> str:
        if self._estop:
            return "estop"
        if self._last_rx_ns is None or not self._stamps:
            return "idle"
        if now - self._last_rx_ns > self._timeout_ns or target - self._stamps[-1] > self._timeout_ns:
            return "watchdog"
        return "tracking"

    def _start_ease(self, now: int) -> None:
        """Brake each joint to rest, then a min-jerk move from there to neutral."""
        lim = self._limiter
        start = np.clip(lim.stopping_point(), self.lower, self.upper)
        begin_ns = now + np.ceil(np.abs(lim.v) / self.max_acceleration * 1e9).astype(np.int64)
        self._ease = (start, begin_ns)

    def _ease_target(self, now: int) -> tuple[np.ndarray, np.ndarray]:
        start, begin_ns = self._ease
        u = (now - begin_ns) * 1e-9 / self._ease_s
        s, ds = min_jerk(u)
        span = self.neutral - start
        return start + span * s, span * ds / self._ease_s

    def tick(self, now_ns: int) -> JointCommand:
        """The command to send now. A tick at or before the previous one returns the previous
        command unchanged (counted in ``clock_stalls``)."""
        now = int(now_ns)
        if self._last_tick_ns is not None and now <= self._last_tick_ns:
            self.counters["clock_stalls"] += 1
            return dataclasses.replace(self._last_cmd)
        dt = self._period_s if self._last_tick_ns is None else (now - self._last_tick_ns) * 1e-9
        self._last_tick_ns = now
        self.counters["ticks"] += 1
        if self._rx_pending:
            self._last_rx_ns = now if self._last_rx_ns is None else max(self._last_rx_ns, now)
            self._rx_pending = False
        target_ns = now + self._lead_ns
        self._last_target_ns = target_ns
        mode = self._select_mode(now, target_ns)
        easing = mode == "watchdog" or (mode == "estop" and self.config.estop_mode == "neutral")
        if mode != self._mode:
            if mode == "watchdog":
                self.counters["watchdog_trips"] += 1
            if mode == "tracking":
                self._filter.reset()
            self._ease = None
        if easing and self._ease is None:
            self._start_ease(now)
        self._mode = mode

        lim = self._limiter
        if mode == "tracking":
            raw = self._sample(target_ns)
            x, xd = self._filter(raw, dt)
            x = np.clip(x, self.lower, self.upper)
            v_des = lim.track(x, xd, dt)
        elif easing:
            x, xd = self._ease_target(now)
            v_des = lim.track(x, xd, dt)
        elif mode == "estop":  # hold: brake to rest
            v_des = np.zeros_like(lim.v)
        else:  # idle
            v_des = lim.track(self.neutral, np.zeros_like(lim.v), dt)
        try:
            p, v, a = lim.step(v_des, dt)
        except FloatingPointError:
            self.counters["limiter_faults"] += 1
            p, v, a = lim.step(np.zeros_like(lim.v), dt)
        self._last_cmd = JointCommand(now, target_ns, p, v, a, mode, self.joint_names)
        return dataclasses.replace(self._last_cmd)

    # -- output forms (see the module docstring) ---------------------------------------------

    def forward_command(self, cmd: JointCommand) -> list[float]:
        return forward_command(cmd, self.config.output.controller_joints or None)

    def trajectory_point(self, cmd: JointCommand, time_from_start_s: float | None = None) -> dict:
        t = self.config.output.trajectory_time_from_start_s if time_from_start_s is None else time_from_start_s
        return trajectory_point(cmd, t, self.config.output.controller_joints or None)

    def trajectory(self, cmds: Sequence[JointCommand]) -> dict:
        return trajectory(cmds, self.config.output.controller_joints or None)

    def joint_state(self, cmd: JointCommand) -> dict:
        return joint_state(cmd)


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
