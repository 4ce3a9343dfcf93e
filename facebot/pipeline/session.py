"""One standalone duplex session: source -> framer -> loop -> head driver -> recorder (and speaker).

This is what `facebot run` drives. File input runs as fast as the machine allows (or paced
with ``realtime``); microphone input runs on the device's clock.
"""
from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame, AudioFramer
from facebot.pipeline.duplex import DuplexLoop, StepResult
from facebot.pipeline.echo_side import EchoSide, EchoTrace
from facebot.pipeline.recorder import SessionRecorder
from facebot.pipeline.sources import FileAudioSource, MicrophoneSource, Pacer, SourceError, VideoSource

STAGES = ("echo", "vad", "perception", "backend", "face", "head", "record", "step")
DRAIN_MAX_FRAMES = 125  # at most 10 s of the robot finishing after the input ends


@dataclass
class SessionReport:
    out_dir: Path
    frames: int
    audio_s: float
    compute_s: float
    timings_ms: dict[str, array] = field(default_factory=dict)  # per stage, ms per step
    notes: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    echo: dict | None = None  # what the echo canceller did (and achieved, in a simulated room)

    @property
    def real_time_factor(self) -> float:
        """Compute time per second of audio: below 1 is faster than real time."""
        return self.compute_s / self.audio_s if self.audio_s else math.nan

    def latency_table(self) -> dict[str, dict[str, float]]:
        table = {}
        for stage in STAGES:
            values = np.asarray(self.timings_ms.get(stage, []), np.float64)
            if values.size:
                table[stage] = {
                    "p50": float(np.percentile(values, 50)),
                    "p99": float(np.percentile(values, 99)),
                    "max": float(values.max()),
                }
        return table

    def format_table(self) -> str:
        rows = [f"{'stage':<10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
        for stage, s in self.latency_table().items():
            rows.append(f"{stage:<10}{s['p50']:>10.2f}{s['p99']:>10.2f}{s['max']:>10.2f}")
        over = sum(1 for v in self.timings_ms.get("step", []) if v > FRAME_NS / 1e6)
        rows.append(
            f"real-time factor {self.real_time_factor:.3f} ({self.frames} frames, {self.audio_s:.1f} s of audio, "
            f"{over} over the 80 ms budget)"
        )
        return "\n".join(rows)


def run_session(
    loop: DuplexLoop,
    out_dir: str | Path,
    source: FileAudioSource | MicrophoneSource,
    video: VideoSource | None = None,
    speaker=None,
    realtime: bool = False,
    progress: bool = True,
    head=None,
    renderer=None,
    deterministic: bool = False,
    plot: bool = True,
    echo=None,
    room=None,
    replace: bool = False,
) -> SessionReport:
    """Runs the loop over the whole source and writes the session folder.

    ``head`` (a HeadDriver) adds actuator commands; ``renderer`` adds the face video.
    ``deterministic`` keeps wall-clock measurements out of the bag, so that the same input
    and seed give an identical bag (they stay in summary.json). ``plot`` False skips
    session.png (batch runs such as `facebot eval --scenarios --no-plot`). ``echo`` (an
    EchoInputStage) cleans each microphone frame of the robot's voice before the loop hears
    it; ``room`` (an EchoRoom) plays the robot's voice back into the microphone. ``replace``:
    an existing ``out_dir`` (checked replaceable by the caller) is swapped out at the end.
    """
    recorder = SessionRecorder(out_dir, loop.backend.describe(), with_video=video is not None,
                               head=head, renderer=renderer, deterministic=deterministic, plot=plot,
                               replace=replace)
    io = EchoSide(echo, room, EchoTrace() if room is not None else None,
                  mic_sink=recorder.add_mic if echo is not None or room is not None else None)
    framer = AudioFramer()
    timings: dict[str, array] = {s: array("d") for s in STAGES}  # 8 bytes a value, not a float object
    total_frames = None
    if getattr(source, "duration_s", None):
        total_frames = math.ceil(source.duration_s * 1e9 / FRAME_NS)
    bar = _progress(total_frames, progress)
    pacer = Pacer() if realtime and isinstance(source, FileAudioSource) else None
    t_start = time.perf_counter()
    last = None
    try:
        for chunk in source:
            if pacer is not None:
                pacer.wait_until((chunk.stamp_ns - source.t0_ns) / 1e9)
            for frame in framer.push(chunk.samples, chunk.sample_rate, chunk.stamp_ns):
                last = _step(loop, frame, video, speaker, head, recorder, timings, bar, io)
        for frame in framer.flush():
            last = _step(loop, frame, video, speaker, head, recorder, timings, bar, io)
        if last is None:  # e.g. a bag whose audio topic is empty, or all of it dropped
            raise SourceError(f"no usable audio in the input{_drops(source)}; nothing written")
        _drain(loop, last, video, speaker, head, recorder, timings, bar, io)
        compute_s = time.perf_counter() - t_start
        report = SessionReport(
            out_dir=Path(out_dir),
            frames=recorder.frames,
            audio_s=recorder.frames * FRAME_NS / 1e9,
            compute_s=compute_s,
            timings_ms=timings,
            counters=_counters(loop, framer, source, video),
        )
        info = getattr(source, "info", None)
        if info is not None and info.truncated_note:
            report.notes.append(info.truncated_note)
        summary = _summary(report, loop)
        if io.stage is not None or io.room is not None:
            summary["echo"] = io.summary()
            report.echo = summary["echo"]
        recorder.finish(summary)
        return report
    except BaseException:
        recorder.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
        if video is not None:
            video.close()


def _step(loop, frame, video, speaker, head, recorder, timings, bar, io) -> StepResult:
    image = image_stamp = None
    if video is not None:
        got = video.frame_at(frame.stamp_ns + FRAME_NS)
        if got is not None:
            image, image_stamp = got
            recorder.add_image(image, image_stamp)
    delay_ns = None
    if speaker is not None:
        # Live: the output is heard when the speaker says, not when the file timeline says.
        delay_ns = max(0, speaker.expected_delay_ns(frame.stamp_ns + FRAME_NS))
    frame, echo_ms = io.before_step(frame)
    result: StepResult = loop.step(frame, user_image=image, playout_delay_ns=delay_ns,
                                   user_image_stamp_ns=image_stamp)
    if echo_ms is not None:
        result.timings_ms["echo"] = echo_ms
    if speaker is not None:
        speaker.play(result.robot_audio)
    io.after_step(result)
    commands = []
    if head is not None:
        t0 = time.perf_counter()
        commands = head.advance(result, now_ns=result.capture_stamp_ns + FRAME_NS)
        result.timings_ms["head"] = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    recorder.add(result, commands)
    result.timings_ms["record"] = (time.perf_counter() - t0) * 1000.0
    for stage in STAGES:
        if stage in result.timings_ms:
            timings[stage].append(result.timings_ms[stage])
    if bar is not None:
        bar.update(1)
    return result


def _drain(loop, last: StepResult, video, speaker, head, recorder, timings, bar, io) -> None:
    """Feeds silence after the input ends until the robot has finished its sentence."""
    stamp, index = last.capture_stamp_ns, last.index
    for _ in range(DRAIN_MAX_FRAMES):
        if not (last.output.speaking or last.output.backchannel):
            return
        stamp += FRAME_NS
        index += 1
        silence = AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), stamp, index, filled_ns=FRAME_NS)
        last = _step(loop, silence, video, speaker, head, recorder, timings, bar, io)


def _drops(source) -> str:
    dropped = getattr(source, "dropped", None)
    if hasattr(dropped, "items") and sum(dropped.values()):
        return " (dropped: " + ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) + ")"
    return ""


def _counters(loop: DuplexLoop, framer: AudioFramer, source, video=None) -> dict[str, int]:
    dropped = getattr(source, "dropped", 0)  # a per-reason Counter (bags) or a count (microphone)
    counters = {f"input_dropped_{k}": v for k, v in dropped.items()} if hasattr(dropped, "items") else {"input_dropped": int(dropped)}
    if video is not None and hasattr(video, "dropped"):  # a bag's camera: undecodable images
        counters["camera_dropped"] = int(video.dropped)
    counters.update({
        "input_gaps_filled": framer.stats.gaps_filled,
        "input_restarts": framer.stats.restarts,
        "input_non_finite_samples": framer.stats.non_finite_samples,
    })
    for name in ("replies_started", "replies_interrupted", "backchannels_played"):
        if hasattr(loop.backend, name):
            counters[name] = int(getattr(loop.backend, name))
    if loop.perception is not None:
        counters.update({f"user_face_{k}": int(v) for k, v in loop.perception.counts.items()})
    return counters


def _summary(report: SessionReport, loop: DuplexLoop) -> dict:
    return {
        "backend": loop.backend.describe(),
        "seed": loop.seed,
        "audio_s": report.audio_s,
        "compute_s": report.compute_s,
        "real_time_factor": report.real_time_factor,
        "latency_ms": report.latency_table(),
        "counters": report.counters,
        "notes": report.notes,
    }


def _progress(total: int | None, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="duplex", leave=False)
