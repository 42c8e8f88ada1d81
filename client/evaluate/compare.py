"""Two or more classifier versions on one labelled set, side by side: ``comparison.json`` and ``comparison.md``.

Each version has its own whole evaluation (``DIR/v<V>/``: scores.jsonl, report.json, report.md,
plots), made from the same videos with the same threshold rule and validation split; this module
reads those reports only and sets each metric of the versions in adjacent columns, overall and per
group, with each later version's difference from the first. Standard library only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from .report import MD_METRICS

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
JSON_INDENT = 2
#: The faithful score's metrics compared overall, in this order (``report.json``'s top-level keys).
OVERALL_METRICS = (MD_METRICS[0], "frame_auc", *MD_METRICS[1:])
#: The metrics compared per group (each group's entry of the faithful aggregation), with their column names.
GROUP_METRICS = {
    "video_auc": "video AUC",
    "average_precision": "AP",
    "accuracy": "accuracy",
    "log_loss": "log-loss",
    "eer": "EER",
}
#: The counts each version's column starts with.
COUNTS = ("n_scored", "n_refused", "n_unfinished")
FAITHFUL = "faithful"
SHA256_SHOWN = 12


def build_comparison(reports: Mapping[int, tuple[Mapping, str]]) -> dict:
    """The comparison of the versions' reports.

    Args:
        reports: ``{version: (its report.json, its folder relative to the comparison's)}``, in the
            order to show them (the first is the one the differences are taken from).

    Returns:
        ``{"dataset", "layout", "model", "frames", "versions", "runs": {"<V>": {...}}, "overall":
        {metric: {"<V>": value}}, "difference": {metric: {"<V>": value - first's}}, "groups":
        {group: {metric: {"<V>": value}}}, "aggregations": {name: {"<V>": video_auc}}}``.
    """
    versions = list(reports)
    first = reports[versions[0]][0]
    keys = [str(version) for version in versions]
    runs = {}
    for key, (report, folder) in zip(keys, reports.values()):
        runs[key] = {
            "folder": folder,
            "model_version": report.get("model_version"),
            "checkpoint_sha256": report.get("checkpoint_sha256"),
            "demo_checkpoints": report.get("demo_checkpoints"),
            "threshold": report["threshold"]["value"],
            **{count: report[count] for count in COUNTS},
        }
    overall = {metric: {key: reports[v][0].get(metric) for key, v in zip(keys, versions)} for metric in OVERALL_METRICS}
    difference = {
        metric: {key: _difference(values[key], values[keys[0]]) for key in keys[1:]}
        for metric, values in overall.items()
    }
    groups = {}
    for group in first["groups"]:
        groups[group] = {
            metric: {
                key: reports[v][0]["aggregations"][FAITHFUL]["groups"].get(group, {}).get(metric)
                for key, v in zip(keys, versions)
            }
            for metric in GROUP_METRICS
        }
    aggregations = {
        name: {key: reports[v][0]["aggregations"][name]["video_auc"] for key, v in zip(keys, versions)}
        for name in first["aggregations"]
    }
    return {
        "dataset": first["dataset"],
        "layout": first["layout"],
        "model": first["model"],
        "frames": first["frames"],
        "versions": versions,
        "runs": runs,
        "overall": overall,
        "difference": difference,
        "groups": groups,
        "aggregations": aggregations,
    }


def render_markdown(comparison: Mapping) -> str:
    """``comparison.md``: the same facts as ``comparison.json``, for people."""
    keys = [str(version) for version in comparison["versions"]]
    heads = [f"version {key}" for key in keys]
    later = keys[1:]
    lines = [
        f"# {comparison['model']} on {comparison['dataset']}: versions {', '.join(keys)} side by side",
        "",
        f"Layout `{comparison['layout']}`, {comparison['frames']} frames. Each version scored the same videos; "
        "each column is one version's own evaluation (its folder below), the faithful score's metrics. "
        f"The difference columns are each later version's value minus version {keys[0]}'s.",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    runs = comparison["runs"]
    lines.append("| folder | " + " | ".join(f"`{runs[key]['folder']}`" for key in keys) + " |")
    lines.append(
        "| checkpoint sha256 | "
        + " | ".join(f"`{str(runs[key]['checkpoint_sha256'] or 'none')[:SHA256_SHOWN]}`" for key in keys)
        + " |"
    )
    lines.append("| demo checkpoint | " + " | ".join(_number(runs[key]["demo_checkpoints"]) for key in keys) + " |")
    for count in (*COUNTS, "threshold"):
        lines.append(f"| {count} | " + " | ".join(_number(runs[key][count]) for key in keys) + " |")
    lines += [
        "",
        "## Overall",
        "",
        "| metric | " + " | ".join(heads) + "".join(f" | version {key} - {keys[0]}" for key in later) + " |",
        "|---" * (1 + len(keys) + len(later)) + "|",
    ]
    for metric, values in comparison["overall"].items():
        cells = [_number(values[key]) for key in keys]
        cells += [_signed(comparison["difference"][metric][key]) for key in later]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per group",
        "",
        "A group's fakes are compared with all real videos (a group of reals only: with all fakes), as in each "
        "version's report.",
        "",
        "| group | " + " | ".join(f"{name} v{key}" for name in GROUP_METRICS.values() for key in keys) + " |",
        "|---" * (1 + len(GROUP_METRICS) * len(keys)) + "|",
    ]
    for group, metrics in comparison["groups"].items():
        cells = [_number(metrics[metric][key]) for metric in GROUP_METRICS for key in keys]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Video AUC of each aggregation",
        "",
        "| aggregation | " + " | ".join(heads) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, values in comparison["aggregations"].items():
        lines.append(f"| {name} | " + " | ".join(_number(values[key]) for key in keys) + " |")
    lines.append("")
    return "\n".join(lines)


def write_comparison(folder: Path, reports: Mapping[int, tuple[Mapping, str]]) -> dict:
    """Writes ``comparison.json`` and ``comparison.md`` into ``folder``; returns the comparison."""
    comparison = build_comparison(reports)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COMPARISON_JSON).write_text(json.dumps(comparison, indent=JSON_INDENT) + "\n", encoding="utf-8")
    (folder / COMPARISON_MD).write_text(render_markdown(comparison), encoding="utf-8")
    return comparison


def _difference(value, base) -> float | None:
    if not _is_number(value) or not _is_number(base):
        return None
    return float(value) - float(base)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _signed(value) -> str:
    return "null" if value is None else f"{value:+.4f}"
