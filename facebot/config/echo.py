"""Settings of echo cancellation (the `echo` section, the dialogue node's echo parameters)."""
from __future__ import annotations

from dataclasses import dataclass

from facebot.config.schema import ConfigError, Settings, setting

MS = "ms"


@dataclass
class DelayConfig(Settings):
    """The coarse loudspeaker-to-microphone delay search (facebot.audio.delay)."""

    min_delay_ms: float = setting(-200.0, unit=MS, ge=-1000, le=0, doc="the echo may come earlier than its stamp")
    max_delay_ms: float = setting(1000.0, unit=MS, gt=0, le=3000)
    window_s: float = setting(1.0, unit="s", gt=0.1, le=10, doc="microphone audio per estimate")
    analysis_rate: int = setting(8000, unit="Hz", ge=4000, le=24000, doc="the estimate needs no more band")
    min_reference_dbfs: float = setting(-40.0, unit="dBFS", ge=-120, le=0,
                                        doc="reference window RMS below which the robot is silent")
    min_peak_ratio: float = setting(15.0, gt=1, le=1000,
                                    doc="peak over the correlation RMS floor (speech echo: 15-70; spurious: ~10)")
    agree_ms: float = setting(3.0, unit=MS, gt=0, le=100, doc="two estimates this close confirm each other")


@dataclass
class EchoStageConfig(Settings):
    echo_cancellation: bool = True
    noise_suppression: bool = True
    high_pass_filter: bool = True
    # Initial guess of how long after its playout stamp the echo reaches the microphone's
    # capture timeline; tracked from then on unless track_delay is off. The default
    # (= guard_ms) reads the reference at the microphone's own time stamps.
    echo_delay_ms: float = setting(20.0, unit=MS, ge=-1000, le=3000)
    track_delay: bool = True
    # After a shift the reference leads its echo by this much: AEC3 needs a few ms of lead
    # (its delay headroom), and the margin absorbs estimation error.
    guard_ms: float = setting(20.0, unit=MS, ge=0, le=200)
    min_lead_ms: float = setting(5.0, unit=MS, ge=0, le=200, doc="below this lead AEC3 stops cancelling")
    aec_span_ms: float = setting(250.0, unit=MS, gt=0, le=1000, doc="delays this far after the reference: AEC3's job")
    estimate_every_s: float = setting(0.25, unit="s", gt=0, le=10)
    # Frames are marked echo-suppressed (the VAD then confirms a barge-in sooner) while the
    # reference is active and this long after: its echo comes up to aec_span_ms later and
    # rings on with the room.
    suppression_hold_ms: float = setting(500.0, unit=MS, ge=0, le=5000)
    # ... but only once AEC3 had this much robot speech since it (re)started: before it has
    # converged its echo leaks must not count as the user.
    suppression_settle_s: float = setting(1.0, unit="s", ge=0, le=60)
    history_s: float = setting(6.0, unit="s", gt=0, le=60, doc="reference and microphone audio kept")
    delay: DelayConfig = setting(default_factory=DelayConfig)

    def check(self) -> None:
        if not self.delay.min_delay_ms <= self.echo_delay_ms <= self.delay.max_delay_ms:
            raise ConfigError(f"echo_delay_ms must be within [{self.delay.min_delay_ms}, "
                              f"{self.delay.max_delay_ms}], got {self.echo_delay_ms}")
        need = self.delay.window_s + (self.delay.max_delay_ms - self.delay.min_delay_ms) / 1000.0 + 0.5
        if self.history_s < need:
            raise ConfigError(f"history_s must be at least {need:.1f} s for the delay search")
