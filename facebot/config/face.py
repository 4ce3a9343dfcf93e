"""Settings of the procedural face (the `loop.face` section): times in s, angles in rad."""
from __future__ import annotations

from dataclasses import dataclass

from facebot.config.schema import ConfigError, Settings, setting

_S = "s"
_RAD = "rad"


@dataclass
class ProceduralFaceConfig(Settings):
    """Tuning of the procedural face; see facebot.face.procedural for what each term moves."""

    seed: int = setting(0, ge=0, doc="same seed + same cues -> identical frames")

    # --- lips and jaw --------------------------------------------------------------------
    lip_gain: float = setting(1.0, ge=0, le=5, doc="scales every lip control (clipped to [0, 1] afterwards)")
    anticipation_s: float = setting(0.04, unit=_S, ge=0, le=0.2, doc="lips lead the sound by this much")
    coarticulation_s: float = setting(0.05, unit=_S, ge=0, le=0.5, doc="width of a phoneme's pull on its neighbours")
    lip_smoothing_s: float = setting(0.015, unit=_S, ge=0, le=0.5, doc="first-order smoothing of lip controls")
    audio_lead_s: float = setting(0.02, unit=_S, ge=0, le=0.02,
                                  doc="envelope window centre = frame time + this (within the cue's audio)")
    audio_attack_s: float = setting(0.005, unit=_S, ge=0, le=1, doc="envelope attack time constant")
    audio_release_s: float = setting(0.06, unit=_S, ge=0, le=2, doc="envelope release time constant")
    audio_gate_rms: float = setting(1e-3, ge=0, le=1, doc="below this RMS (~ -60 dBFS) the audio is silence")
    audio_min_ref_rms: float = setting(0.02, gt=0, le=1, doc="floor of the auto-gain reference")
    audio_agc_decay_s: float = setting(3.0, unit=_S, ge=0, le=60, doc="auto-gain peak tracker's decay")
    audio_jaw_max: float = setting(0.85, ge=0, le=1, doc="jaw_open at full envelope")
    spectral_hint_gain: float = setting(0.35, ge=0, le=2, doc="how much spectral tilt rounds / stretches the lips")
    barge_in_hold_s: float = setting(0.24, unit=_S, ge=0, le=5, doc="lips stay at rest this long after a barge-in")

    # --- eyes ----------------------------------------------------------------------------
    blink_interval_s: tuple[float, float] = setting((2.0, 6.0), unit=_S, gt=0, le=600,
                                                    doc="(min, max) of the random interval between blinks")
    blink_duration_s: float = setting(0.16, unit=_S, gt=0, le=2, doc="close 30 %, shut 25 %, open 45 %")
    double_blink_prob: float = setting(0.12, ge=0, le=1)
    phrase_end_blink_prob: float = setting(0.6, ge=0, le=1, doc="blink ~0.1 s after the robot ends a phrase")
    saccade_interval_speaking_s: tuple[float, float] = setting((0.6, 2.0), unit=_S, gt=0, le=600)
    saccade_interval_listening_s: tuple[float, float] = setting((1.5, 4.0), unit=_S, gt=0, le=600)
    gaze_amplitude_speaking_rad: float = setting(0.12, unit=_RAD, ge=0, le=0.5, doc="max gaze offset while speaking")
    gaze_amplitude_listening_rad: float = setting(0.03, unit=_RAD, ge=0, le=0.5)
    gaze_amplitude_idle_rad: float = setting(0.07, unit=_RAD, ge=0, le=0.5)
    gaze_stabilisation: float = setting(0.8, ge=0, le=1, doc="share of head motion the eyes cancel while listening")

    # --- head ----------------------------------------------------------------------------
    head_motion_amplitude_rad: float = setting(0.035, unit=_RAD, ge=0, le=0.3, doc="smooth noise while speaking")
    listening_head_motion_scale: float = setting(0.35, ge=0, le=1, doc="noise amplitude factor when not speaking")
    emphasis_gain_rad: float = setting(0.03, unit=_RAD, ge=0, le=0.3, doc="extra chin-down pitch on energy bursts")
    nod_amplitude_rad: float = setting(0.08, unit=_RAD, ge=0, le=0.3, doc="pitch excursion of a listener nod")
    nod_duration_s: float = setting(0.5, unit=_S, gt=0, le=5)
    nod_refractory_s: float = setting(1.0, unit=_S, ge=0, le=60, doc="no second nod sooner than this")
    attention_tilt_rad: float = setting(0.05, unit=_RAD, ge=0, le=0.3, doc="head roll while the user speaks")
    attention_lean_rad: float = setting(0.03, unit=_RAD, ge=0, le=0.3, doc="chin-down lean while the user speaks")
    attention_time_s: float = setting(0.5, unit=_S, ge=0, le=10, doc="entering / leaving attention")
    attention_brow_rate_hz: float = setting(0.12, unit="Hz", ge=0, le=5, doc="raised-brow events while listening")
    backchannel_smile: float = setting(0.3, ge=0, le=1, doc="smile pulse with a backchannel nod")
    # --- attention to the user's position (cue.look_at) ------------------------------------
    look_time_s: float = setting(0.25, unit=_S, ge=0, le=10, doc="time constant of turning toward the user")
    look_weight_listening: float = setting(1.0, ge=0, le=1, doc="share of the turn while the user speaks")
    look_weight_speaking: float = setting(0.6, ge=0, le=1, doc="... while the robot speaks")
    look_weight_idle: float = setting(0.85, ge=0, le=1, doc="... otherwise")

    def check(self) -> None:
        for name in ("blink_interval_s", "saccade_interval_speaking_s", "saccade_interval_listening_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"{name} must be (min, max) with min <= max, got {(low, high)}")
