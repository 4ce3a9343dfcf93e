"""The one base class of errors a user can fix: their message is a complete line.

The command line prints such an error as ``facebot: error: <message>`` and exits 2; anything
else is a bug in facebot and keeps its traceback. Nodes log the message and stay up.
"""


class FacebotError(Exception):
    """A bad file, setting, device or missing dependency, explained in one line."""
