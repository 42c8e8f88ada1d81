"""``calibrate SET --out DIR`` (fit an operating point) and ``calibration install|rollback|history``.

The fitting needs the eval extra (scikit-learn), imported when the command runs; installing,
rolling back and reading the history need the standard library only, so they also run inside the
server's container (``python3 -m client calibration ...``).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from calibration.cli import MANAGE_DESCRIPTION, add_actions, default_user, manage
from contract import Exit, Mode, ModeError

from ..api import DeepfakeClient
from .args import (
    add_concurrency_option,
    add_frames_option,
    add_retries_option,
    connection_from_args,
    flag_name,
    model_version,
    non_negative_int,
    positive_int,
    unit_interval,
)
from .evaluate import LAYOUTS

#: A rate strictly between 0 and 1 (``--target-fpr``, ``--target-fnr``, ``--prior``).
rate = unit_interval("rate", inclusive=False)
DEFAULT_TARGET_FPR = 0.01
DEFAULT_TARGET_FNR = 0.05


def add_target_options(parser, reals: str, fakes: str) -> None:
    """``--target-fpr`` and ``--target-fnr``: what the operating point is chosen for (calibrate, train)."""
    parser.add_argument(
        "--target-fpr",
        type=rate,
        default=DEFAULT_TARGET_FPR,
        metavar="F",
        help=f"FAKE at the threshold flagging at most this share of the {reals}; refused when there are too few "
        "to estimate it (default: %(default)s)",
    )
    parser.add_argument(
        "--target-fnr",
        type=rate,
        default=DEFAULT_TARGET_FNR,
        metavar="F",
        help=f"REAL below the threshold missing at most this share of the {fakes}; UNCERTAIN between (default: "
        "%(default)s)",
    )


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        parents=[connection],
        help="fit a calibration and a FAKE / UNCERTAIN / REAL operating point on a labelled set",
        description="Score a labelled set through the server (as evaluate does; or read --scores), fit Platt "
        "scaling of PROB_FAKE and the thresholds for a target false-positive rate (FAKE) and a target "
        "false-negative rate (REAL; UNCERTAIN between), with 95 %% bootstrap and exact intervals, and write "
        "DIR/calibration.json and DIR/calibration.md. --install REPOSITORY puts it beside the classifier "
        "version it was fitted for, where the server applies it from its next request. Refused: a set with "
        "one class, a target FPR the set has too few real videos to estimate (at least "
        "ceil(ln 0.05 / ln(1 - FPR)): 299 for 1 %%). Needs the eval extra. Exit 0 when written (and "
        "installed), 1 when videos are left to score, 2 when it cannot be fitted or installed.",
    )
    calibrate.add_argument("dataset", metavar="SET", nargs="?", help="the labelled set (layouts as evaluate)")
    calibrate.add_argument("--out", required=True, metavar="DIR", help="folder of calibration.json and scores.jsonl")
    calibrate.add_argument(
        "--scores", metavar="FILE", help="fit on an existing scores.jsonl (evaluate's) instead of scoring SET"
    )
    calibrate.add_argument("--layout", choices=LAYOUTS, default="auto", help="how SET is laid out (default: auto)")
    calibrate.add_argument("--compression", metavar="C", help="FaceForensics++: the compression folder to read")
    calibrate.add_argument("--split", metavar="FILE", help="FaceForensics++: an official split file")
    add_frames_option(calibrate)
    which = calibrate.add_mutually_exclusive_group()
    which.add_argument(
        "--original", action="store_true", help="calibrate original_<N>'s score (the original app's preprocessing)"
    )
    which.add_argument("--temporal", action="store_true", help="calibrate temporal_<N>'s score")
    calibrate.add_argument(
        "--model-version",
        type=model_version,
        metavar="V",
        help="the classifier version to calibrate (default: the latest served)",
    )
    add_target_options(calibrate, "real videos", "fakes")
    calibrate.add_argument(
        "--no-uncertain", action="store_true", help="no UNCERTAIN band: REAL below the FAKE threshold"
    )
    calibrate.add_argument(
        "--prior",
        type=rate,
        metavar="P",
        help="the share of fakes expected where it is served (default: the set's own share)",
    )
    calibrate.add_argument(
        "--bootstrap", type=positive_int, default=2000, metavar="B", help="bootstrap rounds (default: %(default)s)"
    )
    calibrate.add_argument(
        "--seed", type=non_negative_int, default=0, metavar="S", help="bootstrap seed (default: %(default)s)"
    )
    calibrate.add_argument("--set-name", metavar="NAME", help="how answers name the set (default: its folder name)")
    calibrate.add_argument(
        "--install",
        metavar="REPOSITORY",
        help="also install it into this model repository, beside the version it was fitted for",
    )
    calibrate.add_argument(
        "--by", default=None, metavar="WHO", help="who installs, for the history (default: $DEEPFAKE_USER or login)"
    )
    add_concurrency_option(calibrate)
    add_retries_option(calibrate)

    calibration = commands.add_parser(
        "calibration",
        help="install a calibration file, roll back to the previous one, or show the history",
        description=MANAGE_DESCRIPTION,
    )
    add_actions(calibration)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "calibration":
        return manage(args, out, err)
    if args.dataset is None and args.scores is None:
        parser.error("calibrate needs SET to score, or --scores FILE")
    if args.dataset is not None and args.scores is not None:
        parser.error("give SET to score or --scores FILE, not both")
    from ..evaluate.command import missing_eval_modules

    missing = missing_eval_modules()
    if missing:
        print(f"error: calibrate needs the eval extra ({', '.join(missing)} missing): pip install '.[eval]'", file=err)
        return Exit.USAGE
    try:
        mode = (
            Mode.ORIGINAL
            if args.original
            else Mode.from_choices(verdict_only=not args.temporal, temporal=args.temporal, spell=flag_name)
        )
    except ModeError as error:
        parser.error(str(error))
    from ..evaluate.calibrate import run_calibrate

    def client_factory() -> DeepfakeClient:
        try:
            return DeepfakeClient(connection_from_args(args))
        except ValueError as error:
            parser.error(str(error))

    if args.by is None:
        args.by = default_user()
    return run_calibrate(client_factory, args, mode, out, err)
