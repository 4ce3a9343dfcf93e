"""How the command line turns a user-fixable error into one line and exit status 2."""
from __future__ import annotations

import errno

from facebot.errors import FacebotError

EXIT_USAGE = 2
# A full, read-only or vanished output location: the session removed its partial output.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.ENOENT}


class UserError(FacebotError):
    """Raised by the commands themselves for a bad combination of flags or inputs."""


def write_error(err: OSError) -> UserError | None:
    """The one line for an output location that cannot be written, or None (a bug)."""
    if err.errno not in WRITE_ERRNOS:
        return None
    return UserError(f"{err.filename or 'output'}: {err.strerror}; no output kept")
