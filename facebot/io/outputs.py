"""Output folders that ``--force`` may replace, and replacing one only once the new one is complete.

``--force`` replaces an earlier facebot output folder and nothing else: not a regular file,
not the working directory or any folder above it, not a folder that holds one of this run's
inputs, and not a folder facebot did not write (recognised by its ``summary.json`` or, for
`facebot eval`, its ``eval.json``). The new
output is built in ``<out>.partial`` and swapped in only when complete, so a failed run
leaves the earlier output in place.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from facebot.errors import FacebotError


class OutputRefused(FacebotError, FileExistsError):
    """``--out`` names something ``--force`` must not replace; ``str()`` is one line."""


def is_facebot_output(folder: Path) -> bool:
    """A folder written by `facebot run` / `facebot bag` (its summary.json says so) or by
    `facebot eval` (its eval.json)."""
    summary, evaluation = _json_object(folder / "summary.json"), _json_object(folder / "eval.json")
    return ("backend" in summary and "counters" in summary) or bool(evaluation)


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def check_replaceable(out: Path, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Raises ``OutputRefused`` unless ``out`` is an earlier facebot output that is safe to replace."""
    if out.is_symlink() or not out.is_dir():
        kind = "a symbolic link" if out.is_symlink() else "a file" if out.exists() else "not a folder"
        raise OutputRefused(f"{out}: is {kind}, not a facebot output folder; --force replaces only those")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputRefused(f"{out}: holds the working directory; --force will not replace it")
    for item in inputs:
        path = Path(item).resolve()
        if path == resolved or resolved in path.parents:
            raise OutputRefused(f"{out}: holds the input {item}; --force will not replace it")
    if not is_facebot_output(out):
        raise OutputRefused(f"{out}: not a facebot output folder (no facebot summary.json or eval.json); "
                            "--force replaces only those")


def publish(partial: Path, out: Path) -> Path:
    """Renames the complete ``partial`` folder to ``out``, replacing an earlier ``out`` only now."""
    if not (out.exists() or out.is_symlink()):
        partial.rename(out)
        return out
    old = out.with_name(f"{out.name}.replaced-{os.getpid()}")
    out.rename(old)
    try:
        partial.rename(out)
    except OSError:
        old.rename(out)  # put the earlier output back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out
