"""Where a command writes: the output folder, replacing an earlier one, and what is in it."""
from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from facebot.cli.errors import UserError

# flags that name something the run reads: --force must never replace a folder holding one
INPUT_ARGS = ("input", "inputs", "input_bag", "video", "config", "pipeline_config", "head", "display", "weights",
              "mimi_weights", "tokenizer", "face_weights", "export_dir")
DESCRIBED = {
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


def out_dir_in_place(args) -> Path:
    """The output folder of a command that writes in place (eval): an earlier facebot output
    it may replace (facebot.io.outputs) is removed first."""
    out, replace = session_out_dir(args)
    if replace:
        shutil.rmtree(out)
    return out


def session_out_dir(args) -> tuple[Path, bool]:
    """The output folder, and whether it replaces an earlier one (only once the new one is
    complete, and only an earlier facebot output: facebot.io.outputs)."""
    from facebot.io.outputs import check_replaceable

    if args.out:
        out = Path(args.out)
        if out.exists() or out.is_symlink():
            if not args.force:
                raise UserError(f"{out}: output folder already exists (use --force to replace it)")
            values = [getattr(args, a, None) for a in INPUT_ARGS]
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


def print_outputs(out: Path) -> None:
    """What the session folder holds, and the `latest` link next to it."""
    print(f"\noutputs in {out}/")
    for name, what in DESCRIBED.items():
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
