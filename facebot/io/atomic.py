"""Atomic file writes: a kept file is either the old one or the complete new one, never half.

Everything a user keeps (a calibrated config, an .npz, a manifest, an engine, a checkpoint,
summary.json) is written to a temporary file in the same folder, flushed, fsynced and renamed
over the target (``os.replace`` is atomic within one file system), then the folder is fsynced
so that the rename survives a power loss. A failure (full disk, a writer that raises, a kill)
removes the temporary file, leaves the old file byte-identical and, for an ``OSError``,
raises ``AtomicWriteError`` whose message is one line naming the file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from facebot.errors import FacebotError


class AtomicWriteError(FacebotError, OSError):
    """The new file could not be written; the old one (if any) is untouched. One line."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so ``np.savez`` adds none) to write to by
    name; on a clean exit it is fsynced and renamed to ``path``, else removed."""
    target = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                                    dir=target.parent if str(target.parent) else ".")
    except OSError as err:  # a missing or read-only folder
        raise _failed(target, err) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        _copy_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, AtomicWriteError):
            raise _failed(target, err) from None
        raise
    _fsync_folder(target.parent)


def _failed(target: Path, err: OSError) -> AtomicWriteError:
    reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
    return AtomicWriteError(f"{target}: not written ({reason}); the previous file, if any, is unchanged")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing a whole file, atomically (see ``atomic_path``)."""
    if not mode.startswith(("w", "x")) or "+" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a write mode")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as f:
        yield f


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_mode(target: Path, tmp: Path) -> None:
    """The new file keeps the old one's permissions, or gets the usual ones (mkstemp's are 0600)."""
    if target.exists():
        mode = target.stat().st_mode & 0o7777
    else:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask
    os.chmod(tmp, mode)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename durable; some file systems refuse fsync on a folder, which is fine."""
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
