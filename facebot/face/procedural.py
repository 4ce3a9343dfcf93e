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

from facebot.face.controls import (
    CONTROL_INDEX,
    EXPRESSION_LIMIT,
    N_CONTROLS,
    ControlBasis,
    controls_to_flame,
    default_basis,
)
from facebot.config.face import ProceduralFaceConfig
from facebot.face.cues import FaceCue
from facebot.face.flame import FPS, FlameFrame, FrameSource
from facebot.face.visemes import viseme_trajectory

__all__ = [
    "ProceduralFace",
    "FRAMES_PER_CUE",
    "CUE_PERIOD_S",
    "FRAME_PERIOD_S",
    "CONTROL_STEP_LIMIT",
    "NECK_LIMIT_RAD",
    "EYE_LIMIT_RAD",
    "NECK_STEP_LIMIT_RAD",
    "EYE_STEP_LIMIT_RAD",
    "EYELID_STEP_LIMIT",
    "within_bounds",
]

FRAME_PERIOD_S = 1.0 / FPS  # 0.04
FRAMES_PER_CUE = 2
CUE_PERIOD_S = FRAMES_PER_CUE * FRAME_PERIOD_S  # 0.08

CONTROL_STEP_LIMIT = 0.6
NECK_LIMIT_RAD = np.array([0.25, 0.30, 0.20])  # pitch, yaw, roll
EYE_LIMIT_RAD = np.array([0.25, 0.35, 0.0])  # pitch, yaw, roll (per eye)
NECK_STEP_LIMIT_RAD = 0.03
EYE_STEP_LIMIT_RAD = 0.30
EYELID_STEP_LIMIT = 0.85

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


def _alpha(dt: float, tau: float) -> float:
    """Share of the way a first-order filter moves toward its target in ``dt``."""
    return 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)


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

    # ------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Back to the rest face at time 0, with the seed's random stream restarted."""
        c = self.config
        self._rng = np.random.default_rng(c.seed)
        self._t = 0.0  # start time of the next cue on this face's own clock
        self._n_cue = round(CUE_PERIOD_S * self.sample_rate)
        self._half = max(1, round(0.02 * self.sample_rate))  # half of the 40 ms envelope window
        self._tail = np.zeros(self._half * 2)
        # outputs of the previous frame (for rate limits)
        self._controls = np.zeros(N_CONTROLS)
        self._neck = np.zeros(3)
        self._gaze_out = np.zeros(2)
        self._eyelids = np.zeros(2)
        # lips / audio
        self._lips = np.zeros(N_CONTROLS)
        self._env = 0.0
        self._ref = c.audio_min_ref_rms
        self._slow_energy = 0.0
        self._emphasis = 0.0
        self._barge_until = -1.0
        # speaking / listening state
        self._activity = 0.0
        self._attention = 0.0
        self._voiced_since: float | None = None
        self._last_voiced = -10.0
        self._was_speaking_flag = False
        self._tilt_sign = 1.0
        # events
        self._blinks: list[float] = []
        self._last_blink = -10.0
        self._next_blink = float(self._rng.uniform(*c.blink_interval_s))
        self._nods: list[float] = []
        self._last_nod = -10.0
        self._pulses: list[tuple[int, float, float, float]] = []  # (control, start, dur, amp)
        self._gaze = np.zeros(2)
        self._look = np.zeros(5)  # smoothed (neck pitch, yaw, roll, eye pitch, yaw) toward the user
        self.look_offsets = [np.zeros(5) for _ in range(FRAMES_PER_CUE)]
        self._next_saccade = float(self._rng.uniform(*c.saccade_interval_listening_s))
        # head noise: 3 sines per axis, weights summing to 1
        self._noise_f = self._rng.uniform(0.12, 0.7, size=(3, 3))
        self._noise_p = self._rng.uniform(0, 2 * math.pi, size=(3, 3))
        w = self._rng.uniform(0.5, 1.5, size=(3, 3))
        self._noise_w = w / w.sum(axis=1, keepdims=True) * np.array([[1.0], [0.8], [0.5]])
        self.last_controls = np.zeros((FRAMES_PER_CUE, N_CONTROLS))
        self.blink_count = 0
        self.nod_count = 0

    # ------------------------------------------------------------------------------- audio
    def _clean_audio(self, audio) -> np.ndarray:
        try:
            a = np.asarray(audio)
            if a.dtype.kind == "c":
                a = a.real
            a = a.astype(np.float64).reshape(-1) if a.dtype.kind in "fiub" else np.zeros(0)
        except Exception:
            a = np.zeros(0)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        a = np.clip(a, -1.0, 1.0)
        out = np.zeros(self._n_cue)
        n = min(a.size, self._n_cue)
        out[:n] = a[:n]
        return out

    def _audio_features(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """(rms, brightness in [0, 1]) of the 40 ms window around each frame time + lead."""
        c = self.config
        buf = np.concatenate([self._tail, audio])
        off = self._tail.size
        feats = []
        for k in range(FRAMES_PER_CUE):
            centre = off + round((k * FRAME_PERIOD_S + c.audio_lead_s) * self.sample_rate)
            lo, hi = max(0, centre - self._half), min(buf.size, centre + self._half)
            w = buf[lo:hi]
            energy = float(np.mean(w * w)) if w.size else 0.0
            rms = math.sqrt(energy)
            if w.size > 1 and energy > 1e-12:
                hf = float(np.mean(np.diff(w) ** 2)) / energy  # 2 - 2cos(2 pi f / fs) for a tone
                bright = min(1.0, max(0.0, math.log10(max(hf, 1e-6) / 0.01) / 2.0))
            else:
                bright = 0.0
            feats.append((rms if math.isfinite(rms) else 0.0, bright))
        self._tail = buf[-2 * self._half:].copy()
        return feats

    # -------------------------------------------------------------------------------- step
    def step(self, cue: FaceCue) -> list[FlameFrame]:
        """Two frames for this cue (times 0.00 s and 0.04 s of its frame). Never raises on
        bad cue contents; see the module docstring for bounds."""
        c = self.config
        dt = FRAME_PERIOD_S
        t0 = self._t
        audio = self._clean_audio(getattr(cue, "robot_audio", None))
        feats = self._audio_features(audio)
        phonemes = getattr(cue, "phonemes", None)
        robot_speaking = _flag(getattr(cue, "robot_speaking", False))
        user_speaking = _flag(getattr(cue, "user_speaking", False))
        user_prob = min(1.0, max(0.0, _finite(getattr(cue, "user_speech_prob", 0.0))))
        user_pause = _flag(getattr(cue, "user_pause", False))
        backchannel = _flag(getattr(cue, "backchannel", False))
        barge_in = _flag(getattr(cue, "barge_in", False))

        if barge_in:
            self._barge_until = t0 + c.barge_in_hold_s
            self._env = 0.0
            self._lips[:] = 0.0
        barging = barge_in or t0 < self._barge_until - 1e-9

        # Lip targets for both frames.
        if barging:
            lip_targets = np.zeros((FRAMES_PER_CUE, N_CONTROLS))
        elif phonemes is not None:
            try:
                lip_targets = viseme_trajectory(
                    phonemes, [0.0, FRAME_PERIOD_S], c.anticipation_s, c.coarticulation_s
                )
            except Exception:  # a pathological sequence: fall back to the audio
                lip_targets = None
        else:
            lip_targets = None

        # Listener events that apply to the whole cue.
        if (user_pause or backchannel) and t0 - self._last_nod >= c.nod_refractory_s:
            self._nods.append(t0)
            self._last_nod = t0
            self.nod_count += 1
            if backchannel and c.backchannel_smile > 0:
                self._pulses.append((_J["smile"], t0, 0.9, c.backchannel_smile))
        attention_target = 1.0 if (user_speaking or user_prob > 0.5) else 0.0
        if attention_target > 0 and self._attention < 0.05:
            self._tilt_sign = 1.0 if self._rng.random() < 0.5 else -1.0
        if self._attention > 0.5 and self._rng.random() < c.attention_brow_rate_hz * CUE_PERIOD_S:
            self._pulses.append((_J["brow_raise"], t0, 0.8, float(self._rng.uniform(0.3, 0.6))))
        look_target = _look_target(getattr(cue, "look_at", None))
        if self._was_speaking_flag and not robot_speaking:
            self._phrase_end(t0)
        self._was_speaking_flag = robot_speaking

        frames = []
        for k in range(FRAMES_PER_CUE):
            tf = t0 + k * dt
            rms, bright = feats[k]
            # --- envelope (AGC + compression + attack/release) ---
            self._ref = max(self._ref * math.exp(-dt / c.audio_agc_decay_s), rms, c.audio_min_ref_rms)
            level = (rms / self._ref) ** 0.7 if rms > c.audio_gate_rms else 0.0
            level = min(1.0, max(0.0, level))
            if barging:
                self._env = 0.0
            elif level > self._env:
                self._env += (level - self._env) * _alpha(dt, c.audio_attack_s)
            else:
                self._env = level + (self._env - level) * math.exp(-dt / max(c.audio_release_s, 1e-6))

            if lip_targets is not None:
                target = lip_targets[k] * c.lip_gain
            else:
                target = np.zeros(N_CONTROLS)
                env = self._env
                target[_J["jaw_open"]] = c.audio_jaw_max * env
                target[_J["lip_round"]] = c.spectral_hint_gain * env * (1.0 - bright) ** 2
                target[_J["lip_stretch"]] = c.spectral_hint_gain * env * bright
                target *= c.lip_gain
            target = np.clip(np.nan_to_num(target, nan=0.0), 0.0, 1.0)
            if barging:
                self._lips = target
            else:
                self._lips = self._lips + (target - self._lips) * _alpha(dt, c.lip_smoothing_s)

            # --- speaking activity and phrase ends ---
            mouth = float(self._lips[_J["jaw_open"]])
            voiced = (not barging) and (self._env > 0.15 or mouth > 0.1)
            if voiced:
                if self._voiced_since is None:
                    self._voiced_since = tf
                self._last_voiced = tf
            elif self._voiced_since is not None and tf - self._last_voiced > 0.15:
                if self._last_voiced - self._voiced_since >= 0.4:
                    self._phrase_end(tf)
                self._voiced_since = None
            speaking = robot_speaking or (tf - self._last_voiced) <= 0.15
            self._activity += ((1.0 if speaking else 0.0) - self._activity) * _alpha(dt, 0.3)
            self._attention += (attention_target - self._attention) * _alpha(dt, c.attention_time_s)

            # --- emphasis from energy bursts ---
            energy = max(self._env, mouth)
            self._slow_energy += (energy - self._slow_energy) * _alpha(dt, 0.4)
            burst = max(0.0, energy - self._slow_energy) if speaking else 0.0
            self._emphasis += (min(1.0, 2.0 * burst) - self._emphasis) * _alpha(dt, 0.1)

            # --- affect controls: pulses (brows, smile) + emphasis brows ---
            affect = np.zeros(N_CONTROLS)
            live = []
            for ctrl, start, dur, amp in self._pulses:
                u = (tf - start) / dur
                if u < 1.0:
                    live.append((ctrl, start, dur, amp))
                    if u >= 0.0:
                        affect[ctrl] += amp * math.sin(math.pi * u) ** 2
            self._pulses = live
            affect[_J["brow_raise"]] += 0.25 * self._emphasis * self._activity
            controls = np.where(_LIP, self._lips, 0.0) + affect
            controls = np.clip(np.nan_to_num(controls, nan=0.0), 0.0, 1.0)
            controls = _step_toward(self._controls, controls, CONTROL_STEP_LIMIT)
            controls = np.clip(controls, 0.0, 1.0)
            self._controls = controls
            self.last_controls[k] = controls

            # --- attention: toward the user's position ---
            if self._attention > 0.5:
                weight = c.look_weight_listening
            else:
                weight = c.look_weight_speaking if speaking else c.look_weight_idle
            self._look += (weight * look_target - self._look) * _alpha(dt, c.look_time_s)
            self.look_offsets[k] = self._look.copy()

            # --- head ---
            neck = self._head(tf) + self._look[:3]
            neck = np.clip(_step_toward(self._neck, neck, NECK_STEP_LIMIT_RAD), -NECK_LIMIT_RAD, NECK_LIMIT_RAD)
            self._neck = neck

            # --- eyes ---
            self._saccade(tf, speaking)
            stab = c.gaze_stabilisation * self._attention
            gaze = self._gaze + self._look[3:] - stab * (neck[:2] - self._look[:2])
            gaze = np.clip(_step_toward(self._gaze_out, gaze, EYE_STEP_LIMIT_RAD), -EYE_LIMIT_RAD[:2], EYE_LIMIT_RAD[:2])
            self._gaze_out = gaze
            lids = np.full(2, self._blink(tf))
            lids = np.clip(_step_toward(self._eyelids, lids, EYELID_STEP_LIMIT), 0.0, 1.0)
            self._eyelids = lids

            fl = controls_to_flame(controls, self.basis)
            eye = np.array([gaze[0], gaze[1], 0.0] * 2, np.float32)
            frames.append(
                FlameFrame(
                    expression=fl["expression"],
                    jaw_pose=fl["jaw_pose"],
                    neck_pose=neck.astype(np.float32),
                    eye_pose=eye,
                    eyelids=lids.astype(np.float32),
                    source=FrameSource.PROCEDURAL,
                )
            )
        self._t = t0 + CUE_PERIOD_S
        return frames

    # ------------------------------------------------------------------------ sub-motions
    def _phrase_end(self, t: float) -> None:
        c = self.config
        if t - self._last_blink > 1.0 and self._rng.random() < c.phrase_end_blink_prob:
            self._next_blink = min(self._next_blink, t + 0.1)

    def _blink(self, tf: float) -> float:
        c = self.config
        while tf >= self._next_blink:
            start = self._next_blink
            self._blinks.append(start)
            self._last_blink = start
            self.blink_count += 1
            nxt = start + float(self._rng.uniform(*c.blink_interval_s))
            if self._rng.random() < c.double_blink_prob:
                nxt = start + c.blink_duration_s + 0.12
            self._next_blink = nxt
        d = c.blink_duration_s
        close, hold = 0.30 * d, 0.25 * d
        value = 0.0
        live = []
        for start in self._blinks:
            u = tf - start
            if u < d:
                live.append(start)
            if u < 0 or u >= d:
                continue
            if u < close:
                v = u / close
            elif u < close + hold:
                v = 1.0
            else:
                v = 1.0 - (u - close - hold) / (d - close - hold)
            value = max(value, v)
        self._blinks = live
        return min(1.0, max(0.0, value))

    def _saccade(self, tf: float, speaking: bool) -> None:
        c = self.config
        if tf < self._next_saccade:
            return
        if self._attention > 0.5:
            amp, interval = c.gaze_amplitude_listening_rad, c.saccade_interval_listening_s
        elif speaking:
            amp, interval = c.gaze_amplitude_speaking_rad, c.saccade_interval_speaking_s
        else:
            amp, interval = c.gaze_amplitude_idle_rad, c.saccade_interval_listening_s
        # Half the time come back near the partner (centre), otherwise look aside a little.
        if self._rng.random() < 0.5:
            target = self._rng.normal(0.0, 0.2, size=2) * amp
        else:
            target = self._rng.uniform(-1.0, 1.0, size=2) * amp * np.array([0.5, 1.0])
        self._gaze = np.clip(target, -amp, amp)
        self._next_saccade = tf + float(self._rng.uniform(*interval))

    def _head(self, tf: float) -> np.ndarray:
        c = self.config
        noise = (self._noise_w * np.sin(2 * math.pi * self._noise_f * tf + self._noise_p)).sum(axis=1)
        scale = c.head_motion_amplitude_rad * (
            self._activity + c.listening_head_motion_scale * (1.0 - self._activity)
        )
        neck = noise * scale
        neck[0] += c.emphasis_gain_rad * self._emphasis
        neck[1] += 0.3 * c.emphasis_gain_rad * self._emphasis * math.sin(2 * math.pi * 0.23 * tf)
        # listener nods: a sin^2 bump of pitch (chin down and back up)
        live = []
        for start in self._nods:
            u = (tf - start) / c.nod_duration_s
            if u < 1.0:
                live.append(start)
                if u >= 0.0:
                    neck[0] += c.nod_amplitude_rad * math.sin(math.pi * u) ** 2
        self._nods = live
        neck[0] += c.attention_lean_rad * self._attention
        neck[2] += self._tilt_sign * c.attention_tilt_rad * self._attention
        return np.nan_to_num(neck, nan=0.0)
