"""Procedural face motion: FLAME frames at 25 fps from what the robot says and hears.

This is the face that works with any speech source. Per 80 ms model frame it takes a
``FaceCue`` and returns two ``FlameFrame`` (at 0.00 s and 0.04 s of the cue's frame):

* **Lips and jaw** from the phoneme timing when the source gives it (``cue.phonemes``): the
  viseme trajectory of ``facebot.face.visemes`` sampled at each frame time, with coarticulation
  and the lips leading the sound by ``anticipation_s``; lips closed on p/b/m. Without timing
  they follow the robot audio: a 40 ms RMS envelope (auto-gained, compressed) opens the jaw with
  an instant attack and an exponential release; the window is centred ``audio_lead_s`` after
  the frame time, so onsets show with no added lag. The spectral tilt (energy of the first
  difference over energy) is a cheap hint: dark sounds round the lips, bright ones stretch them.
  No speech -> rest; ``barge_in`` -> the mouth closes within two frames (<= 80 ms).
* **Eyes**: blinks at random 2-6 s intervals (~160 ms, occasional doubles, more likely just
  after the robot finishes a phrase); saccades between small gaze targets, wider while the
  robot speaks, steady on the user (with head-motion compensation) while the user speaks.
* **Attention** (``cue.look_at``, the user's face position as neck + eye angles): neck and
  eyes turn toward the user with a ``look_time_s`` lag, fully while the user speaks
  (``look_weight_listening``), partly while the robot speaks (people glance away when they
  talk) and when idle; saccades and head motion stay on top. No position: back to centre.
  ``look_offsets`` holds the last frames' offsets, for blending onto the model's own face.
* **Head**: smooth sum-of-sines motion while speaking (smaller while listening), a pitch
  emphasis following bursts of audio energy, a ~0.5 s nod on ``user_pause`` / ``backchannel``,
  and a slight tilt and lean while the user speaks, with occasional raised brows.

Each sub-motion has its module (facebot.face.mouth, .speech_activity, .eyes, .head_motion,
.user_attention); this one reads the cue, runs them in a fixed order (the random stream is shared,
so the order of draws is part of the output) and enforces the bounds below.

Axis conventions (FLAME axis-angle, radians): index 0 is pitch (+ = chin / gaze down, the same
sense as jaw opening), 1 is yaw, 2 is roll. ``eye_pose`` is ``[left(3), right(3)]`` and both
eyes get the same rotation (conjugate gaze). ``eyelids`` 0 = open, 1 = closed.

Bounds, enforced on every frame whatever the input (``within_bounds`` checks them):

============== ==========================================================================
field          bound
============== ==========================================================================
jaw_pose       ``[0]`` in ``[0, jaw_max_rad]`` (0.35 rad default); ``[1]``, ``[2]`` = 0
expression     ``|e_i| <= EXPRESSION_LIMIT`` (3.0); it is ``basis @ controls``, controls in [0, 1]
neck_pose      ``|pitch| <= 0.25``, ``|yaw| <= 0.30``, ``|roll| <= 0.20`` rad
eye_pose       per eye ``|pitch| <= 0.25``, ``|yaw| <= 0.35`` rad, roll = 0
eyelids        ``[0, 1]``
============== ==========================================================================

Smoothness, the most any value changes between consecutive frames (40 ms), also enforced:
every control <= ``CONTROL_STEP_LIMIT`` (0.6), hence ``jaw_pose[0]`` <= 0.6 * jaw_max_rad
(0.21 rad) and each expression term <= ``basis.expression_step_bound(0.6)`` (1.26 with the
default basis: 0.6 times its largest row sum of |B|, 2.1); neck <= 0.03 rad per axis; eyes
<= 0.30 rad per axis (a saccade may finish within one frame, as real ones do); eyelids <= 0.85
(a blink closes in ~50 ms).

Everything is deterministic for a given ``seed`` and input sequence. Bad input (NaN / inf /
huge audio, missing or odd phoneme lists, spans outside the window) never raises and never
produces a non-finite or out-of-bound value.
"""
from __future__ import annotations

import math

import numpy as np

from facebot.config.face import ProceduralFaceConfig
from facebot.face.user_attention import UserAttention
from facebot.face.controls import (
    CONTROL_INDEX,
    EXPRESSION_LIMIT,
    N_CONTROLS,
    ControlBasis,
    controls_to_flame,
    default_basis,
)
from facebot.face.cues import CUE_PERIOD_S, FRAME_PERIOD_S, FRAMES_PER_CUE, FaceCue
from facebot.face.eyes import Eyes
from facebot.face.flame import FlameFrame, FrameSource
from facebot.face.head_motion import HeadMotion
from facebot.face.mouth import Mouth
from facebot.face.speech_activity import SpeechActivity

__all__ = [
    "ProceduralFace",
    "CONTROL_STEP_LIMIT",
    "NECK_LIMIT_RAD",
    "EYE_LIMIT_RAD",
    "NECK_STEP_LIMIT_RAD",
    "EYE_STEP_LIMIT_RAD",
    "EYELID_STEP_LIMIT",
    "within_bounds",
]

CONTROL_STEP_LIMIT = 0.6
NECK_LIMIT_RAD = np.array([0.25, 0.30, 0.20])  # pitch, yaw, roll
EYE_LIMIT_RAD = np.array([0.25, 0.35, 0.0])  # pitch, yaw, roll (per eye)
NECK_STEP_LIMIT_RAD = 0.03
EYE_STEP_LIMIT_RAD = 0.30
EYELID_STEP_LIMIT = 0.85
SMILE_PULSE_S = 0.9  # a backchannel's smile
BROW_PULSE_S = 0.8  # a listener's raised brows
EMPHASIS_BROW = 0.25  # brow_raise per unit of emphasis while speaking

_J = CONTROL_INDEX
_LIP = np.zeros(N_CONTROLS, bool)
_LIP[[_J[n] for n in ("jaw_open", "lip_press", "lip_round", "lip_funnel", "lip_stretch", "lip_tuck")]] = True


def within_bounds(frame: FlameFrame, jaw_max_rad: float = 0.35, tol: float = 1e-5) -> bool:
    """Whether a frame respects the documented bounds (module docstring)."""
    if not frame.is_finite():
        return False
    ok = 0 - tol <= frame.jaw_pose[0] <= jaw_max_rad + tol and np.all(np.abs(frame.jaw_pose[1:]) <= tol)
    ok &= bool(np.all(np.abs(frame.expression) <= EXPRESSION_LIMIT + tol))
    ok &= bool(np.all(np.abs(frame.neck_pose) <= NECK_LIMIT_RAD + tol))
    ok &= bool(np.all(np.abs(frame.eye_pose.reshape(2, 3)) <= EYE_LIMIT_RAD + tol))
    ok &= bool(np.all((frame.eyelids >= -tol) & (frame.eyelids <= 1 + tol)))
    return bool(ok)


def _finite(x, default: float = 0.0) -> float:
    try:
        v = float(x)
    except Exception:
        return default
    return v if math.isfinite(v) else default


def _flag(x) -> bool:
    try:
        return bool(x)
    except Exception:
        return False


def _look_target(look_at) -> np.ndarray:
    """(neck 3, eyes 2) from ``cue.look_at``; zeros when absent or malformed."""
    try:
        neck, eyes = look_at
        v = np.concatenate([np.asarray(neck, np.float64).reshape(3), np.asarray(eyes, np.float64).reshape(2)])
    except (TypeError, ValueError):
        return np.zeros(5)
    if not np.isfinite(v).all():
        return np.zeros(5)
    return np.clip(v, -np.r_[NECK_LIMIT_RAD, EYE_LIMIT_RAD[:2]], np.r_[NECK_LIMIT_RAD, EYE_LIMIT_RAD[:2]])


def _step_toward(prev: np.ndarray, target: np.ndarray, limit: float) -> np.ndarray:
    target = np.where(np.isfinite(target), target, prev)
    return prev + np.clip(target - prev, -limit, limit)


class ProceduralFace:
    """``step(cue)`` -> two PROCEDURAL ``FlameFrame`` per 80 ms cue; see the module docstring.

    Frames are unstamped (``stamp_ns`` and ``sequence`` 0): the caller stamps them with the
    playback time of the cue's audio plus 0 / 40 ms.
    """

    def __init__(self, config: ProceduralFaceConfig | None = None, sample_rate: int = 24_000,
                 basis: ControlBasis | None = None):
        """``sample_rate``: of ``cue.robot_audio`` (one cue = 80 ms of it); ``basis``: controls
        -> FLAME (``default_basis()`` unless given)."""
        if sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {sample_rate}")
        self.config = config if config is not None else ProceduralFaceConfig()
        self.sample_rate = int(sample_rate)
        self.basis = basis if basis is not None else default_basis()
        self.reset()

    def reset(self) -> None:
        """Back to the rest face at time 0, with the seed's random stream restarted."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        self._t = 0.0  # start time of the next cue on this face's own clock
        self.mouth = Mouth(c, self.sample_rate)
        self.activity = SpeechActivity()
        self.eyes = Eyes(c, rng)  # draws before the head's: the order is part of the output
        self.head = HeadMotion(c, rng)
        self.attention = UserAttention(c, rng)
        self._pulses: list[tuple[int, float, float, float]] = []  # (control, start, dur, amp)
        # outputs of the previous frame (for the step limits)
        self._controls = np.zeros(N_CONTROLS)
        self._neck = np.zeros(3)
        self._gaze_out = np.zeros(2)
        self._eyelids = np.zeros(2)
        self.look_offsets = [np.zeros(5) for _ in range(FRAMES_PER_CUE)]
        self.last_controls = np.zeros((FRAMES_PER_CUE, N_CONTROLS))

    def step(self, cue: FaceCue) -> list[FlameFrame]:
        """Two frames for this cue (times 0.00 s and 0.04 s of its frame). Never raises on
        bad cue contents; see the module docstring for bounds."""
        t0 = self._t
        robot_speaking = _flag(getattr(cue, "robot_speaking", False))
        user_speaking = _flag(getattr(cue, "user_speaking", False))
        user_prob = min(1.0, max(0.0, _finite(getattr(cue, "user_speech_prob", 0.0))))
        barging = self.mouth.begin_cue(getattr(cue, "robot_audio", None), getattr(cue, "phonemes", None),
                                       _flag(getattr(cue, "barge_in", False)), t0)
        self._listener_events(t0, _flag(getattr(cue, "user_pause", False)),
                              _flag(getattr(cue, "backchannel", False)), user_speaking or user_prob > 0.5)
        look_target = _look_target(getattr(cue, "look_at", None))
        if self.activity.flag_dropped(robot_speaking):
            self.eyes.phrase_end(t0)
        frames = [self._frame(k, t0 + k * FRAME_PERIOD_S, robot_speaking, barging, look_target)
                  for k in range(FRAMES_PER_CUE)]
        self._t = t0 + CUE_PERIOD_S
        return frames

    def _listener_events(self, t0: float, user_pause: bool, backchannel: bool, user_speaking: bool) -> None:
        """Nods (with a smile on a backchannel) and the attention of this cue."""
        c = self.config
        if (user_pause or backchannel) and self.head.nod(t0):
            if backchannel and c.backchannel_smile > 0:
                self._pulses.append((_J["smile"], t0, SMILE_PULSE_S, c.backchannel_smile))
        brow = self.attention.begin_cue(user_speaking)
        if brow is not None:
            self._pulses.append((_J["brow_raise"], t0, BROW_PULSE_S, brow))

    def _frame(self, k: int, tf: float, robot_speaking: bool, barging: bool, look_target: np.ndarray) -> FlameFrame:
        """Frame ``k`` of the cue, at time ``tf``: every sub-motion, then the step limits and bounds."""
        c = self.config
        dt = FRAME_PERIOD_S
        lips = self.mouth.frame(k, dt)
        speaking, phrase_ended = self.activity.frame(tf, dt, robot_speaking, self.mouth.envelope,
                                                     float(lips[_J["jaw_open"]]), barging)
        if phrase_ended:
            self.eyes.phrase_end(tf)
        self.attention.update(dt)

        controls = np.where(_LIP, lips, 0.0) + self._affect(tf)
        controls = np.clip(np.nan_to_num(controls, nan=0.0), 0.0, 1.0)
        controls = _step_toward(self._controls, controls, CONTROL_STEP_LIMIT)
        controls = np.clip(controls, 0.0, 1.0)
        self._controls = controls
        self.last_controls[k] = controls

        look = self.attention.look(dt, look_target, speaking)
        self.look_offsets[k] = look
        attention = self.attention.level
        neck = self.head.pose(tf, self.activity.activity, self.activity.emphasis, attention,
                              self.attention.tilt_sign) + look[:3]
        neck = np.clip(_step_toward(self._neck, neck, NECK_STEP_LIMIT_RAD), -NECK_LIMIT_RAD, NECK_LIMIT_RAD)
        self._neck = neck

        self.eyes.saccade(tf, speaking, self.attention.attending)
        stab = c.gaze_stabilisation * attention
        gaze = self.eyes.gaze + look[3:] - stab * (neck[:2] - look[:2])
        gaze = np.clip(_step_toward(self._gaze_out, gaze, EYE_STEP_LIMIT_RAD), -EYE_LIMIT_RAD[:2], EYE_LIMIT_RAD[:2])
        self._gaze_out = gaze
        lids = np.full(2, self.eyes.blink(tf))
        lids = np.clip(_step_toward(self._eyelids, lids, EYELID_STEP_LIMIT), 0.0, 1.0)
        self._eyelids = lids

        fl = controls_to_flame(controls, self.basis)
        eye = np.array([gaze[0], gaze[1], 0.0] * 2, np.float32)
        return FlameFrame(
            expression=fl["expression"],
            jaw_pose=fl["jaw_pose"],
            neck_pose=neck.astype(np.float32),
            eye_pose=eye,
            eyelids=lids.astype(np.float32),
            source=FrameSource.PROCEDURAL,
        )

    def _affect(self, tf: float) -> np.ndarray:
        """Affect controls at ``tf``: the live sin^2 pulses (smile, brows) plus brows on emphasis."""
        affect = np.zeros(N_CONTROLS)
        live = []
        for ctrl, start, dur, amp in self._pulses:
            u = (tf - start) / dur
            if u < 1.0:
                live.append((ctrl, start, dur, amp))
                if u >= 0.0:
                    affect[ctrl] += amp * math.sin(math.pi * u) ** 2
        self._pulses = live
        affect[_J["brow_raise"]] += EMPHASIS_BROW * self.activity.emphasis * self.activity.activity
        return affect
