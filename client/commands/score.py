"""``python -m client score VIDEO...``: score videos, print a line (or JSON) each, resume with ``--output``."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from typing import TextIO

from calibration.point import describe
from contract import (
    DECISION_KEY,
    KNOWN_MATCH_KEY,
    MODEL_KEY,
    MODEL_VERSION_KEY,
    OPERATING_POINT_KEY,
    Exit,
    Mode,
    ModeError,
)

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
from ..errors import INVALID_ARGUMENT, ClientError
from ..progress import Console
from ..versions import (
    VersionKeeper,
    batch_version,
    check_served,
    no_longer_served,
    other_versions,
    shown_version,
    unloaded_message,
)
from .args import (
    add_concurrency_option,
    add_frames_option,
    add_model_version_option,
    add_retries_option,
    connection_from_args,
    flag_name,
)

#: Fewer videos than this finish too fast for a progress bar to help.
PROGRESS_MIN_VIDEOS = 2
#: The frames of a temporal answer named in its human-readable line, by weight.
TOP_WEIGHTED_FRAMES = 3


class RunRefused(Exception):
    """A run that must not start (or go on): the message says why, ``status`` is the exit status."""

    def __init__(self, status: Exit, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    score.add_argument(
        "--temporal",
        action="store_true",
        help="a trained temporal model's answer (temporal_<N>, where one is served): all N frames "
        "together; the --json line gains frame_weight (how much each frame counted)",
    )
    add_model_version_option(score)
    add_concurrency_option(score)
    score.add_argument(
        "--output",
        metavar="FILE",
        help="append one JSON line per finished video to FILE; videos already in FILE "
        "are skipped, so the same command resumes an interrupted batch",
    )
    add_retries_option(score)


def mode_of(args: argparse.Namespace) -> Mode:
    """The mode of ``--verdict-only``, ``--all-faces``, ``--original`` and ``--temporal``.

    Raises:
        ModeError: flags that do not combine, named as the command line spells them.
    """
    return Mode.from_choices(args.verdict_only, args.all_faces, args.original, spell=flag_name, temporal=args.temporal)


def model_info_or_none(client: DeepfakeClient) -> dict | None:
    """model_info's document, or None from a server without it (or one that cannot be asked now).

    The request that follows reports the trouble; the checks that need the document are skipped.
    """
    try:
        return client.model_info()
    except ClientError:
        return None


def prepare_version(
    client: DeepfakeClient, frames: int, mode: Mode, asked: int | None, done: dict[str, dict], err: TextIO
) -> int | None:
    """Checks the version choice against model_info and the results file; warns of demo checkpoints.

    Returns:
        The version the run's lines must come from (:func:`client.versions.batch_version`), or None
        when nothing says it before the first answer.

    Raises:
        RunRefused: a version not served (exit 2), a temporal model not served (exit 1), or a
            results file of another version (exit 2).
    """
    info = model_info_or_none(client)
    try:
        check_served(info, frames, mode, asked)
    except ClientError as error:
        raise RunRefused(Exit.USAGE if error.status == INVALID_ARGUMENT else Exit.FAILED, error.message) from None
    version = batch_version(info, frames, mode, asked, done)
    try:
        check_results_version(done, version)
    except ValueError as error:
        raise RunRefused(Exit.USAGE, f"cannot use this results file: {error}") from None
    warning = None if info is None else demo_warning(info, frames, mode, version)
    if warning is not None:
        # On stderr, so that --json lines stay as they are.
        print(warning, file=err)
    return version


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
        + ("" if record.get(MODEL_VERSION_KEY) is None else f"  version {record[MODEL_VERSION_KEY]}")
        + (
            ""
            if record.get(DECISION_KEY) is None
            else f"\n  decision {describe(record[DECISION_KEY], record.get(OPERATING_POINT_KEY))}"
        )
        + ("" if KNOWN_MATCH_KEY not in record else f"\n  {describe_match(record[KNOWN_MATCH_KEY])}")
        + (
            ""
            if record.get("frame_weight") is None
            else "\n  frames that counted most: " + weighted_frames(record["frame_weight"])
        )
        + (
            ""
            if record.get("face_tracks") is None
            else f"\n  any face fake {record['max_prob_fake']:.4f}  faces scored {len(record['face_tracks'])} "
            f"of {record['faces_seen']} seen: "
            + ", ".join(f"#{i + 1} {track['prob_fake']:.4f}" for i, track in enumerate(record["face_tracks"]))
        )
    )


def describe_match(known: dict | None) -> str:
    """What the bank said of the video, in one line."""
    if known is None:
        return "bank: no match among the confirmed fakes"
    if known.get("status") != "match":
        return f"bank: UNAVAILABLE ({known.get('reason')}): whether this video is a known fake was not checked"
    start, end = known["query_span"]
    return (
        f"bank: KNOWN {known['label'].upper()}, entry {known['id']} ({100 * known['similarity']:.0f} % of this "
        f"video's frames matched, {start:.1f}-{end:.1f} s)" + (f": {known['note']}" if known.get("note") else "")
    )


def weighted_frames(weights, top: int = TOP_WEIGHTED_FRAMES) -> str:
    """The frames that counted most in a temporal answer: ``#12 31.0%, #3 20.1%, ...`` (1-based, by weight)."""
    order = sorted(range(len(weights)), key=lambda index: (-weights[index], index))[:top]
    return ", ".join(f"#{index + 1} {100.0 * weights[index]:.1f}%" for index in order)


def check_results_version(done: dict[str, dict], version: int | None) -> None:
    """Refuses to resume a results file whose scored lines come from another classifier version.

    Raises:
        ValueError: naming the version of the file's lines and the run's.
    """
    others = other_versions(done, version)
    if others:
        hint = "" if others[0] is None else f"resume with --model-version {others[0]}, or "
        raise ValueError(
            f"lines of it were scored by {shown_version(others[0])} of the classifier, this run's by version "
            f"{version}; {hint}write to another file"
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
            "resume with the same options (--frames, --original, --all-faces, --verdict-only, --temporal) "
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
    version_changed: bool = False

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
            check_results_version(done, args.model_version)
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
            version = args.model_version
            if todo:
                version = prepare_version(client, args.frames, mode, args.model_version, done, err)
            tally = _run_batch(client, todo, args, mode, console, results, VersionKeeper(version))
    except RunRefused as refusal:
        console.close()
        console.note(f"error: {refusal.message}")
        return refusal.status
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
    return Exit.OK if all_scored and not tally.version_changed else Exit.FAILED


def _run_batch(
    client: DeepfakeClient,
    todo: list[str],
    args: argparse.Namespace,
    mode: Mode,
    console: Console,
    results: ResultsFile | None,
    keeper: VersionKeeper,
) -> _BatchTally:
    tally = _BatchTally(planned=len(todo))
    model = mode.model(args.frames)

    def on_retry(video: str, error: ClientError, attempt: int, wait_s: float) -> None:
        console.note(f"{video}: {error.status}: {error.message}; retry {attempt}/{args.retries} in {wait_s:.1f} s")

    console.draw()
    for outcome in run_batch(
        lambda video: client.score(video, args.frames, mode=mode, version=args.model_version),
        todo,
        concurrency=args.concurrency,
        delays=backoff_delays(args.retries),
        rng=random.Random(),
        on_retry=on_retry,
        mode=mode,
    ):
        refusal = None if results is None else keeper.admit(outcome.record)
        if (
            refusal is None
            and results is not None
            and args.model_version is not None
            and outcome.final
            and not outcome.ok
            and no_longer_served(model_info_or_none(client), args.frames, mode, args.model_version)
        ):
            refusal = unloaded_message(args.model_version, outcome.record["error"])
        if refusal is not None:
            # A results file holds one version's answers: stop before writing another's.
            console.note(f"{outcome.video}: {refusal}")
            tally.version_changed = True
            break
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
