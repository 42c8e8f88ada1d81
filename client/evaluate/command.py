"""``python -m client evaluate DATASET --out DIR``: score a labelled set and write the report.

Scoring goes through :func:`client.batch.run_batch` and :class:`client.batch.ResultsFile`, the
machinery of ``score --output``: ``--concurrency`` requests in flight, retries with backoff, and
``DIR/scores.jsonl`` as the results file, so that the same command continues an interrupted run.
A video the server refuses (INVALID_ARGUMENT: no face, damaged, unreadable) gets its line with
the reason and counts as refused; one that failed for another reason gets none and is scored by
the next run. The report is written from the lines of the set's videos once scoring ends.

Every line names the classifier version that scored it, and a results file holds one version's:
resuming refuses another version's file, and a version loaded or unloaded during the run stops it
before another version's answer is written. With two or more ``--model-version`` the set is scored
once per version, each into its own folder (``DIR/v<V>/``, a whole evaluation of its own), and
``DIR/comparison.md`` and ``comparison.json`` set the versions' metrics side by side.

This module imports only the light client; scikit-learn and matplotlib are imported after
scoring, from :mod:`client.evaluate.report`, and checked for before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from contract import CHECKPOINT_SHA256_KEY, MODEL_VERSION_KEY, Exit, Mode

from ..api import DeepfakeClient
from ..batch import ResultsFile, backoff_delays, other_models, read_results, run_batch, video_key
from ..codec import demo_warning
from ..errors import INVALID_ARGUMENT, ClientError
from ..progress import Console
from ..results import ScoreResult
from ..versions import (
    VersionKeeper,
    batch_version,
    check_served,
    no_longer_served,
    other_versions,
    shown_version,
    unloaded_message,
)
from .layouts import LabelledVideo, LayoutError, detect_layout, read_layout
from .scores import record_maker, refused_record

SCORES_FILE = "scores.jsonl"
#: The folder of one version's evaluation when several are compared: ``DIR/v<V>/``.
VERSION_FOLDER = "v{version}"
EVAL_MODULES = ("sklearn", "matplotlib")
EVAL_EXTRA_HINT = "pip install '.[eval]'"
PROGRESS_MIN_VIDEOS = 2


class EvaluateError(Exception):
    """A run that cannot start: the message says why (exit status 2 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.status = status


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
            "give another --out folder, or the --frames (and --all-faces, --temporal) it was written with"
        )


def check_results_version(records: dict[str, dict], version: int | None, path: Path) -> None:
    """Refuses a results file whose scored lines come from another classifier version than ``version``.

    Raises:
        EvaluateError: naming the versions.
    """
    others = other_versions(records, version)
    if others:
        hint = "" if others[0] is None else f"--model-version {others[0]}, or "
        raise EvaluateError(
            f"{path} holds scores of {shown_version(others[0])} of the classifier, this run's come from version "
            f"{version}: resuming would mix versions; give {hint}another --out folder"
        )


@dataclass
class VersionRun:
    """One version's evaluation: its folder, its results file, the lines so far and how scoring went.

    Attributes:
        asked: the version asked for (None: the latest served).
        folder: where its scores.jsonl, report and plots go.
        version: the version its lines come from, once known.
    """

    asked: int | None
    folder: Path
    done: dict[str, dict] = field(default_factory=dict)
    results: ResultsFile | None = None
    version: int | None = None
    server_gone: bool = False
    stopped: str | None = None

    @property
    def scores_path(self) -> Path:
        return self.folder / SCORES_FILE

    @property
    def label(self) -> str:
        """How messages name the run's version."""
        return "the latest version" if self.version is None else f"version {self.version}"


def _model_info(client: DeepfakeClient) -> dict | None:
    """model_info's document; None when the server cannot say (the checks that need it are skipped)."""
    try:
        return client.model_info()
    except ClientError:
        return None


def score_missing(
    client: DeepfakeClient,
    videos: list[LabelledVideo],
    run: VersionRun,
    args: argparse.Namespace,
    mode: Mode,
    console: Console,
) -> None:
    """Scores the videos without a line in ``run.done`` with ``mode``'s model and ``run``'s version.

    Appends their lines to ``run.results`` and ``run.done``, and sets ``run.server_gone`` (the server
    stayed unreachable) and ``run.stopped`` (why scoring stopped early: another version answered).
    """
    by_key = {video_key(video.path): video for video in videos}
    todo = [video.path for video in videos if video_key(video.path) not in run.done]
    model = mode.model(args.frames)
    keeper = VersionKeeper(run.version)

    def score(video: str) -> ScoreResult:
        return client.score(video, args.frames, mode=mode, version=run.asked)

    def truth_of(path: str) -> tuple[int, str]:
        video = by_key[video_key(path)]
        return video.truth, video.group

    def on_retry(video: str, error: ClientError, attempt: int, wait_s: float) -> None:
        console.note(f"{video}: {error.status}: {error.message}; retry {attempt}/{args.retries} in {wait_s:.1f} s")

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
        refusal = keeper.admit(outcome.record)
        if (
            refusal is None
            and run.asked is not None
            and outcome.final
            and not outcome.ok
            and no_longer_served(_model_info(client), args.frames, mode, run.asked)
        ):
            refusal = unloaded_message(run.asked, outcome.record["error"])
        if refusal is not None:
            run.stopped = refusal
            console.note(f"{outcome.video}: {refusal}")
            break
        run.version = keeper.version
        if outcome.final:
            record = (
                outcome.record
                if outcome.ok
                else refused_record(video.path, video.truth, video.group, model, outcome.record["error"])
            )
            run.results.append(record)
            run.done[video_key(video.path)] = record
        if not outcome.ok:
            console.note(
                f"{outcome.video}: {'refused' if outcome.final else 'failed'} {outcome.status}: "
                f"{outcome.record['error']}"
            )
        console.advance(failed=not outcome.ok)
        if outcome.server_gone:
            run.server_gone = True
            break


def _read_runs(args: argparse.Namespace, model: str) -> list[VersionRun]:
    """Each version's run with its results file read and checked for the model and the version asked.

    Nothing is written yet: a run refused later (a version not served) leaves no folder behind.

    Raises:
        EvaluateError: a duplicated version, an unreadable results file, one of another model or version.
    """
    asked = list(getattr(args, "model_versions", None) or [None])
    if len(set(asked)) != len(asked):
        raise EvaluateError(f"--model-version names a version twice: {' '.join(map(str, asked))}")
    folder = Path(args.out)
    runs = [
        VersionRun(version, folder if len(asked) == 1 else folder / VERSION_FOLDER.format(version=version))
        for version in asked
    ]
    for run in runs:
        try:
            run.done = read_results(run.scores_path)
        except (OSError, ValueError) as error:
            raise EvaluateError(f"cannot use {run.scores_path}: {error}") from None
        check_results_model(run.done, model, run.scores_path)
        check_results_version(run.done, run.asked, run.scores_path)
    return runs


def _open_files(runs: list[VersionRun]) -> None:
    """Creates each run's folder and opens its results file for appending (cutting a half line off).

    Raises:
        EvaluateError: a folder or file that cannot be written.
    """
    for run in runs:
        try:
            run.folder.mkdir(parents=True, exist_ok=True)
            run.results = ResultsFile(run.scores_path)
        except OSError as error:
            raise EvaluateError(f"cannot use {run.scores_path}: {error}") from None


def _close(runs: list[VersionRun]) -> None:
    for run in runs:
        if run.results is not None:
            run.results.close()


def _prepare(
    client: DeepfakeClient, runs: list[VersionRun], args: argparse.Namespace, mode: Mode, console: Console
) -> bool | None:
    """Checks every version against model_info and its results file; warns of demo checkpoints.

    Returns:
        Whether the server says its checkpoints are demo ones (None: it cannot say).

    Raises:
        EvaluateError: a version or a temporal model not served, a results file of another version.
    """
    info = _model_info(client)
    for run in runs:
        try:
            check_served(info, args.frames, mode, run.asked)
        except ClientError as error:
            status = Exit.USAGE if error.status == INVALID_ARGUMENT else Exit.FAILED
            raise EvaluateError(error.message, status) from None
        run.version = batch_version(info, args.frames, mode, run.asked, run.done)
        check_results_version(run.done, run.version, run.scores_path)
    if info is None:
        return None
    warnings = {demo_warning(info, args.frames, mode, run.version) for run in runs} - {None}
    for warning in sorted(warnings):
        console.note(warning)
    return bool(warnings)


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
    model = mode.model(args.frames)
    try:
        runs = _read_runs(args, model)
    except EvaluateError as error:
        print(f"error: {error}", file=err)
        return error.status
    consoles: list[Console] = []
    demo = None
    try:
        with client_factory() as client:
            demo = _prepare(client, runs, args, mode, Console(out, err))
            _open_files(runs)
            for run in runs:
                already = sum(1 for video in videos if video_key(video.path) in run.done)
                todo_count = len(videos) - already
                console = Console(
                    out, err, total=todo_count, show_bar=todo_count >= PROGRESS_MIN_VIDEOS and err.isatty()
                )
                consoles.append(console)
                if run.results.cut_bytes:
                    console.note(
                        f"removed an incomplete last line ({run.results.cut_bytes} bytes) from {run.scores_path}"
                    )
                console.note(
                    f"{len(videos)} video(s) in {args.dataset}"
                    + (f" for {run.label}" if len(runs) > 1 else "")
                    + (f"; {already} already in {run.scores_path}" if already else "")
                )
                score_missing(client, videos, run, args, mode, console)
                console.close()
                if run.server_gone or run.stopped:
                    break
    except EvaluateError as error:
        print(f"error: {error}", file=err)
        return error.status
    except KeyboardInterrupt:
        for console in consoles:
            console.close()
        print("interrupted; run the same command again to continue", file=err)
        return Exit.INTERRUPTED
    finally:
        for console in consoles:
            console.close()
        _close(runs)
    if any(run.server_gone for run in runs):
        print(f"stopped: the server at {args.url} stayed unreachable through {args.retries} retries", file=err)

    from .report import Settings, write_report

    reports = []
    for run in runs:
        records = [run.done.get(video_key(video.path)) for video in videos]
        settings = Settings(
            dataset=os.fspath(args.dataset),
            layout=args.layout if args.layout != "auto" else detect_layout(args.dataset),
            model=model,
            frames=args.frames,
            threshold=args.threshold,
            val_fraction=args.val_fraction,
            seed=args.seed,
            demo=demo,
            model_version=run.version,
            checkpoint_sha256=_checkpoint_of(records),
        )
        try:
            report = write_report(run.folder, videos, records, settings)
        except ValueError as error:
            print(f"error: cannot write the report: {error}", file=err)
            return Exit.USAGE
        reports.append(report)
        print(
            f"{report['n_videos']} videos: {report['n_scored']} scored, {report['n_refused']} refused, "
            f"{report['n_unfinished']} unfinished; video AUC {_shown(report['video_auc'])}, "
            f"log-loss {_shown(report['log_loss'])} ({model}, {run.label}); report in {run.folder}",
            file=out,
        )
    if len(runs) > 1:
        from .compare import write_comparison

        folder = Path(args.out)
        write_comparison(
            folder, {run.asked: (report, os.path.relpath(run.folder, folder)) for run, report in zip(runs, reports)}
        )
        print(f"versions {', '.join(str(run.asked) for run in runs)} side by side in {folder}", file=out)
    finished = all(run.stopped is None and all(video_key(video.path) in run.done for video in videos) for run in runs)
    return Exit.OK if finished else Exit.FAILED


def _checkpoint_of(records: list[Mapping | None]) -> str | None:
    """The checkpoint sha256 of the scored lines when they name one alone, else None."""
    digests = {
        record.get(CHECKPOINT_SHA256_KEY)
        for record in records
        if record is not None and record.get("error") is None and record.get(MODEL_VERSION_KEY) is not None
    }
    return digests.pop() if len(digests) == 1 else None


def _shown(value) -> str:
    return "null" if value is None else f"{value:.4f}"
