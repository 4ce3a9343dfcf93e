"""Settings of the scripted bring-up backend (the `scripted` section)."""
from __future__ import annotations

from dataclasses import dataclass

from facebot.config.loop import TurnConfig
from facebot.config.schema import ConfigError, Settings, setting

DEFAULT_REPLIES = (
    "Hello, I am face bot, a friendly robot. It is nice to meet you.",
    "I can listen and talk at the same time, so you can interrupt me whenever you like, "
    "and I will stop and listen to you.",
    "Of course. I stopped talking. What would you like to know?",
    "Thank you for talking with me today. Goodbye.",
)
DEFAULT_BACKCHANNELS = ("hmm", "yeah", "right")  # espeak spells out "mm hmm" as letters


@dataclass
class ScriptedConfig(Settings):
    replies: tuple[str, ...] = DEFAULT_REPLIES
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS
    # en-us with the f5 variant: the espeak-ng voice an off-the-shelf recogniser
    # (pocketsphinx en-us) understands best, which is a fair proxy for a listener.
    voice: str = "en-us+f5"
    rate_wpm: int = setting(140, unit="words/min", ge=80, le=450, doc="espeak-ng's speaking rate range")
    pitch: int = setting(50, ge=0, le=99, doc="espeak-ng's pitch scale")
    reply_gain: float = setting(0.9, ge=0, le=1)
    backchannel_gain: float = setting(0.5, ge=0, le=1, doc="softer than speech: a listener's murmur")
    # After the last line, start again from the first (a demo that never runs dry).
    loop_script: bool = True
    turns: TurnConfig = setting(default_factory=TurnConfig)

    def check(self) -> None:
        if not self.replies:
            raise ConfigError("replies: at least one reply line is needed")
        if not all(r.strip() for r in self.replies + self.backchannels):
            raise ConfigError("replies and backchannels must be non-empty text")
        if not self.voice.strip():
            raise ConfigError("voice must name an espeak-ng voice, e.g. en-us+f5")
