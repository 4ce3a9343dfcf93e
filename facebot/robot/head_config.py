"""The head's configuration: joints (limits, neutral pose, FLAME map), timing, filter,
watchdog, e-stop, input limits and output forms; loaded strictly from YAML.

A joint's position target is ``offset + gain * sum(weight * field[index])`` over the FLAME
fields in ``FIELDS`` (facebot.robot.joint_map computes it). The configuration is refused if
some joint cannot make the ease to neutral within ``neutral_ease_s`` at its limits.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from facebot.config import ConfigError, Settings, from_mapping, load_yaml, setting
from facebot.face.flame import MAX_EXPRESSION
from facebot.robot.min_jerk import MINJERK_PEAK_ACCELERATION, MINJERK_PEAK_VELOCITY

FIELDS: tuple[str, ...] = ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids")
FIELD_SIZES: dict[str, int] = {"expression": MAX_EXPRESSION, "jaw_pose": 3, "neck_pose": 3,
                               "eye_pose": 6, "eyelids": 2}
ESTOP_MODES = ("hold", "neutral")
OUTPUT_FORMS = ("forward_command", "trajectory", "joint_state")
FILTER_KINDS = ("one_euro", "none")


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


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
                term = from_mapping(Term, term, f"joint {n}: expression[{i}]")
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
class InputLimits(Settings):
    """Frames outside these are refused (and counted), not clipped: a value this far out is a
    broken producer, and following it would move the head for no reason."""

    max_abs_expression: float = setting(10.0, gt=0, le=1000)
    max_abs_pose_rad: float = setting(3.2, unit="rad", gt=0, le=100)
    eyelid_min: float = setting(-0.5, ge=-100, le=100)
    eyelid_max: float = setting(1.5, ge=-100, le=100)
    # stamps further than this past the current target time are refused
    max_ahead_s: float = setting(10.0, unit="s", gt=0, le=3600)

    def check(self) -> None:
        if not self.eyelid_min < self.eyelid_max:
            raise ConfigError("input eyelid_min must be below eyelid_max")


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
    lead_ms: float = 40.0  # the reference head (config/head_reference.yaml); the voice waits lead + 40 ms
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
                j = from_mapping(JointConfig, j, f"joints[{i}]")
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
        raw["joints"] = [from_mapping(JointConfig, j, f"{where}.joints[{i}]") for i, j in enumerate(joints)]
    return from_mapping(HeadConfig, raw, where)


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
