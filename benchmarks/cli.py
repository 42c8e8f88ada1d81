"""``python -m benchmarks``: one side-by-side run, the baselines and Triton, written to a report.

Everything is measured in this one process run on this one machine, in this order: the reference
(the original app's pipeline as it ran: dlib twice per frame), the MTCNN-at-full-resolution
baseline, the preprocessing library's stage timers, the classifier alone (ONNX Runtime and PyTorch
eager), then the embedded server under perf_analyzer (``deepfake_<N>``, ``verdict_<N>``), the
served original mode (``original_<N>``), then the server's memory across a series of requests.
Nothing is assembled from other runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import contract
from benchmarks import perf, report
from benchmarks.classifier import time_classifier
from benchmarks.reference import OriginalAppPipeline, ReferencePipeline
from benchmarks.server import (
    bench_repository,
    cpu_count,
    model_stats,
    models_of,
    process_breakdown,
    process_tree_rss_mb,
    server_pid,
    start_server,
    stats_delta,
    video_input,
)
from benchmarks.video import PROJECT_ROOT, bench_video
from contract import EXPORT_METADATA_FILE, Kind, classifier_file, model_name
from export.checkpoints import load_original_model
from preprocessing import FacePipeline, PipelineConfig, crop_box, follow_face
from preprocessing.track import iou_matrix

log = logging.getLogger("benchmarks")

DEFAULT_FRAMES = 20
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results"
DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
SCORE_OUTPUTS = contract.SCORE_OUTPUTS
REQUEST_TIMEOUT_S = 300.0
# Adapter settings in the preprocessing model's parameters that PipelineConfig does not take.
ADAPTER_PARAMETERS = ("torch_threads",)

# The targets of the performance issue (2 cores, no GPU, 1080p sample, 20 frames), against the
# reference (the original app as it ran). They were first set against the MTCNN baseline, which is
# still reported beside them.
TARGET_E2E_SPEEDUP = 15.0
STRETCH_E2E_SPEEDUP = 25.0
TARGET_CLASSIFIER_SPEEDUP = 1.8
TARGET_P50_MS = 1500.0
TARGET_RSS_GROWTH_PERCENT = 5.0
# Requests between two memory readings in the series around the RSS requests.
RSS_CHUNK = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--video",
        type=Path,
        default=None,
        help="video to measure with (default: the real 1080p sample in ../shared/data, else a generated 1080p clip)",
    )
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="sequence length N")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the report, CSV files and plots")
    parser.add_argument(
        "--reference-runs",
        type=int,
        default=2,
        help="timed videos through the reference (the original app) and through the MTCNN baseline",
    )
    parser.add_argument(
        "--original-requests",
        type=int,
        default=3,
        help="timed requests to the served original mode at each concurrency (1 and 2)",
    )
    parser.add_argument("--stage-runs", type=int, default=3, help="timed videos through the preprocessing library")
    parser.add_argument("--classifier-repeats", type=int, default=5, help="timed calls per classifier way")
    parser.add_argument("--classifier-concurrency", type=int, default=8, help="highest classifier concurrency")
    parser.add_argument("--e2e-concurrency", type=int, default=4, help="highest end-to-end concurrency")
    parser.add_argument(
        "--classifier-window-requests",
        type=int,
        default=4,
        help="perf_analyzer classifier: requests per window and per unit of concurrency",
    )
    parser.add_argument(
        "--e2e-window-requests",
        type=int,
        default=6,
        help="perf_analyzer end to end: requests per window and per unit of concurrency "
        "(count windows: one request takes seconds)",
    )
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows per level at most")
    parser.add_argument(
        "--stability-percent",
        type=int,
        default=100,
        help="perf_analyzer: allowed spread over 3 windows before a level counts as stable",
    )
    parser.add_argument("--rss-requests", type=int, default=200, help="requests between the two memory readings")
    parser.add_argument("--rss-concurrency", type=int, default=2, help="requests in flight during that series")
    return parser


def _load_average() -> float:
    return os.getloadavg()[0]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except FileNotFoundError:
        pass
    return f"{model}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _gpu() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} present but unused by this CPU benchmark"
    return "no GPU"


def served_pipeline_config(repository: Path, frames: int) -> tuple[PipelineConfig, int]:
    """The preprocessing settings of the served model (``configs/cpu.pbtxt``) and its torch threads."""
    path = repository / f"preprocess_{frames}" / "configs" / "cpu.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    params = {key: value.string_value for key, value in config.parameters.items()}
    threads = int(params.get("torch_threads", "0"))
    return PipelineConfig.from_parameters(params, ignore=ADAPTER_PARAMETERS), threads


def _checkpoint(repository: Path, frames: int) -> tuple[Path, Path]:
    onnx_path = classifier_file(repository, frames)
    metadata = classifier_file(repository, frames, EXPORT_METADATA_FILE)
    if not onnx_path.is_file() or not metadata.is_file():
        raise FileNotFoundError(
            f"{onnx_path} or its export.json is missing: run `make models` "
            f"(python -m export onnx ... --frames {frames}) first"
        )
    return Path(json.loads(metadata.read_text())["checkpoint"]), onnx_path


def score(url: str, model: str, data: bytes) -> dict[str, np.ndarray]:
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(
            model,
            [video_input(data)],
            outputs=[grpcclient.InferRequestedOutput(n) for n in SCORE_OUTPUTS],
            client_timeout=REQUEST_TIMEOUT_S,
        )
    return {name: result.as_numpy(name) for name in SCORE_OUTPUTS}


def _repeat_requests(url: str, model: str, data: bytes, count: int, concurrency: int) -> float:
    """Sends ``count`` requests, ``concurrency`` at a time; returns the wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for outputs in pool.map(lambda _: score(url, model, data), range(count)):
            if outputs["PROB_FAKE"].shape != (1, 1):
                raise RuntimeError(f"unexpected PROB_FAKE shape {outputs['PROB_FAKE'].shape}")
    return time.perf_counter() - started


def box_agreement(
    reference_detections, served_boxes: np.ndarray, config: PipelineConfig, frame_size: tuple[int, int]
) -> dict[str, float]:
    """IoU of the served crop boxes with those that full-resolution detection on every frame gives."""
    boxes, _found = follow_face(reference_detections, config.min_face_prob, config.iou_threshold)
    wanted = np.stack([crop_box(b, frame_size, config.margin, config.square, config.shift_y) for b in boxes])
    served = np.asarray(served_boxes, dtype=np.float64).reshape(-1, 4)
    ious = np.array([iou_matrix(wanted[i : i + 1], served[i : i + 1])[0, 0] for i in range(len(served))])
    return {
        "iou_mean": float(ious.mean()),
        "iou_min": float(ious.min()),
        "iou_last": float(ious[-1]),
        "per_frame": [round(float(v), 4) for v in ious],
    }


def _level(
    results: dict[str, Any],
    args: argparse.Namespace,
    model: str,
    url: str,
    level: int,
    requests_per_unit: int,
    out: Path,
    input_data: Path | None = None,
) -> list[perf.PerfPoint]:
    """One perf_analyzer level in count windows of ``requests_per_unit`` x ``level`` requests.

    Count windows, one perf_analyzer run per level: latency grows with concurrency on two cores,
    and a fixed time window at a high level can close before any request completes. A level that
    never gives a stable measurement is left out and noted.
    """
    log.info("perf_analyzer: %s, concurrency %d", model, level)
    settings = perf.PerfSettings(
        (level, level), None, args.max_trials, args.stability_percent, window_requests=requests_per_unit * level
    )
    csv_path = out / f"perf_{model}_c{level}.csv"
    try:
        return perf.run_sweep(model, url, settings, csv_path, input_data=input_data)
    except perf.PerfAnalyzerError as error:
        if "stable measurement" not in str(error):
            raise
        results["notes"].append(
            f"{model} at concurrency {level}: no stable measurement within "
            f"{settings.max_trials} windows (busy machine); left out, see {csv_path.with_suffix('.log').name}"
        )
        return []


def _require_points(model: str, points: list[perf.PerfPoint], results: dict[str, Any]) -> None:
    """Raises a clear error when no level of a sweep gave a stable measurement."""
    if not points:
        raise perf.PerfAnalyzerError(
            f"{model}: no stable measurement at any concurrency ({'; '.join(results['notes'])})"
        )


def _sweep_summary(prefix: str, points: list[perf.PerfPoint], results: dict[str, Any]) -> dict[str, float]:
    """Best throughput (its concurrency, its ratios to both baselines) and the latency at concurrency 1."""
    best = max(points, key=lambda p: p.throughput)
    return {
        f"{prefix}_videos_per_s": best.throughput,
        f"{prefix}_best_concurrency": best.concurrency,
        f"{prefix}_p50_ms": points[0].p50_ms,
        f"{prefix}_p95_ms": points[0].p95_ms,
        f"{prefix}_speedup_vs_reference": best.throughput / results["reference_videos_per_s"],
        f"{prefix}_speedup_vs_mtcnn_baseline": best.throughput / results["mtcnn_baseline_videos_per_s"],
    }


def _time_baseline(pipeline, video_path: Path, runs: int) -> tuple[list, float, dict[str, float]]:
    """``runs`` timed videos through a baseline: the results, videos/s and the mean stage times (ms)."""
    pipeline.warm_up()
    done = [pipeline(video_path) for _ in range(runs)]
    seconds = statistics.mean(sum(r.timings.values()) for r in done)
    stages = {k: 1000.0 * statistics.mean(r.timings[k] for r in done) for k in done[0].timings}
    return done, 1.0 / seconds, stages


def time_original_mode(url: str, frames: int, data: bytes, requests: int) -> dict[str, Any]:
    """The served original mode (``original_<N>``): latency one at a time, throughput two at a time.

    Timed with the plain gRPC client rather than perf_analyzer: one request takes seconds, so
    perf_analyzer's stable windows would take minutes.
    """
    model = model_name(Kind.ORIGINAL, frames)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        outputs = score(url, model, data)
        latencies.append(1000.0 * (time.perf_counter() - started))
    wall = _repeat_requests(url, model, data, 2 * requests, concurrency=2)
    return {
        "original_mode_p50_ms": statistics.median(latencies),
        "original_mode_latencies_ms": [round(v, 1) for v in latencies],
        "original_mode_videos_per_s": max(2 * requests / wall, 1000.0 / statistics.median(latencies)),
        "original_mode_prob_fake": float(outputs["PROB_FAKE"][0, 0]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    frames = args.frames
    scratch = Path(tempfile.mkdtemp(prefix="bench_"))
    results: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + shlex.join(sys.argv[1:]),
        "machine": _machine(),
        "cpu_count": cpu_count(),
        "gpu": _gpu(),
        "git_commit": _git_commit(),
        "load_average_start": _load_average(),
        "frames": frames,
        "notes": [],
    }
    video = bench_video(args.video, scratch)
    results["video"] = video.label
    results["video_bytes"] = len(video.data)
    checkpoint, onnx_path = _checkpoint(args.repository, frames)
    config, served_threads = served_pipeline_config(args.repository, frames)

    # 1. The reference (the original app as it ran) and the MTCNN baseline, one video at a time,
    # torch's default threads (every core).
    original = load_original_model(checkpoint)
    log.info("reference (the original app): %d runs of %s", args.reference_runs, video.label)
    app_runs, results["reference_videos_per_s"], reference_stages = _time_baseline(
        OriginalAppPipeline(original, frames), video.path, args.reference_runs
    )
    results["reference_pipeline"] = OriginalAppPipeline.label
    results["reference_seconds_per_video"] = [round(sum(r.timings.values()), 3) for r in app_runs]
    results["reference_label"] = f"{app_runs[-1].label} {app_runs[-1].confidence:.1f} %"
    results["reference_prob_fake"] = app_runs[-1].prob_fake
    log.info("MTCNN baseline: %d runs", args.reference_runs)
    runs, results["mtcnn_baseline_videos_per_s"], mtcnn_stages = _time_baseline(
        ReferencePipeline(original, frames), video.path, args.reference_runs
    )
    results["mtcnn_baseline_pipeline"] = ReferencePipeline.label
    results["mtcnn_baseline_seconds_per_video"] = [round(sum(r.timings.values()), 3) for r in runs]

    # 2. The preprocessing library's own timers, with the served model's settings and threads.
    log.info("preprocessing library: %d runs", args.stage_runs)
    previous_threads = torch.get_num_threads()
    if served_threads > 0:
        torch.set_num_threads(served_threads)
    try:
        pipeline = FacePipeline(config)
        pipeline(video.data)
        library = [pipeline(video.data) for _ in range(args.stage_runs)]
    finally:
        torch.set_num_threads(previous_threads)
    library_stages = {k: 1000.0 * statistics.median(r.timings[k] for r in library) for k in library[0].timings}
    # Decoding runs on its own thread while detection works: in the wall time it only counts for
    # as long as detection had to wait for frames.
    results["served_decode_thread_ms"] = library_stages["decode"]
    results["served_preprocess_wall_ms"] = 1000.0 * statistics.median(r.wall_seconds for r in library)
    library_stages["decode"] = max(
        0.0, results["served_preprocess_wall_ms"] - library_stages["detect"] - library_stages["crop"]
    )
    results["preprocess_config"] = {
        "detect_size": config.detect_size,
        "min_face_size": config.min_face_size,
        "torch_threads": served_threads,
    }

    # 3. The classifier alone on the faces the library made.
    log.info("classifier: ONNX Runtime against PyTorch eager")
    timing = time_classifier(
        onnx_path, original, library[-1].faces, repeats=args.classifier_repeats, threads=cpu_count()
    )
    results.update(
        classifier_ort_ms=timing.ort_ms,
        classifier_torch_ms=timing.torch_ms,
        classifier_speedup=timing.speedup,
        classifier_ort_all_frames_ms=timing.ort_all_frames_ms,
        classifier_all_frames_speedup=timing.all_frames_speedup,
        classifier_torch_last_frame_ms=timing.torch_last_frame_ms,
        classifier_max_abs_logit_diff=timing.max_abs_logit_diff,
        classifier_threads=timing.threads,
    )

    # 4. The server under perf_analyzer.
    pre_name, cls_name, ens_name = models_of(frames)
    repository = bench_repository(args.repository, frames, scratch / "repository")
    log.info("starting the embedded server on %s", repository)
    server = start_server(repository, out / "tritonserver.log")
    try:
        url = server.grpc_url
        served = score(url, ens_name, video.data)  # also the warm-up
        score(url, ens_name, video.data)
        results["face_boxes"] = box_agreement(
            runs[-1].detections, served["FACE_BOXES"][0], config, library[-1].source_size
        )
        results["served_prob_fake"] = float(served["PROB_FAKE"][0, 0])
        results["served_boxes_match_library"] = bool(np.allclose(served["FACE_BOXES"][0], library[-1].boxes, atol=1e-3))

        classifier_points = []
        for level in range(1, args.classifier_concurrency + 1):
            classifier_points += _level(results, args, cls_name, url, level, args.classifier_window_requests, out)
        results["classifier_sweep"] = [p.__dict__ for p in classifier_points]

        input_json = perf.write_video_input(video.data, scratch / "video_input.json")
        e2e_points, e2e_stats = [], {}
        with grpcclient.InferenceServerClient(url) as client:
            for level in range(1, args.e2e_concurrency + 1):
                before = model_stats(client, (pre_name, cls_name))
                e2e_points += _level(
                    results, args, ens_name, url, level, args.e2e_window_requests, out, input_data=input_json
                )
                e2e_stats[level] = stats_delta(model_stats(client, (pre_name, cls_name)), before)
        results["e2e_sweep"] = [p.__dict__ for p in e2e_points]
        results["triton_stats_by_concurrency"] = {str(k): v for k, v in e2e_stats.items()}
        _require_points(ens_name, e2e_points, results)
        first = e2e_points[0]
        results.update(_sweep_summary("e2e", e2e_points, results), e2e_p99_ms=first.p99_ms)

        # The clip's score alone (verdict_<N>): what the original app returned, without per-frame scores.
        verdict = model_name(Kind.VERDICT, frames)
        verdict_points = []
        for level in range(1, args.e2e_concurrency + 1):
            verdict_points += _level(
                results, args, verdict, url, level, args.e2e_window_requests, out, input_data=input_json
            )
        results["verdict_sweep"] = [p.__dict__ for p in verdict_points]
        if verdict_points:
            results.update(_sweep_summary("verdict", verdict_points, results))

        # The served original mode: the reference's answer, detected once per frame over threads.
        log.info(
            "served original mode: %d requests at concurrency 1, %d at 2",
            args.original_requests,
            2 * args.original_requests,
        )
        results.update(time_original_mode(url, frames, video.data, args.original_requests))
        results["original_mode_speedup_vs_reference"] = (
            results["original_mode_videos_per_s"] / results["reference_videos_per_s"]
        )
        results["mtcnn_path_speedup_vs_original_mode"] = (
            results["e2e_videos_per_s"] / results["original_mode_videos_per_s"]
        )
        results["original_mode_prob_fake_diff"] = abs(
            results["original_mode_prob_fake"] - results["reference_prob_fake"]
        )

        log.info("memory across %d requests", args.rss_requests)
        pid = server_pid(server)
        results["server_rss_mb_before"] = process_tree_rss_mb(pid)
        results["server_rss_by_process_before"] = process_breakdown(pid)
        # Read between chunks too: one reading at each end cannot tell growth from a swing.
        series, wall = [results["server_rss_mb_before"]], 0.0
        for done in range(0, args.rss_requests, RSS_CHUNK):
            chunk = min(RSS_CHUNK, args.rss_requests - done)
            wall += _repeat_requests(url, ens_name, video.data, chunk, args.rss_concurrency)
            series.append(process_tree_rss_mb(pid))
        results["server_rss_mb_after"] = series[-1]
        results["server_rss_series_mb"] = [round(v, 1) for v in series]
        results["server_rss_series_every"] = RSS_CHUNK
        results["server_rss_by_process_after"] = process_breakdown(pid)
        results["rss_requests"] = args.rss_requests
        results["rss_series_videos_per_s"] = args.rss_requests / wall
        results["server_recoveries"] = len(server.recoveries)
    finally:
        server.stop()
    results["server_rss_growth_percent"] = 100.0 * (
        results["server_rss_mb_after"] / results["server_rss_mb_before"] - 1.0
    )

    stats1 = e2e_stats[1]
    results["stages"] = {
        "reference": reference_stages,
        "mtcnn_baseline": mtcnn_stages,
        "served": {
            **library_stages,
            "classify": stats1[cls_name]["compute_infer"],
            "queue": stats1[pre_name]["queue"] + stats1[cls_name]["queue"],
            "other": max(
                0.0,
                first.avg_ms
                - stats1[pre_name]["compute_infer"]
                - stats1[cls_name]["compute_infer"]
                - stats1[pre_name]["queue"]
                - stats1[cls_name]["queue"],
            ),
        },
        "note": (
            "Reference and MTCNN baseline: their own timers, mean of their runs (the reference's detect counts both of "
            "its dlib searches per frame). Served: decode/detect/crop from the preprocessing "
            "library's timers (in process, the served settings and threads, median), where decode is only the "
            f"time detection waited for frames: decoding runs on its own thread beside detection "
            f"({results['served_decode_thread_ms']:.0f} ms in all); classify and queue from "
            "Triton's statistics at concurrency 1; other = the rest of the client-side average latency "
            "(transfers, ensemble hand-over, python-backend overhead)."
        ),
    }
    results["load_average_end"] = _load_average()
    results["targets"] = report.targets(
        [
            (
                "e2e_speedup",
                f">= {TARGET_E2E_SPEEDUP:.0f}x (stretch {STRETCH_E2E_SPEEDUP:.0f}x)",
                results["e2e_speedup_vs_reference"] >= TARGET_E2E_SPEEDUP,
            ),
            (
                "e2e_speedup_vs_mtcnn_baseline",
                f">= {TARGET_E2E_SPEEDUP:.0f}x (the former target, against this baseline)",
                results["e2e_speedup_vs_mtcnn_baseline"] >= TARGET_E2E_SPEEDUP,
            ),
            (
                "classifier_speedup",
                f">= {TARGET_CLASSIFIER_SPEEDUP}x",
                results["classifier_speedup"] >= TARGET_CLASSIFIER_SPEEDUP,
            ),
            ("e2e_p50", f"<= {TARGET_P50_MS:.0f} ms", results["e2e_p50_ms"] <= TARGET_P50_MS),
            (
                "rss_growth",
                f"< {TARGET_RSS_GROWTH_PERCENT:.0f} %",
                results["server_rss_growth_percent"] < TARGET_RSS_GROWTH_PERCENT,
            ),
        ]
    )
    results["notes"].append(
        "No GPU on this machine: the GPU paths (MTCNN on CUDA, the classifier on the "
        "onnxruntime/TensorRT backends) are not measured here."
    )
    if video.generated:
        results["notes"].append("The real 1080p sample was absent: a generated 1080p clip was measured instead.")
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    errors = [
        f"--{name.replace('_', '-')} must be at least 1"
        for name in (
            "frames",
            "reference_runs",
            "original_requests",
            "stage_runs",
            "classifier_repeats",
            "classifier_concurrency",
            "e2e_concurrency",
            "e2e_window_requests",
            "classifier_window_requests",
            "rss_requests",
            "rss_concurrency",
            "max_trials",
        )
        if getattr(args, name) < 1
    ]
    if errors:
        build_parser().error("; ".join(errors))
    results = run(args)
    for path in report.write_report(results, args.out):
        log.info("wrote %s", path)
    return 0
