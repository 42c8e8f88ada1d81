"""``python -m client score VIDEO...``: score videos, print a line (or JSON) each, resume with ``--output``."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from typing import TextIO

from contract import MODEL_KEY, Exit, Mode, ModeError

from ..api import DeepfakeClient
from ..batch import (
    Outcome,
    ResultsFile,
    backoff_delays,
    other_models,
    read_results,
    run_batch,
    unique_videos,
    video_key,
)
from ..codec import demo_warning
from ..errors import ClientError
from ..progress import Console
from .args import (
    add_concurrency_option,
    add_frames_option,
    add_retries_option,
    connection_from_args,
    flag_name,
)

#: Fewer videos than this finish too fast for a progress bar to help.
PROGRESS_MIN_VIDEOS = 2


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    score = commands.add_parser(
        "score",
        parents=[connection],
        help="score videos",
        description="Score videos. Exit 0 when every video was scored, 1 otherwise "
        "(videos skipped from --output count by their recorded outcome).",
    )
    score.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_frames_option(score)
    score.add_argument("--json", action="store_true", help="print one JSON object per video")
    score.add_argument(
        "--verdict-only",
        action="store_true",
        help="ask for the clip's score alone (verdict_<N>): no per-frame scores "
        "(frame_prob_fake_mean is null), about half the server's work per video on CPU",
    )
    score.add_argument(
        "--all-faces",
        action="store_true",
        help="score every face the server follows (faces_<N>, up to its max_faces): the --json line "
        "gains face_tracks (one object per face), max_prob_fake (is any face fake) and faces_seen; "
        "the other keys keep describing the main face",
    )
    score.add_argument(
        "--original",
        action="store_true",
        help="the original app's answer (original_<N>): its frames, dlib's face detector and tight "
        "crops, the first face dlib returns; slower (about 0.7 s of one core per 1080p frame)",
    )
    add_concurrency_option(score)
    score.add_argument(
        "--output",
        metavar="FILE",
        help="append one JSON line per finished video to FILE; videos already in FILE "
        "are skipped, so the same command resumes an interrupted batch",
    )
    add_retries_option(score)


def mode_of(args: argparse.Namespace) -> Mode:
    """The mode of ``--verdict-only``, ``--all-faces`` and ``--original``.

    Raises:
        ModeError: flags that do not combine, named as the command line spells them.
    """
    return Mode.from_choices(args.verdict_only, args.all_faces, args.original, spell=flag_name)


def warn_if_demo(client: DeepfakeClient, err: TextIO) -> None:
    """Prints the demo-checkpoint warning on ``err`` when ``model_info`` says so.

    On stderr, so that ``--json`` lines stay as they are. A server without ``model_info`` (or one
    that cannot be asked now) gets no warning: the request that follows reports the trouble.
    """
    try:
        info = client.model_info()
    except ClientError:
        return
    warning = demo_warning(info)
    if warning is not None:
        print(warning, file=err)


def format_result_line(record: dict, frames: int) -> str:
    """The human-readable line of a scored video's JSON record."""
    frame_mean = record["frame_prob_fake_mean"]
    return (
        f"{record['video']}: prob_fake {record['prob_fake']:.4f}  "
        + ("" if frame_mean is None else f"frame mean {frame_mean:.4f}  ")
        + f"{record['label']} {record['confidence']:.1f}%  "
        f"faces {record['faces_found']}/{frames}  "
        f"frames decoded {record['frames_decoded']}  "
        f"{record['latency_ms']:.0f} ms"
        + (
            ""
            if record.get("face_tracks") is None
            else f"\n  any face fake {record['max_prob_fake']:.4f}  faces scored {len(record['face_tracks'])} "
            f"of {record['faces_seen']} seen: "
            + ", ".join(f"#{i + 1} {track['prob_fake']:.4f}" for i, track in enumerate(record["face_tracks"]))
        )
    )


def check_results_model(done: dict[str, dict], model: str) -> None:
    """Refuses to resume a results file written for another model (another mode or length).

    Raises:
        ValueError: a line was scored by another model, or names none (the message says which).
    """
    others = other_models(done, model)
    if others:
        written = f"by {others[0]}" if others[0] is not None else "without the model's name"
        raise ValueError(
            f"lines of it were written {written}, this run asks {model}; "
            "resume with the same options (--frames, --original, --all-faces, --verdict-only) "
            "or write to another file"
        )


@dataclass
class _BatchTally:
    """Counts of one ``score`` run."""

    planned: int
    finished: int = 0
    failed: int = 0
    unrecorded: int = 0
    server_gone: bool = False

    @property
    def not_attempted(self) -> int:
        return self.planned - self.finished


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        mode = mode_of(args)
    except ModeError as error:
        parser.error(str(error))
    model = mode.model(args.frames)
    videos = unique_videos(args.videos)
    done: dict[str, dict] = {}
    results = None
    if args.output is not None:
        try:
            done = read_results(args.output)
            check_results_model(done, model)
            results = ResultsFile(args.output)
        except (OSError, ValueError) as error:
            print(f"error: cannot use --output {args.output}: {error}", file=err)
            return Exit.USAGE
    todo = [video for video in videos if video_key(video) not in done]
    skipped = [done[video_key(video)] for video in videos if video_key(video) in done]
    earlier_failures = sum(record.get("error") is not None for record in skipped)
    try:
        client = DeepfakeClient(connection_from_args(args))
    except ValueError as error:
        if results is not None:
            results.close()
        parser.error(str(error))

    show_bar = len(todo) >= PROGRESS_MIN_VIDEOS and err.isatty()
    console = Console(out, err, total=len(todo), show_bar=show_bar)
    if results is not None and results.cut_bytes:
        console.note(f"removed an incomplete last line ({results.cut_bytes} bytes) from {args.output}")
    if skipped:
        console.note(
            f"skipping {len(skipped)} video(s) already in {args.output}"
            + (f" ({earlier_failures} recorded as failed)" if earlier_failures else "")
        )
    try:
        with client:
            if todo:
                warn_if_demo(client, err)
            tally = _run_batch(client, todo, args, mode, console, results)
    except KeyboardInterrupt:
        console.close()
        console.note("interrupted; rerun the same command to score the remaining videos")
        return Exit.INTERRUPTED
    finally:
        console.close()
        if results is not None:
            results.close()
    _summarise(console, tally, args)
    all_scored = tally.not_attempted == 0 and tally.failed == 0 and earlier_failures == 0
    return Exit.OK if all_scored else Exit.FAILED


def _run_batch(
    client: DeepfakeClient,
    todo: list[str],
    args: argparse.Namespace,
    mode: Mode,
    console: Console,
    results: ResultsFile | None,
) -> _BatchTally:
    tally = _BatchTally(planned=len(todo))
    model = mode.model(args.frames)

    def on_retry(video: str, error: ClientError, attempt: int, wait_s: float) -> None:
        console.note(f"{video}: {error.status}: {error.message}; retry {attempt}/{args.retries} in {wait_s:.1f} s")

    console.draw()
    for outcome in run_batch(
        lambda video: client.score(video, args.frames, mode=mode),
        todo,
        concurrency=args.concurrency,
        delays=backoff_delays(args.retries),
        rng=random.Random(),
        on_retry=on_retry,
        mode=mode,
    ):
        if results is not None and outcome.final:
            # The file's lines also name the model, so that a resumed run cannot mix two modes.
            results.append({**outcome.record, MODEL_KEY: model})
        tally.finished += 1
        tally.failed += not outcome.ok
        tally.unrecorded += not outcome.final
        _print_outcome(console, outcome, args)
        console.advance(failed=not outcome.ok)
        if outcome.server_gone:
            # Every further video would wait through the same retries.
            tally.server_gone = True
            break
    return tally


def _print_outcome(console: Console, outcome: Outcome, args: argparse.Namespace) -> None:
    if args.json:
        console.result(json.dumps(outcome.record))
    elif outcome.ok:
        console.result(format_result_line(outcome.record, args.frames))
    else:
        console.note(f"{outcome.video}: error {outcome.status}: {outcome.record['error']}")


def _summarise(console: Console, tally: _BatchTally, args: argparse.Namespace) -> None:
    if tally.server_gone and tally.not_attempted:
        console.note(
            f"stopped: the server at {args.url} stayed unreachable through {args.retries} "
            f"retries; {tally.not_attempted} video(s) not attempted"
        )
    if tally.planned == 0:
        console.note("nothing left to score")
    elif tally.planned >= PROGRESS_MIN_VIDEOS:
        summary = f"scored {tally.finished - tally.failed} of {tally.planned} video(s)"
        if tally.failed:
            summary += f", {tally.failed} failed"
        missing = tally.unrecorded + tally.not_attempted
        if args.output is not None and missing:
            summary += f"; {missing} not in {args.output}, rerun the same command to score them"
        console.note(summary)
