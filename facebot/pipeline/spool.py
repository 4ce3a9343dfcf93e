"""Per-frame data kept on disk while a session runs, so that its memory does not grow with its length.

A ``Spool`` appends rows of one dtype and shape to a raw file and reads them back with plain
reads (a slice, some columns block by block, or all of a small one), never mapped: mapped
pages would count in the process's memory as they are touched. ``save_npz`` wraps spools into an ``.npz`` exactly as ``np.savez`` lays it out (one
uncompressed ``.npy`` entry per array, header then the raw rows), copying block by block.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

from facebot.io.atomic import atomic_path

COPY_BLOCK = 1 << 20


class Spool:
    """Rows of ``dtype`` and ``row_shape`` appended to ``path`` as they come."""

    def __init__(self, path: str | Path, dtype, row_shape: tuple[int, ...] = ()) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.count = 0
        self._file = open(self.path, "wb")

    def append(self, rows) -> None:
        """Appends one row (shape ``row_shape``) or several (``[n, *row_shape]``)."""
        arr = np.ascontiguousarray(rows, self.dtype)
        if arr.shape == self.row_shape:
            arr = arr.reshape(1, *self.row_shape)
        if arr.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {self.row_shape} expected, got {arr.shape}")
        self._file.write(arr.tobytes())
        self.count += arr.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, *self.row_shape)

    @property
    def _row_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.row_shape))

    def read(self) -> np.ndarray:
        """Everything appended so far, loaded: for spools of a few values per frame."""
        return self[0:self.count]

    def __getitem__(self, rows: slice) -> np.ndarray:
        """Rows ``start:stop`` (step 1), read from disk."""
        start, stop, step = rows.indices(self.count)
        if step != 1:
            raise ValueError("a spool is read in contiguous rows")
        self._flush()
        n = max(0, stop - start)
        with open(self.path, "rb") as f:
            f.seek(start * self._row_bytes)
            data = f.read(n * self._row_bytes)
        return np.frombuffer(data, self.dtype).reshape(n, *self.row_shape).copy()

    def columns(self, indices: list[int], block_rows: int = 1 << 16) -> list[np.ndarray]:
        """Some columns of a 2-D spool, read block by block (the rest is never held)."""
        out = [np.empty(self.count, self.dtype) for _ in indices]
        for start in range(0, self.count, block_rows):
            block = self[start:start + block_rows]
            for column, j in zip(out, indices):
                column[start:start + block.shape[0]] = block[:, j]
        return out

    def copy_npy(self, out) -> None:
        """Writes the rows as an ``.npy`` stream (format 1.0 header, C order) to ``out``."""
        self._flush()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(out, header)
        with open(self.path, "rb") as raw:
            shutil.copyfileobj(raw, out, COPY_BLOCK)

    def _flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def save_npz(path: str | Path, arrays: dict[str, Spool | np.ndarray]) -> None:
    """``np.savez(path, **arrays)`` where spools are streamed from disk; written atomically."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_STORED,
                                                   allowZip64=True) as zipf:
        for name, value in arrays.items():
            with zipf.open(name + ".npy", "w", force_zip64=True) as entry:
                if isinstance(value, Spool):
                    value.copy_npy(entry)
                else:
                    np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
