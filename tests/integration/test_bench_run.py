"""``python -m benchmarks`` from end to end at its smallest settings: every stage runs and the report is written.

The figures of so short a run mean nothing; what is checked is that the whole command works against
the real server and perf_analyzer (a mistake in a late stage would otherwise show only in ``make bench``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.video import generated_clip
from contract import classifier_file

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
FRAMES = 10


@pytest.mark.skipif(
    not classifier_file(REPOSITORY, FRAMES).is_file(),
    reason="ONNX models not exported (make models)",
)
def test_smallest_bench_run_writes_the_whole_report(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(generated_clip(frames=FRAMES, size=(640, 360)))
    out = tmp_path / "results"
    assert (
        main(
            [
                "--video",
                str(clip),
                "--frames",
                str(FRAMES),
                "--out",
                str(out),
                "--repository",
                str(REPOSITORY),
                "--reference-runs",
                "1",
                "--original-requests",
                "1",
                "--stage-runs",
                "1",
                "--classifier-repeats",
                "1",
                "--classifier-concurrency",
                "1",
                "--e2e-concurrency",
                "1",
                "--classifier-window-requests",
                "2",
                "--e2e-window-requests",
                "2",
                "--max-trials",
                "8",
                "--rss-requests",
                "2",
                "--rss-concurrency",
                "1",
            ]
        )
        == 0
    )
    results = json.loads((out / "latest.json").read_text())
    for key in (
        "reference_videos_per_s",
        "mtcnn_baseline_videos_per_s",
        "e2e_speedup_vs_mtcnn_baseline",
        "original_mode_videos_per_s",
        "original_mode_p50_ms",
        "original_mode_speedup_vs_reference",
        "e2e_videos_per_s",
        "e2e_speedup_vs_reference",
        "e2e_p50_ms",
        "e2e_p95_ms",
        "classifier_ort_ms",
        "classifier_torch_ms",
        "classifier_speedup",
        "server_rss_mb_before",
        "server_rss_mb_after",
        "served_decode_thread_ms",
        "served_preprocess_wall_ms",
        "verdict_videos_per_s",
        "verdict_speedup_vs_reference",
        "verdict_p50_ms",
    ):
        assert results[key] > 0, key
    assert results["frames"] == FRAMES and results["served_boxes_match_library"]
    # The served original mode is the reference's answer (ONNX Runtime against PyTorch eager).
    assert results["original_mode_prob_fake_diff"] <= 1e-4
    assert set(results["stages"]["served"]) >= {"decode", "detect", "crop", "classify", "queue"}
    assert (out / "latest.md").read_text().startswith("# Benchmark")
    for name in (
        "throughput.png",
        "latency.png",
        "stages.png",
        f"perf_deepfake_{FRAMES}_c1.csv",
        f"perf_verdict_{FRAMES}_c1.csv",
    ):
        assert (out / name).stat().st_size > 0, name
