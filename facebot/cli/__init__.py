"""The `facebot` command: the standalone duplex loop and its tools, without ROS.

Errors a user can fix (a bad file, a missing device, a config typo: every
``facebot.errors.FacebotError``) end with one line on stderr and exit status 2; a traceback
means a bug in facebot. SIGTERM and SIGHUP stop a command like Ctrl-C.
"""
from __future__ import annotations

import sys

from facebot.cli.errors import EXIT_USAGE, write_error
from facebot.errors import FacebotError


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGTERM and SIGHUP stop it like Ctrl-C: partial output removed, exit 128 + N."""
    from facebot.pipeline.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            return _main(argv)
    except Stopped as err:
        print(f"facebot: stopped by {err.name}; no output kept", file=sys.stderr)
        return err.exit_code


def _commands():
    from facebot.cli import evaluation, session, tools

    return {"run": session.run_command, "bag": session.run_command, "eval": evaluation.eval_command,
            "sample": tools.sample_command, "corpus": tools.corpus_command, "train": tools.train_command,
            "calibrate": tools.calibrate_command, "flame-convert": tools.flame_convert_command,
            "export": tools.export_command}


def _main(argv: list[str] | None = None) -> int:
    from facebot.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        return _commands()[args.command](args)
    except KeyboardInterrupt:
        print("facebot: interrupted; no output kept", file=sys.stderr)
        return 130
    except FacebotError as err:
        print(f"facebot: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a read-only, full or missing output location: one line, not a traceback
        line = write_error(err)
        if line is None:
            raise
        print(f"facebot: error: {line}", file=sys.stderr)
        return EXIT_USAGE
