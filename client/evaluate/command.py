"""``python -m client evaluate DATASET --out DIR``: score a labelled set and write the report.

Scoring goes through :func:`client.batch.run_batch` and :class:`client.batch.ResultsFile`, the
machinery of ``score --output``: ``--concurrency`` requests in flight, retries with backoff, and
``DIR/scores.jsonl`` as the results file, so that the same command continues an interrupted run.
A video the server refuses (INVALID_ARGUMENT: no face, damaged, unreadable) gets its line with
the reason and counts as refused; one that failed for another reason gets none and is scored by
the next run. The report is written from the lines of the set's videos once scoring ends.

This module imports only the light client; scikit-learn and matplotlib are imported after
scoring, from :mod:`client.evaluate.report`, and checked for before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
from pathlib import Path
from typing import TextIO

from contract import Exit, Mode

from ..api import DeepfakeClient
from ..batch import ResultsFile, backoff_delays, other_models, read_results, run_batch, video_key
from ..codec import demo_warning
from ..errors import ClientError
from ..progress import Console
from ..results import ScoreResult
from .layouts import LabelledVideo, LayoutError, detect_layout, read_layout
from .scores import record_maker, refused_record

SCORES_FILE = "scores.jsonl"
EVAL_MODULES = ("sklearn", "matplotlib")
EVAL_EXTRA_HINT = "pip install '.[eval]'"
PROGRESS_MIN_VIDEOS = 2


class EvaluateError(Exception):
    """A run that cannot start: the message says why (exit status 2)."""


def missing_eval_modules() -> list[str]:
    """The ``eval`` extra's modules that cannot be imported here."""
    return [name for name in EVAL_MODULES if importlib.util.find_spec(name) is None]


def check_results_model(records: dict[str, dict], model: str, path: Path) -> None:
    """Refuses a results file holding lines of another model (another length, or all faces).

    Raises:
        EvaluateError: naming the model the file was written for.
    """
    others = other_models(records, model)
    if others:
        raise EvaluateError(
            f"{path} holds scores of {', '.join(map(str, others))}, not {model}: resuming would mix models; "
            "give another --out folder, or the --frames (and --all-faces) it was written with"
        )


def _demo_warning(client: DeepfakeClient) -> tuple[bool | None, str | None]:
    """``(whether the classifiers are demo checkpoints, the warning)``; ``None`` when not known."""
    try:
        info = client.model_info()
    except ClientError:
        return None, None
    warning = demo_warning(info)
    return warning is not None, warning


def score_missing(
    client: DeepfakeClient,
    videos: list[LabelledVideo],
    done: dict[str, dict],
    results: ResultsFile,
    args: argparse.Namespace,
    mode: Mode,
    console: Console,
) -> tuple[int, bool]:
    """Scores the videos without a line in ``done`` with ``mode``'s model, appending their lines.

    Returns:
        ``(videos left without a line, whether the server stayed unreachable)``.
    """
    by_key = {video_key(video.path): video for video in videos}
    todo = [video.path for video in videos if video_key(video.path) not in done]
    model = mode.model(args.frames)

    def score(video: str) -> ScoreResult:
        return client.score(video, args.frames, mode=mode)

    def truth_of(path: str) -> tuple[int, str]:
        video = by_key[video_key(path)]
        return video.truth, video.group

    def on_retry(video: str, error: ClientError, attempt: int, wait_s: float) -> None:
        console.note(f"{video}: {error.status}: {error.message}; retry {attempt}/{args.retries} in {wait_s:.1f} s")

    unfinished = len(todo)
    server_gone = False
    console.draw()
    for outcome in run_batch(
        score,
        todo,
        concurrency=args.concurrency,
        delays=backoff_delays(args.retries),
        rng=random.Random(),
        on_retry=on_retry,
        to_record=record_maker(truth_of, model),
        mode=mode,
    ):
        video = by_key[video_key(outcome.video)]
        if outcome.final:
            record = (
                outcome.record
                if outcome.ok
                else refused_record(video.path, video.truth, video.group, model, outcome.record["error"])
            )
            results.append(record)
            done[video_key(video.path)] = record
            unfinished -= 1
        if not outcome.ok:
            console.note(
                f"{outcome.video}: {'refused' if outcome.final else 'failed'} {outcome.status}: "
                f"{outcome.record['error']}"
            )
        console.advance(failed=not outcome.ok)
        if outcome.server_gone:
            server_gone = True
            break
    return unfinished, server_gone


def run_evaluate(client_factory, args: argparse.Namespace, mode: Mode, out: TextIO, err: TextIO) -> int:
    """Runs ``evaluate`` with ``mode``'s model; ``client_factory()`` makes the DeepfakeClient (from the CLI's options).

    Returns:
        The exit status: OK, FAILED when videos are left for a rerun, USAGE when the run cannot start.
    """
    missing = missing_eval_modules()
    if missing:
        print(f"error: evaluate needs the eval extra ({', '.join(missing)} missing): {EVAL_EXTRA_HINT}", file=err)
        return Exit.USAGE
    try:
        videos = read_layout(args.dataset, args.layout, compression=args.compression, split=args.split)
    except LayoutError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    folder = Path(args.out)
    scores_path = folder / SCORES_FILE
    model = mode.model(args.frames)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        done = read_results(scores_path)
        check_results_model(done, model, scores_path)
        results = ResultsFile(scores_path)
    except (OSError, ValueError) as error:
        print(f"error: cannot use {scores_path}: {error}", file=err)
        return Exit.USAGE
    except EvaluateError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    already = sum(1 for video in videos if video_key(video.path) in done)
    todo_count = len(videos) - already
    console = Console(out, err, total=todo_count, show_bar=todo_count >= PROGRESS_MIN_VIDEOS and err.isatty())
    if results.cut_bytes:
        console.note(f"removed an incomplete last line ({results.cut_bytes} bytes) from {scores_path}")
    console.note(
        f"{len(videos)} video(s) in {args.dataset}" + (f"; {already} already in {scores_path}" if already else "")
    )
    server_gone = False
    try:
        with client_factory() as client:
            demo, warning = _demo_warning(client)
            if warning is not None:
                console.note(warning)
            unfinished, server_gone = score_missing(client, videos, done, results, args, mode, console)
    except EvaluateError as error:
        console.close()
        print(f"error: {error}", file=err)
        return Exit.USAGE
    except KeyboardInterrupt:
        console.close()
        console.note("interrupted; run the same command again to continue")
        return Exit.INTERRUPTED
    finally:
        console.close()
        results.close()
    if server_gone:
        console.note(f"stopped: the server at {args.url} stayed unreachable through {args.retries} retries")

    from .report import Settings, write_report

    records = [done.get(video_key(video.path)) for video in videos]
    settings = Settings(
        dataset=os.fspath(args.dataset),
        layout=args.layout if args.layout != "auto" else detect_layout(args.dataset),
        model=model,
        frames=args.frames,
        threshold=args.threshold,
        val_fraction=args.val_fraction,
        seed=args.seed,
        demo=demo,
    )
    try:
        report = write_report(folder, videos, records, settings)
    except ValueError as error:
        print(f"error: cannot write the report: {error}", file=err)
        return Exit.USAGE
    print(
        f"{report['n_videos']} videos: {report['n_scored']} scored, {report['n_refused']} refused, "
        f"{report['n_unfinished']} unfinished; video AUC {_shown(report['video_auc'])}, "
        f"log-loss {_shown(report['log_loss'])} ({model}); report in {folder}",
        file=out,
    )
    return Exit.OK if unfinished == 0 else Exit.FAILED


def _shown(value) -> str:
    return "null" if value is None else f"{value:.4f}"
