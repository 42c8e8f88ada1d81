"""The benchmark code itself: reference pipeline, perf_analyzer parsing, report writer (no timing asserts)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import perf, report
from benchmarks.cli import box_agreement, build_parser, main
from benchmarks.reference import STAGES, OriginalAppPipeline, ReferencePipeline, ReferenceRunError
from benchmarks.server import bench_repository, process_tree_rss_mb
from benchmarks.video import generated_clip
from export.model import OriginalModel
from preprocessing import PipelineConfig, crop_box
from preprocessing.track import Detections

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLIP_FRAMES = 3
CLIP_SIZE = (320, 240)
# perf_analyzer 2.51's --verbose-csv header and console output for two concurrency levels.
PERF_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "1,1.5,600,6000,2000,400,600000,8000,5,640000,700000,720000,750000,650000,650,640000\n"
    "2,2.5,5900,6200,280000,4000,700000,4200,4,900000,1100000,1200000,1300000,950000,5900,940000\n"
)
PERF_CONSOLE = (
    "Request concurrency: 1\n  Client: \n    Request count: 9\n"
    "Request concurrency: 2\n  Client: \n    Request count: 15\n"
)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "clip.mp4"
    path.write_bytes(generated_clip(frames=CLIP_FRAMES, size=CLIP_SIZE))
    return path


@pytest.fixture(scope="module")
def reference_run(clip_path):
    torch.manual_seed(0)
    pipeline = ReferencePipeline(OriginalModel(), frames=CLIP_FRAMES)
    return pipeline, pipeline(clip_path)


def test_reference_pipeline_scores_a_generated_clip(reference_run):
    _, result = reference_run
    assert result.frames_read == CLIP_FRAMES
    assert result.logits.shape == (2,) and np.isfinite(result.logits).all()
    assert result.label in ("REAL", "FAKE")
    assert 50.0 <= result.confidence <= 100.0
    assert set(result.timings) == set(STAGES) and all(t > 0 for t in result.timings.values())
    assert len(result.detections) == CLIP_FRAMES
    assert all(len(d.boxes) >= 1 for d in result.detections), "MTCNN should find the astronaut in every frame"


def test_original_app_pipeline_detects_twice_and_crops_dlibs_first_face(reference_run, clip_path):
    pipeline = OriginalAppPipeline(reference_run[0].model, frames=CLIP_FRAMES)
    result = pipeline(clip_path)
    assert set(result.timings) == set(STAGES) and result.frames_read == CLIP_FRAMES
    assert 0.0 <= result.prob_fake <= 1.0
    assert all(len(d.boxes) >= 1 for d in result.detections), "dlib should find the astronaut in every frame"
    # The page's thumbnails: the second search, on the RGB frames, padded by 40 px.
    assert len(pipeline.thumbnails) >= CLIP_FRAMES
    _, y1, _, y2 = result.detections[0].boxes[0]
    assert pipeline.thumbnails[0].shape[0] == min(y2 + 40, CLIP_SIZE[1]) - max(y1 - 40, 0)


def test_reference_refuses_clip_shorter_than_n(reference_run, clip_path):
    pipeline, _ = reference_run
    longer = ReferencePipeline(pipeline.model, frames=CLIP_FRAMES + 1)
    with pytest.raises(ReferenceRunError, match=f"has {CLIP_FRAMES} frames"):
        longer(clip_path)


def test_reference_refuses_unreadable_file(reference_run, tmp_path):
    pipeline, _ = reference_run
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ReferenceRunError):
        pipeline(bad)


def test_parse_csv_reads_milliseconds_and_request_counts(tmp_path):
    path = tmp_path / "perf.csv"
    path.write_text(PERF_CSV)
    points = perf.parse_csv(path, PERF_CONSOLE)
    assert [p.concurrency for p in points] == [1, 2]
    assert points[0].p50_ms == pytest.approx(640.0) and points[1].p99_ms == pytest.approx(1300.0)
    assert points[0].queue_ms == pytest.approx(2.0)
    assert points[0].compute_ms == pytest.approx(0.4 + 600.0 + 8.0)
    assert [p.requests for p in points] == [9, 15]


def test_parse_csv_names_a_missing_column(tmp_path):
    path = tmp_path / "perf.csv"
    path.write_text("Concurrency,Inferences/Second\n1,2.0\n")
    with pytest.raises(perf.PerfAnalyzerError, match="p50 latency"):
        perf.parse_csv(path)


def test_video_input_json_carries_bytes_and_shape(tmp_path):
    data = bytes(range(256)) * 3
    payload = json.loads(perf.write_video_input(data, tmp_path / "input.json").read_text())
    video = payload["data"][0]["VIDEO"]
    assert video["shape"] == [len(data)]
    assert base64.b64decode(video["b64"]) == data


def test_perf_analyzer_is_found_with_its_library():
    command, env = perf.perf_analyzer_command()
    assert Path(command[0]).is_file()
    assert any(Path(p, "libcudart.so.12").exists() for p in env["LD_LIBRARY_PATH"].split(os.pathsep) if p)


def _results(reference_videos_per_s: float, points: list[perf.PerfPoint]) -> dict:
    best = max(points, key=lambda p: p.throughput)
    return {
        "video": "clip.mp4",
        "frames": CLIP_FRAMES,
        "cpu_count": 2,
        "machine": "test machine",
        "git_commit": "abc",
        "reference_videos_per_s": reference_videos_per_s,
        "mtcnn_baseline_videos_per_s": 2 * reference_videos_per_s,
        "e2e_videos_per_s": best.throughput,
        "e2e_best_concurrency": best.concurrency,
        "e2e_speedup_vs_reference": best.throughput / reference_videos_per_s,
        "e2e_speedup_vs_mtcnn_baseline": best.throughput / reference_videos_per_s / 2,
        "original_mode_videos_per_s": 0.1,
        "original_mode_p50_ms": 9000.0,
        "original_mode_speedup_vs_reference": 1.5,
        "mtcnn_path_speedup_vs_original_mode": 12.0,
        "original_mode_prob_fake_diff": 2e-6,
        "e2e_p50_ms": points[0].p50_ms,
        "e2e_p95_ms": points[0].p95_ms,
        "classifier_ort_ms": 250.0,
        "classifier_torch_ms": 500.0,
        "classifier_speedup": 2.0,
        "server_rss_mb_before": 1000.0,
        "server_rss_mb_after": 1010.0,
        "server_rss_growth_percent": 1.0,
        "rss_requests": 200,
        "server_rss_series_mb": [1000.0, 1004.0, 1010.0],
        "server_rss_series_every": 100,
        "server_rss_by_process_before": {"tritonserver": 100.0, "preprocess_10 (pid 7)": 900.0},
        "server_rss_by_process_after": {"tritonserver": 104.0, "preprocess_10 (pid 7)": 906.0},
        "e2e_sweep": [p.__dict__ for p in points],
        "classifier_sweep": [p.__dict__ for p in points],
        "stages": {
            "reference": {"decode": 100.0, "detect": 900.0},
            "mtcnn_baseline": {"decode": 100.0, "detect": 400.0},
            "served": {"decode": 50.0, "queue": 5.0},
        },
        "targets": report.targets([("e2e_speedup", ">= 15x", False), ("classifier_speedup", ">= 1.8x", True)]),
        "face_boxes": {"iou_mean": 0.9, "iou_min": 0.8, "iou_last": 0.95},
    }


def test_report_writes_json_markdown_and_plots(reference_run, tmp_path):
    _, measured = reference_run
    csv_path = tmp_path / "perf.csv"
    csv_path.write_text(PERF_CSV)
    results = _results(1.0 / sum(measured.timings.values()), perf.parse_csv(csv_path, PERF_CONSOLE))
    written = report.write_report(results, tmp_path / "out")
    names = {p.name for p in written}
    assert {"latest.json", "latest.md", *report.PLOTS.values()} <= names
    saved = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert set(report.REQUIRED_KEYS) <= set(saved)
    assert saved["e2e_p50_ms"] == pytest.approx(640.0)
    text = (tmp_path / "out" / "latest.md").read_text()
    assert "| figure | measured | target | met |" in text and "**no**" in text
    assert "read every 100 requests: 1000, 1004, 1010." in text
    assert "| preprocess_10 (pid 7) | 900 | 906 |" in text
    assert "| detect | 900 | 400 | n/a |" in text and "`deepfake_<N>` is 12.0x faster" in text
    for name in report.PLOTS.values():
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


def test_report_names_missing_keys(tmp_path):
    with pytest.raises(report.ReportError, match="e2e_p95_ms"):
        report.write_report({key: 1 for key in report.REQUIRED_KEYS if key != "e2e_p95_ms"}, tmp_path)


def test_box_agreement_is_one_for_the_same_boxes_and_zero_elsewhere():
    config = PipelineConfig(frames=2)
    size = (640, 480)
    faces = [np.array([[100, 100, 180, 200]], np.float32), np.array([[110, 100, 190, 200]], np.float32)]
    detections = [Detections(b, np.array([0.99], np.float32)) for b in faces]
    same = np.stack([crop_box(b[0], size, config.margin, config.square, config.shift_y) for b in faces])
    agreement = box_agreement(detections, same, config, size)
    assert agreement["iou_mean"] == pytest.approx(1.0) and agreement["iou_last"] == pytest.approx(1.0)
    elsewhere = same + np.array([300, 200, 300, 200])
    assert box_agreement(detections, elsewhere, config, size)["iou_min"] == 0.0


def test_rss_of_this_process_is_counted():
    assert process_tree_rss_mb(os.getpid()) > 10.0


def test_bench_repository_links_only_the_requested_length(tmp_path):
    source = tmp_path / "source"
    for name in (
        "preprocess_7",
        "resnext_lstm_7",
        "classify_7",
        "classify_original_7",
        "deepfake_7",
        "explain_7",
        "verdict_7",
        "original_7",
        "preprocess_original_7",
        "faces_7",
        "deepfake_9",
    ):
        (source / name).mkdir(parents=True)
    target = bench_repository(source, 7, tmp_path / "bench")
    assert sorted(p.name for p in target.iterdir()) == [
        "classify_7",
        "classify_original_7",
        "deepfake_7",
        "original_7",
        "preprocess_7",
        "preprocess_original_7",
        "resnext_lstm_7",
        "verdict_7",
    ]
    assert (target / "deepfake_7").resolve() == (source / "deepfake_7").resolve()
    with pytest.raises(FileNotFoundError, match="no 9-frame models"):
        bench_repository(source, 9, tmp_path / "other")


def test_cli_refuses_bad_numbers(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--frames", "0", "--rss-requests", "0"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--frames must be at least 1" in err and "--rss-requests must be at least 1" in err
    assert build_parser().parse_args([]).frames == 20
