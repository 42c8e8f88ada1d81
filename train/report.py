"""``report.json`` and ``report.md``: the model before and after, and the model card.

``before`` and ``after`` are ``evaluate``'s own report of the held-out test split
(:func:`client.evaluate.report.build_report` on the scores computed here in process, on the cached
served crops): the faithful score (``PROB_FAKE``; for the published weights the last frame's) with
``evaluate``'s metric keys overall and per group, at ``evaluate``'s default threshold of 0.5, and the
AUC of every frame's own score (``frame_auc``).

The keys of ``report.json`` are stable (documented in ``docs/guide/training.md``); ``export`` reads
``parent.sha256``, ``data.manifest_sha256`` and ``after.overall`` from the report next to a trained
checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

from client.evaluate.metrics import METRIC_NAMES
from client.evaluate.report import Settings, as_text, build_report
from client.evaluate.scores import FAITHFUL

from .data import REFUSED, SPLITS, Video
from .files import write_json_atomic, write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: Bump when a key of report.json changes meaning or goes away (new keys do not bump it).
REPORT_FORMAT = 1
#: The keys of ``before``/``after``'s ``overall`` and of each group.
METRIC_KEYS = ("n", "n_fake", "n_real", *METRIC_NAMES, "log_loss_refused_as_half", "frame_auc", "undefined")
#: The packages whose versions the model card names.
PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "av", "onnx", "tritonclient")
FRAME_MEAN = "frame_mean"


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def evaluation(
    videos: Sequence[Video],
    scores: Sequence[Sequence[float]],
    *,
    model: str,
    score: str,
    dataset: str,
    layout: str,
    frames: int,
) -> dict:
    """``evaluate``'s metrics of scored test videos, overall and per group.

    Args:
        videos: the test split.
        scores: each video's ``[PROB_FAKE, *FRAME_PROB_FAKE]``.
        model: what scored them (a checkpoint's file name).
        score: what its ``PROB_FAKE`` is.
    """
    labelled = [video.labelled for video in videos]
    records = [{"prob_fake": row[0], "frame_prob_fake": list(row[1:]), "error": None} for row in scores]
    report = build_report(labelled, records, Settings(dataset=dataset, layout=layout, model=model, frames=frames))
    faithful = report["aggregations"][FAITHFUL]

    def keys(entry: Mapping, frame_auc) -> dict:
        values = {key: entry[key] for key in METRIC_KEYS if key in entry}
        values["frame_auc"] = frame_auc
        return values

    overall = keys(faithful, report["frame_auc"])
    overall["undefined"] = dict(report["undefined"])
    return {
        "model": model,
        "score": score,
        "threshold": faithful["threshold"]["value"],
        "overall": overall,
        "groups": {
            group: keys(entry, report["groups"][group]["frame_auc"]) for group, entry in faithful["groups"].items()
        },
        FRAME_MEAN: {key: report["aggregations"][FRAME_MEAN][key] for key in METRIC_NAMES},
    }


def write_report(folder: Path, report: Mapping) -> None:
    write_json_atomic(folder / REPORT_JSON, report)
    write_text_atomic(folder / REPORT_MD, render_markdown(report))


MD_METRICS = ("video_auc", "average_precision", "accuracy", "balanced_accuracy", "log_loss", "eer", "frame_auc")


def render_markdown(report: Mapping) -> str:
    """``report.md``: the same facts as ``report.json``, for people."""
    before, after = report["before"], report["after"]
    data, training = report["data"], report["training"]
    checkpoint, parent = report["checkpoint"], report["parent"]
    lines = [
        f"# Training report: {checkpoint['file']}",
        "",
        f"`--head {report['head']}`, {report['frames']} frames, fine-tuned from `{parent['file']}` "
        f"(sha256 `{parent['sha256']}`) on `{data['set']}` ({data['layout']} layout).",
        "",
        "## Held-out test split: before and after",
        "",
        f"Faithful score (`PROB_FAKE`) at threshold {as_text(after['threshold'])}, "
        f"{after['overall']['n']} test videos; `evaluate`'s metrics.",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    for metric in MD_METRICS:
        lines.append(f"| {metric} | {as_text(before['overall'][metric])} | {as_text(after['overall'][metric])} |")
    lines += [
        "",
        "### Per group (a group's fakes against every real video of the test split)",
        "",
        "| group | n | video AUC before | video AUC after | accuracy before | accuracy after |",
        "|---|---|---|---|---|---|",
    ]
    for group, entry in after["groups"].items():
        old = before["groups"][group]
        lines.append(
            f"| {group} | {entry['n']} | {as_text(old['video_auc'])} | {as_text(entry['video_auc'])} | "
            f"{as_text(old['accuracy'])} | {as_text(entry['accuracy'])} |"
        )
    calibration = report.get("calibration")
    if calibration is not None:
        lines += ["", "## Calibration (fitted on the held-out test split)", ""]
        if calibration.get("file"):
            lines.append(
                f"`{calibration['file']}`: FAKE at >= {calibration['fake_threshold']:.6g}, REAL below "
                f"{calibration['real_threshold']:.6g}, chosen for at most {100 * calibration['target_fpr']:g} % false "
                f"positives (FPR {as_text(calibration['fpr'])}, TPR {as_text(calibration['tpr'])} on the split); "
                "`deepfake-export onnx --checkpoint ... --version V` installs it with the version."
            )
        else:
            lines.append(f"None written: {calibration['reason']}")
    lines += [
        "",
        "## Model card",
        "",
        f"- Checkpoint: `{checkpoint['file']}`, sha256 `{checkpoint['sha256']}`",
        f"- Parent: `{parent['file']}`, sha256 `{parent['sha256']}`",
        f"- Data manifest sha256: `{data['manifest_sha256']}` ({data['n_videos']} videos, "
        f"{data['n_sources']} connected source groups)",
        f"- Split (seed {report['hyperparameters']['seed']}): "
        + ", ".join(f"{split} {data['splits'][split]}" for split in (*SPLITS, REFUSED)),
        f"- Epochs run: {training['epochs_run']}, best epoch {training['best_epoch']}"
        + (" (stopped early)" if training["stopped_early"] else ""),
        f"- Device: {training['device']}, {training['threads']} threads; time taken {report['seconds']:.1f} s",
        f"- Preprocessing: `{report['preprocessing']['model']}` (settings sha256 "
        f"`{report['preprocessing']['settings_sha256']}`), {report['preprocessing']['calls']} calls, "
        f"{report['preprocessing']['cache_hits']} cache hits",
        "- Augmentations: "
        + (", ".join(f"`{item['name']}` ({item['description']})" for item in report["augmentations"]) or "none"),
        "",
        "### Counts per split and group",
        "",
        "| split | group | real | fake |",
        "|---|---|---|---|",
    ]
    for split, groups in data["counts"].items():
        for group, counts in groups.items():
            lines.append(f"| {split} | {group} | {counts['real']} | {counts['fake']} |")
    lines += ["", "### Hyper-parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {name} | {as_text(value)} |" for name, value in report["hyperparameters"].items()]
    lines += ["", "### Epochs", "", "| epoch | loss | validation AUC | validation log-loss | best |"]
    lines.append("|---|---|---|---|---|")
    lines += [
        f"| {row['epoch']} | {as_text(row['loss'])} | {as_text(row['val_auc'])} | {as_text(row['val_log_loss'])} | "
        f"{'yes' if row['best'] else ''} |"
        for row in training["history"]
    ]
    lines += ["", "### Libraries", ""]
    lines += [f"- {name} {version}" for name, version in report["versions"].items()]
    lines += ["", "## Refused videos", ""]
    lines += [
        f"- `{item['video']}`{' (' + item['variant'] + ' variant)' if item.get('variant') else ''}: {item['reason']}"
        for item in report["refused"]
    ] or ["None."]
    lines.append("")
    return "\n".join(lines)
