"""Where facebot's data files (config/, launch/, urdf/, msg/) are, however it was installed.

One search order for every caller, so a file found in a checkout is also found after
``colcon build`` (``<prefix>/share/facebot``, located through the ament index) and after a
plain ``pip install`` (``sys.prefix/share/facebot``). An installed package must never look
next to its own modules: colcon puts those in ``site-packages``, where no config/ exists.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "facebot"
_CHECKOUT = Path(__file__).resolve().parents[1]


def share_dirs() -> list[Path]:
    """Candidate roots holding config/, launch/, urdf/ and msg/, in search order."""
    out: list[Path] = []
    if (_CHECKOUT / "package.xml").is_file():  # a source checkout or `pip install -e`
        out.append(_CHECKOUT)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        # the ament index's marker file is what get_package_share_directory looks for
        if prefix and (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file():
            out.append(Path(prefix) / "share" / PACKAGE)
    out.append(Path(sys.prefix) / "share" / PACKAGE)
    return out


def share_path(*parts: str) -> Path:
    """The first existing ``<share>/<parts...>``; the checkout's path when none exists (so
    the error that follows names a path a developer recognises)."""
    candidates = [root.joinpath(*parts) for root in share_dirs()]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def config_file(name: str) -> Path:
    """``config/<name>`` of the installed or checked-out package."""
    return share_path("config", name)
