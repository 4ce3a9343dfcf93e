"""The sample conversation that `facebot run` plays by default: the user's side of a chat.

Made with espeak-ng (a different voice from the robot's), it exercises every duplex
behaviour of the scripted backend: a reply after the user's turn, a backchannel in a
mid-turn pause, a barge-in while the robot speaks, and a closing exchange. User turns are
laid out from the lengths of the robot's own lines so that the barge-in lands mid-reply.
The layout is written beside the WAV (JSON) so tests can check what should happen when.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facebot.io.atomic import atomic_path, atomic_write_text
from facebot.audio.espeak import EspeakVoice
from facebot.audio.files import write_wav
from facebot.audio.framing import MODEL_RATE
from facebot.config.scripted import ScriptedConfig

USER_VOICE = "en-us+m3"  # a different voice from the robot's
SAMPLE_NAME = "sample_conversation.wav"
# Time the robot takes to start a reply after the user stops: end of turn plus VAD release.
_REPLY_MARGIN_S = 0.35


@dataclass
class UserTurn:
    text: str
    start_s: float
    end_s: float
    purpose: str  # "reply", "pause" (mid-turn pause follows), "barge_in", "closing"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facebot"


def default_sample_path() -> Path:
    return cache_dir() / SAMPLE_NAME


def make_sample_conversation(path: str | Path, robot: ScriptedConfig | None = None) -> list[UserTurn]:
    """Writes the user's side of the sample conversation (24 kHz mono WAV) and its layout."""
    robot = robot or ScriptedConfig()
    user_voice = EspeakVoice(voice=USER_VOICE, rate_wpm=155, pitch=60)
    robot_voice = EspeakVoice(voice=robot.voice, rate_wpm=robot.rate_wpm, pitch=robot.pitch)
    reply_s = [robot_voice.synthesize(t, sample_rate=MODEL_RATE).audio.shape[0] / MODEL_RATE for t in robot.replies[:3]]
    first_reply_delay = robot.turns.end_of_turn_ms / 1000.0 + _REPLY_MARGIN_S
    pause_s = (robot.turns.pause_min_ms + robot.turns.end_of_turn_ms) / 2000.0

    script = [
        ("Hello robot. Can you hear me?", "reply"),
        ("I have been reading about social robots all week, and I am very curious about them.", "pause"),
        ("Tell me, what can you do?", "reply"),
        ("Wait, wait, stop please.", "barge_in"),
        ("Thank you. That is all for now.", "closing"),
    ]
    pieces: list[np.ndarray] = []
    turns: list[UserTurn] = []
    t = 0.6
    cursor = 0.0

    def place(text: str, start_s: float, purpose: str) -> float:
        nonlocal cursor
        audio = user_voice.synthesize(text, sample_rate=MODEL_RATE).audio
        gap = int(round((start_s - cursor) * MODEL_RATE))
        pieces.append(np.zeros(max(gap, 0), np.float32))
        pieces.append(audio)
        cursor = start_s + audio.shape[0] / MODEL_RATE
        turns.append(UserTurn(text, round(start_s, 3), round(cursor, 3), purpose))
        return cursor

    end = place(script[0][0], t, script[0][1])
    # Wait for the first reply to finish, then a breath.
    t = end + first_reply_delay + reply_s[0] + 1.0
    end = place(script[1][0], t, script[1][1])
    end = place(script[2][0], end + pause_s, script[2][1])
    # Barge in two seconds into the second reply, which lasts several seconds.
    reply2_start = end + first_reply_delay
    if reply_s[1] < 3.0:
        raise ValueError("sample conversation: the second scripted reply must last at least 3 s")
    end = place(script[3][0], reply2_start + 2.0, script[3][1])
    # After the barge-in the robot answers with its third line; close after it.
    t = end + first_reply_delay + reply_s[2] + 1.0
    end = place(script[4][0], t, script[4][1])
    pieces.append(np.zeros(int(MODEL_RATE * 4.0), np.float32))  # room for the goodbye

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write_wav(tmp, np.concatenate(pieces), MODEL_RATE)
    layout = {"sample_rate": MODEL_RATE, "user_voice": USER_VOICE, "turns": [asdict(x) for x in turns]}
    atomic_write_text(path.with_suffix(".json"), json.dumps(layout, indent=2))
    return turns


def ensure_sample(path: str | Path | None = None) -> Path:
    """The sample conversation's path, making it first if it is not there yet."""
    p = Path(path) if path else default_sample_path()
    if not p.is_file() or not p.with_suffix(".json").is_file():
        make_sample_conversation(p)
    return p
