"""faces_<N>: every face of a video scored, through the real server (``triton_server`` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

import client
from client import DeepfakeClient, Mode
from contract import FACE_TRACK_JSON_KEYS, FACES_JSON_KEYS
from preprocessing import FacePipeline, PipelineConfig
from tests import media

pytestmark = pytest.mark.integration

FRAMES = 10
ROOT = Path(client.__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"
TIMEOUT_S = 300
# The same crops through the same served classifier: only batching noise.
SAME_SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def api(triton_server):
    with DeepfakeClient(triton_server.grpc_url, timeout_s=TIMEOUT_S) as detector:
        yield detector


@pytest.fixture(scope="module")
def grpc(triton_server):
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def two_faces() -> bytes:
    return media.two_face_clip(frames=12)


@pytest.fixture(scope="module")
def local_tracks(two_faces):
    """The served faces_<N> config's preprocessing in process, with its thread count."""
    config = text_format.Parse((REPOSITORY / f"faces_{FRAMES}" / "configs" / "cpu.pbtxt").read_text(), mc.ModelConfig())
    params = {key: value.string_value for key, value in config.parameters.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(int(params["torch_threads"]))
    try:
        return FacePipeline(PipelineConfig.from_parameters(params, ignore=("torch_threads", "classifier")))(two_faces)
    finally:
        torch.set_num_threads(threads)


def classify(grpc, faces: np.ndarray) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput("FACES", list(faces.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(faces, dtype=np.float32))
    outputs = [grpcclient.InferRequestedOutput(name) for name in ("PROB_FAKE", "FRAME_PROB_FAKE")]
    result = grpc.infer(f"resnext_lstm_{FRAMES}", [tensor], outputs=outputs, client_timeout=TIMEOUT_S)
    return {name: result.as_numpy(name) for name in ("PROB_FAKE", "FRAME_PROB_FAKE")}


def test_every_face_is_scored_as_the_classifier_scores_its_crops(api, grpc, two_faces, local_tracks):
    result = api.score(two_faces, FRAMES, mode=Mode.FACES)
    assert result.faces_seen == 2 and len(result.face_tracks) == 2  # no unused slot: K is the faces found
    assert len(local_tracks.tracks) == 2
    for served, local in zip(result.face_tracks, local_tracks.tracks):
        np.testing.assert_array_equal(served.face_boxes, local.boxes)
        np.testing.assert_array_equal(served.face_found, local.found)
        assert served.prominence == pytest.approx(local.prominence, rel=1e-6)
        own = classify(grpc, local.faces[None])
        np.testing.assert_allclose(served.frame_prob_fake, own["FRAME_PROB_FAKE"][0], atol=SAME_SCORE_ATOL, rtol=0)
        assert served.prob_fake == pytest.approx(float(own["PROB_FAKE"][0, 0]), abs=SAME_SCORE_ATOL)
    # The main face is described by the usual fields, as deepfake_<N> describes it.
    main = result.face_tracks[0]
    assert result.prob_fake == main.prob_fake
    np.testing.assert_array_equal(result.face_boxes, main.face_boxes)
    np.testing.assert_array_equal(result.frame_prob_fake, main.frame_prob_fake)
    plain = api.score(two_faces, FRAMES)
    assert plain.face_tracks is None and plain.max_prob_fake is None
    assert plain.prob_fake == pytest.approx(result.prob_fake, abs=SAME_SCORE_ATOL)
    # "Is any face fake": the largest mean frame score over the frames each face was detected in.
    expected = max(float(t.frame_prob_fake[t.face_found].mean()) for t in result.face_tracks)
    assert result.max_prob_fake == pytest.approx(expected, abs=1e-6)
    assert result.face_tracks[0].prominence > result.face_tracks[1].prominence


def test_one_face_clip_gives_one_track(api):
    result = api.score(media.face_clip(frames=12, seed=2), FRAMES, mode=Mode.FACES)
    assert len(result.face_tracks) == 1 == result.faces_seen
    assert result.max_prob_fake == pytest.approx(float(result.face_tracks[0].frame_prob_fake.mean()), abs=1e-6)


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"not a video at all " * 40, "unsupported input"),
        (media.no_face_clip(frames=8), "no face found"),
        (b"", "empty input"),
    ],
)
def test_bad_uploads_are_invalid_argument_and_the_next_one_scores(api, grpc, data, phrase, two_faces):
    payload = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(payload.shape), "UINT8")
    tensor.set_data_from_numpy(payload)
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer(f"faces_{FRAMES}", [tensor], client_timeout=TIMEOUT_S)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert phrase in caught.value.message()
    assert len(api.score(two_faces, FRAMES, mode=Mode.FACES).face_tracks) == 2


def test_cli_all_faces_json_lines(triton_server, tmp_path, two_faces):
    clip = tmp_path / "two.mp4"
    clip.write_bytes(two_faces)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    command = [
        sys.executable,
        "-m",
        "client",
        "score",
        str(clip),
        str(broken),
        "--frames",
        str(FRAMES),
        "--all-faces",
        "--json",
        "--url",
        triton_server.grpc_url,
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    records = {Path(r["video"]).name: r for r in map(json.loads, completed.stdout.splitlines())}
    assert completed.returncode == 1, completed.stderr  # the broken file is refused
    scored, refused = records["two.mp4"], records["broken.mp4"]
    assert tuple(scored) == FACES_JSON_KEYS == tuple(refused)
    assert scored["faces_seen"] == 2 and len(scored["face_tracks"]) == 2
    assert all(tuple(track) == FACE_TRACK_JSON_KEYS for track in scored["face_tracks"])
    assert len(scored["face_tracks"][1]["frame_prob_fake"]) == FRAMES
    # faces_found keeps its meaning: frames with the main face.
    assert scored["faces_found"] == sum(scored["face_tracks"][0]["face_found"])
    assert refused["error"] and refused["face_tracks"] is None
    both = subprocess.run(
        [*command[:5], "--all-faces", "--verdict-only", "--url", triton_server.grpc_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert both.returncode == 2 and "cannot be combined with --verdict-only" in both.stderr


def test_health_checks_the_faces_models(api):
    report = api.health(frames=(FRAMES,))
    assert f"faces_{FRAMES}" in json.dumps(report)
