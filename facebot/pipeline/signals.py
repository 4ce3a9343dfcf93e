"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack, so a session removes
its ``<out>.partial`` folder on the way out. SIGTERM (``kill``, ``timeout``, systemd) and
SIGHUP (a closed terminal or SSH session) would end the process on the spot and leave the
partial folder behind. ``stop_on_signals`` makes them raise ``Stopped`` instead, a
``BaseException`` like ``KeyboardInterrupt``, so the same clean-up runs; the command then
exits with the signal's code, 128 + N, as a shell expects.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The process was asked to stop by ``signum``; ``exit_code`` is 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(signals=STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first of ``signals`` raises ``Stopped`` in the main thread; a
    repeat is ignored so that the clean-up it started can finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"stopping": False}

    def handler(signum, frame):
        if state["stopping"]:
            return
        state["stopping"] = True
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
