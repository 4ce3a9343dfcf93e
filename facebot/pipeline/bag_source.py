"""Audio and camera input from a rosbag2 recorded on a robot (MCAP or sqlite3), for `facebot bag`.

Messages are read in bag order and stamped with their header stamp (capture time), falling
back to the time the recorder received them. Audio may be facebot's own AudioChunk, or the
ros-drivers ``audio_common_msgs`` AudioData / AudioDataStamped (raw bytes whose format comes
from an AudioInfo topic in the same bag, or from ``--audio-format``). A malformed message is
dropped and counted; the stream goes on.
"""
from __future__ import annotations

import logging
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np

from facebot import interfaces
from facebot.audio import pcm
from facebot.bagio import mcap_is_truncated, salvage_mcap
from facebot.perception.images import msg_to_rgb
from facebot.pipeline.sources import AudioChunkIn, FrameTimeline, SourceError

LOG = logging.getLogger("facebot.bag")
_AUDIO_TYPES = (
    "facebot/msg/AudioChunk",
    "audio_common_msgs/msg/AudioData",
    "audio_common_msgs/msg/AudioDataStamped",
)
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
MAX_STAMP_NS = (2 ** 31 - 1) * 1_000_000_000  # builtin_interfaces/Time holds int32 seconds


@dataclass(frozen=True)
class RawAudioFormat:
    """The format of header-less raw audio: ``RATE:CHANNELS:ENCODING``, e.g. ``16000:1:S16LE``."""

    sample_rate: int
    channels: int
    encoding: str

    @classmethod
    def parse(cls, spec: str) -> "RawAudioFormat":
        m = re.fullmatch(r"(\d+):(\d+):([A-Za-z0-9]+)", spec.strip())
        if not m:
            raise SourceError(f"--audio-format {spec!r}: expected RATE:CHANNELS:ENCODING, e.g. 16000:1:S16LE")
        fmt = cls(int(m.group(1)), int(m.group(2)), m.group(3).upper())
        if fmt.channels <= 0:
            raise SourceError(f"--audio-format {spec!r}: channels must be positive")
        try:
            pcm.check_sample_rate(fmt.sample_rate)
            pcm.sample_width(fmt.encoding)
        except ValueError as err:
            raise SourceError(f"--audio-format {spec!r}: {err}") from None
        return fmt


def _stamp(msg, received_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is not None:
        ns = interfaces.stamp_to_ns(header.stamp)
        if ns > 0:
            return ns
    return received_ns


class BagInput:
    """Opens a bag once; gives the audio chunks and camera frames of the named topics."""

    def __init__(self, path: str | Path, audio_topic: str, camera_topic: str | None = None,
                 audio_format: RawAudioFormat | None = None) -> None:
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such bag")
        self._reader_cls = AnyReader
        self.truncated_note = ""
        self._salvage_dir = None
        self.read_path = self.path  # what is read: the bag, or the readable part of a cut one
        try:
            topics = self._open()
        except Exception as err:  # rosbags raises several types for unreadable bags
            topics = self._open_salvaged(err)
        if audio_topic not in topics:
            raise SourceError(f"{self.path}: no topic {audio_topic} (topics: {', '.join(sorted(topics)) or 'none'})")
        if topics[audio_topic] not in _AUDIO_TYPES:
            raise SourceError(f"{audio_topic} has type {topics[audio_topic]}; facebot reads {', '.join(_AUDIO_TYPES)}")
        if camera_topic is not None:
            if camera_topic not in topics:
                raise SourceError(f"{self.path}: no topic {camera_topic}")
            if topics[camera_topic] not in _IMAGE_TYPES:
                raise SourceError(f"{camera_topic} has type {topics[camera_topic]}; facebot reads {', '.join(_IMAGE_TYPES)}")
        self.audio_topic, self.camera_topic = audio_topic, camera_topic
        self.audio_type = topics[audio_topic]
        self.info_topics = [t for t, ty in topics.items() if ty == "audio_common_msgs/msg/AudioInfo"]
        self.audio_format = audio_format
        if self.audio_type != "facebot/msg/AudioChunk" and audio_format is None and not self.info_topics:
            raise SourceError(f"{audio_topic} carries raw bytes and the bag has no AudioInfo topic: "
                              "give --audio-format RATE:CHANNELS:ENCODING")
        self.dropped = Counter()
        self.t0_ns = self.start_ns

    def _open(self) -> dict[str, str]:
        with self._reader_cls([self.read_path]) as reader:
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
            self.message_count = sum(c.msgcount for c in reader.connections)
            return {c.topic: c.msgtype for c in reader.connections}

    def _open_salvaged(self, err: Exception) -> dict[str, str]:
        """A bag cut short (power loss): read the part before the cut, with a note saying so."""
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        files = sorted(self.path.glob("*.mcap")) if self.path.is_dir() else [self.path]
        if len(files) != 1 or not mcap_is_truncated(files[0]):
            raise SourceError(f"{self.path}: not a readable rosbag2 ({reason})") from None
        self._salvage_dir = tempfile.TemporaryDirectory(prefix="facebot-salvaged-")
        self.read_path = Path(self._salvage_dir.name) / files[0].name
        kept, total = salvage_mcap(files[0], self.read_path)
        try:
            topics = self._open()
        except Exception as again:
            detail = str(again).splitlines()[0] if str(again) else type(again).__name__
            raise SourceError(f"{self.path}: not a readable rosbag2 ({reason}; the part before the cut "
                              f"is unreadable too: {detail}); try `ros2 bag reindex`") from None
        self.truncated_note = (f"{files[0]}: cut short (no MCAP footer: power loss?); reading the "
                               f"{self.message_count} messages in its first {kept} of {total} bytes "
                               f"(`ros2 bag reindex` repairs the file itself)")
        return topics

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.end_ns - self.start_ns) / 1e9)

    def audio(self) -> Iterator[AudioChunkIn]:
        topics = [self.audio_topic] + self.info_topics
        fmt = self.audio_format
        with self._reader_cls([self.read_path]) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, received_ns, raw in _until_unreadable(reader.messages(connections=conns),
                                                            lambda err: self._drop("unreadable_rest", err)):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as err:  # a corrupt record: count it and go on
                    self._drop("undecodable", err)
                    continue
                if conn.topic != self.audio_topic:
                    if self.audio_format is None:  # the bag's AudioInfo, unless overridden
                        fmt = self._format_from_info(msg) or fmt
                    continue
                try:
                    samples, rate = self._decode(msg, fmt)
                except ValueError as err:
                    self._drop("malformed", err)
                    continue
                if samples.shape[0] == 0:
                    self._drop("empty", None)
                    continue
                try:
                    stamp = _stamp(msg, received_ns)
                except ValueError as err:  # e.g. nanosec >= 1e9: no time to place it at
                    self._drop("bad_stamp", err)
                    continue
                if getattr(msg, "header", None) is None:  # received when complete
                    stamp -= samples.shape[0] * 1_000_000_000 // rate
                if not 0 <= stamp <= MAX_STAMP_NS:  # every output is a ROS message stamped from it
                    self._drop("bad_stamp", f"stamp {stamp} ns is outside ROS time (0 .. 2038)")
                    continue
                yield AudioChunkIn(samples, rate, stamp)

    def _decode(self, msg, fmt: RawAudioFormat | None) -> tuple[np.ndarray, int]:
        if self.audio_type == "facebot/msg/AudioChunk":
            samples, rate = interfaces.audio_from_msg(msg)
            if not np.isfinite(samples).all():
                raise ValueError("non-finite samples")
            return samples, rate
        if fmt is None:
            raise ValueError("raw audio before any AudioInfo message")
        data = msg.audio.data if self.audio_type.endswith("Stamped") else msg.data
        return pcm.decode(bytes(np.asarray(data, np.uint8)), fmt.encoding, fmt.channels), fmt.sample_rate

    def _format_from_info(self, info) -> RawAudioFormat | None:
        try:
            fmt = RawAudioFormat(int(info.sample_rate), int(info.channels), str(info.sample_format).upper())
            pcm.sample_width(fmt.encoding)
            pcm.check_sample_rate(fmt.sample_rate)
            if fmt.channels <= 0 or str(info.coding_format).lower() not in ("wave", "raw", ""):
                raise ValueError(f"unsupported AudioInfo {info}")
            return fmt
        except (ValueError, AttributeError) as err:
            self._drop("bad_audio_info", err)
            return None

    def _drop(self, reason: str, err) -> None:
        self.dropped[reason] += 1
        if self.dropped[reason] <= 3 or self.dropped[reason] % 100 == 0:  # rate-limited log
            LOG.warning("dropped %s message #%d on %s: %s", reason, self.dropped[reason], self.audio_topic, err)

    def camera(self) -> "BagCamera | None":
        return BagCamera(self) if self.camera_topic else None


def _until_unreadable(messages, on_error):
    """The bag's messages until reading fails (a corrupt chunk, a cut file): ``on_error(err)``
    once, then the end, so a damaged bag is read as far as it is readable."""
    try:
        yield from messages
    except Exception as err:  # rosbags raises several types for damaged data
        on_error(err)


class BagAudioStream:
    """A bag's audio as a session source (iterable of chunks, with ``t0_ns`` and duration)."""

    def __init__(self, bag: BagInput) -> None:
        self.bag = bag
        self.t0_ns = bag.t0_ns
        self.duration_s = bag.duration_s
        # the session copies a truncation note into summary.json, as for a truncated WAV
        self.info = SimpleNamespace(truncated_note=bag.truncated_note) if bag.truncated_note else None

    @property
    def dropped(self) -> Counter:
        return self.bag.dropped

    def __iter__(self) -> Iterator[AudioChunkIn]:
        return self.bag.audio()


class BagCamera:
    """Camera frames of a bag, served by time like ``sources.VideoSource.frame_at``."""

    def __init__(self, bag: BagInput) -> None:
        self._bag = bag
        self._reader = bag._reader_cls([bag.read_path])
        self._reader.open()
        conns = [c for c in self._reader.connections if c.topic == bag.camera_topic]
        self._messages = _until_unreadable(self._reader.messages(connections=conns), self._unreadable)
        self._timeline = FrameTimeline(self._read)
        self.dropped = 0  # undecodable or malformed images, and the unreadable rest of a bag

    def _unreadable(self, err) -> None:
        self.dropped += 1
        LOG.warning("camera: the rest of %s is unreadable: %s", self._bag.camera_topic, err)

    def _read(self):
        for conn, received_ns, raw in self._messages:
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
                rgb = msg_to_rgb(msg)
                stamp = _stamp(msg, received_ns)
            except Exception:  # malformed image or stamp: counted, skipped
                self.dropped += 1
                continue
            return rgb, stamp
        return None

    def frame_at(self, stamp_ns: int):
        return self._timeline.at(stamp_ns)

    def close(self) -> None:
        self._reader.close()
