"""The gRPC client end to end against the real server (``triton_server`` fixture).

Every video is generated at run time by ``tests/media.py``; the models are the
project's real repository served by the real tritonserver.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import client
from client import ClientError, DeepfakeClient, Mode
from client.explain import unnormalise_faces
from contract import EXPORT_METADATA_FILE, SCORE_JSON_KEYS, classifier_file
from tests.integration.conftest import REPOSITORY
from tests.media import face_clip

pytestmark = pytest.mark.integration

FRAMES = 10
OTHER_FRAMES = 20
UNSERVED_FRAMES = 17
CLIENT_ROOT = Path(client.__file__).resolve().parents[1]
CLI_TIMEOUT_S = 300
# Same request, same server: answers may differ only by float noise of batching.
SAME_SCORE_ATOL = 1e-5
CONCURRENT_CLIPS = 5
RESUME_FIRST_PART = 2
RESTART_CLIPS = 8
RESULTS_POLL_S = 0.2
RESULTS_WAIT_S = 120
GARBAGE = b"this is not a video file, only text " * 64


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs ``python -m client ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=CLIENT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def softmax_fake(logits) -> float:
    fake, real = logits
    return 1.0 / (1.0 + math.exp(real - fake))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Distinct face clips on disk, enough for the largest batch below."""
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for seed in range(RESTART_CLIPS):
        path = folder / f"face_{seed:02d}.mp4"
        path.write_bytes(face_clip(seed=seed))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def detector(triton_server):
    with DeepfakeClient(triton_server.grpc_url, timeout_s=CLI_TIMEOUT_S) as api:
        yield api


def test_score_api_follows_the_contract(detector, clips):
    result = detector.score(clips[0], frames=FRAMES)

    assert result.video == str(clips[0])
    assert result.frame_prob_fake.shape == (FRAMES,)
    assert result.face_boxes.shape == (FRAMES, 4)
    assert result.face_found.shape == (FRAMES,) and result.face_found.dtype == bool
    assert 0.0 <= result.prob_fake <= 1.0
    assert np.all((result.frame_prob_fake >= 0.0) & (result.frame_prob_fake <= 1.0))
    assert result.prob_fake == pytest.approx(softmax_fake(result.logits), abs=SAME_SCORE_ATOL)
    # The published weights score a video from its N-th frame alone, so the
    # faithful score is the last frame's own probability.
    assert result.prob_fake == pytest.approx(float(result.frame_prob_fake[-1]), abs=1e-4)
    assert result.label == ("REAL" if result.logits[1] > result.logits[0] else "FAKE")
    predicted = result.prob_fake if result.label == "FAKE" else 1.0 - result.prob_fake
    assert result.confidence == pytest.approx(100.0 * predicted, abs=1e-3)
    assert result.faces_found == int(result.face_found.sum())
    assert result.faces_found > 0, "the astronaut's face should be found"
    assert result.frames_decoded >= 1
    assert result.latency_ms > 0.0


def test_bytes_and_path_give_the_same_score(detector, clips):
    from_path = detector.score(clips[1], frames=FRAMES)
    from_bytes = detector.score(clips[1].read_bytes(), frames=FRAMES, name="in-memory")

    assert from_bytes.video == "in-memory"
    assert from_bytes.prob_fake == pytest.approx(from_path.prob_fake, abs=SAME_SCORE_ATOL)
    np.testing.assert_allclose(from_bytes.frame_prob_fake, from_path.frame_prob_fake, atol=SAME_SCORE_ATOL)
    np.testing.assert_array_equal(from_bytes.face_found, from_path.face_found)


def test_verdict_alone_gives_the_same_clip_score_without_frame_scores(detector, clips):
    full = detector.score(clips[0], frames=FRAMES)
    verdict = detector.score(clips[0], frames=FRAMES, mode=Mode.VERDICT)

    assert verdict.frame_prob_fake is None and verdict.frame_prob_fake_mean is None
    assert verdict.prob_fake == pytest.approx(full.prob_fake, abs=SAME_SCORE_ATOL)
    assert (verdict.label, verdict.faces_found, verdict.frames_decoded) == (
        full.label,
        full.faces_found,
        full.frames_decoded,
    )
    np.testing.assert_allclose(verdict.face_boxes, full.face_boxes, atol=1e-3)


def test_score_cli_verdict_only(triton_server, clips):
    video = str(clips[0])
    as_json = run_cli(
        "score", video, "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--json", "--verdict-only"
    )
    human = run_cli("score", video, "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--verdict-only")

    assert as_json.returncode == 0, as_json.stderr
    (record,) = json_lines(as_json.stdout)
    assert tuple(record) == SCORE_JSON_KEYS and record["error"] is None
    assert record["frame_prob_fake_mean"] is None and 0.0 <= record["prob_fake"] <= 1.0
    assert human.returncode == 0, human.stderr
    assert f"prob_fake {record['prob_fake']:.4f}" in human.stdout and "frame mean" not in human.stdout


def test_another_sequence_length_is_served(detector, clips):
    result = detector.score(clips[0], frames=OTHER_FRAMES)

    assert result.frame_prob_fake.shape == (OTHER_FRAMES,)
    assert result.face_boxes.shape == (OTHER_FRAMES, 4)


def test_explain_api_returns_faces_and_heatmaps(detector, clips):
    scored = detector.score(clips[2], frames=FRAMES)
    explained = detector.explain(clips[2], frames=FRAMES)

    assert explained.faces.shape == (FRAMES, 3, 112, 112)
    assert explained.heatmap.shape == (FRAMES, 112, 112)
    assert explained.heatmap.min() >= 0.0 and explained.heatmap.max() <= 1.0
    assert explained.prob_fake == pytest.approx(scored.prob_fake, abs=SAME_SCORE_ATOL)
    np.testing.assert_allclose(explained.frame_prob_fake, scored.frame_prob_fake, atol=SAME_SCORE_ATOL)


def test_score_cli_json_and_human_output(detector, triton_server, clips):
    videos = [str(clips[0]), str(clips[1])]
    as_json = run_cli("score", *videos, "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--json")
    human = run_cli("score", *videos, "--frames", str(FRAMES), "--url", triton_server.grpc_url)

    assert as_json.returncode == 0, as_json.stderr
    records = json_lines(as_json.stdout)
    assert [record["video"] for record in records] == videos
    for record in records:
        assert tuple(record) == SCORE_JSON_KEYS
        assert record["error"] is None
        expected = detector.score(record["video"], frames=FRAMES)
        assert record["prob_fake"] == pytest.approx(expected.prob_fake, abs=SAME_SCORE_ATOL)
        assert record["label"] == expected.label
        assert record["faces_found"] == expected.faces_found
        assert record["frames_decoded"] == expected.frames_decoded
    assert human.returncode == 0, human.stderr
    # One line per video, then its decision and what the bank said, indented.
    lines = [line for line in human.stdout.splitlines() if not line.startswith("  ")]
    assert len(lines) == len(videos)
    for line, record in zip(lines, records):
        assert line.startswith(record["video"] + ":")
        assert f"{record['label']} {record['confidence']:.1f}%" in line
        assert f"prob_fake {record['prob_fake']:.4f}" in line
    assert human.stdout.count("\n  decision ") == len(videos) and human.stdout.count("\n  bank: ") == len(videos)


def test_health_cli_and_api_report_every_model_ready(detector, triton_server):
    lengths = (str(FRAMES), str(OTHER_FRAMES))
    completed = run_cli("health", "--url", triton_server.grpc_url, "--frames", *lengths)
    as_json = run_cli("health", "--url", triton_server.grpc_url, "--json", "--frames", *lengths)
    report = detector.health(frames=(FRAMES, OTHER_FRAMES))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert as_json.returncode == 0
    assert report["live"] and report["ready"] and report["error"] is None
    assert report["models_from"] in ("index", "names")
    for frames in (FRAMES, OTHER_FRAMES):
        for model in (
            f"deepfake_{frames}",
            f"explain_{frames}",
            f"verdict_{frames}",
            f"preprocess_{frames}",
            f"resnext_lstm_{frames}",
        ):
            assert report["models"][model]["ready"], model
            assert model in completed.stdout
    assert json.loads(as_json.stdout)["models"].keys() == report["models"].keys()


def test_explain_cli_writes_crops_overlays_and_summary(detector, triton_server, clips, tmp_path):
    from PIL import Image

    out = tmp_path / "explained"
    completed = run_cli(
        "explain", str(clips[3]), "--out", str(out), "--frames", str(FRAMES), "--url", triton_server.grpc_url
    )

    assert completed.returncode == 0, completed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == FRAMES and len(summary["per_frame"]) == FRAMES
    assert len(list(out.glob("*.png"))) == 2 * FRAMES
    expected_faces = unnormalise_faces(detector.explain(clips[3], frames=FRAMES).faces)
    for index, frame in enumerate(summary["per_frame"]):
        with Image.open(out / frame["face_png"]) as face, Image.open(out / frame["heatmap_png"]) as overlay:
            assert face.size == overlay.size == (112, 112)
            assert face.mode == overlay.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(face), expected_faces[index])
            assert not np.array_equal(np.asarray(overlay), np.asarray(face))


def test_bad_file_is_invalid_argument_and_never_retried(detector, triton_server, clips, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(GARBAGE)

    with pytest.raises(ClientError) as caught:
        detector.score(broken, frames=FRAMES)
    completed = run_cli(
        "score", str(broken), str(clips[0]), "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--json"
    )

    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message.startswith(f"in ensemble 'deepfake_{FRAMES}'")
    assert completed.returncode == 1
    records = {record["video"]: record for record in json_lines(completed.stdout)}
    assert records[str(broken)]["error"] == caught.value.message
    assert all(records[str(broken)][key] is None for key in SCORE_JSON_KEYS if key not in ("video", "error"))
    assert records[str(clips[0])]["error"] is None
    assert "retry" not in completed.stderr


def test_unserved_length_is_not_found_and_left_out_of_the_results(detector, triton_server, clips, tmp_path):
    results = tmp_path / "results.jsonl"

    with pytest.raises(ClientError) as caught:
        detector.score(clips[0], frames=UNSERVED_FRAMES)
    completed = run_cli(
        "score",
        str(clips[0]),
        "--frames",
        str(UNSERVED_FRAMES),
        "--url",
        triton_server.grpc_url,
        "--output",
        str(results),
    )

    assert caught.value.status == "NOT_FOUND"
    assert f"deepfake_{UNSERVED_FRAMES}" in caught.value.message
    if "sequence lengths served: " in caught.value.message:
        # Said only when the server lets clients read its repository index.
        served = caught.value.message.split("sequence lengths served: ")[1].split(", ")
        assert str(FRAMES) in served and str(OTHER_FRAMES) in served
    assert completed.returncode == 1
    assert "NOT_FOUND" in completed.stderr and "retry" not in completed.stderr
    # Not the video's fault: a rerun with a served length must still score it.
    assert results.read_text() == ""


def test_concurrency_four_gives_the_same_numbers_as_one_at_a_time(triton_server, clips):
    videos = [str(path) for path in clips[:CONCURRENT_CLIPS]]
    common = ("--frames", str(FRAMES), "--url", triton_server.grpc_url, "--json")
    sequential = run_cli("score", *videos, *common, "--concurrency", "1")
    concurrent = run_cli("score", *videos, *common, "--concurrency", "4")

    assert sequential.returncode == 0, sequential.stderr
    assert concurrent.returncode == 0, concurrent.stderr
    one = {record["video"]: record for record in json_lines(sequential.stdout)}
    four = {record["video"]: record for record in json_lines(concurrent.stdout)}
    assert sorted(one) == sorted(four) == sorted(videos)
    for video in videos:
        for key in ("prob_fake", "frame_prob_fake_mean", "confidence"):
            assert four[video][key] == pytest.approx(one[video][key], abs=SAME_SCORE_ATOL), (video, key)
        for key in ("label", "faces_found", "frames_decoded"):
            assert four[video][key] == one[video][key], (video, key)


def test_resume_and_server_restart_lose_and_duplicate_nothing(triton_server, clips, tmp_path):
    """Part of a batch is done, then the rest runs while the server restarts."""
    results = tmp_path / "results.jsonl"
    videos = [str(path) for path in clips[:RESTART_CLIPS]]
    common = ("--frames", str(FRAMES), "--url", triton_server.grpc_url, "--json", "--output", str(results))

    first = run_cli("score", *videos[:RESUME_FIRST_PART], *common)
    assert first.returncode == 0, first.stderr
    assert len(results.read_text().splitlines()) == RESUME_FIRST_PART

    rest = subprocess.Popen(
        [sys.executable, "-m", "client", "score", *videos, *common, "--retries", "10", "--concurrency", "2"],
        cwd=CLIENT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + RESULTS_WAIT_S
        while len(results.read_text().splitlines()) <= RESUME_FIRST_PART:
            assert rest.poll() is None, rest.communicate()
            assert time.monotonic() < deadline, "the resumed batch wrote nothing"
            time.sleep(RESULTS_POLL_S)
        restarted_mid_batch = rest.poll() is None
        triton_server.restart()
        stdout, stderr = rest.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if rest.poll() is None:
            rest.kill()
            rest.communicate()

    assert restarted_mid_batch, "the batch ended before the server restarted; use more clips"
    assert rest.returncode == 0, stderr
    assert f"skipping {RESUME_FIRST_PART} video(s)" in stderr
    assert sorted(record["video"] for record in json_lines(stdout)) == sorted(videos[RESUME_FIRST_PART:])
    recorded = json_lines(results.read_text())
    assert sorted(record["video"] for record in recorded) == sorted(videos)
    assert all(record["error"] is None for record in recorded)

    again = run_cli("score", *videos, *common)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert len(results.read_text().splitlines()) == len(videos)


# ----------------------------------------------------------------------------- classifier versions


def exported_sha256(frames: int) -> str:
    """The sha256 of the checkpoint ``resnext_lstm_<N>/1/`` was exported from, as its export.json says."""
    return json.loads(classifier_file(REPOSITORY, frames, EXPORT_METADATA_FILE).read_text())["sha256"]


def test_every_answer_names_the_version_and_checkpoint_that_gave_it(detector, clips):
    latest = detector.score(clips[0], frames=FRAMES)
    asked = detector.score(clips[0], frames=FRAMES, version=1)
    verdict = detector.score(clips[0], frames=FRAMES, mode=Mode.VERDICT, version=1)
    explained = detector.explain(clips[0], frames=FRAMES, version=1)

    for result in (latest, asked, verdict, explained):
        assert (result.model_version, result.checkpoint_sha256) == (1, exported_sha256(FRAMES))
    assert asked.prob_fake == pytest.approx(latest.prob_fake, abs=SAME_SCORE_ATOL)
    other = detector.score(clips[0], frames=OTHER_FRAMES)
    assert other.checkpoint_sha256 == exported_sha256(OTHER_FRAMES)


def test_a_version_not_served_is_refused_naming_the_versions_served(detector, triton_server, clips, tmp_path):
    results = tmp_path / "results.jsonl"

    with pytest.raises(ClientError) as caught:
        detector.score(clips[0], frames=FRAMES, version=9)
    completed = run_cli(
        "score", str(clips[0]), "--frames", str(FRAMES), "--url", triton_server.grpc_url,
        "--model-version", "9", "--output", str(results),
    )  # fmt: skip

    assert caught.value.status == "INVALID_ARGUMENT" and "9" in caught.value.message
    assert "serves version(s) 1" in caught.value.message
    assert completed.returncode == 2 and completed.stdout == ""
    assert f"version 9 of the {FRAMES}-frame classifier is not served; versions served: 1 (latest 1)" in (
        completed.stderr
    )
    assert results.read_text() == ""


def test_score_cli_names_the_version_in_json_and_in_words(triton_server, clips):
    common = ("score", str(clips[1]), "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--model-version", "1")
    as_json = run_cli(*common, "--json")
    human = run_cli(*common)

    assert as_json.returncode == 0, as_json.stderr
    (record,) = json_lines(as_json.stdout)
    assert tuple(record) == SCORE_JSON_KEYS
    assert (record["model_version"], record["checkpoint_sha256"]) == (1, exported_sha256(FRAMES))
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0].rstrip().endswith("version 1")


def test_a_server_without_a_temporal_model_says_how_to_get_one(detector, triton_server, clips):
    message = (
        f"no temporal model is served for {FRAMES} frames: train one with "
        f"python -m train SET --frames {FRAMES} --out DIR --head temporal and export it"
    )

    with pytest.raises(ClientError) as caught:
        detector.score(clips[0], frames=FRAMES, mode=Mode.TEMPORAL)
    completed = run_cli("score", str(clips[0]), "--frames", str(FRAMES), "--url", triton_server.grpc_url, "--temporal")

    assert (caught.value.status, caught.value.message) == ("NOT_FOUND", message)
    assert completed.returncode == 1 and message in completed.stderr


def test_health_lists_the_classifier_versions_served(triton_server):
    as_json = run_cli("health", "--url", triton_server.grpc_url, "--json", "--frames", str(FRAMES))
    human = run_cli("health", "--url", triton_server.grpc_url, "--frames", str(FRAMES))

    assert as_json.returncode == 0, as_json.stderr
    versions = json.loads(as_json.stdout)["classifier_versions"]
    assert set(versions["classifiers"]) == {"10", "20", "30"} and "temporal" not in versions
    [row] = versions["classifiers"][str(FRAMES)]
    assert (row["model"], row["version"], row["sha256"]) == (f"resnext_lstm_{FRAMES}", 1, exported_sha256(FRAMES))
    assert row["latest"] and row["ready"] and row["lineage"] is None
    assert human.returncode == 0, human.stderr
    listed = human.stdout.split("classifier versions (model_info):\n", 1)[1].splitlines()
    line = next(text for text in listed if text.strip().startswith(f"resnext_lstm_{FRAMES} "))
    assert f"v1   sha256 {exported_sha256(FRAMES)[:12]}  {row['checkpoint']}" in line and "latest" in line
