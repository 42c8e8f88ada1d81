"""``latest.json``, ``latest.md`` and the PNG plots of one benchmark run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

#: Keys every ``latest.json`` has (the README table and CI read them).
REQUIRED_KEYS = (
    "video",
    "frames",
    "cpu_count",
    "machine",
    "git_commit",
    "reference_videos_per_s",
    "mtcnn_baseline_videos_per_s",
    "e2e_videos_per_s",
    "e2e_speedup_vs_reference",
    "e2e_speedup_vs_mtcnn_baseline",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "classifier_ort_ms",
    "classifier_torch_ms",
    "classifier_speedup",
    "server_rss_mb_before",
    "server_rss_mb_after",
)
PLOTS = {
    "throughput": "throughput.png",
    "latency": "latency.png",
    "stages": "stages.png",
}
_DPI = 110
_FIGSIZE = (9.0, 4.2)
_STAGE_COLOURS = {
    "decode": "#4c78a8",
    "detect": "#f58518",
    "crop": "#54a24b",
    "classify": "#e45756",
    "queue": "#b279a2",
    "other": "#9d9d9d",
}


class ReportError(Exception):
    """The results lack something the report needs; the message names it."""


def check_results(results: Mapping[str, Any]) -> None:
    """Raises :class:`ReportError` naming every required key that is missing."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ReportError(f"benchmark results lack {', '.join(missing)}")


def write_report(results: Mapping[str, Any], out: Path) -> list[Path]:
    """Writes ``latest.json``, ``latest.md`` and the plots into ``out``; returns their paths."""
    check_results(results)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "latest.json", out / "latest.md"]
    written[0].write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    written[1].write_text(markdown(results))
    written += plot_all(results, out)
    return written


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, met) rows of the headline table."""
    targets = results.get("targets", {})

    def met(key: str) -> str:
        verdict = targets.get(key, {}).get("met")
        return "n/a" if verdict is None else ("yes" if verdict else "**no**")

    def goal(key: str) -> str:
        return targets.get(key, {}).get("goal", "")

    growth = results.get("server_rss_growth_percent")
    return [
        (
            "reference: the original app as it ran (OpenCV, dlib twice per frame, PyTorch eager, in process)",
            f"{_fmt(results['reference_videos_per_s'], 3)} videos/s",
            "",
            "",
        ),
        (
            "MTCNN baseline: MTCNN at full resolution in place of dlib (DFDC-style, in process)",
            f"{_fmt(results['mtcnn_baseline_videos_per_s'], 3)} videos/s",
            "",
            "",
        ),
        (
            "Triton end to end (`deepfake_<N>`: clip and per-frame scores), best concurrency",
            f"{_fmt(results['e2e_videos_per_s'], 3)} videos/s (concurrency {results.get('e2e_best_concurrency', '?')})",
            "",
            "",
        ),
        (
            "end-to-end speed-up vs the reference",
            f"{_fmt(results['e2e_speedup_vs_reference'], 1)}x",
            goal("e2e_speedup"),
            met("e2e_speedup"),
        ),
        (
            "end-to-end speed-up vs the MTCNN baseline",
            f"{_fmt(results['e2e_speedup_vs_mtcnn_baseline'], 1)}x",
            goal("e2e_speedup_vs_mtcnn_baseline"),
            met("e2e_speedup_vs_mtcnn_baseline"),
        ),
        (
            "end-to-end latency p50 / p95, concurrency 1",
            f"{_fmt(results['e2e_p50_ms'], 0)} / {_fmt(results['e2e_p95_ms'], 0)} ms",
            goal("e2e_p50"),
            met("e2e_p50"),
        ),
        (
            "clip score alone (`verdict_<N>`, no per-frame scores), best concurrency",
            f"{_fmt(results.get('verdict_videos_per_s'), 3)} videos/s "
            f"(concurrency {results.get('verdict_best_concurrency', '?')}), "
            f"{_fmt(results.get('verdict_speedup_vs_reference'), 1)}x the reference, "
            f"{_fmt(results.get('verdict_speedup_vs_mtcnn_baseline'), 1)}x the MTCNN baseline, "
            "p50 / p95 at concurrency 1 "
            f"{_fmt(results.get('verdict_p50_ms'), 0)} / {_fmt(results.get('verdict_p95_ms'), 0)} ms",
            "",
            "",
        ),
        (
            "the original app's answer served (`original_<N>`: dlib once per frame, over threads)",
            f"{_fmt(results.get('original_mode_videos_per_s'), 3)} videos/s, "
            f"p50 {_fmt(results.get('original_mode_p50_ms'), 0)} ms; "
            f"{_fmt(results.get('original_mode_speedup_vs_reference'), 2)}x the reference; `deepfake_<N>` is "
            f"{_fmt(results.get('mtcnn_path_speedup_vs_original_mode'), 1)}x faster; PROB_FAKE differs from the "
            f"reference's by {_fmt(results.get('original_mode_prob_fake_diff'), 6)}",
            "",
            "",
        ),
        (
            "classifier score, ONNX Runtime (served: last frame) / PyTorch eager (original: N frames)",
            f"{_fmt(results['classifier_ort_ms'], 0)} / {_fmt(results['classifier_torch_ms'], 0)} ms "
            f"({_fmt(results['classifier_speedup'], 2)}x)",
            goal("classifier_speedup"),
            met("classifier_speedup"),
        ),
        (
            "classifier with per-frame scores, ONNX Runtime (N frames) / PyTorch eager",
            f"{_fmt(results.get('classifier_ort_all_frames_ms'), 0)} / {_fmt(results['classifier_torch_ms'], 0)} ms "
            f"({_fmt(results.get('classifier_all_frames_speedup'), 2)}x)",
            "",
            "",
        ),
        (
            f"server RSS before / after {results.get('rss_requests', '?')} requests",
            f"{_fmt(results['server_rss_mb_before'], 0)} / {_fmt(results['server_rss_mb_after'], 0)} MiB "
            f"({_fmt(growth, 1)} %)",
            goal("rss_growth"),
            met("rss_growth"),
        ),
    ]


def markdown(results: Mapping[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        "# Benchmark: Triton deployment against the original pipeline",
        "",
        f"Measured side by side in one run on {results['machine']} ({results['cpu_count']} cores, "
        f"{results.get('gpu', 'no GPU')}), commit `{results['git_commit']}`, {results.get('timestamp', '')}.",
        f"Video: {results['video']}, {results['frames']} frames. "
        f"Load average (1 min) at start / end: {_fmt(results.get('load_average_start'))} / "
        f"{_fmt(results.get('load_average_end'))}.",
        f"Command: `{results.get('command', 'python -m benchmarks')}`.",
        "",
        "| figure | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(results)]
    lines += ["", "## Throughput and latency by concurrency (perf_analyzer, gRPC)", ""]
    for title, key, unit in (
        ("Classifier alone, random faces", "classifier_sweep", "inferences/s"),
        ("End to end, real video bytes (`deepfake_<N>`)", "e2e_sweep", "videos/s"),
        ("Clip score alone, real video bytes (`verdict_<N>`)", "verdict_sweep", "videos/s"),
    ):
        sweep = results.get(key) or []
        if not sweep:
            continue
        lines += [
            f"{title}:",
            "",
            f"| concurrency | {unit} | p50 ms | p95 ms | p99 ms | server queue ms |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p['concurrency']} | {p['throughput']:.2f} | {p['p50_ms']:.0f} | {p['p95_ms']:.0f} | "
            f"{p['p99_ms']:.0f} | {p['queue_ms']:.0f} |"
            for p in sweep
        ]
        lines.append("")
    stages = results.get("stages", {})
    if stages:
        lines += [
            "## Where the time goes (milliseconds per video)",
            "",
            "| stage | reference | MTCNN baseline | served |",
            "| --- | --- | --- | --- |",
        ]
        columns = ("reference", "mtcnn_baseline", "served")
        names = list(dict.fromkeys(name for column in columns for name in stages.get(column, {})))
        for name in names:
            lines.append(
                "| " + " | ".join([name, *(_fmt(stages.get(column, {}).get(name), 0) for column in columns)]) + " |"
            )
        lines += ["", stages.get("note", ""), ""]
    boxes = results.get("face_boxes")
    if boxes:
        lines += [
            "## Face boxes against full-resolution detection",
            "",
            f"IoU of the served crop boxes with the crop boxes from MTCNN at full resolution on every "
            f"frame: mean {_fmt(boxes.get('iou_mean'), 3)}, min {_fmt(boxes.get('iou_min'), 3)}, "
            f"last frame (the one the faithful score uses) {_fmt(boxes.get('iou_last'), 3)}.",
            "",
        ]
    series = results.get("server_rss_series_mb")
    if series:
        every = results.get("server_rss_series_every", "?")
        lines += [
            "## Server memory across the RSS requests",
            "",
            f"Resident memory of tritonserver and its stubs (MiB), read every {every} requests: "
            + ", ".join(f"{v:.0f}" for v in series)
            + ".",
            "",
        ]
        before, after = results.get("server_rss_by_process_before", {}), results.get("server_rss_by_process_after", {})
        if before or after:
            lines += ["| process | before MiB | after MiB |", "| --- | --- | --- |"]
            lines += [
                f"| {name} | {_fmt(before.get(name), 0)} | {_fmt(after.get(name), 0)} |"
                for name in dict.fromkeys([*before, *after])
            ]
            lines.append("")
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    lines += [
        "",
        "Plots: " + ", ".join(f"`{name}`" for name in PLOTS.values()) + "; perf_analyzer CSV files "
        "next to this report.",
        "",
    ]
    return "\n".join(lines)


def _sweep(results: Mapping[str, Any], key: str) -> tuple[list[int], list[dict[str, float]]]:
    points = results.get(key) or []
    return [p["concurrency"] for p in points], points


def plot_all(results: Mapping[str, Any], out: Path) -> list[Path]:
    """Throughput, latency and stage plots; plots without data are skipped."""
    written = []
    for name, draw in (("throughput", _plot_throughput), ("latency", _plot_latency), ("stages", _plot_stages)):
        figure = draw(results)
        if figure is None:
            continue
        path = out / PLOTS[name]
        figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _plot_throughput(results: Mapping[str, Any]):
    e2e_x, e2e = _sweep(results, "e2e_sweep")
    cls_x, cls = _sweep(results, "classifier_sweep")
    if not e2e and not cls:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=_FIGSIZE)
    if e2e:
        left.plot(e2e_x, [p["throughput"] for p in e2e], "o-", label="Triton, with per-frame scores")
    verdict_x, verdict = _sweep(results, "verdict_sweep")
    if verdict:
        left.plot(verdict_x, [p["throughput"] for p in verdict], "s-", label="Triton, clip score alone")
    left.axhline(results["reference_videos_per_s"], color="grey", linestyle="--", label="original app (reference)")
    if results.get("mtcnn_baseline_videos_per_s"):
        left.axhline(results["mtcnn_baseline_videos_per_s"], color="grey", linestyle=":", label="MTCNN baseline")
    left.set(title="End to end", xlabel="concurrency", ylabel="videos / s", xticks=e2e_x or [1])
    left.set_ylim(bottom=0)
    left.legend()
    if cls:
        right.plot(cls_x, [p["throughput"] for p in cls], "o-", color="#e45756")
        right.set(xticks=cls_x)
    right.set(
        title=f"Classifier alone ({results['frames']} faces per inference)",
        xlabel="concurrency",
        ylabel="inferences / s",
    )
    right.set_ylim(bottom=0)
    figure.suptitle(f"Throughput on {results['machine']}, {results['cpu_count']} cores")
    return figure


def _plot_latency(results: Mapping[str, Any]):
    panels = [
        (key, title)
        for key, title in (("e2e_sweep", "End to end"), ("classifier_sweep", "Classifier alone"))
        if results.get(key)
    ]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=_FIGSIZE, squeeze=False)
    width = 0.27
    for axis, (key, title) in zip(axes[0], panels):
        xs, points = _sweep(results, key)
        for offset, (column, label) in zip(
            (-width, 0.0, width), (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
        ):
            axis.bar([x + offset for x in xs], [p[column] / 1000.0 for p in points], width, label=label)
        axis.set(title=title, xlabel="concurrency", ylabel="latency (s)", xticks=xs)
        axis.legend()
    figure.suptitle("Latency percentiles (perf_analyzer, gRPC)")
    return figure


def _plot_stages(results: Mapping[str, Any]):
    stages = results.get("stages", {})
    bars = [
        (label, stages.get(key) or {})
        for key, label in (
            ("reference", "original app"),
            ("mtcnn_baseline", "MTCNN baseline"),
            ("served", "Triton, concurrency 1"),
        )
    ]
    bars = [(label, values) for label, values in bars if values]
    if not bars:
        return None
    figure, axis = plt.subplots(figsize=(_FIGSIZE[0], 2.6))
    names = list(dict.fromkeys(name for _, values in bars for name in values))
    for row, (_, values) in enumerate(bars):
        left = 0.0
        for name in names:
            seconds = values.get(name, 0.0) / 1000.0
            axis.barh(
                row,
                seconds,
                left=left,
                color=_STAGE_COLOURS.get(name, "#333333"),
                label=name if row == 0 or name not in bars[0][1] else None,
            )
            left += seconds
    axis.set_yticks(range(len(bars)), [label for label, _ in bars])
    axis.set_xlabel("seconds per video")
    axis.legend(ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    axis.set_title("Where the time goes")
    return figure


def targets(goals: Sequence[tuple[str, str, bool | None]]) -> dict[str, dict[str, Any]]:
    """``{"key": {"goal": text, "met": bool or None}}`` from (key, goal text, verdict) triples."""
    return {key: {"goal": goal, "met": verdict} for key, goal, verdict in goals}
