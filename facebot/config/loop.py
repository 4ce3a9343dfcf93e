"""Settings of the duplex loop (the `loop` section) and of turn-taking (`scripted.turns`)."""
from __future__ import annotations

from dataclasses import dataclass

from facebot.config.face import ProceduralFaceConfig
from facebot.config.schema import ConfigError, Settings, setting

MS = "ms"


@dataclass
class LoopConfig(Settings):
    # Time from the end of an input frame's capture to its output being heard: compute,
    # output buffering and the sound card. Live runs measure it; file runs use this value.
    # With a head it is raised to the head's lead + one face frame (facebot.assembly).
    playout_delay_ms: float = setting(0.0, unit=MS, ge=0, le=2000)
    vad_threshold: float = setting(0.5, gt=0, lt=1, doc="speech probability above which the user speaks")
    # The same on audio the echo canceller is cleaning of the robot's voice: AEC3 passes a
    # user who talks over the robot only once they dominate, so a less sure first window
    # suffices there (facebot.audio.vad.VadConfig); never above vad_threshold.
    vad_echo_threshold: float = setting(0.4, gt=0, lt=1,
                                        doc="speech probability that starts a barge-in over the robot's echo")
    face: ProceduralFaceConfig = setting(default_factory=ProceduralFaceConfig)
    # How much the robot's gaze toward the user (neck + eyes) is added onto the model's own
    # face: 0 = the model's face untouched, 1 = fully (the procedural face always attends).
    model_face_attention: float = setting(1.0, ge=0, le=1)


@dataclass
class TurnConfig(Settings):
    # Silence after the user's speech that ends their turn. Shorter feels snappier but cuts
    # people off when they hesitate; ~0.7-1 s is what VAD-driven dialogue systems use.
    end_of_turn_ms: float = setting(800.0, unit=MS, gt=0, le=10_000)
    # Speech shorter than this (a cough, a click, "uh") does not make a turn worth answering.
    min_turn_speech_ms: float = setting(300.0, unit=MS, ge=0, le=10_000)
    # A mid-turn silence at least this long is a pause where a listener may backchannel.
    pause_min_ms: float = setting(240.0, unit=MS, gt=0, le=10_000)
    # Backchannel only after the user has talked this long in the current turn, so that a
    # short question gets an answer, not an "mm-hmm" first ...
    backchannel_min_turn_ms: float = setting(2500.0, unit=MS, ge=0, le=600_000)
    # ... and at most once per this many seconds, so it stays a nod, not a chorus.
    backchannel_interval_s: float = setting(4.0, unit="s", ge=0, le=3600)
    # Stop the robot's reply when the user starts speaking over it.
    barge_in: bool = True

    def check(self) -> None:
        if not self.pause_min_ms < self.end_of_turn_ms:
            raise ConfigError(f"need pause_min_ms ({self.pause_min_ms}) < end_of_turn_ms ({self.end_of_turn_ms})")
