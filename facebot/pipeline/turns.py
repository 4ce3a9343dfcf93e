"""Turn-taking rules for backends that do not learn them: when to reply, nod along, or stop.

A learned full-duplex model decides these itself; the scripted bring-up backend uses these
explicit rules so an operator can test barge-in, backchannels and replies on a robot.
"""
from __future__ import annotations

from dataclasses import dataclass

from facebot.config.loop import TurnConfig
from facebot.pipeline.backend import UserActivity


@dataclass
class TurnDecision:
    reply: bool = False  # the user's turn just ended: start the reply now
    backchannel: bool = False  # the user is pausing mid-turn: say "mm-hmm" now
    barge_in: bool = False  # the user started speaking over the robot: stop now
    user_pause: bool = False  # the user is in a mid-turn pause (for the face: a nod)


class TurnTaker:
    """Tracks the user's turn across frames and emits at most one decision per event."""

    def __init__(self, config: TurnConfig, frame_ms: float = 80.0) -> None:
        self.config = config
        self.frame_ms = frame_ms
        self.reset()

    def reset(self) -> None:
        self._turn_speech_ms = 0.0
        self._in_turn = False
        self._paused_this_silence = False
        self._since_backchannel_s = float("inf")

    @property
    def turn_speech_ms(self) -> float:
        return self._turn_speech_ms

    def update(self, user: UserActivity, robot_speaking: bool) -> TurnDecision:
        cfg = self.config
        decision = TurnDecision()
        self._since_backchannel_s += self.frame_ms / 1000.0
        if user.speaking:
            self._turn_speech_ms += self.frame_ms
            self._in_turn = True
            self._paused_this_silence = False
            if robot_speaking and cfg.barge_in and user.onset:
                decision.barge_in = True
            return decision
        if not self._in_turn:
            return decision
        if user.silence_ms >= cfg.end_of_turn_ms:
            if self._turn_speech_ms >= cfg.min_turn_speech_ms and not robot_speaking:
                decision.reply = True
            self._in_turn = False
            self._turn_speech_ms = 0.0
            return decision
        if user.silence_ms >= cfg.pause_min_ms:
            decision.user_pause = True
            if (
                not self._paused_this_silence
                and not robot_speaking
                and self._turn_speech_ms >= cfg.backchannel_min_turn_ms
                and self._since_backchannel_s >= cfg.backchannel_interval_s
            ):
                decision.backchannel = True
                self._since_backchannel_s = 0.0
            self._paused_this_silence = True
        return decision
