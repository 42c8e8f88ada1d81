"""Trained models served as new versions, end to end on a real server of their own.

The checkpoints come from real training runs on a labelled set made at test time
(``tests/integration/training_fixtures.py``: ``train`` on the crops of the session's server). This
module starts a server of its own over a private copy of the 10-frame models (the ONNX files
linked, the rest copied), so that adding, loading and retiring versions there never changes what
the session's server answers to other tests. Its model-control API is restricted to a key only
this module knows, as a deployment's would be.

Checked: a trained checkpoint exported as version 2 goes live without a restart and becomes the
latest; version 1 still answers when asked; the served version 2 gives the trained model's own
in-process scores on the crops the server made (within the export's fp32 tolerance, 1e-4); every
answer names its version and checkpoint; model_info carries the lineage; a version not served is
refused; rolling back is one command; a trained temporal model is served as its own ensemble with
the same agreement; evaluate scores both versions side by side.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.server import private_repository, start_server
from calibration.point import decide, file_sha256
from client import DeepfakeClient, Mode
from client.errors import ClientError
from contract import (
    ADMIN_KEY_HEADER,
    CALIBRATION_DOCUMENT,
    CALIBRATION_HISTORY_FILE,
    FAKE_INDEX,
    PREPROCESS_OUTPUTS,
    Kind,
    Score,
    calibration_file,
    model_name,
)
from export.checkpoints import load_original_model, read_state_dict, sha256_of
from export.model import ServedModel
from export.temporal import build_temporal_model
from serve import EmbeddedServer
from serve.control import ControlClient, ControlError
from serve.distribution import PROJECT_ROOT
from tests import media

FRAMES = 10
#: The export's own fp32 tolerance for ONNX Runtime against PyTorch (export/onnx_export.py).
TOLERANCE = 1e-4
EXPORT_TIMEOUT_S = 900

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def versions_server(tmp_path_factory, triton_server) -> EmbeddedServer:
    """A server of its own over a private copy of the 10-frame models, restricted by a key."""
    scratch = tmp_path_factory.mktemp("versions")
    repository = private_repository(PROJECT_ROOT / "model_repository", FRAMES, scratch / "repository")
    key = secrets.token_urlsafe(24)
    server = start_server(repository, scratch / "tritonserver.log", admin_key=key)
    server.admin_key = key
    yield server
    server.stop()


def _export(server: EmbeddedServer, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "export", *args, "--repository", str(server.repository)]
    command += ["--url", server.http_url, "--admin-key", server.admin_key]
    return subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False)


def _clip() -> bytes:
    return media.face_clip(frames=FRAMES + 2)


def _served_faces(server: EmbeddedServer, video: bytes) -> torch.Tensor:
    """The crops the server makes of ``video`` (preprocess_<N>): what every version is fed."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    data = np.frombuffer(video, dtype=np.uint8)[None]
    tensor = grpcclient.InferInput("VIDEO", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    # Every output: preprocess_<N>'s answers are cached by their inputs alone.
    wanted = [grpcclient.InferRequestedOutput(name) for name in PREPROCESS_OUTPUTS]
    result = client.infer(model_name(Kind.PREPROCESS, FRAMES), [tensor], outputs=wanted)
    return torch.from_numpy(result.as_numpy("FACES").copy())


@pytest.fixture(scope="module")
def version_two(versions_server, trained_runs) -> Path:
    """The trained published-head checkpoint, exported as version 2 and loaded on the running server."""
    checkpoint = trained_runs.checkpoint("published")
    done = _export(versions_server, "onnx", "--checkpoint", str(checkpoint), "--version", "2")
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"loaded {model_name(Kind.CLASSIFIER, FRAMES)}" in done.stderr
    return checkpoint


def test_a_trained_version_goes_live_and_answers_as_the_trained_model(versions_server, version_two) -> None:
    video = _clip()
    client = DeepfakeClient(versions_server.grpc_url)
    latest = client.score(video, FRAMES)
    assert (latest.model_version, latest.checkpoint_sha256) == (2, sha256_of(version_two))

    with torch.inference_mode():
        logits = ServedModel(load_original_model(version_two)).eval()(_served_faces(versions_server, video))
    want_prob = torch.softmax(logits[0], dim=1)[:, FAKE_INDEX].numpy()
    want_frames = logits[2].numpy()
    assert abs(latest.prob_fake - float(want_prob[0])) <= TOLERANCE
    np.testing.assert_allclose(latest.frame_prob_fake, want_frames[0], atol=TOLERANCE, rtol=0)

    first = client.score(video, FRAMES, version=1)
    assert first.model_version == 1 and first.checkpoint_sha256 != latest.checkpoint_sha256
    verdict = client.score(video, FRAMES, mode=Mode.VERDICT, version=2)
    assert verdict.model_version == 2 and abs(verdict.prob_fake - latest.prob_fake) <= TOLERANCE


def test_model_info_names_every_version_with_its_lineage(versions_server, version_two, trained_runs) -> None:
    info = DeepfakeClient(versions_server.grpc_url).model_info()
    entry = info["classifiers"][str(FRAMES)]
    assert entry["version"] == 2 and sorted(entry["versions"]) == ["1", "2"]
    lineage = entry["versions"]["2"]["lineage"]
    report = json.loads((version_two.parent / "report.json").read_text())
    assert lineage["parent_sha256"] == report["parent"]["sha256"] == entry["versions"]["1"]["sha256"]
    assert lineage["manifest_sha256"] == report["data"]["manifest_sha256"]
    assert lineage["metrics"]["video_auc"] == report["after"]["overall"]["video_auc"]
    assert entry["versions"]["1"]["lineage"] is None


def test_a_trained_version_brings_its_calibration_and_another_versions_is_refused_at_load(
    versions_server, version_two
) -> None:
    report = json.loads((version_two.parent / "report.json").read_text())
    assert report["calibration"]["file"] == CALIBRATION_DOCUMENT, report["calibration"]
    classifier = versions_server.repository / model_name(Kind.CLASSIFIER, FRAMES)
    installed = classifier / "2" / calibration_file(Score.DEEPFAKE)
    assert installed.is_file() and (classifier / "2" / CALIBRATION_HISTORY_FILE).is_file()
    video = _clip()
    client = DeepfakeClient(versions_server.grpc_url)
    two = client.score(video, FRAMES)
    point = two.operating_point
    assert two.model_version == 2 and two.calibrated and point["calibration_sha256"] == file_sha256(installed)
    assert two.decision == decide(two.prob_fake, point["fake_threshold"], point["real_threshold"])
    one = client.score(video, FRAMES, version=1)
    assert not one.calibrated and one.decision == decide(one.prob_fake, 0.5, 0.5)

    # Version 2's calibration in version 1's folder: fitted for another checkpoint.
    foreign = classifier / "1" / calibration_file(Score.DEEPFAKE)
    shutil.copy(installed, foreign)
    try:
        control = ControlClient(
            f"http://{versions_server.http_url}", repository_headers={ADMIN_KEY_HEADER: versions_server.admin_key}
        )
        with pytest.raises(ControlError) as refused:
            control.load_model(model_name(Kind.SELECT, FRAMES), timeout=120)
        message = str(refused.value)
        assert "fitted for" in message and "checkpoint" in message and "version 1" in message, message
        # The running step refused the swap too and keeps serving what it had: version 1 uncalibrated.
        again = client.score(video, FRAMES, version=1)
        assert not again.calibrated and again.prob_fake == one.prob_fake
    finally:
        foreign.unlink()


def test_a_version_that_is_not_served_is_refused_naming_those_that_are(versions_server, version_two) -> None:
    with pytest.raises(ClientError) as raised:
        DeepfakeClient(versions_server.grpc_url).score(_clip(), FRAMES, version=7)
    assert "7" in str(raised.value) and "1, 2" in str(raised.value)


def test_evaluate_scores_two_versions_side_by_side(versions_server, version_two, tmp_path) -> None:
    real, fake = tmp_path / "set" / "real", tmp_path / "set" / "fake"
    real.mkdir(parents=True)
    fake.mkdir()
    (real / "a.mp4").write_bytes(_clip())
    (fake / "b.mp4").write_bytes(media.face_clip(frames=FRAMES + 2, size=(320, 240)))
    command = [sys.executable, "-m", "client", "evaluate", str(tmp_path / "set"), "--frames", str(FRAMES)]
    command += ["--url", versions_server.grpc_url, "--out", str(tmp_path / "out"), "--model-version", "1", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted((tmp_path / "out").rglob("scores.jsonl"))
    assert [path.parent.name for path in files] == ["v1", "v2"]
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert {line["model_version"] for line in lines} == {1, 2}


def test_a_trained_temporal_model_is_served_as_its_own_ensemble(versions_server, version_two, trained_runs) -> None:
    checkpoint = trained_runs.checkpoint("temporal")
    done = _export(versions_server, "onnx", "--checkpoint", str(checkpoint), "--version", "1")
    assert done.returncode == 0, done.stderr[-4000:]
    video = _clip()
    answer = DeepfakeClient(versions_server.grpc_url).score(video, FRAMES, mode=Mode.TEMPORAL)
    assert (answer.model_version, answer.checkpoint_sha256) == (1, sha256_of(checkpoint))
    model = build_temporal_model(read_state_dict(checkpoint))
    with torch.inference_mode():
        _, prob_fake, frame_prob_fake, weights = model(_served_faces(versions_server, video))
    assert abs(answer.prob_fake - float(prob_fake[0, 0])) <= TOLERANCE
    np.testing.assert_allclose(answer.frame_prob_fake, frame_prob_fake[0].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(answer.frame_weight, weights[0].numpy(), atol=1e-5, rtol=0)
    assert abs(sum(answer.frame_weight) - 1.0) <= 1e-5
    # The published model answers as before beside it.
    assert DeepfakeClient(versions_server.grpc_url).score(video, FRAMES).model_version == 2


def test_rolling_back_is_one_command(versions_server, version_two) -> None:
    done = _export(versions_server, "retire", "--frames", str(FRAMES), "--version", "2")
    assert done.returncode == 0, done.stderr[-4000:]
    client = DeepfakeClient(versions_server.grpc_url)
    assert client.score(_clip(), FRAMES).model_version == 1
    with pytest.raises(ClientError, match="serves version"):
        client.score(_clip(), FRAMES, version=2)
    with pytest.raises(InferenceServerException):
        grpcclient.InferenceServerClient(versions_server.grpc_url).get_model_metadata(
            model_name(Kind.CLASSIFIER, FRAMES), model_version="2"
        )
