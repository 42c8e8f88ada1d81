"""``calibration install|rollback|history``: the one parser and runner, standard library only.

Shared by ``python -m client calibration`` and ``python -m calibration`` (which runs in the server's
container, where the deployment installs the calibrations it is given at start).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from contract import Exit, Score, program_name

MANAGE_DESCRIPTION = (
    "Manage the calibrations of a model repository. Every install and rollback is recorded in the version "
    "folder's calibration_history.jsonl with who and when; a running server applies the change from its next "
    "request. Exit 0 when done, 2 when refused (nothing is changed)."
)
#: Who acts, for the history, when --by is not given: this variable, else the login name.
USER_ENV = "DEEPFAKE_USER"


def default_user() -> str:
    return os.environ.get(USER_ENV) or getpass.getuser()


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a version number of at least 1, got {value}")
    return value


def add_actions(parser: argparse.ArgumentParser) -> None:
    """The actions ``install``, ``rollback`` and ``history`` under ``parser``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install_parser = actions.add_parser(
        "install", help="install a calibration.json beside the version it was fitted for"
    )
    install_parser.add_argument("file", metavar="FILE", help="a calibration.json written by calibrate (or by train)")
    install_parser.add_argument(
        "--version", type=_version, metavar="V", help="the version (needed when FILE names none)"
    )
    parsers = [install_parser]
    for name, text in (
        ("rollback", "put back the calibration installed before the current one (or none: uncalibrated)"),
        ("history", "list the installs and rollbacks of a version"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--model", required=True, metavar="NAME", help="the classifier, e.g. resnext_lstm_20")
        action.add_argument("--version", required=True, type=_version, metavar="V", help="its version")
        action.add_argument(
            "--score",
            choices=[score.value for score in Score],
            default=Score.DEEPFAKE.value,
            help="which score's calibration (default: %(default)s)",
        )
        parsers.append(action)
    for action in parsers:
        action.add_argument("--repository", required=True, metavar="DIR", help="the model repository")
        action.add_argument("--by", default=None, metavar="WHO", help=f"who acts (default: ${USER_ENV} or the login)")


def manage(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Runs the parsed action; returns the exit status."""
    # Imported here: installing reads a version's export.json (triton_models.versions), which the
    # page's image, whose client imports this module, does not carry.
    from .install import InstallError, history, install, rollback

    by = args.by or default_user()
    repository = Path(args.repository)
    try:
        if args.action == "install":
            done = install(Path(args.file), repository, by=by, version=args.version)
            print(f"installed {done.path} ({done.sha256[:12]}, replacing {_short(done.previous_sha256)})", file=out)
        elif args.action == "rollback":
            done = rollback(repository, args.model, args.version, Score(args.score), by=by)
            print(f"rolled back {done.path}: {_short(done.previous_sha256)} -> {_short(done.sha256)}", file=out)
        else:
            for record in history(repository, args.model, args.version):
                print(
                    f"{record.get('at')}  {record.get('by')}  {record.get('action')} {record.get('score')}  "
                    f"{_short(record.get('previous_sha256'))} -> {_short(record.get('sha256'))}",
                    file=out,
                )
    except InstallError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    return Exit.OK


def _short(sha: str | None) -> str:
    return "none (uncalibrated)" if sha is None else sha[:12]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("calibration"), description=MANAGE_DESCRIPTION)
    add_actions(parser)
    return manage(parser.parse_args(argv), sys.stdout, sys.stderr)
