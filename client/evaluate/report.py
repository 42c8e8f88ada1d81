"""The evaluation report: ``report.json``, ``report.md`` and PNG plots, from the scored lines.

Needs the ``eval`` extra (scikit-learn, matplotlib).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import DECISION_FAKE, DECISION_KEY, DECISION_REAL, DECISION_UNCERTAIN, DECISIONS, OPERATING_POINT_KEY

from . import metrics
from .layouts import LabelledVideo, group_names
from .scores import AGGREGATIONS, FAITHFUL, aggregate, is_no_face

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ROC_PNG = "roc.png"
HISTOGRAMS_PNG = "histograms.png"
CALIBRATION_PNG = "calibration.png"
HISTOGRAM_BINS = 20
CALIBRATION_BINS = 10
FIGURE_DPI = 100
JSON_INDENT = 2

DEMO_NOTE = (
    "The server's classifiers come from demo checkpoints (random weights): every metric here "
    "is at chance level and says nothing about the published models."
)


@dataclass(frozen=True)
class Settings:
    """What the report was asked for.

    Attributes:
        dataset: the set's folder or list file, as given.
        layout: the layout read.
        model: the model asked (``deepfake_<N>`` ...).
        frames: N.
        threshold: the threshold given (used unless a validation split chooses one).
        val_fraction: share of videos that choose the threshold, or None.
        seed: seed of the validation split.
        demo: whether the server said its checkpoints are demo ones (None: not asked).
        model_version: the classifier version every scored line comes from (None: no line scored yet).
        checkpoint_sha256: sha256 of that version's checkpoint, as the lines name it.
    """

    dataset: str
    layout: str
    model: str
    frames: int
    threshold: float = metrics.DEFAULT_THRESHOLD
    val_fraction: float | None = None
    seed: int = 0
    demo: bool | None = None
    model_version: int | None = None
    checkpoint_sha256: str | None = None


def _selection(videos: Sequence[LabelledVideo], group: str | None) -> list[int]:
    """Indices of one group's comparison: its fakes against all reals (or its reals against all fakes)."""
    if group is None:
        return list(range(len(videos)))
    has_fakes = any(video.truth == 1 and video.group == group for video in videos)
    if has_fakes:
        return [i for i, video in enumerate(videos) if video.truth == 0 or video.group == group]
    return [i for i, video in enumerate(videos) if video.truth == 1 or video.group == group]


def _metrics_of(
    indices: Sequence[int],
    videos: Sequence[LabelledVideo],
    records: Sequence[Mapping | None],
    name: str,
    threshold: float,
) -> dict:
    truth, scores, refused_truth = [], [], []
    missing: dict[str, int] = {}
    for i in indices:
        record = records[i]
        if record is None:
            continue
        if record.get("error") is not None:
            refused_truth.append(videos[i].truth)
            continue
        score, why = aggregate(record, name)
        if score is None:
            missing[why] = missing.get(why, 0) + 1
            continue
        truth.append(videos[i].truth)
        scores.append(score)
    result = metrics.binary_metrics(truth, scores, threshold, refused_truth=refused_truth)
    if missing and not truth:
        # Nothing to score with this aggregation: say why, rather than "no scored video".
        reason = "; ".join(sorted(missing))
        for key in (*metrics.METRIC_NAMES, "log_loss_refused_as_half"):
            result[key] = None
        result["undefined"] = dict.fromkeys((*metrics.METRIC_NAMES, "log_loss_refused_as_half"), reason)
    elif missing:
        result["left_out"] = missing
    return result


def _frame_auc(indices: Sequence[int], videos, records) -> tuple[float | None, str | None]:
    truth, frames = [], []
    for i in indices:
        record = records[i]
        if record is None or record.get("error") is not None or not record.get("frame_prob_fake"):
            continue
        truth.append(videos[i].truth)
        frames.append(record["frame_prob_fake"])
    return metrics.frame_auc(truth, frames)


def _truth_and_scores(indices, videos, records, name: str) -> tuple[list[int], list[float]]:
    """The truth and the ``name`` score of every video among ``indices`` that has one."""
    truth, scores = [], []
    for i in indices:
        record = records[i]
        if record is None:
            continue
        score, _ = aggregate(record, name)
        if score is not None:
            truth.append(videos[i].truth)
            scores.append(score)
    return truth, scores


def _choose_threshold(indices, videos, records, name: str, given: float) -> dict:
    truth, scores = _truth_and_scores(indices, videos, records, name)
    reason = metrics.one_class_reason(truth)
    if reason is not None:
        return {"value": given, "source": "given", "why": f"the validation part has {reason}"}
    return {"value": metrics.best_threshold(truth, scores), "source": "validation"}


def build_report(videos: Sequence[LabelledVideo], records: Sequence[Mapping | None], settings: Settings) -> dict:
    """The report of one evaluation.

    Args:
        videos: the labelled set, in order.
        records: each video's line (``None``: not finished, e.g. the server went away).
        settings: what was asked.
    """
    scored = [i for i, record in enumerate(records) if record is not None and record.get("error") is None]
    refused = [i for i, record in enumerate(records) if record is not None and record.get("error") is not None]
    unfinished = [i for i, record in enumerate(records) if record is None]
    no_face = [i for i in refused if is_no_face(records[i])]
    finished = len(scored) + len(refused)

    evaluated = list(range(len(videos)))
    split = None
    if settings.val_fraction is not None:
        validation, evaluated = metrics.validation_split(
            [video.truth for video in videos], settings.val_fraction, settings.seed
        )
        split = {
            "val_fraction": settings.val_fraction,
            "seed": settings.seed,
            "n_validation": len(validation),
            "n_test": len(evaluated),
            "note": "the threshold is chosen on the validation part; every metric is of the test part",
        }
    groups = group_names(videos)
    evaluated_set, scored_set, refused_set = set(evaluated), set(scored), set(refused)
    aggregations = {}
    for name, description in AGGREGATIONS.items():
        threshold = (
            _choose_threshold(validation, videos, records, name, settings.threshold)
            if split is not None
            else {"value": settings.threshold, "source": "given"}
        )
        overall = _metrics_of(evaluated, videos, records, name, threshold["value"])
        per_group = {}
        for group in groups:
            chosen = [i for i in _selection(videos, group) if i in evaluated_set]
            per_group[group] = _metrics_of(chosen, videos, records, name, threshold["value"])
        aggregations[name] = {"description": description, "threshold": threshold, **overall, "groups": per_group}

    faithful = aggregations[FAITHFUL]
    frame_value, frame_reason = _frame_auc(evaluated, videos, records)
    group_counts = {}
    for group in groups:
        members = [i for i, video in enumerate(videos) if video.group == group]
        chosen = [i for i in _selection(videos, group) if i in evaluated_set]
        auc, reason = _frame_auc(chosen, videos, records)
        group_counts[group] = {
            "n_videos": len(members),
            "n_fake": sum(videos[i].truth for i in members),
            "n_real": sum(1 - videos[i].truth for i in members),
            "n_scored": sum(1 for i in members if i in scored_set),
            "n_refused": sum(1 for i in members if i in refused_set),
            "compared_with": "all reals" if any(videos[i].truth for i in members) else "all fakes",
            "frame_auc": auc,
            **({"frame_auc_undefined": reason} if reason else {}),
        }
    undefined = dict(faithful["undefined"])
    if frame_reason is not None:
        undefined["frame_auc"] = frame_reason
    report = {
        "dataset": settings.dataset,
        "layout": settings.layout,
        "model": settings.model,
        "frames": settings.frames,
        "model_version": settings.model_version,
        "checkpoint_sha256": settings.checkpoint_sha256,
        "demo_checkpoints": settings.demo,
        "warning": DEMO_NOTE if settings.demo else None,
        "n_videos": len(videos),
        "n_scored": len(scored),
        "n_refused": len(refused),
        "n_unfinished": len(unfinished),
        "n_no_face": len(no_face),
        "no_face_rate": len(no_face) / finished if finished else None,
        "threshold": faithful["threshold"],
        "split": split,
        "video_auc": faithful["video_auc"],
        "frame_auc": frame_value,
        "log_loss": faithful["log_loss"],
        "log_loss_refused_as_half": faithful["log_loss_refused_as_half"],
        "average_precision": faithful["average_precision"],
        "accuracy": faithful["accuracy"],
        "balanced_accuracy": faithful["balanced_accuracy"],
        "eer": faithful["eer"],
        "undefined": undefined,
        "groups": group_counts,
        "aggregations": aggregations,
        "refused": [
            {"video": videos[i].path, "truth": videos[i].truth, "group": videos[i].group, "reason": records[i]["error"]}
            for i in refused
        ],
        "unfinished": [videos[i].path for i in unfinished],
        "plots": {"roc": ROC_PNG, "histograms": HISTOGRAMS_PNG, "calibration": CALIBRATION_PNG},
        "served_decisions": served_decisions([videos[i] for i in scored], [records[i] for i in scored]),
    }
    if report["no_face_rate"] is None:
        report["undefined"]["no_face_rate"] = "no finished video"
    return report


def served_decisions(videos: Sequence[LabelledVideo], records: Sequence[Mapping]) -> dict | None:
    """The server's own decisions on the scored videos, beside the report's threshold: how many real and
    fake videos got each decision, the FPR and TPR of FAKE, and the operating point they were made at.

    None when the lines carry no decision, or were decided at several operating points (a calibration
    installed during the run): then the counts would describe no single point.
    """
    points = {json.dumps(record.get(OPERATING_POINT_KEY), sort_keys=True) for record in records}
    if not records or len(points) != 1 or any(record.get(DECISION_KEY) is None for record in records):
        return None
    counts = {truth: dict.fromkeys(DECISIONS, 0) for truth in ("real", "fake")}
    for video, record in zip(videos, records):
        counts["fake" if video.truth else "real"][record[DECISION_KEY]] += 1
    reals, fakes = sum(counts["real"].values()), sum(counts["fake"].values())
    return {
        "operating_point": records[0][OPERATING_POINT_KEY],
        "counts": counts,
        "fpr": counts["real"][DECISION_FAKE] / reals if reals else None,
        "tpr": counts["fake"][DECISION_FAKE] / fakes if fakes else None,
        "uncertain_share": (counts["real"][DECISION_UNCERTAIN] + counts["fake"][DECISION_UNCERTAIN]) / len(records),
        "fakes_called_real": counts["fake"][DECISION_REAL] / fakes if fakes else None,
    }


def _served_lines(served: Mapping | None) -> list[str]:
    if served is None:
        return []
    point = served["operating_point"]
    where = (
        f"calibrated on {point['set']} for at most {100 * point['target_fpr']:g} % false positives "
        f"(FAKE at >= {point['fake_threshold']:.6g}, REAL below {point['real_threshold']:.6g})"
        if point.get("calibrated")
        else "uncalibrated: FAKE at >= 0.5"
    )
    lines = [
        "",
        "## The server's decisions (its served operating point)",
        "",
        f"Each answer's `decision`, made by the server at its operating point, {where}; beside the report's own "
        "threshold above.",
        "",
        "| truth | FAKE | UNCERTAIN | REAL |",
        "|---|---|---|---|",
    ]
    for truth, row in served["counts"].items():
        lines.append(f"| {truth} | {row[DECISION_FAKE]} | {row[DECISION_UNCERTAIN]} | {row[DECISION_REAL]} |")
    lines += [
        "",
        f"False-positive rate {as_text(served['fpr'])}, true-positive rate {as_text(served['tpr'])}, fakes called "
        f"REAL {as_text(served['fakes_called_real'])}, UNCERTAIN {as_text(served['uncertain_share'])}.",
    ]
    return lines


def as_text(value) -> str:
    """A metric as the markdown reports write it: 4 decimals, ``null`` for an undefined one."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


MD_METRICS = (
    "video_auc",
    "average_precision",
    "accuracy",
    "balanced_accuracy",
    "log_loss",
    "log_loss_refused_as_half",
    "eer",
)


def render_markdown(report: Mapping) -> str:
    """``report.md``: the same facts as ``report.json``, for people."""
    lines = [f"# Evaluation of {report['model']} on {report['dataset']}", ""]
    if report.get("model_version") is not None:
        lines += [
            f"Classifier version {report['model_version']}, checkpoint sha256 "
            f"`{report.get('checkpoint_sha256') or 'not named'}`.",
            "",
        ]
    if report["warning"]:
        lines += [f"> **Warning.** {report['warning']}", ""]
    threshold = report["threshold"]
    lines += [
        f"Layout `{report['layout']}`, {report['frames']} frames. Videos: {report['n_videos']}; "
        f"scored {report['n_scored']}, refused by the server {report['n_refused']} "
        f"(no face: {report['n_no_face']}), unfinished {report['n_unfinished']}.",
        "",
        f"Threshold {threshold['value']:.4f} ({threshold['source']}) for the faithful score; a score at or "
        "above it counts as FAKE. Refused videos are left out of every metric but "
        "`log_loss_refused_as_half`, where they score 0.5 (as the DFDC scoring did).",
        "",
    ]
    if report["split"]:
        split = report["split"]
        lines += [
            f"Validation split: {split['n_validation']} videos (fraction {split['val_fraction']}, seed "
            f"{split['seed']}) chose each threshold; the metrics are of the other {split['n_test']}.",
            "",
        ]
    lines += [f"Frame AUC (every frame of the main face, labelled with its video): {as_text(report['frame_auc'])}", ""]
    names = list(report["aggregations"])
    lines += [
        "## Aggregations side by side",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for metric in ("n", "threshold", *MD_METRICS):
        cells = []
        for name in names:
            entry = report["aggregations"][name]
            cells.append(as_text(entry["threshold"]["value"] if metric == "threshold" else entry[metric]))
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        entry = report["aggregations"][name]
        lines.append(f"- `{name}`: {entry['description']}.")
        by_reason: dict[str, list[str]] = {}
        for metric, reason in entry["undefined"].items():
            by_reason.setdefault(reason, []).append(f"`{metric}`")
        for reason, names_ in by_reason.items():
            lines.append(f"  - {', '.join(names_)} {'is' if len(names_) == 1 else 'are'} null: {reason}")
    lines += [
        "",
        "## Groups (faithful score)",
        "",
        "A group's fakes are compared with all real videos (a group of reals only: with all fakes).",
        "",
        "| group | videos | fake | real | scored | refused | compared with | "
        "video AUC | AP | accuracy | log-loss | EER | frame AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, counts in report["groups"].items():
        entry = report["aggregations"]["faithful"]["groups"][group]
        lines.append(
            f"| {group} | {counts['n_videos']} | {counts['n_fake']} | {counts['n_real']} | {counts['n_scored']} | "
            f"{counts['n_refused']} | {counts['compared_with']} | {as_text(entry['video_auc'])} | "
            f"{as_text(entry['average_precision'])} | {as_text(entry['accuracy'])} | {as_text(entry['log_loss'])} | "
            f"{as_text(entry['eer'])} | {as_text(counts['frame_auc'])} |"
        )
    lines += _served_lines(report.get("served_decisions"))
    lines += ["", "## Refused videos", ""]
    lines += [
        f"- `{item['video']}` ({'fake' if item['truth'] else 'real'}, {item['group']}): {item['reason']}"
        for item in report["refused"]
    ] or ["None."]
    if report["unfinished"]:
        lines += ["", "## Unfinished videos (run the same command again to score them)", ""]
        lines += [f"- `{video}`" for video in report["unfinished"]]
    lines += [
        "",
        "## Plots",
        "",
        f"![ROC per group]({ROC_PNG})",
        "",
        f"![Score histograms]({HISTOGRAMS_PNG})",
        "",
        f"![Calibration]({CALIBRATION_PNG})",
        "",
    ]
    return "\n".join(lines)


def _scores_by_truth(videos, records, name: str, indices) -> tuple[list[float], list[float]]:
    truth, scores = _truth_and_scores(indices, videos, records, name)
    return [s for t, s in zip(truth, scores) if not t], [s for t, s in zip(truth, scores) if t]


def write_plots(folder: Path, report: Mapping, videos, records) -> None:
    """``roc.png`` (faithful, per group), ``histograms.png`` (each aggregation), ``calibration.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    evaluated = list(range(len(videos)))
    if report["split"] is not None:
        _, evaluated = metrics.validation_split(
            [video.truth for video in videos], report["split"]["val_fraction"], report["split"]["seed"]
        )
    evaluated_set = set(evaluated)

    figure, axes = plt.subplots(figsize=(6, 6))
    for group in [None, *report["groups"]]:
        chosen = [i for i in _selection(videos, group) if i in evaluated_set]
        real, fake = _scores_by_truth(videos, records, FAITHFUL, chosen)
        if not real or not fake:
            continue
        fpr, tpr = metrics.roc_points([0] * len(real) + [1] * len(fake), real + fake)
        auc = report["video_auc"] if group is None else report["aggregations"][FAITHFUL]["groups"][group]["video_auc"]
        axes.plot(
            fpr, tpr, label=f"{'all' if group is None else group} (AUC {auc:.3f})", linewidth=2 if group is None else 1
        )
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes.set(
        xlabel="false positive rate (reals called fake)",
        ylabel="true positive rate (fakes caught)",
        title=f"ROC of the faithful score, {report['model']}"
        + ("" if report.get("model_version") is None else f" version {report['model_version']}"),
    )
    axes.legend(loc="lower right", fontsize="small")
    figure.savefig(folder / ROC_PNG, dpi=FIGURE_DPI)
    plt.close(figure)

    names = list(report["aggregations"])
    figure, grid = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for axes, name in zip(grid[0], names):
        real, fake = _scores_by_truth(videos, records, name, evaluated)
        if real or fake:
            axes.hist(real, bins=bins, alpha=0.6, label=f"real ({len(real)})", color="tab:blue")
            axes.hist(fake, bins=bins, alpha=0.6, label=f"fake ({len(fake)})", color="tab:red")
            axes.legend(fontsize="small")
        else:
            axes.text(0.5, 0.5, "no score", ha="center", va="center", transform=axes.transAxes)
        axes.set(title=name, xlabel="fake score", xlim=(0, 1))
    figure.tight_layout()
    figure.savefig(folder / HISTOGRAMS_PNG, dpi=FIGURE_DPI)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 6))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name in (FAITHFUL, "frame_mean"):
        real, fake = _scores_by_truth(videos, records, name, evaluated)
        if real or fake:
            observed, predicted = calibration_curve(
                [0] * len(real) + [1] * len(fake), real + fake, n_bins=CALIBRATION_BINS
            )
            axes.plot(predicted, observed, marker="o", label=name)
    axes.set(
        xlabel="mean fake score in bin", ylabel="share of fakes in bin", xlim=(0, 1), ylim=(0, 1), title="Calibration"
    )
    axes.legend(loc="upper left", fontsize="small")
    figure.savefig(folder / CALIBRATION_PNG, dpi=FIGURE_DPI)
    plt.close(figure)


def write_report(folder: Path, videos, records, settings: Settings) -> dict:
    """Writes ``report.json``, ``report.md`` and the plots into ``folder``; returns the report."""
    report = build_report(videos, records, settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=JSON_INDENT) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    write_plots(folder, report, videos, records)
    return report
