"""`facebot run` and `facebot bag`: one session of the assembled pipeline over a source."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from facebot import __version__
from facebot.cli.errors import UserError
from facebot.cli.outputs import print_outputs, session_out_dir
from facebot.cli.settings import pipeline_config


def run_command(args) -> int:
    """`run` and `bag`: the assembled pipeline over a file, the microphone or a bag."""
    from facebot.assembly import build_pipeline
    from facebot.pipeline.session import run_session

    config = pipeline_config(args)
    pipeline = build_pipeline(config, video=not args.no_video)
    loop = pipeline.loop
    t0_ns = getattr(args, "t0_ns", None)
    t0_ns = t0_ns if t0_ns is not None else time.time_ns()
    source, video, label = _bag_inputs(args) if args.command == "bag" else _run_inputs(args, t0_ns)
    if video is not None and not args.no_perception:
        loop.perception = perception(args)
    out_dir, replace = session_out_dir(args)
    speaker = None
    if getattr(args, "play", False):
        from facebot.pipeline.playback import SpeakerSink

        speaker = SpeakerSink()
    live = getattr(args, "input", None) == "mic"
    echo, room = _echo_parts(args, config, speaker is not None)
    print(f"facebot {__version__}: backend {loop.backend.describe()}; input {label}", file=sys.stderr)
    try:
        report = run_session(loop, out_dir, source, video=video, speaker=speaker,
                             realtime=getattr(args, "realtime", False) or live,
                             progress=not args.no_progress and sys.stderr.isatty(),
                             head=pipeline.head, renderer=pipeline.renderer, deterministic=args.command == "bag",
                             echo=echo, room=room, replace=replace)
    finally:
        if speaker is not None:
            speaker.close()
        if loop.perception is not None:
            loop.perception.close()
    print(report.format_table())
    for key, value in report.counters.items():
        if value:
            print(f"  {key}: {value}")
    if report.echo:
        print(echo_line(report.echo))
    print_outputs(out_dir)
    return 0


def _echo_parts(args, config, playing: bool):
    """The echo stage (with a loudspeaker: --play or --echo-room) and the simulated room."""
    if args.command != "run" or not (playing or args.echo_room):
        return None, None
    from facebot.pipeline.echo_stage import EchoInputStage

    stage = EchoInputStage(config.echo)
    room = None
    if args.echo_room:
        from facebot.audio.room import EchoRoom, EchoRoomConfig

        try:
            room = EchoRoom(EchoRoomConfig(seed=config.seed, delay_ms=args.room_delay_ms,
                                           echo_gain_db=args.room_echo_db))
        except (ValueError, RuntimeError, ImportError) as err:  # a bad room, or no pyroomacoustics
            raise UserError(str(err)) from None
    return stage, room


def echo_line(echo: dict) -> str:
    """One line of what the echo canceller achieved (summary.json "echo")."""
    parts = [f"echo cancellation {'on' if echo.get('echo_cancellation') else 'off'}"]
    if echo.get("echo_cancellation"):
        parts.append(f"estimated delay {echo.get('estimated_delay_ms')} ms")
        if "true_delay_ms" in echo:
            parts[-1] += f" (room: {echo['true_delay_ms']} ms)"
        parts.append(f"AEC {echo.get('cpu_ms_per_10ms')} ms per 10 ms")
    got = echo.get("achieved") or {}
    if got:
        parts.append(f"ERLE {got.get('erle_db')} dB after 1 s (converged in {got.get('converged_s')} s)")
        parts.append(f"false barge-ins {got.get('false_barge_ins')} ({got.get('false_barge_ins_per_min')}/min of robot speech)")
        if got.get("double_talk_onsets"):
            parts.append(f"barge-in during double talk {got.get('barge_in_latency_ms')} ms, "
                         f"missed {got.get('barge_in_missed')}")
    return "  " + "; ".join(parts)


def perception(args):
    """The camera path: faces -> the user's FLAME (model user stream) and the gaze target."""
    from facebot.perception.landmarker import PerceptionError
    from facebot.perception.user_perception import PerceptionOptions, UserPerception

    try:
        return UserPerception(PerceptionOptions(model_path=args.face_landmarker))
    except PerceptionError as err:
        raise UserError(f"{err} (or run with --no-perception)") from None


def _run_inputs(args, t0_ns: int):
    from facebot.pipeline.sample import ensure_sample
    from facebot.pipeline.sources import FileAudioSource, MicrophoneSource, VideoSource

    if args.input == "mic":
        source = MicrophoneSource(device=_device(args.device), duration_s=args.duration)
        label = "microphone"
    else:
        path = Path(args.input) if args.input else ensure_sample()
        source = FileAudioSource(path, t0_ns=t0_ns)
        label = str(path)
        if source.info.truncated_note:
            print(f"facebot: warning: {source.info.truncated_note}", file=sys.stderr)
    video = VideoSource(args.video, t0_ns) if args.video else None
    return source, video, label


def _bag_inputs(args):
    from facebot.pipeline.bag_source import BagAudioStream, BagInput, RawAudioFormat

    fmt = RawAudioFormat.parse(args.audio_format) if args.audio_format else None
    bag = BagInput(args.input_bag, args.audio_topic, args.camera_topic, fmt)
    if bag.truncated_note:
        print(f"facebot: warning: {bag.truncated_note}", file=sys.stderr)
    return BagAudioStream(bag), bag.camera(), f"{args.input_bag} ({args.audio_topic})"


def _device(spec: str | None):
    return int(spec) if spec is not None and spec.isdigit() else spec
