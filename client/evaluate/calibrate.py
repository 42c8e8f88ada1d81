"""``python -m client calibrate SET --out DIR``: a calibration and an operating point from a labelled set.

The set is scored through the running server exactly as ``evaluate`` scores it (the same layouts,
``--concurrency``, retries and resumable ``DIR/scores.jsonl``, and ``evaluate``'s report beside),
or an existing ``scores.jsonl`` is read (``--scores``). From the served raw scores of the videos
scored (refused ones are counted, not used) :func:`calibration.fit.fit` makes the document, which
is written as ``DIR/calibration.json`` with a report for people, ``DIR/calibration.md``.
``--install REPOSITORY`` then puts it beside the classifier version it was fitted for
(:mod:`calibration.install`).

Which score: ``deepfake`` (scored through ``verdict_<N>``, the cheapest model giving the same
PROB_FAKE as ``deepfake_<N>``, ``explain_<N>`` and ``faces_<N>``'s main face), ``original``
(``original_<N>``) or ``temporal`` (``temporal_<N>``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import TextIO

from calibration.fit import FitError, SetInfo, Target, fit, reliability
from calibration.install import InstallError, install, now_utc
from calibration.point import Calibration
from contract import (
    CALIBRATION_DOCUMENT,
    CHECKPOINT_SHA256_KEY,
    MODEL_KEY,
    MODEL_VERSION_KEY,
    SELECT_SCORES,
    SELECTED_KINDS,
    Exit,
    Mode,
    model_name,
)

from ..batch import read_results
from .command import SCORES_FILE

CALIBRATION_FILE = CALIBRATION_DOCUMENT
CALIBRATION_REPORT = "calibration.md"


class CalibrateError(Exception):
    """A calibration that cannot be made from these scores; exit status 2."""


def classifier_of(mode: Mode, frames: int) -> str:
    """The classifier whose versions answer ``mode``'s score: ``resnext_lstm_<N>`` or ``resnext_temporal_<N>``."""
    (step,) = [kind for kind, score in SELECT_SCORES.items() if score is mode.score]
    return model_name(SELECTED_KINDS[step], frames)


def manifest_sha256(records: list[dict]) -> str:
    """sha256 of the set's listing: each video's path and label, sorted (refused videos included)."""
    lines = sorted(f"{record['video']}\t{record.get('truth')}" for record in records)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def scored_set(records: list[dict], mode: Mode, frames: int) -> tuple[list[float], list[int], int, int | None, str]:
    """(scores, labels, refused count, version, checkpoint sha256) of a results file's lines.

    Lines of any model answering ``mode``'s score are taken (``evaluate``'s deepfake_<N> lines give
    the same PROB_FAKE as verdict_<N>'s).

    Raises:
        CalibrateError: lines of another model, several versions or checkpoints, or without labels.
    """
    scores, labels, refused = [], [], 0
    versions, checkpoints, models = set(), set(), set()
    for record in records:
        models.add(record.get(MODEL_KEY))
        if record.get("truth") not in (0, 1):
            raise CalibrateError(f"{record['video']}: no label (truth 0 or 1) in the results file")
        if record.get("error") is not None:
            refused += 1
            continue
        scores.append(float(record["prob_fake"]))
        labels.append(int(record["truth"]))
        versions.add(record.get(MODEL_VERSION_KEY))
        checkpoints.add(record.get(CHECKPOINT_SHA256_KEY))
    allowed = {other.model(frames) for other in Mode if other.score is mode.score}
    if models - allowed:
        raise CalibrateError(
            f"the results come from {', '.join(sorted(map(str, models)))}, not {' or '.join(sorted(allowed))}: give "
            "the --frames, --original or --temporal they were scored with"
        )
    if len(versions) > 1 or len(checkpoints) > 1:
        raise CalibrateError(f"the results mix classifier versions {sorted(map(str, versions))}: one per calibration")
    version = versions.pop() if versions else None
    checkpoint = checkpoints.pop() if checkpoints else None
    if scores and (version is None or not checkpoint):
        raise CalibrateError("the results name no classifier version or checkpoint: score them again")
    return scores, labels, refused, version, checkpoint or ""


def write_report(folder: Path, document: dict, scores: list[float], labels: list[int]) -> Path:
    """``calibration.md``: what was fitted, the operating point with its intervals, and what to keep in mind."""
    calibration = Calibration.from_document(document)
    fitted = document["calibration"]
    point = document["operating_point"]
    data = document["set"]
    target = document["for"]

    def pct(value: float) -> str:
        return f"{100 * value:.2f} %"

    def rate(entry: dict, bootstrap: bool = True) -> str:
        text = f"{pct(entry['value'])} ({entry['count']} of {entry['total']})"
        if bootstrap:
            text += f"; 95 % bootstrap {pct(entry['low'])}-{pct(entry['high'])}"
        return text + f"; exact 95 % {pct(entry['exact_low'])}-{pct(entry['exact_high'])}"

    version = "fitted where trained" if target["version"] is None else f"version {target['version']}"
    prior = fitted["prior"]
    lines = [
        f"# Calibration: {target['score']} scores of {target['model']} ({version})",
        "",
        f"Set **{data['name']}**: {data['real']} real and {data['fake']} fake videos scored, {data['refused']} refused "
        f"(manifest sha256 `{data['manifest_sha256'][:16]}`). Checkpoint `{target['checkpoint_sha256'][:16]}`.",
        "",
        "## Served operating point",
        "",
        "| decision | rule on the raw PROB_FAKE | share of this set |",
        "| --- | --- | --- |",
        f"| FAKE | >= {point['fake_threshold']:.6g} | {pct(point['decision_share']['FAKE'])} |",
        f"| UNCERTAIN | between | {pct(point['decision_share']['UNCERTAIN'])} |",
        f"| REAL | < {point['real_threshold']:.6g} | {pct(point['decision_share']['REAL'])} |",
        "",
        f"- Chosen for at most {pct(point['target_fpr'])} false positives"
        + ("" if point["target_fnr"] is None else f" and at most {pct(point['target_fnr'])} of fakes called REAL")
        + ".",
        f"- False-positive rate (real videos called FAKE): {rate(point['fpr'])}.",
        f"- True-positive rate (fakes called FAKE): {rate(point['tpr'])}.",
        f"- Fakes called REAL: {rate(point['fnr'], bootstrap=False)}.",
        f"- Equal error rate: {pct(document['eer']['rate'])} at {document['eer']['threshold']:.6g}.",
        "",
        f"A {pct(point['target_fpr'])} target needs at least {point['required_real_videos']} real videos to be "
        "estimated at all: with fewer, even no false positive leaves the exact 95 % upper bound above the target. "
        f"This set has {data['real']}. The FPR on new videos can sit anywhere in its interval; the exact "
        "interval holds where the bootstrap collapses (no false positive at all gives a bootstrap interval of 0-0).",
        "",
        "## Calibration",
        "",
        f"Platt scaling on the logit: calibrated = sigmoid({fitted['slope']:.4f} x logit(PROB_FAKE) "
        f"{fitted['intercept']:+.4f}). Brier score {fitted['brier_raw']:.4f} raw, {fitted['brier_calibrated']:.4f} "
        f"calibrated; expected calibration error {fitted['ece_raw']:.4f} raw, {fitted['ece_calibrated']:.4f} "
        "calibrated (on the set it was fitted on: optimistic).",
        "",
        (
            f"A calibrated probability holds at this set's share of fakes, {pct(data['prevalence'])}: where "
            "live traffic has another share, give it with --prior."
            if prior is None
            else f"Adjusted to an expected share of fakes of {pct(prior)} (the set's is {pct(data['prevalence'])})."
        ),
        "",
        "| raw score | videos | mean calibrated | share of fakes |",
        "| --- | --- | --- | --- |",
    ]
    calibrated = [calibration.calibrated(score) for score in scores]
    for row in reliability(scores, labels, values=calibrated):
        if row["videos"]:
            lines.append(
                f"| {row['low']:.1f}-{row['high']:.1f} | {row['videos']} | {row['mean_value']:.3f} | "
                f"{row['fake_share']:.3f} |"
            )
    path = folder / CALIBRATION_REPORT
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_calibrate(client_factory, args: argparse.Namespace, mode: Mode, out: TextIO, err: TextIO) -> int:
    """Scores the set (unless ``--scores``), fits, writes, and installs when asked. Returns the exit status."""
    folder = Path(args.out)
    scores_path = Path(args.scores) if args.scores else folder / SCORES_FILE
    if args.dataset is not None:
        from .command import run_evaluate

        evaluate_args = argparse.Namespace(
            **vars(args),
            model_versions=None if args.model_version is None else [args.model_version],
            threshold=0.5,
            val_fraction=None,
        )
        status = run_evaluate(client_factory, evaluate_args, mode, out, err)
        if status != Exit.OK:
            print("calibration not fitted: every video must be scored or refused first", file=err)
            return status
    try:
        records = list(read_results(scores_path).values())
    except (OSError, ValueError) as error:
        print(f"error: cannot use {scores_path}: {error}", file=err)
        return Exit.USAGE
    if not records:
        print(f"error: {scores_path} holds no scored video", file=err)
        return Exit.USAGE
    try:
        scores, labels, refused, version, checkpoint = scored_set(records, mode, args.frames)
        if args.model_version is not None and version is not None and version != args.model_version:
            raise CalibrateError(f"{scores_path} holds version {version}'s scores, not version {args.model_version}'s")
        name = args.set_name or Path(os.fspath(args.dataset or scores_path)).resolve().name
        document = fit(
            scores,
            labels,
            target=Target(mode.score, classifier_of(mode, args.frames), args.frames, version, checkpoint),
            data=SetInfo(name, manifest_sha256(records), refused),
            target_fpr=args.target_fpr,
            target_fnr=None if args.no_uncertain else args.target_fnr,
            prior=args.prior,
            rounds=args.bootstrap,
            seed=args.seed,
            fitted_at=now_utc(),
            fitted_by=args.by,
        )
    except (CalibrateError, FitError) as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CALIBRATION_FILE
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    report = write_report(folder, document, scores, labels)
    point = document["operating_point"]
    print(
        f"{document['for']['model']} version {version}, {mode.score.value} scores: FAKE at >= "
        f"{point['fake_threshold']:.6g} (FPR {100 * point['fpr']['value']:.2f} %, exact 95 % up to "
        f"{100 * point['fpr']['exact_high']:.2f} %; TPR {100 * point['tpr']['value']:.2f} %), REAL below "
        f"{point['real_threshold']:.6g}; {path}, {report}",
        file=out,
    )
    if args.install is not None:
        try:
            installed = install(path, Path(args.install), by=args.by)
        except InstallError as error:
            print(f"error: not installed: {error}", file=err)
            return Exit.USAGE
        print(
            f"installed as {installed.path} (replacing {installed.previous_sha256 or 'no calibration'}); "
            "a running server applies it from its next request",
            file=out,
        )
    return Exit.OK
