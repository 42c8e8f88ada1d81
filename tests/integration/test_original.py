"""original_<N>: the original app's answer through the real server, against the app's path stated on its own.

The reference (tests/original_app.py) reads the file with OpenCV from disk, finds faces with
``face_recognition``, transforms with torchvision and runs the app's model class in PyTorch. The
served mode must give the same face tensors (1e-6: the same pixels, detector and arithmetic) and
the same PROB_FAKE (1e-4: ONNX Runtime against PyTorch eager on the same tensor).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import client
from client import ClientError, DeepfakeClient, Mode
from contract import PREPROCESS_OUTPUTS
from tests import media
from tests.original_app import app_answer, load_app_model

pytestmark = pytest.mark.integration

FRAMES = 10
ROOT = Path(client.__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"
SAMPLE = ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
TIMEOUT_S = 300
FACES_ATOL = 1e-6
PROB_ATOL = 1e-4
#: The outputs compared here; the model is asked for all of them (its answers are cached by their inputs alone).
COMPARED_OUTPUTS = ("FACES", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED")


def _clips() -> dict[str, bytes]:
    clips = {
        "face": media.face_clip(frames=FRAMES + 2),
        # Frames 2 and 5 show no face: the app used the whole frame there.
        "hidden": media.face_clip(frames=FRAMES + 2, seed=1, hide_face=(2, 5)),
        "two_faces": media.two_face_clip(frames=FRAMES),
        # Shorter than N: the app scored the frames it had.
        "short": media.face_clip(frames=4, seed=2),
        "still": media.still_image("JPEG"),
    }
    if SAMPLE.is_file():
        clips["sample_1080p"] = SAMPLE.read_bytes()
    return clips


CLIPS = _clips()


@pytest.fixture(scope="module")
def app_model():
    metadata = json.loads((REPOSITORY / f"resnext_lstm_{FRAMES}" / "1" / "export.json").read_text())
    return load_app_model(Path(metadata["checkpoint"]))


@pytest.fixture(scope="module")
def api(triton_server):
    with DeepfakeClient(triton_server.grpc_url, timeout_s=TIMEOUT_S) as detector:
        yield detector


@pytest.fixture(scope="module")
def grpc(triton_server):
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("original_clips")
    paths = {}
    for name, data in CLIPS.items():
        paths[name] = folder / f"{name}.{'jpg' if name == 'still' else 'mp4'}"
        paths[name].write_bytes(data)
    return paths


def served_preprocessing(grpc, data: bytes) -> dict[str, np.ndarray]:
    video = np.frombuffer(data, np.uint8)[None]
    tensor = grpcclient.InferInput("VIDEO", list(video.shape), "UINT8")
    tensor.set_data_from_numpy(video)
    outputs = [grpcclient.InferRequestedOutput(name) for name in PREPROCESS_OUTPUTS]
    result = grpc.infer(f"preprocess_original_{FRAMES}", [tensor], outputs=outputs, client_timeout=TIMEOUT_S)
    return {name: result.as_numpy(name)[0] for name in COMPARED_OUTPUTS}


@pytest.mark.parametrize("name", list(CLIPS))
def test_served_original_mode_gives_the_original_apps_answer(name, api, grpc, app_model, clip_files):
    data = CLIPS[name]
    expected = app_answer(clip_files[name], FRAMES, app_model)
    served = served_preprocessing(grpc, data)
    result = api.score(data, FRAMES, mode=Mode.ORIGINAL)

    count = len(expected.boxes)
    assert int(served["FRAMES_DECODED"][0]) == result.frames_decoded == count
    faces = served["FACES"]
    assert float(np.abs(faces[:count] - expected.faces).max()) <= FACES_ATOL
    # A short clip repeats its last frame: the app's score came from that frame.
    assert np.array_equal(faces[count:], np.repeat(faces[count - 1 : count], FRAMES - count, axis=0))
    for index, box in enumerate(expected.boxes):
        assert bool(served["FACE_FOUND"][index]) is (box is not None)
        if box is not None:
            assert tuple(served["FACE_BOXES"][index]) == box
    np.testing.assert_array_equal(result.face_boxes, served["FACE_BOXES"])
    assert abs(result.prob_fake - expected.prob_fake) <= PROB_ATOL
    if name == "hidden":
        assert [box is None for box in expected.boxes[:6]] == [False, False, True, False, False, True]
    if name == "two_faces":
        # dlib's first face, which is not always the larger one: what the app cropped.
        assert all(box is not None for box in expected.boxes)


def test_the_cli_prints_the_original_apps_score(triton_server, app_model, clip_files):
    expected = app_answer(clip_files["face"], FRAMES, app_model)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "score",
            str(clip_files["face"]),
            "--original",
            "--json",
            "--frames",
            str(FRAMES),
            "--url",
            triton_server.grpc_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout)
    assert abs(record["prob_fake"] - expected.prob_fake) <= PROB_ATOL
    assert record["faces_found"] == FRAMES and record["error"] is None


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"not a video at all", "unsupported input"),
        (media.hls_playlist("/etc/passwd"), "hls playlist"),
        (media.face_clip(frames=FRAMES)[:200], "mp4"),
        (media.no_face_clip(frames=FRAMES), "no face found"),
    ],
)
def test_bad_uploads_are_refused_and_the_next_one_scores(api, data, phrase):
    with pytest.raises(ClientError) as refused:
        api.score(data, FRAMES, mode=Mode.ORIGINAL)
    assert refused.value.status == "INVALID_ARGUMENT"
    assert phrase in refused.value.message.lower()
    assert 0.0 <= api.score(CLIPS["face"], FRAMES, mode=Mode.ORIGINAL).prob_fake <= 1.0


def test_health_checks_the_original_models(api):
    report = api.health(frames=[FRAMES])
    for model in (f"original_{FRAMES}", f"preprocess_original_{FRAMES}"):
        assert report["models"][model]["ready"], report["models"].get(model)
