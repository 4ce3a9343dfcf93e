"""rosbag2 (MCAP) recording and reading without ROS, through rosbags.

``BagRecorder`` writes a rosbag2 bag (format version 9, MCAP storage) whose connections carry
their full message definitions (facebot/msg types included), so ``ros2 bag``, Foxglove and
``rosbags.highlevel.AnyReader`` read it back without any type registration.

A bag is complete only when its ``metadata.yaml`` exists: rosbags writes it last, through a
temporary file and an atomic rename, after the MCAP summary and footer. If the ``with`` block
raises, or closing fails, the recorder aborts instead: the MCAP file is closed without summary
or footer, no ``metadata.yaml`` is written, and an ``INCOMPLETE`` text file naming the error is
left beside it. Such a directory is refused by readers (rosbags, ``ros2 bag info``) rather than
mistaken for a finished recording; the messages already written stay on disk for forensics
(``ros2 bag reindex`` can often recover them).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from facebot import interfaces

INCOMPLETE_MARKER = "INCOMPLETE"


def _full_type(msgtype: str, store: Typestore) -> str:
    """Accept ``'facebot/msg/FlameParams'``, ``'facebot/FlameParams'`` or ``'FlameParams'``."""
    if msgtype in store.types:
        return msgtype
    parts = msgtype.split("/")
    if len(parts) == 2 and f"{parts[0]}/msg/{parts[1]}" in store.types:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 1 and f"{interfaces.PACKAGE}/msg/{msgtype}" in store.types:
        return f"{interfaces.PACKAGE}/msg/{msgtype}"
    raise ValueError(f"unknown message type {msgtype!r}")


class BagRecorder:
    """Context manager writing messages to a new rosbag2 MCAP bag at ``path`` (a directory).

    ``topics`` maps each topic name to its message type (``'facebot/msg/FlameParams'``,
    ``'sensor_msgs/msg/Image'``, ...). Every topic is registered on entry with the type store
    (:func:`facebot.interfaces.typestore` by default), which embeds the definitions in the bag.

    Example::

        with BagRecorder('out/run1', {'/face/flame': 'facebot/msg/FlameParams'}) as bag:
            bag.write('/face/flame', frame.stamp_ns, flame_to_msg(frame))

    ``write`` errors (unknown topic, a message that does not serialise) raise before anything
    is written, so a caller may catch them and go on recording. An exception that leaves the
    ``with`` block aborts the bag (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        topics: Mapping[str, str],
        *,
        typestore: Typestore | None = None,
    ) -> None:
        self.path = Path(path)
        self.typestore = typestore if typestore is not None else interfaces.typestore()
        if not topics:
            raise ValueError("BagRecorder needs at least one topic")
        self.topics: dict[str, str] = {}
        for topic, msgtype in topics.items():
            if not topic.startswith("/"):
                raise ValueError(f"topic {topic!r} must be absolute (start with '/')")
            self.topics[topic] = _full_type(msgtype, self.typestore)
        self.counts: dict[str, int] = {topic: 0 for topic in self.topics}
        self.complete = False
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> "BagRecorder":
        if self._writer is not None:
            raise RuntimeError(f"bag {self.path} is already open")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already; a bag is never overwritten")
        writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        self._writer = writer
        try:
            for topic, msgtype in self.topics.items():
                self._connections[topic] = writer.add_connection(
                    topic, msgtype, typestore=self.typestore
                )
        except BaseException as exc:
            self.abort(exc)
            raise
        return self

    def close(self) -> None:
        """Finish the bag: MCAP summary and footer, then ``metadata.yaml`` (atomically)."""
        writer = self._writer
        if writer is None:
            return
        try:
            writer.close()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._writer = None
        self.complete = True

    def abort(self, reason: BaseException | str | None = None) -> None:
        """Stop without finishing: no ``metadata.yaml``; an ``INCOMPLETE`` note is left."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - best effort, the original error matters more
                pass
        if self.path.is_dir():
            what = reason if isinstance(reason, str) else (
                f"{type(reason).__name__}: {reason}" if reason is not None else "aborted"
            )
            counts = ", ".join(f"{t}={n}" for t, n in self.counts.items())
            try:
                (self.path / INCOMPLETE_MARKER).write_text(
                    "This bag was not finished (no metadata.yaml, MCAP without summary).\n"
                    f"reason: {what}\nmessages written: {counts}\n",
                    encoding="utf-8",
                )
            except OSError:
                pass

    def __enter__(self) -> "BagRecorder":
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)

    # -- writing ---------------------------------------------------------------------------

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` (CDR) and write it on ``topic`` with receive time ``stamp_ns``."""
        self._connection(topic)  # an unknown topic fails before serialising
        data = self.typestore.serialize_cdr(msg, self.topics[topic], little_endian=True)
        self.write_raw(topic, stamp_ns, data)

    def write_raw(self, topic: str, stamp_ns: int, cdr: bytes) -> None:
        """Writes an already serialised (CDR) message, e.g. as received from a live topic."""
        connection = self._connection(topic)
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise ValueError(f"bag timestamps must be >= 0 ns, got {stamp_ns}")
        self._writer.write(connection, stamp_ns, bytes(cdr))
        self.counts[topic] += 1

    def _connection(self, topic: str):
        if self._writer is None:
            raise RuntimeError(f"bag {self.path} is not open")
        try:
            return self._connections[topic]
        except KeyError:
            raise ValueError(
                f"topic {topic!r} was not declared for bag {self.path} "
                f"(declared: {', '.join(self.topics)})"
            ) from None

    def write_many(self, items: Iterable[tuple[str, int, Any]]) -> None:
        for topic, stamp_ns, msg in items:
            self.write(topic, stamp_ns, msg)


def read_bag(
    path: str | Path, topics: Iterable[str] | None = None
) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(topic, stamp_ns, message)`` from a rosbag2 bag in time order.

    Types come from the definitions embedded in the bag (no registration needed); ``topics``
    limits the output to those topics.
    """
    wanted = set(topics) if topics is not None else None
    with AnyReader([Path(path)]) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        for connection, stamp_ns, raw in reader.messages(connections=connections):
            yield connection.topic, stamp_ns, reader.deserialize(raw, connection.msgtype)


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` of a rosbag2 bag."""
    with AnyReader([Path(path)]) as reader:
        return {name: (info.msgtype or "", info.msgcount) for name, info in reader.topics.items()}


# ------------------------------------------------------------------------------------------
# reading what a power loss left: an MCAP file cut short

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_CHUNK, _OP_DATA_END = 0x06, 0x0F
_RECORD_HEAD = 9  # opcode (1 byte) + length (uint64)


def mcap_is_truncated(path: Path) -> bool:
    """An MCAP file that starts right but does not end with the closing magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, 2)
            if head != MCAP_MAGIC:
                return False
            if size < 16:
                return True
            f.seek(-8, 2)
            return f.read(8) != MCAP_MAGIC
    except OSError:
        return False


def _complete_records(raw: bytes | memoryview, pos: int, end: int):
    """``(opcode, start, stop)`` of each whole record from ``pos``; stops at a cut one."""
    while pos + _RECORD_HEAD <= end:
        length = int.from_bytes(raw[pos + 1:pos + _RECORD_HEAD], "little")
        stop = pos + _RECORD_HEAD + length
        if stop > end:
            return
        yield raw[pos], pos, stop
        pos = stop


def _cut_chunk_records(raw: memoryview, pos: int) -> bytes:
    """The whole records inside an uncompressed chunk that the cut went through (a compressed
    one cannot be read part-way: nothing)."""
    body = pos + _RECORD_HEAD
    if len(raw) < body + 32:
        return b""
    name_len = int.from_bytes(raw[body + 28:body + 32], "little")
    if name_len != 0:  # compressed (zstd, lz4)
        return b""
    records = body + 32 + 8  # after the compression name and the records' size
    stop = records
    for _, _, stop in _complete_records(raw, records, len(raw)):
        pass
    return bytes(raw[records:stop])


def salvage_mcap(src: Path, dst: Path) -> tuple[int, int]:
    """Copies the readable part of a cut MCAP file to ``dst``: every whole record of the data
    section, the whole records of an uncompressed chunk cut in the middle, then a footer
    without a summary (readers scan such a file). Returns (bytes kept, bytes in ``src``)."""
    raw = memoryview(src.read_bytes())
    out = bytearray(MCAP_MAGIC)
    pos = len(MCAP_MAGIC)
    for op, start, stop in _complete_records(raw, pos, len(raw)):
        if op == _OP_DATA_END:
            break
        out += raw[start:stop]
        pos = stop
    else:
        if pos + _RECORD_HEAD <= len(raw) and raw[pos] == _OP_CHUNK:
            out += _cut_chunk_records(raw, pos)
    kept = len(out)
    footer = bytes([0x02]) + (20).to_bytes(8, "little") + bytes(20)  # summary start 0: none
    dst.write_bytes(bytes(out) + footer + MCAP_MAGIC)
    return kept, len(raw)
