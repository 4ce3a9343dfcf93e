"""What `facebot eval` reads: a `facebot run` folder, a rosbag2 or a stereo WAV, put on one
heard timeline (seconds since the first sample: the user's audio at its capture time, the
robot's at the time it was heard, the face at the time it was shown).

Anything missing or mixed up is an ``EvalInputError`` whose message is one line naming what.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebot.errors import FacebotError

RATE = 24000
NS = 1_000_000_000
RUN_FILES = ("user.wav", "robot.wav", "summary.json", "flame.npz")


class EvalInputError(FacebotError):
    """An input that cannot be evaluated; ``str()`` is one line naming the problem."""


@dataclass
class JawTrack:
    """A jaw signal on the heard timeline (FLAME jaw_pose[0] as shown, or the jaw command)."""

    t_s: np.ndarray
    value: np.ndarray


@dataclass
class Conversation:
    name: str
    path: str
    user: np.ndarray  # mono float32 at RATE
    robot: np.ndarray  # mono float32 at RATE, same timeline and length
    flame_t_s: np.ndarray | None = None  # show times of the FLAME frames
    flame_sequence: np.ndarray | None = None
    jaw_shown: JawTrack | None = None
    jaw_command: JawTrack | None = None  # at the time it is meant to be reached (show time)
    head_counters: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.user.shape[0] / RATE


def load(path: str | Path, user_topic: str = "/audio/in", robot_topic: str = "/audio/out",
         audio_format: str | None = None) -> Conversation:
    """A run folder, a bag (folder with metadata.yaml, or .mcap / .db3) or a stereo WAV."""
    p = Path(path)
    if not p.exists():
        raise EvalInputError(f"{p}: no such file or folder")
    if (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix in (".mcap", ".db3"):
        return _load_bag(p, user_topic, robot_topic, audio_format)
    if p.is_dir():
        return _load_run(p)
    if p.suffix.lower() in (".wav", ".flac", ".ogg"):
        return _load_stereo(p)
    raise EvalInputError(f"{p}: not a facebot run folder, a rosbag2 or a stereo WAV")


def _read_audio(path: Path, channels: int, what: str) -> list[np.ndarray]:
    """The file's channels at RATE; ``what`` says, in the error, what the file should be."""
    from facebot.audio.files import AudioFileError, read_audio

    try:
        data, info = read_audio(path)
    except AudioFileError as err:
        raise EvalInputError(str(err)) from None
    if info.channels != channels:
        raise EvalInputError(f"{path}: {info.channels} channel(s); {what}")
    return [_to_rate(data[:, c], info.sample_rate) for c in range(channels)]


def _to_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """Whole-signal conversion with soxr, the resampler the loop uses."""
    if rate == RATE:
        return np.asarray(x, np.float32)
    import soxr

    return soxr.resample(np.asarray(x, np.float32), rate, RATE).astype(np.float32)


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(a.shape[0], b.shape[0])
    return np.pad(a, (0, n - a.shape[0])), np.pad(b, (0, n - b.shape[0]))


def _load_stereo(p: Path) -> Conversation:
    user, robot = _read_audio(p, 2, "a WAV input must be stereo (user left, robot right)")
    return Conversation(p.stem, str(p), user, robot, notes=["stereo WAV: no face data"])


def _load_run(p: Path) -> Conversation:
    missing = [f for f in RUN_FILES if not (p / f).is_file()]
    if missing:
        raise EvalInputError(f"{p}: not a complete facebot run folder: missing {', '.join(missing)}")
    try:
        summary = json.loads((p / "summary.json").read_text())
    except (ValueError, OSError) as err:
        raise EvalInputError(f"{p / 'summary.json'}: unreadable ({err})") from None
    if "t0_ns" not in summary or summary["t0_ns"] is None:
        raise EvalInputError(f"{p / 'summary.json'}: no t0_ns (written by an older facebot; run it again)")
    mono = "{} must be mono (conversation.wav, user left and robot right, is evaluated on its own)"
    (user,), (robot,) = (_read_audio(p / f, 1, mono.format(f)) for f in ("user.wav", "robot.wav"))
    user, robot = _same_length(user, robot)
    conv = Conversation(p.name, str(p), user, robot)
    _add_flame(conv, p / "flame.npz", int(summary["t0_ns"]))
    head = summary.get("head")
    if head is not None:
        conv.head_counters = dict(head.get("counters", {}))
        if (p / "joints.csv").is_file():
            conv.jaw_command = _jaw_from_csv(p / "joints.csv")
    else:
        conv.notes.append("no head in this run: no actuator commands")
    return conv


def _add_flame(conv: Conversation, path: Path, t0_ns: int) -> None:
    from facebot.face.flame import FlameTrack

    try:
        track = FlameTrack.load_npz(path)
    except Exception as err:  # a damaged or foreign file
        raise EvalInputError(f"{path}: not a FLAME track ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    t = (track.stamp_ns.astype(np.int64) - t0_ns) / NS
    conv.flame_t_s, conv.flame_sequence = t, track.sequence
    conv.jaw_shown = JawTrack(t, track.jaw_pose[:, 0].astype(np.float64))


def _jaw_from_csv(path: Path) -> JawTrack | None:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "show_time_s" not in reader.fieldnames:
            raise EvalInputError(f"{path}: no show_time_s column (written by an older facebot)")
        if "jaw.pos" not in reader.fieldnames:
            return None
        rows = [(float(r["show_time_s"]), float(r["jaw.pos"])) for r in reader]
    if not rows:
        return None
    arr = np.array(rows)
    return JawTrack(arr[:, 0], arr[:, 1])


def _load_bag(p: Path, user_topic: str, robot_topic: str, audio_format: str | None) -> Conversation:
    from facebot.bagio import bag_topics, read_bag
    from facebot.pipeline.bag_source import BagInput, RawAudioFormat
    from facebot.pipeline.sources import SourceError

    try:
        fmt = RawAudioFormat.parse(audio_format) if audio_format else None
        streams = {side: BagInput(p, topic, None, fmt) for side, topic in (("user", user_topic), ("robot", robot_topic))}
        chunks = {side: list(b.audio()) for side, b in streams.items()}
    except SourceError as err:
        raise EvalInputError(str(err)) from None
    for side, topic in (("user", user_topic), ("robot", robot_topic)):
        if not chunks[side]:
            raise EvalInputError(f"{p}: no usable audio on {topic} (the {side}'s side)")
        channels = {c.samples.shape[1] for c in chunks[side]}
        if channels != {1}:
            raise EvalInputError(f"{p}: {topic} carries {max(channels)}-channel audio; "
                                 f"the {side}'s side must be mono on its own topic")
    t0 = min(chunks[s][0].stamp_ns for s in chunks)
    (user, user_off), (robot, robot_off) = _place(chunks["user"], t0), _place(chunks["robot"], t0)
    user, robot = _same_length(user, robot)
    conv = Conversation(p.name, str(p), user, robot)
    dropped = {f"{side}_{k}": v for side, b in streams.items() for k, v in b.dropped.items()}
    for side, n in (("user", user_off), ("robot", robot_off)):
        if n:
            dropped[f"{side}_rate_changed"] = n
    if dropped:
        conv.notes.append("dropped audio messages: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    topics = bag_topics(p)
    if topics.get("/face/flame", ("",))[0] == "facebot/msg/FlameParams":
        from facebot import interfaces

        stamps, seq, jaw = [], [], []
        for _, _, msg in read_bag(p, ["/face/flame"]):
            stamps.append(interfaces.stamp_to_ns(msg.header.stamp))
            seq.append(int(msg.sequence))
            jaw.append(float(msg.jaw_pose[0]))
        t = (np.array(stamps, np.int64) - t0) / NS
        conv.flame_t_s, conv.flame_sequence = t, np.array(seq, np.int64)
        conv.jaw_shown = JawTrack(t, np.array(jaw))
    else:
        conv.notes.append("no /face/flame topic: no face metrics")
    if topics.get("/joint_states", ("",))[0] == "sensor_msgs/msg/JointState":
        conv.notes.append("/joint_states are stamped at send time: the jaw command lag includes the actuator lead")
        ts, jaw = [], []
        from facebot import interfaces

        for _, _, msg in read_bag(p, ["/joint_states"]):
            if "jaw" in list(msg.name):
                ts.append(interfaces.stamp_to_ns(msg.header.stamp))
                jaw.append(float(msg.position[list(msg.name).index("jaw")]))
        if ts:
            conv.jaw_command = JawTrack((np.array(ts, np.int64) - t0) / NS, np.array(jaw))
    return conv


def _place(chunks, t0_ns: int) -> tuple[np.ndarray, int]:
    """Audio chunks written at their stamps on a timeline from ``t0_ns`` (gaps stay silent),
    and how many chunks were left out because their sample rate differs from the first's."""
    rate = chunks[0].sample_rate
    kept = [c for c in chunks if c.sample_rate == rate]
    left_out, chunks = len(chunks) - len(kept), kept
    starts = [int(round((c.stamp_ns - t0_ns) * rate / NS)) for c in chunks]
    n = max(s + c.samples.shape[0] for s, c in zip(starts, chunks))
    out = np.zeros(n, np.float32)
    for s, c in zip(starts, chunks):
        if s >= 0:
            out[s:s + c.samples.shape[0]] = c.samples[:, 0]
    return _to_rate(out, rate), left_out
