"""``python -m client evaluate DATASET --out DIR``: the command's arguments and its wiring.

The layouts are named here; :mod:`client.evaluate` and its scikit-learn/matplotlib report are
imported only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from contract import Mode, ModeError

from ..api import DeepfakeClient
from .args import (
    add_concurrency_option,
    add_frames_option,
    add_model_version_option,
    add_retries_option,
    connection_from_args,
    flag_name,
    fraction,
    non_negative_int,
    probability,
)

LAYOUTS = ("auto", "folders", "csv", "dfdc", "ffpp", "celebdf")


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        parents=[connection],
        help="score a labelled set of videos and report AUC, log-loss, accuracy, EER per group",
        description="Score a labelled set through the server and write report.md, report.json, "
        "scores.jsonl and PNG plots into --out. DATASET is a folder (real/ + fake/, FaceForensics++, "
        "a DFDC part with metadata.json, Celeb-DF) or a list file (CSV path,label[,group] with "
        "1/fake or 0/real; DFDC metadata.json; Celeb-DF List_of_testing_videos.txt, where 1 means "
        "real). Running the same command again continues an interrupted run. With two or more "
        "--model-version, the set is scored once per version (DIR/v<V>/, each a whole evaluation) and "
        "DIR/comparison.md sets their metrics side by side. Needs the eval "
        "extra: pip install '.[eval]'. Exit 0 when every video was scored or refused, 1 when some "
        "are left for a rerun, 2 on bad arguments, an unreadable set or a results file of "
        "another model.",
    )
    evaluate.add_argument("dataset", metavar="DATASET", help="the labelled set: a folder or a list file")
    evaluate.add_argument("--out", required=True, metavar="DIR", help="folder of the report and of scores.jsonl")
    evaluate.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="how DATASET is laid out (default: %(default)s, from its files)",
    )
    evaluate.add_argument(
        "--compression",
        metavar="C",
        help="FaceForensics++: the compression folder to read (c23, c40, raw) when there are several",
    )
    evaluate.add_argument(
        "--split",
        metavar="FILE",
        help="FaceForensics++: keep only the videos of an official split file (splits/test.json "
        "of the FaceForensics repository: 140 originals and 140 fakes per method)",
    )
    add_frames_option(evaluate)
    evaluate.add_argument(
        "--all-faces",
        action="store_true",
        help="score every face (faces_<N>): adds the mean-of-per-frame-max-over-faces aggregation",
    )
    evaluate.add_argument(
        "--temporal",
        action="store_true",
        help="score with the trained temporal model (temporal_<N>, where one is served)",
    )
    add_model_version_option(evaluate, several=True)
    evaluate.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        metavar="T",
        help="a score at or above T counts as FAKE (default: %(default)s, the original app's rule)",
    )
    evaluate.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        metavar="F",
        help="choose each threshold on a seeded share F of the videos (best balanced accuracy) "
        "and report the metrics of the rest (default: use --threshold on every video)",
    )
    evaluate.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="seed of the validation split (default: %(default)s)",
    )
    add_concurrency_option(evaluate)
    add_retries_option(evaluate)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..evaluate.command import run_evaluate

    def client_factory() -> DeepfakeClient:
        try:
            return DeepfakeClient(connection_from_args(args))
        except ValueError as error:
            parser.error(str(error))

    try:
        mode = Mode.from_choices(all_faces=args.all_faces, temporal=args.temporal, spell=flag_name)
    except ModeError as error:
        parser.error(str(error))
    versions = args.model_versions or []
    if len(set(versions)) != len(versions):
        parser.error(f"--model-version names a version twice: {' '.join(map(str, versions))}")
    return run_evaluate(client_factory, args, mode, out, err)
