"""FLAME -> head actuator commands: limits under any input, watchdog, e-stop, lag, output forms."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from facebot.config import CONFIG_DIR, ConfigError
from facebot.face.flame import FlameFrame
from facebot.robot.head_config import HeadConfig, JointConfig, load_head_config
from facebot.robot.head_controller import HeadController
from facebot.robot.joint_command import forward_command, joint_state, trajectory, trajectory_point
from facebot.robot.joint_map import map_frame

REFERENCE = CONFIG_DIR / "head_reference.yaml"
CFG = load_head_config(REFERENCE)
MS = 1_000_000
TOL = 1e-9
def fast(n: int):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REFERENCE_JOINTS = {  # name: (lower, upper, max velocity, max acceleration), from the head's URDF
    "neck_yaw": (-1.0, 1.0, 3.0, 40), "neck_pitch": (-0.5, 0.5, 2.0, 40), "neck_roll": (-0.35, 0.35, 1.5, 30),
    "jaw": (0.0, 0.40, 8.0, 250), "eye_yaw": (-0.6, 0.6, 12.0, 400), "eye_pitch": (-0.4, 0.4, 10.0, 300),
    "eyelid_left": (0.0, 1.2, 15.0, 500), "eyelid_right": (0.0, 1.2, 15.0, 500),
    "brow_left": (-0.3, 0.3, 4.0, 60), "brow_right": (-0.3, 0.3, 4.0, 60),
    "lip_corner_left": (-0.4, 0.4, 6.0, 150), "lip_corner_right": (-0.4, 0.4, 6.0, 150),
}


def frame(stamp_ns, jaw=0.0, neck=(0, 0, 0), eyes=(0,) * 6, lids=(0, 0), exp=None):
    return FlameFrame(expression=np.zeros(50) if exp is None else exp, jaw_pose=[jaw, 0, 0],
                      neck_pose=neck, eye_pose=eyes, eyelids=lids, stamp_ns=int(stamp_ns))


class Checker:
    """Asserts every command's limits, from the reported values and from consecutive commands."""

    def __init__(self, hc: HeadController):
        self.hc = hc
        self.prev = None  # (stamp, positions, fd velocity)
        self.cmds = []

    def __call__(self, cmd):
        hc = self.hc
        for arr in (cmd.positions, cmd.velocities, cmd.accelerations):
            assert arr.shape == (len(hc.joint_names),) and np.isfinite(arr).all()
        assert cmd.mode in ("tracking", "watchdog", "estop", "idle")
        assert np.all(cmd.positions >= hc.lower - TOL) and np.all(cmd.positions <= hc.upper + TOL)
        assert np.all(np.abs(cmd.velocities) <= hc.max_velocity + TOL)
        assert np.all(np.abs(cmd.accelerations) <= hc.max_acceleration + TOL)
        # from the reported state: the joint can still stop inside the limits
        stop = cmd.positions + cmd.velocities * np.abs(cmd.velocities) / (2 * hc.max_acceleration)
        assert np.all(stop >= hc.lower - 1e-7) and np.all(stop <= hc.upper + 1e-7)
        if self.prev is not None and cmd.stamp_ns > self.prev[0]:
            dt = (cmd.stamp_ns - self.prev[0]) * 1e-9
            v = (cmd.positions - self.prev[1]) / dt
            assert np.all(np.abs(v) <= hc.max_velocity + TOL), np.abs(v) - hc.max_velocity
            assert np.allclose(v, cmd.velocities, atol=TOL, rtol=0)
            a = (v - self.prev[2]) / dt
            assert np.all(np.abs(a) <= hc.max_acceleration + 1e-7), np.abs(a) - hc.max_acceleration
        if self.prev is None or cmd.stamp_ns > self.prev[0]:
            prev_v = cmd.velocities if self.prev is None else (
                (cmd.positions - self.prev[1]) / ((cmd.stamp_ns - self.prev[0]) * 1e-9))
            self.prev = (cmd.stamp_ns, cmd.positions.copy(), prev_v)
        self.cmds.append(cmd)
        return cmd


# ------------------------------------------------------------------------------------------
# configuration


def test_reference_config_drives_the_twelve_joints_with_their_limits():
    assert set(CFG.joint_names) == set(REFERENCE_JOINTS)
    for j in CFG.joints:
        lo, hi, v, a = REFERENCE_JOINTS[j.name]
        assert (j.lower, j.upper, j.max_velocity, j.max_acceleration) == (lo, hi, v, a)
        assert lo <= j.neutral <= hi and j.expression, j.name
    assert CFG.control_rate_hz == 100 and CFG.lead_ms == 40 and CFG.estop_mode in ("hold", "neutral")


def test_reference_mapping_signs_and_scales():
    f = frame(0, jaw=0.35, neck=(0.1, 0.2, -0.05), eyes=(0.1, 0.3, 0, 0.2, 0.1, 0), lids=(1.0, 0.5))
    t = dict(zip(CFG.joint_names, map_frame(CFG, f)))
    assert t["neck_pitch"] == pytest.approx(0.1, abs=1e-6) and t["neck_yaw"] == pytest.approx(0.2, abs=1e-6)
    assert t["neck_roll"] == pytest.approx(-0.05, abs=1e-6)
    assert 0.35 < t["jaw"] <= 0.40
    assert t["eye_pitch"] == pytest.approx(0.15, abs=1e-6) and t["eye_yaw"] == pytest.approx(0.2, abs=1e-6)
    assert t["eyelid_left"] == pytest.approx(1.2, abs=1e-6) and t["eyelid_right"] == pytest.approx(0.6, abs=1e-6)
    from facebot.face.controls import controls_to_frame

    def joints(**controls):
        return dict(zip(CFG.joint_names, map_frame(CFG, controls_to_frame(controls))))

    assert joints(brow_raise=1.0)["brow_left"] > 0.25 and joints(brow_furrow=1.0)["brow_right"] < -0.2
    assert joints(smile=1.0)["lip_corner_left"] > 0.25 and joints(lip_stretch=1.0)["lip_corner_right"] > 0.08
    assert abs(joints(jaw_open=1.0)["lip_corner_left"]) < 0.02


def test_config_errors_are_one_line_and_name_the_key(tmp_path):
    bad = tmp_path / "head.yaml"
    bad.write_text(REFERENCE.read_text().replace("max_velocity: 3.0", "max_velocty: 3.0", 1))
    with pytest.raises(ConfigError, match=r"head.yaml:head.joints\[0\]: unknown key\(s\) max_velocty"):
        load_head_config(bad)
    bad.write_text(REFERENCE.read_text().replace("estop_mode: hold", "estop_mode: freeze"))
    with pytest.raises(ConfigError, match="estop_mode"):
        load_head_config(bad)
    bad.write_text(REFERENCE.read_text().replace("neutral_ease_s: 0.8", "neutral_ease_s: 0.4"))
    with pytest.raises(ConfigError, match="too short for joint neck_yaw"):
        load_head_config(bad)


# ------------------------------------------------------------------------------------------
# property: limits hold and nothing non-finite comes out, whatever the stream

ACTIONS = ["frame"] * 6 + ["drop", "dup", "ooo", "nan", "inf", "huge", "jump", "estop", "stop", "resume"]
events = st.lists(
    st.tuples(st.sampled_from([10, 10, 10, 10, 3, 17, 40, 260]), st.sampled_from(ACTIONS),
              st.floats(0.0, 1.0), st.integers(0, 2 ** 16)),
    min_size=5, max_size=70,
)


def _random_frame(rng, stamp, scale):
    return FlameFrame(
        expression=rng.uniform(-3, 3, 50) * scale, jaw_pose=[rng.uniform(-0.1, 0.5) * scale, 0, 0],
        neck_pose=rng.uniform(-1.5, 1.5, 3) * scale, eye_pose=rng.uniform(-1, 1, 6) * scale,
        eyelids=rng.uniform(0, 1, 2) * scale, stamp_ns=int(stamp),
    )


def _run_events(hc: HeadController, evs) -> Checker:
    check = Checker(hc)
    now = 10_000 * MS
    next_stamp = now + 100 * MS
    stopped = False
    rng = np.random.default_rng(evs[0][3])
    for gap, action, x, _ in evs:
        now += gap * MS
        while not stopped and next_stamp <= now + 160 * MS:  # frames arrive ~100 ms ahead
            f = _random_frame(rng, next_stamp, x)
            if action == "drop":
                pass
            elif action == "dup":
                hc.push(f), hc.push(f)
            elif action == "ooo":
                hc.push(f), hc.push(_random_frame(rng, next_stamp - 80 * MS, x))
            elif action in ("nan", "inf", "huge"):
                bad = {"nan": np.nan, "inf": -np.inf, "huge": 1e30}[action]
                f.expression[rng.integers(50)] = bad
                f.neck_pose[rng.integers(3)] = bad
                assert not hc.push(f)
            elif action == "jump":
                hc.push(_random_frame(rng, next_stamp, 1.0 + 2 * x))  # to or past every limit
            else:
                hc.push(f)
            next_stamp += 40 * MS
        if action == "estop":
            hc.set_estop(not hc.estop)
        elif action == "stop":
            stopped = True
        elif action == "resume" and stopped:
            stopped = False
            next_stamp = max(next_stamp, now + 60 * MS)
        check(hc.tick(now))
    return check


@fast(3000)
@given(events, st.sampled_from(["hold", "neutral"]))
def test_commands_never_leave_limits_whatever_the_stream(evs, estop_mode):
    hc = HeadController(dataclasses.replace(CFG, estop_mode=estop_mode))
    _run_events(hc, evs)
    c = hc.counters
    assert c["frames_refused"] == c["refused_non_finite"] + c["refused_out_of_range"] + c["refused_bad_stamp"] + c["refused_late"]


@fast(400)
@given(st.lists(st.tuples(st.integers(1, 60), st.floats(-5, 5), st.floats(-5, 5)), min_size=2, max_size=40),
       st.sampled_from(["one_euro", "none"]))
def test_limits_hold_for_arbitrary_targets_and_tick_periods(steps, kind):
    """Straight at the limiter: targets anywhere (far past the limits), irregular ticks."""
    cfg = dataclasses.replace(CFG, filter=dataclasses.replace(CFG.filter, kind=kind))
    hc = HeadController(cfg)
    check = Checker(hc)
    now = 0
    for gap_ms, a, b in steps:
        f = frame(now + 60 * MS, jaw=np.clip(a, -3, 3), neck=(np.clip(b, -3, 3), np.clip(a, -3, 3), 0.3),
                  eyes=(b, a, 0, b, a, 0), lids=(np.clip(a, -0.5, 1.5), np.clip(b, -0.5, 1.5)))
        hc.push(f)
        now += gap_ms * MS
        check(hc.tick(now))


def test_bad_frames_are_refused_and_counted_never_raise():
    hc = HeadController(CFG)
    good = frame(100 * MS, jaw=0.2)
    assert hc.push(good)
    for bad in (np.nan, np.inf, -np.inf, 1e30, 11.0):
        f = frame(140 * MS)
        f.expression[3] = bad
        assert not hc.push(f)
    f = frame(140 * MS)
    f.eyelids[0] = 2.5
    assert not hc.push(f)
    f = frame(140 * MS)
    f.stamp_ns = -5
    assert not hc.push(f)
    f = frame(140 * MS)
    f.jaw_pose = np.zeros(7)  # mutated past the dataclass checks
    assert not hc.push(f)
    assert not hc.push(object())
    c = hc.counters
    assert c["frames_accepted"] == 1 and c["frames_refused"] == 9
    assert c["refused_non_finite"] == 4 and c["refused_out_of_range"] == 4 and c["refused_bad_stamp"] == 1
    cmd = hc.tick(0)
    assert np.isfinite(cmd.positions).all()
    # a frame stamped absurdly far ahead of the target time is refused; so is one older than kept
    assert not hc.push(frame(10**15))
    for k in range(10):
        hc.push(frame(100 * MS + 40 * MS * (k + 1)))
        hc.tick(40 * MS * (k + 1))
    assert not hc.push(frame(1 * MS)) and hc.counters["refused_late"] == 1
    assert hc.counters["refused_bad_stamp"] == 2


def test_clock_that_does_not_advance_repeats_the_last_command():
    hc = HeadController(CFG)
    hc.push(frame(60 * MS, jaw=0.3))
    a = hc.tick(10 * MS)
    b = hc.tick(10 * MS)
    c = hc.tick(5 * MS)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.positions, c.positions)
    assert hc.counters["clock_stalls"] == 2


# ------------------------------------------------------------------------------------------
# tracking, lead, lag


def test_modes_and_lead():
    hc = HeadController(CFG)
    check = Checker(hc)
    cmd = check(hc.tick(0))
    assert cmd.mode == "idle" and np.allclose(cmd.positions, hc.neutral)
    now = 0
    for k in range(50):
        hc.push(frame(k * 40 * MS, jaw=0.2, neck=(0.1, -0.2, 0.05)))
        now = k * 40 * MS
        for sub in range(4):
            cmd = check(hc.tick(now + sub * 10 * MS))
    assert cmd.mode == "tracking"
    assert cmd.target_stamp_ns - cmd.stamp_ns == int(CFG.lead_ms) * MS
    t = dict(zip(hc.joint_names, cmd.positions))
    assert t["jaw"] == pytest.approx(0.22, abs=1e-4) and t["neck_yaw"] == pytest.approx(-0.2, abs=1e-3)
    assert t["neck_pitch"] == pytest.approx(0.1, abs=1e-3)


def _speech_jaw(seed: int, duration_s: float = 4.0):
    """Syllable-like jaw openings: raised-cosine bumps at 3-6 Hz, peaks 0.1-0.35 rad."""
    rng = np.random.default_rng(seed)
    starts, widths, peaks = [], [], []
    t = 0.1
    while t < duration_s:
        w = 1.0 / rng.uniform(3.0, 6.0)
        starts.append(t), widths.append(w), peaks.append(rng.uniform(0.1, 0.35))
        t += w
    c, w, a = np.array(starts) + np.array(widths) / 2, np.array(widths), np.array(peaks)

    def jaw(ts):
        u = (np.asarray(ts, float)[..., None] - c) / w
        return (a * np.where(np.abs(u) < 0.5, 0.5 * (1 + np.cos(2 * np.pi * u)), 0.0)).sum(-1)

    return jaw


def _jaw_lag_ms(jaw_fn, cfg=CFG) -> tuple[float, float]:
    """Commanded jaw vs the FLAME jaw at the time each command aims at: lag of the
    cross-correlation peak (positive = commands late), at 0.25 ms resolution."""
    hc = HeadController(cfg)
    check = Checker(hc)
    j = hc.joint_names.index("jaw")
    gain = cfg.joints[j].gain
    t0 = 1000 * MS
    stamps = t0 + np.arange(100) * 40 * MS
    values = jaw_fn((stamps - t0) * 1e-9)
    pushed = 0
    for k in range(400):
        now = t0 - 300 * MS + k * 10 * MS
        while pushed < len(stamps) and stamps[pushed] - 200 * MS <= now:
            hc.push(frame(stamps[pushed], jaw=values[pushed]))
            pushed += 1
        check(hc.tick(now))
    aim = np.array([c.target_stamp_ns for c in check.cmds])
    pos = np.array([c.positions[j] for c in check.cmds])
    keep = (aim > t0 + 200 * MS) & (aim < stamps[-1] - 200 * MS)
    aim, pos = (aim[keep] - t0) * 1e-9, pos[keep] - pos[keep].mean()
    lags = np.arange(-30.0, 30.01, 0.25)
    corr = []
    for lag in lags:
        ref = gain * jaw_fn(aim - lag * 1e-3)
        ref = ref - ref.mean()
        corr.append((pos * ref).sum() / np.sqrt((pos ** 2).sum() * (ref ** 2).sum()))
    return float(lags[int(np.argmax(corr))]), float(np.max(corr))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filter_and_limiter_add_no_significant_lag_on_speech_jaw(seed):
    lag, corr = _jaw_lag_ms(_speech_jaw(seed))
    print(f"speech jaw seed {seed}: lag {lag:+.2f} ms, correlation {corr:.4f}")
    assert abs(lag) <= 10.0 and corr > 0.99


@pytest.mark.parametrize("hz", [3.0, 6.0])
def test_no_significant_lag_on_full_range_sine(hz):
    lag, corr = _jaw_lag_ms(lambda t: 0.175 + 0.175 * np.sin(2 * np.pi * hz * np.asarray(t)))
    print(f"jaw sine {hz} Hz, 0..0.35 rad: lag {lag:+.2f} ms, correlation {corr:.4f}")
    assert abs(lag) <= 10.0 and corr > 0.99


# ------------------------------------------------------------------------------------------
# watchdog and e-stop


def _drive_to_extremes(hc, check, rng, n_frames):
    """Frames that swing every joint between its limits, so joints are fast when it stops."""
    now = 0
    for k in range(n_frames):
        s = 1.0 if (k // 3) % 2 else -1.0
        hc.push(FlameFrame(expression=rng.uniform(-3, 3, 50), jaw_pose=[0.2 + 0.2 * s, 0, 0],
                           neck_pose=[0.6 * s, -1.2 * s, 0.4 * s], eye_pose=[s, -s, 0] * 2,
                           eyelids=[0.5 + 0.5 * s] * 2, stamp_ns=k * 40 * MS + 100 * MS))
        for sub in range(4):
            now = k * 40 * MS + sub * 10 * MS
            check(hc.tick(now))
    return now


@fast(40)
@given(st.integers(3, 30), st.integers(0, 2 ** 16))
def test_watchdog_eases_to_neutral_in_time_within_limits(n_frames, seed):
    hc = HeadController(CFG)
    check = Checker(hc)
    last_rx = _drive_to_extremes(hc, check, np.random.default_rng(seed), n_frames) - 30 * MS
    deadline = last_rx + int((CFG.watchdog_timeout_s + CFG.neutral_ease_s) * 1e9) + 10 * MS
    now = last_rx + 30 * MS
    while now < deadline + 500 * MS:
        now += 10 * MS
        cmd = check(hc.tick(now))
        if now >= deadline:
            assert cmd.mode == "watchdog"
            assert np.allclose(cmd.positions, hc.neutral, atol=1e-6), cmd.positions - hc.neutral
            assert np.allclose(cmd.velocities, 0, atol=1e-6)
    assert hc.counters["watchdog_trips"] == 1
    # the stream comes back: tracking again
    for _ in range(30):
        hc.push(frame(now + 100 * MS, jaw=0.3))
        now += 10 * MS
        cmd = check(hc.tick(now))
    assert cmd.mode == "tracking" and cmd.positions[hc.joint_names.index("jaw")] == pytest.approx(0.33, abs=1e-3)


@pytest.mark.parametrize("mode", ["hold", "neutral"])
def test_estop(mode):
    hc = HeadController(dataclasses.replace(CFG, estop_mode=mode))
    check = Checker(hc)
    now = _drive_to_extremes(hc, check, np.random.default_rng(0), 7)
    hc.set_estop(True)
    assert hc.counters["estop_activations"] == 1
    for k in range(int(CFG.neutral_ease_s * 100) + 1):
        hc.push(frame(now + 100 * MS, jaw=0.4))  # the stream goes on; it is ignored
        now += 10 * MS
        cmd = check(hc.tick(now))
        assert cmd.mode == "estop"
        if mode == "hold" and k >= 20:  # stopped within max(v_max / a_max) = 0.15 s
            assert np.all(cmd.velocities == 0) and np.array_equal(cmd.positions, check.cmds[-2].positions)
    if mode == "neutral":
        assert np.allclose(cmd.positions, hc.neutral, atol=1e-6)
    hc.set_estop(False)
    for _ in range(40):
        hc.push(frame(now + 100 * MS, jaw=0.3))
        now += 10 * MS
        cmd = check(hc.tick(now))
    assert cmd.mode == "tracking"


# ------------------------------------------------------------------------------------------
# output forms


def test_output_forms():
    cfg = dataclasses.replace(CFG, output=dataclasses.replace(
        CFG.output, forms=("forward_command", "trajectory", "joint_state"), controller_joints=("jaw", "neck_yaw")))
    hc = HeadController(cfg)
    hc.push(frame(60 * MS, jaw=0.3, neck=(0, 0.5, 0)))
    cmds = [hc.tick(k * 10 * MS) for k in range(1, 6)]
    c = cmds[-1]
    j, y = hc.joint_names.index("jaw"), hc.joint_names.index("neck_yaw")
    assert hc.forward_command(c) == [c.positions[j], c.positions[y]]
    assert forward_command(c) == list(c.positions)
    assert all(isinstance(x, float) for x in forward_command(c))
    p = hc.trajectory_point(c)
    assert p["time_from_start_ns"] == 20 * MS and p["velocities"] == [c.velocities[j], c.velocities[y]]
    assert set(p) == {"positions", "velocities", "accelerations", "time_from_start_ns"}
    tr = hc.trajectory(cmds)
    assert tr["joint_names"] == ["jaw", "neck_yaw"]
    assert [pt["time_from_start_ns"] for pt in tr["points"]] == [0, 10 * MS, 20 * MS, 30 * MS, 40 * MS]
    full = trajectory(cmds)
    assert full["joint_names"] == list(hc.joint_names) and len(full["points"][0]["positions"]) == 12
    assert trajectory_point(c, 0.5)["time_from_start_ns"] == 500 * MS
    js = joint_state(c)
    assert js["name"] == list(hc.joint_names) and js["position"] == list(c.positions) and js["effort"] == []
    with pytest.raises(ConfigError):
        from facebot.config import from_mapping
        from facebot.robot.head_config import config_to_dict

        d = config_to_dict(CFG)["head"]
        d["output"] = {"controller_joints": ["nose"]}
        from_mapping(HeadConfig, d, "x")


def test_idle_reset_starts_from_measured_positions():
    hc = HeadController(CFG)
    start = hc.neutral + 0.1
    start[hc.joint_names.index("jaw")] = 0.2
    hc.reset(start)
    check = Checker(hc)
    cmds = [check(hc.tick(k * 10 * MS)) for k in range(1, 120)]
    assert cmds[0].mode == "idle"  # first tick: from rest, at most a_max dt^2 away from the start
    assert np.all(np.abs(cmds[0].positions - start) <= hc.max_acceleration * 0.01 ** 2 + 1e-12)
    assert np.allclose(cmds[-1].positions, hc.neutral, atol=1e-9)


def test_joint_config_validation():
    with pytest.raises(ValueError, match="neutral"):
        JointConfig("j", -1, 1, 1, 1, neutral=2)
    with pytest.raises(ValueError, match="lower"):
        JointConfig("j", 1, -1, 1, 1)
    with pytest.raises(Exception, match="field"):
        JointConfig("j", -1, 1, 1, 1, expression=({"field": "nose", "index": 0, "weight": 1},))


# ------------------------------------------------------------------------------------------
# live limit changes (HeadController.reconfigure): never a step beyond the limits
#
# The rule checked, per joint: a joint whose state satisfies the new limits follows them at
# once. Any other joint brakes (speed never grows, no reversal) within the limits of its last
# step ("base"); once at rest outside the new range it moves straight into it within the
# hull of both ranges at the smaller velocity and acceleration limit. From its first state
# that satisfies the new limits on, it follows the new limits.

LIVE_TOL = 1e-7


def _limits(cfg):
    return tuple(np.array([getattr(j, k) for j in cfg.joints])
                 for k in ("lower", "upper", "max_velocity", "max_acceleration"))


def _feasible(p, v, lim, tol=1e-9):
    lo, hi, vmax, amax = lim
    stop = p + v * np.abs(v) / (2 * amax)
    return (p >= lo - tol) & (p <= hi + tol) & (np.abs(v) <= vmax + tol) & (stop >= lo - tol) & (stop <= hi + tol)


class LiveChecker:
    """Checks each command against the limits that apply to it under the rule above."""

    SETTLED, BRAKING, ENTERING = 0, 1, 2

    def __init__(self, cfg, stamp_ns, p, v):
        self.new = _limits(cfg)
        self.base = self.new
        self.phase = np.zeros(len(p), int)
        self.stamp, self.p, self.v = stamp_ns, np.array(p, float), np.array(v, float)
        self.used = self.new
        self.max_speed_seen = np.abs(self.v)

    def change(self, cfg):
        self.new = _limits(cfg)
        ok = _feasible(self.p, self.v, self.new)
        self.base = tuple(np.where(ok, n, u) for n, u in zip(self.new, self.used))
        self.phase = np.where(ok, self.SETTLED, np.where(self.v == 0, self.ENTERING, self.BRAKING))

    def __call__(self, cmd):
        assert all(np.isfinite(x).all() for x in (cmd.positions, cmd.velocities, cmd.accelerations))
        if cmd.stamp_ns <= self.stamp:
            return cmd
        dt = (cmd.stamp_ns - self.stamp) * 1e-9
        p1 = cmd.positions
        v1 = (p1 - self.p) / dt
        a = (v1 - self.v) / dt
        assert np.allclose(v1, cmd.velocities, atol=1e-9, rtol=0)
        ok = _feasible(self.p, self.v, self.new)
        self.phase = np.where(ok, self.SETTLED, self.phase)
        self.phase = np.where((self.phase == self.BRAKING) & (self.v == 0), self.ENTERING, self.phase)
        new, base = self.new, self.base
        stricter = (np.minimum(base[0], new[0]), np.maximum(base[1], new[1]),
                    np.minimum(base[2], new[2]), np.minimum(base[3], new[3]))
        lim = tuple(np.where(self.phase == self.SETTLED, n, np.where(self.phase == self.BRAKING, b, s))
                    for n, b, s in zip(new, base, stricter))
        lo, hi, vmax, amax = lim
        assert np.all(p1 >= lo - TOL) and np.all(p1 <= hi + TOL), (self.phase, p1 - lo, hi - p1)
        assert np.all(np.abs(v1) <= vmax + LIVE_TOL), (self.phase, np.abs(v1) - vmax)
        assert np.all(np.abs(a) <= amax + LIVE_TOL * 100), (self.phase, np.abs(a) - amax)
        assert _feasible(p1, v1, lim, LIVE_TOL).all()
        braking = self.phase == self.BRAKING
        assert np.all(np.abs(v1[braking]) <= np.abs(self.v[braking]) + LIVE_TOL)
        assert np.all(v1[braking] * self.v[braking] >= 0)
        entering = self.phase == self.ENTERING
        target = np.clip(self.p, new[0], new[1])
        assert np.all(np.abs(p1 - target)[entering] <= np.abs(self.p - target)[entering] + TOL)
        self.stamp, self.p, self.v, self.used = cmd.stamp_ns, p1.copy(), v1, lim
        return cmd

    def settled(self):
        return bool(np.all(_feasible(self.p, self.v, self.new, LIVE_TOL)))


def _with_joint(cfg, name, **changes):
    return dataclasses.replace(cfg, joints=tuple(
        dataclasses.replace(j, **changes) if j.name == name else j for j in cfg.joints))


def _jaw_moving(cfg, jaw_pos=0.30, jaw_vel=7.0):
    """A controller with the jaw at ``jaw_pos`` moving at ``jaw_vel``, tracking a wide-open jaw."""
    hc = HeadController(cfg)
    j = hc.joint_names.index("jaw")
    p, v = hc.neutral.copy(), np.zeros(len(hc.neutral))
    p[j], v[j] = jaw_pos, jaw_vel
    hc.reset(p, v)
    for k in range(40):
        hc.push(frame(k * 40 * MS, jaw=0.4))
    return hc, j, LiveChecker(cfg, 0, p, v)


def test_live_upper_limit_change_brakes_within_old_limits_then_obeys_the_new():
    """Issue 12.8: jaw at 0.30 rad moving 7 rad/s, upper 0.4 -> 0.1. Rebuilding the controller
    from the last command stepped at 20 rad/s and 2,710 rad/s^2; now it brakes at <= 250 rad/s^2
    (stopping inside the old range), returns below 0.1 at <= 8 rad/s and stays there."""
    hc, j, check = _jaw_moving(CFG)
    new_cfg = _with_joint(CFG, "jaw", upper=0.1)
    hc.reconfigure(new_cfg)
    check.change(new_cfg)
    cmds = [check(hc.tick(k * 10 * MS)) for k in range(1, 40)]
    jaw = np.array([c.positions[j] for c in cmds])
    assert jaw.max() <= 0.4 + TOL and jaw[-1] <= 0.1 + TOL and check.settled()
    assert np.all(np.abs(np.diff(np.r_[0.30, jaw])) <= 8.0 * 0.01 + TOL)
    settled_at = int(np.argmax(jaw <= 0.1 + TOL))
    assert settled_at < 15 and np.all(jaw[settled_at:] <= 0.1 + TOL)
    assert hc.joints_changing_limits == 0


def test_live_lower_velocity_and_acceleration_brake_at_the_old_acceleration_once():
    """Lowering max_velocity / max_acceleration mid-motion: braking stays within the old 250 rad/s^2,
    then every step is within the new 2 rad/s and 50 rad/s^2."""
    hc, j, check = _jaw_moving(CFG, jaw_pos=0.05, jaw_vel=7.0)
    new_cfg = _with_joint(CFG, "jaw", max_velocity=2.0, max_acceleration=50.0)
    hc.reconfigure(new_cfg)
    check.change(new_cfg)
    cmds = [check(hc.tick(k * 10 * MS)) for k in range(1, 100)]
    v = np.array([c.velocities[j] for c in cmds])
    assert np.abs(v[5:]).max() <= 2.0 + TOL and check.settled()


def test_live_change_of_mapping_applies_to_frames_already_received():
    hc = HeadController(CFG)
    for k in range(10):
        hc.push(frame(k * 40 * MS, jaw=0.2))
    hc.tick(10 * MS)
    j = hc.joint_names.index("jaw")
    hc.reconfigure(_with_joint(CFG, "jaw", gain=0.5, offset=0.0))
    for k in range(2, 30):
        cmd = hc.tick(k * 10 * MS)
    assert cmd.positions[j] == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(ValueError, match="joints"):
        hc.reconfigure(dataclasses.replace(CFG, joints=CFG.joints[:3]))


def _scaled_joint(j, lo_scale, hi_scale, v_scale, a_scale):
    return dataclasses.replace(
        j, lower=j.neutral - (j.neutral - j.lower) * lo_scale,
        upper=j.neutral + (j.upper - j.neutral) * hi_scale,
        max_velocity=j.max_velocity * v_scale, max_acceleration=j.max_acceleration * a_scale)


LIVE_BASE = dataclasses.replace(CFG, neutral_ease_s=2.0)
changes = st.tuples(st.integers(0, 2 ** 12 - 1), st.floats(0.05, 1.5), st.floats(0.05, 1.5),
                    st.floats(0.25, 2.0), st.floats(0.25, 2.0), st.sampled_from([0.0, 40.0, 200.0]))
live_events = st.lists(st.tuples(st.sampled_from([10, 10, 10, 3, 17, 40]), st.floats(0.0, 1.0),
                                 st.one_of(st.none(), st.none(), st.none(), changes)),
                       min_size=5, max_size=60)


def _changed(cfg, change):
    mask, lo_s, hi_s, v_s, a_s, lead = change
    joints = tuple(_scaled_joint(j, lo_s, hi_s, v_s, a_s) if mask >> i & 1 else j for i, j in enumerate(LIVE_BASE.joints))
    try:
        return dataclasses.replace(cfg, joints=joints, lead_ms=lead)
    except ValueError:  # the node refuses such a change; nothing to apply
        return None


@fast(100)
@given(live_events, st.sampled_from(["hold", "neutral"]), st.integers(0, 2 ** 16))
def test_live_limit_changes_at_random_times_never_step_beyond_the_limits(evs, estop_mode, seed):
    """Random streams (frames to every limit, e-stop, stalls) with limit, range and lead changes
    at random ticks, including changes during a change: every step within the limits the rule
    gives, nothing non-finite, and every joint under the newest limits within 10 s of the last."""
    cfg = dataclasses.replace(LIVE_BASE, estop_mode=estop_mode)
    hc = HeadController(cfg)
    check = LiveChecker(cfg, 0, hc.neutral, np.zeros(len(hc.neutral)))
    rng = np.random.default_rng(seed)
    now, next_stamp = 10 * MS, 60 * MS  # the first tick is one period after the start state
    for gap, x, change in evs:
        while next_stamp <= now + 160 * MS:
            hc.push(_random_frame(rng, next_stamp, 0.5 + 2 * x))
            next_stamp += 40 * MS
        if x > 0.95:
            hc.set_estop(not hc.estop)
        if change is not None:
            new_cfg = _changed(cfg, change)
            if new_cfg is not None:
                hc.reconfigure(new_cfg)
                check.change(new_cfg)
                cfg = new_cfg
        check(hc.tick(now))
        now += gap * MS
    for _ in range(200):  # no more frames and no more changes: 10 s in 50 ms ticks
        now += 50 * MS
        check(hc.tick(now))
    assert check.settled() and hc.joints_changing_limits == 0
