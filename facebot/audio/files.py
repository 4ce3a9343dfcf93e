"""Reading and writing audio files, with one-line errors a person can act on.

Reading goes through libsndfile (soundfile), so WAV in any PCM or float format, FLAC and
Ogg all work. Problems are raised as ``AudioFileError`` whose message names the file and
the problem; nothing here prints a traceback at a user.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from facebot.audio.pcm import check_sample_rate
from facebot.errors import FacebotError

# Streaming writers (espeak-ng to a pipe, arecord) leave these "unknown length" sizes.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF}


class AudioFileError(FacebotError):
    """A file that cannot be used as audio; ``str()`` is the one-line reason with the path."""


@dataclass
class AudioFileInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    truncated_note: str = ""  # set when the header promises more audio than the file holds

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) byte counts of a RIFF/WAVE data chunk, or None if not found."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                return None
            cid, clen = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"data":
                return clen, size - f.tell()
            f.seek(clen + (clen & 1), os.SEEK_CUR)


def _checked_header(path: str | os.PathLike) -> tuple[Path, "sf._SoundFileInfo", str]:
    """(path, libsndfile's info, a truncation note or "") once the file is known to be usable audio."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioFileError(f"{p}: empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(f"{p}: not a readable audio file ({_short(err)})") from None
    try:
        check_sample_rate(info.samplerate)
    except ValueError as err:
        raise AudioFileError(f"{p}: header says {err}; refusing it") from None
    note = ""
    declared = _wav_declared_data_bytes(p) if info.format in ("WAV", "WAVEX") else None
    if declared and declared[0] not in _UNKNOWN_SIZES and declared[0] > declared[1]:
        note = (
            f"{p}: truncated: header declares {declared[0]} bytes of audio, file holds "
            f"{declared[1]}; using the {info.frames / info.samplerate:.2f} s present"
        )
    return p, info, note


def _check_finite(p: Path, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        raise AudioFileError(f"{p}: contains NaN or infinite samples")


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, AudioFileInfo]:
    """Whole file -> (float32 [frames, channels] in [-1, 1], info). Raises AudioFileError."""
    p, info, note = _checked_header(path)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(f"{p}: could not decode audio ({_short(err)})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: contains no audio samples")
    _check_finite(p, data)
    return data, AudioFileInfo(str(p), int(rate), int(data.shape[1]), int(data.shape[0]), info.subtype, note)


def scan_audio(path: str | os.PathLike, block_frames: int = 1 << 16) -> AudioFileInfo:
    """``read_audio``'s checks over the whole file, decoded block by block and not kept: a long
    recording is refused (or described) before a session starts, without holding it."""
    p, info, note = _checked_header(path)
    frames = sum(block.shape[0] for block in audio_blocks(p, block_frames))
    if frames == 0:
        raise AudioFileError(f"{p}: contains no audio samples")
    return AudioFileInfo(str(p), int(info.samplerate), int(info.channels), frames, info.subtype, note)


def audio_blocks(path: str | os.PathLike, block_frames: int) -> Iterator[np.ndarray]:
    """The file decoded ``block_frames`` at a time (float32 ``[frames, channels]``)."""
    p = Path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                _check_finite(p, block)
                yield block
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioFileError(f"{p}: could not decode audio ({_short(err)})") from None


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Writes float samples ([frames] or [frames, channels]) clipped to [-1, 1]."""
    x = np.clip(np.nan_to_num(np.asarray(samples, np.float32)), -1.0, 1.0)
    sf.write(str(path), x, sample_rate, subtype=subtype)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.replace("Error opening ", "").strip()
