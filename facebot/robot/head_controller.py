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

The limits are enforced by facebot.robot.limiter.SecondOrderLimiter (its docstring: why a
feasible command always exists, and how live limit changes from ``reconfigure`` go); the
configuration is facebot.robot.head_config, the FLAME-to-joint map facebot.robot.joint_map.
Measured on the reference head (test/test_actuators.py): syllable-like jaw motion at 3-6 Hz,
0..0.35 rad, commands lag the FLAME jaw at their aimed-at show time by about 2 ms (the one-euro
filter; the limiter adds none unless acceleration saturates: 4 ms on a full-range 6 Hz sine).

Modes: ``idle`` (no frame yet: hold neutral), ``tracking``, ``watchdog`` (no new frame for
``watchdog_timeout_s``, or the stream's newest frame is that far behind the target time: each
joint brakes to rest, then follows a min-jerk ease to neutral that ends within
``neutral_ease_s``), ``estop`` (``set_estop(True)``: ``hold`` brakes to rest at full
deceleration and stays; ``neutral`` eases to neutral like the watchdog). The configuration is
refused if some joint cannot make the ease in time within its limits.

Output forms for ros2_control: facebot.robot.joint_command.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

import numpy as np

from facebot.face.flame import FPS, MAX_EXPRESSION, FlameFrame
from facebot.robot.filters import OneEuroFilter, PassThrough
from facebot.robot.head_config import FIELD_SIZES, FIELDS, HeadConfig
from facebot.robot.joint_command import JointCommand, forward_command, joint_state, trajectory, trajectory_point
from facebot.robot.joint_map import frame_features, mapping_matrix
from facebot.robot.limiter import SETTLED, SecondOrderLimiter
from facebot.robot.min_jerk import min_jerk

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
