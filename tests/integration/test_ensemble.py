"""The served ensembles end to end over real gRPC: parity, batching safety, bad input, edge clips."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from contract import PREPROCESS_OUTPUTS
from export.checkpoints import load_original_model
from export.model import FAKE_INDEX, original_scores
from preprocessing import FacePipeline, PipelineConfig
from tests import media

ROOT = Path(__file__).resolve().parent.parent.parent
REPOSITORY = ROOT / "model_repository"
FRAMES = 10
SCORE_OUTPUTS = ("PROB_FAKE", "LOGITS", "FRAME_PROB_FAKE", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def client(triton_server):
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        yield c


def video_input(data: bytes) -> grpcclient.InferInput:
    array = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def infer(client, data: bytes, model: str = f"deepfake_{FRAMES}", outputs=SCORE_OUTPUTS) -> dict[str, np.ndarray]:
    # preprocess_<N>'s answers are cached by their inputs alone: it is always asked for every output.
    asked = PREPROCESS_OUTPUTS if model.startswith("preprocess_") else outputs
    requested = [grpcclient.InferRequestedOutput(name) for name in asked]
    result = client.infer(model, [video_input(data)], outputs=requested, client_timeout=TIMEOUT_S)
    return {name: result.as_numpy(name) for name in outputs}


def infer_error(client, data: bytes, model: str = f"deepfake_{FRAMES}") -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        infer(client, data, model)
    return caught.value


@pytest.fixture(scope="module")
def original():
    metadata = json.loads((REPOSITORY / f"resnext_lstm_{FRAMES}" / "1" / "export.json").read_text())
    return load_original_model(Path(metadata["checkpoint"]))


@pytest.fixture(scope="module")
def pipeline():
    """The preprocessing library with the served model's own parameters (configs/cpu.pbtxt).

    It runs with the served model's torch thread count too, so that the in-process path does the
    same arithmetic as the served one and the two can be compared to the bit.
    """
    config = text_format.Parse(
        (REPOSITORY / f"preprocess_{FRAMES}" / "configs" / "cpu.pbtxt").read_text(), mc.ModelConfig()
    )
    params = {key: value.string_value for key, value in config.parameters.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(int(params["torch_threads"]))
    try:
        yield FacePipeline(PipelineConfig.from_parameters(params, ignore=("torch_threads",)))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return media.face_clip(frames=14, seed=1)


def test_served_score_equals_in_process_path(client, clip, pipeline, original):
    served = infer(client, clip)
    local = pipeline(clip)
    logits = original_scores(original, torch.from_numpy(local.faces)[None])
    want = torch.softmax(logits, dim=1)[:, FAKE_INDEX].numpy()
    np.testing.assert_allclose(served["PROB_FAKE"][:, 0], want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(served["LOGITS"], logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(served["FACE_BOXES"][0], local.boxes, atol=1e-3)
    np.testing.assert_array_equal(served["FACE_FOUND"][0], local.found)
    assert served["FRAMES_DECODED"].tolist() == [[FRAMES]]
    assert served["FRAME_PROB_FAKE"].shape == (1, FRAMES)
    np.testing.assert_allclose(served["FRAME_PROB_FAKE"][0, -1], served["PROB_FAKE"][0, 0], atol=1e-6)


def test_served_faces_and_scores_match_the_original_forward(client, clip, original):
    outputs = ("FACES", "HEATMAP", "LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE")
    served = infer(client, clip, model=f"explain_{FRAMES}", outputs=outputs)
    faces = torch.from_numpy(served["FACES"].copy())
    assert faces.shape == (1, FRAMES, 3, 112, 112)
    np.testing.assert_allclose(served["LOGITS"], original_scores(original, faces).numpy(), atol=1e-4, rtol=0)
    for k in (0, FRAMES // 2):
        cut = torch.softmax(original_scores(original, faces[:, : k + 1]), dim=1)[0, FAKE_INDEX].item()
        assert abs(served["FRAME_PROB_FAKE"][0, k] - cut) <= 1e-4
    heatmap = served["HEATMAP"]
    assert heatmap.shape == (1, FRAMES, 112, 112)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0 + 1e-6


def test_classifier_asked_for_the_score_alone_gives_the_full_score(client, clip, original):
    faces = infer(client, clip, model=f"preprocess_{FRAMES}", outputs=("FACES",))["FACES"]
    tensor = grpcclient.InferInput("FACES", list(faces.shape), "FP32")
    tensor.set_data_from_numpy(faces)

    def classify(outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        result = client.infer(
            f"resnext_lstm_{FRAMES}",
            [tensor],
            outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
            client_timeout=TIMEOUT_S,
        )
        return {name: result.as_numpy(name) for name in outputs}

    # LOGITS and PROB_FAKE alone run the trunk on the last frame only; with FRAME_PROB_FAKE on all N.
    score_only = classify(("LOGITS", "PROB_FAKE"))
    full = classify(("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE"))
    np.testing.assert_allclose(score_only["LOGITS"], full["LOGITS"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(score_only["PROB_FAKE"], full["PROB_FAKE"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        score_only["LOGITS"], original_scores(original, torch.from_numpy(faces.copy())).numpy(), atol=1e-4, rtol=0
    )
    assert full["FRAME_PROB_FAKE"].shape == (1, FRAMES)


def test_verdict_gives_the_scoring_ensembles_clip_score(client, clip):
    outputs = ("PROB_FAKE", "LOGITS", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED")
    verdict = infer(client, clip, model=f"verdict_{FRAMES}", outputs=outputs)
    full = infer(client, clip)
    for name in outputs:
        np.testing.assert_allclose(verdict[name], full[name], atol=1e-6, rtol=0, err_msg=name)
    with pytest.raises(InferenceServerException, match="FRAME_PROB_FAKE"):
        infer(client, clip, model=f"verdict_{FRAMES}", outputs=("PROB_FAKE", "FRAME_PROB_FAKE"))


def test_preprocess_model_is_callable_alone(client, clip, pipeline):
    served = infer(
        client, clip, model=f"preprocess_{FRAMES}", outputs=("FACES", "FACE_BOXES", "FACE_FOUND", "FRAMES_DECODED")
    )
    local = pipeline(clip)
    # Same thread count, same arithmetic: the same crops to the bit.
    np.testing.assert_array_equal(served["FACE_BOXES"][0], local.boxes)
    np.testing.assert_allclose(served["FACES"][0], local.faces, atol=1e-5)


def test_concurrent_requests_score_like_single_ones(client):
    clips = [media.face_clip(frames=12, seed=seed) for seed in range(4)]
    one_at_a_time = [infer(client, c)["LOGITS"] for c in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda c: infer(client, c)["LOGITS"], clips))
    for alone, batched in zip(one_at_a_time, together):
        np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    assert len({round(float(x[0, 0]), 6) for x in one_at_a_time}) > 1, "different clips should not all score the same"


def test_short_clip_is_padded_and_says_so(client):
    served = infer(client, media.face_clip(frames=4))
    assert served["FRAMES_DECODED"].tolist() == [[4]]
    assert served["FRAME_PROB_FAKE"].shape == (1, FRAMES)
    # Padding repeats the last real frame: the padded frames score like it.
    np.testing.assert_allclose(served["FRAME_PROB_FAKE"][0, 4:], served["FRAME_PROB_FAKE"][0, 3], atol=1e-6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_still_image_scores_as_one_frame(client, fmt):
    served = infer(client, media.still_image(fmt))
    assert served["FRAMES_DECODED"].tolist() == [[1]]
    assert served["FACE_FOUND"][0].all()
    assert 0.0 <= served["PROB_FAKE"][0, 0] <= 1.0


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    secret = tmp_path / "local.mp4"
    secret.write_bytes(media.face_clip(frames=4))
    clip = media.face_clip(frames=8)
    rng = np.random.default_rng(0)
    return {
        "empty": (b"", "empty"),
        "random": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "unrecognised"),
        "truncated": (clip[: len(clip) // 3], "mp4"),
        "text": (b"hello, this is not a video\n" * 20, "unrecognised"),
        "hls": (media.hls_playlist(secret), "hls playlist"),
        "no_face": (media.no_face_clip(), "face"),
    }


def test_bad_inputs_are_invalid_argument_and_server_keeps_serving(client, clip, tmp_path):
    good = infer(client, clip)["PROB_FAKE"]
    for name, (data, phrase) in _bad_inputs(tmp_path).items():
        error = infer_error(client, data)
        assert error.status() == "StatusCode.INVALID_ARGUMENT", f"{name}: {error.status()} {error.message()}"
        assert f"in ensemble 'deepfake_{FRAMES}'" in error.message()
        assert phrase in error.message().lower(), f"{name}: {error.message()}"
        np.testing.assert_allclose(infer(client, clip)["PROB_FAKE"], good, atol=1e-6)
    assert client.is_server_ready() and client.is_model_ready(f"deepfake_{FRAMES}")


def test_wrong_dtype_and_missing_input_are_refused(client):
    wrong = grpcclient.InferInput("VIDEO", [1, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(f"deepfake_{FRAMES}", [wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "VIDEO" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer(f"deepfake_{FRAMES}", [])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
