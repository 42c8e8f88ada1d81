"""``python -m client explain VIDEO --out DIR``: each frame's face crop and heatmap overlay as PNG files."""

from __future__ import annotations

import argparse
import random
from typing import TextIO

from contract import Exit, Kind, Mode, model_name

from ..api import DeepfakeClient
from ..batch import backoff_delays, call_with_retries
from ..errors import ClientError, MissingExtraError
from ..explain import require_pillow, write_explanation
from .args import add_frames_option, add_model_version_option, add_retries_option, connection_from_args
from .score import RunRefused, prepare_version


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    explain = commands.add_parser(
        "explain",
        parents=[connection],
        help="write face crops and heatmaps of one video",
        description="Write each frame's face crop and its heatmap overlay as PNG files, "
        "plus summary.json. Needs pillow.",
    )
    explain.add_argument("video", metavar="VIDEO", help="video file")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    add_frames_option(explain)
    add_model_version_option(explain)
    add_retries_option(explain)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        require_pillow()
    except MissingExtraError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    try:
        client = DeepfakeClient(connection_from_args(args))
    except ValueError as error:
        parser.error(str(error))

    def on_retry(error: ClientError, attempt: int, wait_s: float) -> None:
        print(
            f"{args.video}: {error.status}: {error.message}; retry {attempt}/{args.retries} in {wait_s:.1f} s", file=err
        )

    try:
        with client:
            # explain_<N> calls the classifiers deepfake_<N> calls: the same versions.
            prepare_version(client, args.frames, Mode.SCORE, args.model_version, {}, err)
            result = call_with_retries(
                lambda: client.explain(args.video, args.frames, version=args.model_version),
                backoff_delays(args.retries),
                rng=random.Random(),
                on_retry=on_retry,
            )
    except RunRefused as refusal:
        print(f"error: {refusal.message}", file=err)
        return refusal.status
    except ClientError as error:
        print(f"{args.video}: error {error.status}: {error.message}", file=err)
        return Exit.FAILED
    try:
        write_explanation(result, args.out, model_name(Kind.EXPLAIN, args.frames))
    except OSError as error:
        print(f"error: cannot write to '{args.out}': {error}", file=err)
        return Exit.FAILED
    frames = len(result.frame_prob_fake)
    print(
        f"{result.video}: {result.label} {result.confidence:.1f}% "
        f"(prob_fake {result.prob_fake:.4f}, frame mean {result.frame_prob_fake_mean:.4f}, "
        f"version {result.model_version}); "
        f"wrote {2 * frames} PNG files and summary.json to {args.out}",
        file=out,
    )
    return Exit.OK
