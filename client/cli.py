"""Command line: ``python -m client score|health|explain|web|evaluate|calibrate|calibration|bank|stream``.

The top-level parser and the dispatch; each command lives in :mod:`client.commands`. Exit status
(:class:`contract.Exit`): 0 success; 1 some video could not be scored, a model is not ready, or
explain failed; 2 bad arguments or an unusable results file; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from contract import Exit, program_name

from .commands import bank, calibrate, evaluate, explain, health, reviewers, score, stream, web
from .commands.args import check_tls, connection_parent

#: The commands in the order ``--help`` lists them.
COMMANDS = {
    "score": score,
    "health": health,
    "explain": explain,
    "web": web,
    "evaluate": evaluate,
    "calibrate": calibrate,
    "calibration": calibrate,
    "bank": bank,
    "reviewers": reviewers,
    "cases": reviewers,
    "stream": stream,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m client``."""
    connection = connection_parent()
    parser = argparse.ArgumentParser(
        prog=program_name("client"),
        description="Score videos with the deepfake detector served by Triton (gRPC).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # A module may add several commands (calibrate and calibration): each adds its parsers once.
    for command in dict.fromkeys(COMMANDS.values()):
        command.add_parser(commands, connection)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        out: stream for results (default: stdout).
        err: stream for notes, errors and the progress bar (default: stderr).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    check_tls(parser, args)
    try:
        return COMMANDS[args.command].run(parser, args, out, err)
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return Exit.INTERRUPTED
