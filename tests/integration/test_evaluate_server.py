"""``python -m client evaluate`` end to end against the real server (``triton_server`` fixture).

The labelled set is made at test time: three real clips of the astronaut, four fakes made from
the same clips with a foreign face region put over the face (two pasted with hard edges, two
blended through a feathered mask: two groups), and one clip without a face, which the server
refuses. Eight clips of 10 frames keep the run short.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import client
from client import DeepfakeClient, Mode
from client.evaluate import scores
from contract import EXPORT_METADATA_FILE, classifier_file
from tests import media
from tests.integration.conftest import REPOSITORY

pytestmark = pytest.mark.integration

FRAMES = 10
OTHER_FRAMES = 20
FPS = 25
REAL_SEEDS = (0, 1, 2)
PASTE_SEEDS = (0, 1)
BLEND_SEEDS = (1, 2)
# The foreign region: the middle of the face box (eyes, nose, mouth), mirrored and recoloured.
INNER_FRACTION = 0.7
BLEND_ALPHA = 0.85
FEATHER_SIGMA_FRACTION = 0.08
RESUME_KEPT_LINES = 5
CLIENT_ROOT = Path(client.__file__).resolve().parents[1]
CLI_TIMEOUT_S = 600
SAME_SCORE_ATOL = 1e-5


def encode(frames: list[np.ndarray]) -> bytes:
    """RGB frames as an H.264 mp4 (one encoder thread: the same bytes on every machine)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = media.add_video_stream(out, "libx264", FPS)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def foreign_face(frame: np.ndarray, box, blend: bool) -> np.ndarray:
    """The frame with the middle of its face replaced by a mirrored, recoloured copy of it."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = INNER_FRACTION * (x2 - x1) / 2, INNER_FRACTION * (y2 - y1) / 2
    left, right = int(max(0, cx - half_w)), int(min(frame.shape[1], cx + half_w))
    top, bottom = int(max(0, cy - half_h)), int(min(frame.shape[0], cy + half_h))
    region = frame[top:bottom, left:right].astype(np.float32)
    foreign = region[:, ::-1, ::-1]  # mirrored, red and blue swapped: a face that is not this one
    out = frame.astype(np.float32)
    if blend:
        mask = np.zeros(region.shape[:2], np.float32)
        cv2.ellipse(
            mask,
            (mask.shape[1] // 2, mask.shape[0] // 2),
            (mask.shape[1] // 2 - 2, mask.shape[0] // 2 - 2),
            0,
            0,
            360,
            1.0,
            -1,
        )
        sigma = FEATHER_SIGMA_FRACTION * max(mask.shape)
        mask = BLEND_ALPHA * cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]
        out[top:bottom, left:right] = mask * foreign + (1 - mask) * region
    else:
        out[top:bottom, left:right] = foreign
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fake_clip(seed: int, blend: bool) -> bytes:
    frames = [foreign_face(media.face_frame(i, seed=seed), media.face_box(i, seed=seed), blend) for i in range(FRAMES)]
    return encode(frames)


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    files = {f"real/astronaut_{seed}.mp4": media.face_clip(frames=FRAMES, seed=seed) for seed in REAL_SEEDS}
    files["real/coffee_no_face.mp4"] = media.no_face_clip(frames=FRAMES)
    files.update({f"fake/paste/astronaut_{seed}.mp4": fake_clip(seed, blend=False) for seed in PASTE_SEEDS})
    files.update({f"fake/blend/astronaut_{seed}.mp4": fake_clip(seed, blend=True) for seed in BLEND_SEEDS})
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def evaluate(url: str, dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "evaluate",
            str(dataset),
            "--out",
            str(out),
            "--url",
            url,
            "--frames",
            str(FRAMES),
            "--concurrency",
            "2",
            *extra,
        ],
        cwd=CLIENT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def exported_sha256() -> str:
    """The sha256 of the checkpoint ``resnext_lstm_<N>/1/`` was exported from, as its export.json says."""
    return json.loads(classifier_file(REPOSITORY, FRAMES, EXPORT_METADATA_FILE).read_text())["sha256"]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]


def test_evaluate_accounts_for_every_video_splits_groups_and_resumes(triton_server, labelled_set, tmp_path):
    out = tmp_path / "report"
    every = sorted(str(path) for path in labelled_set.rglob("*.mp4"))

    first = evaluate(triton_server.grpc_url, labelled_set, out)

    assert first.returncode == 0, first.stderr
    scored = lines_of(out / "scores.jsonl")
    assert sorted(line["video"] for line in scored) == every
    for line in scored:
        assert line["truth"] == (1 if "/fake/" in line["video"] else 0)
        assert line["group"] == Path(line["video"]).parent.name
        assert line["model"] == f"deepfake_{FRAMES}"
        assert (line["prob_fake"] is None) == (line["error"] is not None)
        # Every score names version 1 and its checkpoint; a refusal names none.
        expected = (None, None) if line["error"] is not None else (1, exported_sha256())
        assert (line["model_version"], line["checkpoint_sha256"]) == expected
    refused = [line for line in scored if line["error"] is not None]
    assert [Path(line["video"]).name for line in refused] == ["coffee_no_face.mp4"]
    assert "no face" in refused[0]["error"]

    report = json.loads((out / "report.json").read_text())
    assert (report["n_videos"], report["n_scored"], report["n_refused"], report["n_unfinished"]) == (8, 7, 1, 0)
    assert report["n_no_face"] == 1 and report["refused"][0]["reason"] == refused[0]["error"]
    assert isinstance(report["video_auc"], float) and isinstance(report["log_loss"], float)
    assert (report["model_version"], report["checkpoint_sha256"]) == (1, exported_sha256())
    assert report["groups"]["real"] == {
        **report["groups"]["real"],
        "n_videos": 4,
        "n_scored": 3,
        "n_refused": 1,
        "compared_with": "all fakes",
    }
    faithful = report["aggregations"]["faithful"]
    for group in ("paste", "blend"):
        assert report["groups"][group]["n_fake"] == 2 and report["groups"][group]["compared_with"] == "all reals"
        # A group's two fakes against the three scored reals; the refused real only in the 0.5 log-loss.
        assert (faithful["groups"][group]["n"], faithful["groups"][group]["n_fake"]) == (5, 2)
    assert faithful["n"] == 7 and report["aggregations"]["face_max_mean"]["video_auc"] is None
    for name in ("report.md", "roc.png", "histograms.png", "calibration.png"):
        assert (out / name).stat().st_size > 0
    with DeepfakeClient(triton_server.grpc_url) as detector:
        direct = detector.score(every[0], FRAMES)
    assert next(line for line in scored if line["video"] == every[0])["prob_fake"] == pytest.approx(
        direct.prob_fake, abs=SAME_SCORE_ATOL
    )

    # An interrupted run: five lines survived, the sixth was cut mid-write.
    kept = (out / "scores.jsonl").read_text().splitlines(keepends=True)
    (out / "scores.jsonl").write_text("".join(kept[:RESUME_KEPT_LINES]) + kept[RESUME_KEPT_LINES][:20])

    second = evaluate(triton_server.grpc_url, labelled_set, out)

    assert second.returncode == 0, second.stderr
    assert "removed an incomplete last line" in second.stderr
    assert f"{RESUME_KEPT_LINES} already in" in second.stderr
    resumed = lines_of(out / "scores.jsonl")
    assert sorted(line["video"] for line in resumed) == every
    first_by_video = {line["video"]: line for line in scored}
    for line in resumed:
        if line["error"] is None:
            assert line["prob_fake"] == pytest.approx(first_by_video[line["video"]]["prob_fake"], abs=SAME_SCORE_ATOL)
    again = json.loads((out / "report.json").read_text())
    assert (again["n_scored"], again["n_refused"]) == (7, 1)
    assert again["video_auc"] == pytest.approx(report["video_auc"], abs=SAME_SCORE_ATOL)

    # The same folder for another length is refused before anything is scored.
    before = (out / "scores.jsonl").read_bytes()
    other = evaluate(triton_server.grpc_url, labelled_set, out, "--frames", str(OTHER_FRAMES))
    assert other.returncode == 2 and f"not deepfake_{OTHER_FRAMES}" in other.stderr
    assert (out / "scores.jsonl").read_bytes() == before
    # Version 1 by name resumes the file (nothing left); a version not served is refused before scoring.
    named = evaluate(triton_server.grpc_url, labelled_set, out, "--model-version", "1")
    assert named.returncode == 0 and "8 already in" in named.stderr, named.stderr
    unserved = evaluate(triton_server.grpc_url, labelled_set, tmp_path / "compared", "--model-version", "1", "9")
    assert unserved.returncode == 2
    assert f"version 9 of the {FRAMES}-frame classifier is not served; versions served: 1 (latest 1)" in unserved.stderr
    assert not (tmp_path / "compared").exists()
    assert (out / "scores.jsonl").read_bytes() == before


def test_evaluate_all_faces_adds_the_mean_of_per_frame_face_maxima(triton_server, labelled_set, tmp_path):
    model = Mode.FACES.model(FRAMES)
    with DeepfakeClient(triton_server.grpc_url) as detector:
        if not detector.health([FRAMES])["models"].get(model, {}).get("ready"):
            pytest.skip(f"{model} is not served by this repository")
    (tmp_path / "two_faces.mp4").write_bytes(media.two_face_clip(frames=FRAMES))
    listing = tmp_path / "set.csv"
    listing.write_text(
        f"path,label,group\n{labelled_set / 'real/astronaut_0.mp4'},real,\n"
        f"{labelled_set / 'fake/paste/astronaut_0.mp4'},fake,paste\ntwo_faces.mp4,fake,two_faces\n"
    )
    out = tmp_path / "report"

    completed = evaluate(triton_server.grpc_url, listing, out, "--all-faces")

    assert completed.returncode == 0, completed.stderr
    lines = lines_of(out / "scores.jsonl")
    assert {line["model"] for line in lines} == {model}
    tracks = {Path(line["video"]).name: line["face_tracks"] for line in lines}
    assert len(tracks["two_faces.mp4"]) == 2 and all(
        len(t["frame_prob_fake"]) == FRAMES for t in tracks["two_faces.mp4"]
    )
    report = json.loads((out / "report.json").read_text())
    face_max = report["aggregations"]["face_max_mean"]
    assert face_max["n"] == 3 and isinstance(face_max["video_auc"], float)
    two = tracks["two_faces.mp4"]
    found = np.array([t["face_found"] for t in two])
    maxima = np.where(found, np.array([t["frame_prob_fake"] for t in two]), -np.inf).max(axis=0)
    expected = maxima[found.any(axis=0)].mean()
    assert report["aggregations"]["any_face"]["n"] == 3
    assert face_max["groups"]["two_faces"]["n"] == 2
    two_faces = next(line for line in lines if line["video"].endswith("two_faces.mp4"))
    assert scores.aggregate(two_faces, "face_max_mean")[0] == pytest.approx(expected)
