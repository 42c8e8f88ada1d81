"""Checkpoint loading, the LSTM quirk, and the verified ONNX export (no server)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import contract
from contract import DEFAULT_VERSION, ONNX_FILE, SERVED_LENGTHS, Kind, model_name
from export.checkpoints import (
    CheckpointError,
    best_checkpoint,
    demo_state_dict,
    find_checkpoints,
    load_original_model,
    parse_checkpoint_name,
)
from export.model import FAKE_INDEX, INPUT_NAME, OUTPUT_NAMES, OriginalModel, ServedModel, original_scores
from export.onnx_export import verify_onnx, write_onnx
from export.repository import served_lengths
from export.samples import random_faces, real_face_videos

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"


@pytest.fixture(scope="module")
def demo_state() -> dict[str, torch.Tensor]:
    return demo_state_dict(seed=3)


@pytest.fixture(scope="module")
def original(demo_state) -> OriginalModel:
    model = OriginalModel()
    model.load_state_dict(demo_state, strict=True)
    return model.eval()


@pytest.fixture()
def checkpoint(tmp_path, demo_state) -> Path:
    path = tmp_path / "model_84_acc_10_frames_final_data.pt"
    torch.save(demo_state, path)
    return path


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "accuracy", "frames"),
    [
        ("model_84_acc_10_frames_final_data.pt", 84.0, 10),
        ("model_97.5_acc_100_frames_FF_data.pt", 97.5, 100),
        ("model_50_acc_20_frames_demo_random.pt", 50.0, 20),
    ],
)
def test_parse_published_names(name, accuracy, frames):
    parsed = parse_checkpoint_name(Path(name))
    assert parsed is not None
    assert (parsed.accuracy, parsed.frames) == (accuracy, frames)


@pytest.mark.parametrize(
    "name", ["model.pt", "model_84_acc_10_frames.pt", "model_x_acc_10_frames_a.pt", "model_84_acc_10_frames_a.pth"]
)
def test_other_names_are_not_checkpoints(name):
    assert parse_checkpoint_name(Path(name)) is None


def test_best_checkpoint_takes_highest_accuracy_for_the_length(tmp_path):
    for name in [
        "model_84_acc_10_frames_final_data.pt",
        "model_89_acc_20_frames_final_data.pt",
        "model_87.5_acc_20_frames_FF_data.pt",
        "model_93_acc_40_frames_final_data.pt",
        "notes.txt",
    ]:
        (tmp_path / name).write_bytes(b"")
    found = find_checkpoints(tmp_path)
    assert len(found) == 4
    assert best_checkpoint(found, 20).path.name == "model_89_acc_20_frames_final_data.pt"
    assert best_checkpoint(found, 40).path.name == "model_93_acc_40_frames_final_data.pt"
    with pytest.raises(CheckpointError, match="no checkpoint for 30 frames"):
        best_checkpoint(found, 30)


# --- loading -------------------------------------------------------------------------------------


def test_published_format_loads_strictly(checkpoint, demo_state):
    model = load_original_model(checkpoint)
    assert set(model.state_dict()) == set(demo_state)
    # The published LSTM has no bias: exactly two LSTM tensors.
    assert sorted(k for k in demo_state if k.startswith("lstm.")) == ["lstm.weight_hh_l0", "lstm.weight_ih_l0"]
    assert "model.7.2.bn3.running_var" in demo_state
    torch.testing.assert_close(model.linear1.weight, demo_state["linear1.weight"])


def test_data_parallel_prefix_is_accepted(tmp_path, demo_state):
    path = tmp_path / "model_84_acc_10_frames_dp.pt"
    torch.save({f"module.{k}": v for k, v in demo_state.items()}, path)
    model = load_original_model(path)
    torch.testing.assert_close(model.lstm.weight_ih_l0, demo_state["lstm.weight_ih_l0"])


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_missing_keys_are_named(tmp_path, demo_state):
    state = {k: v for k, v in demo_state.items() if k != "linear1.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: linear1\.bias"):
        load_original_model(_save(tmp_path / "a.pt", state))


def test_unexpected_keys_are_named(tmp_path, demo_state):
    state = dict(demo_state, **{"lstm.bias_ih_l0": torch.zeros(8192)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: lstm\.bias_ih_l0"):
        load_original_model(_save(tmp_path / "a.pt", state))


def test_wrong_shapes_are_named(tmp_path, demo_state):
    state = dict(demo_state, **{"linear1.weight": torch.zeros(3, 2048)})
    with pytest.raises(CheckpointError, match=r"linear1\.weight \(3, 2048\) \(expected \(2, 2048\)\)"):
        load_original_model(_save(tmp_path / "a.pt", state))


def test_truncated_file_is_refused(tmp_path, checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_original_model(truncated)


class _Payload:
    """Unpickling this runs a command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model.0.weight": torch.zeros(1), "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="Python objects other than tensors"):
        load_original_model(path)
    assert not marker.exists()


def test_raw_pickle_is_refused(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_original_model(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([torch.zeros(1)], "holds a list, not a state_dict"),
        ({"state_dict": {"a": torch.zeros(1)}}, "entries that are not tensors: state_dict"),
        ({"epoch": 3, "model.0.weight": torch.zeros(1)}, "entries that are not tensors: epoch"),
    ],
)
def test_not_a_plain_state_dict_is_refused(tmp_path, obj, message):
    with pytest.raises(CheckpointError, match=message):
        load_original_model(_save(tmp_path / "a.pt", obj))


def test_cli_reports_bad_checkpoint_in_one_sentence(tmp_path):
    (tmp_path / "model_84_acc_10_frames_final_data.pt").write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "onnx",
            "--checkpoints",
            str(tmp_path),
            "--repository",
            str(tmp_path / "repo"),
            "--frames",
            "10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a readable PyTorch file" in errors[0]


def test_cli_reports_missing_length(tmp_path, checkpoint):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "onnx",
            "--checkpoints",
            str(checkpoint.parent),
            "--repository",
            str(tmp_path / "repo"),
            "--frames",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error: no checkpoint for 20 frames" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The folders of the new length were written before the export looked for its checkpoint.
    for kind in contract.BASE_KINDS:
        assert served_lengths(tmp_path / "repo", kind) == [20], kind


# --- the quirk -----------------------------------------------------------------------------------


def test_original_score_depends_on_the_last_frame_only(original):
    video = real_face_videos(1, 5, seed=1)
    base = original_scores(original, video)
    earlier_changed = video.clone()
    earlier_changed[:, :-1] = random_faces(1, 4, seed=9)
    torch.testing.assert_close(original_scores(original, earlier_changed), base, rtol=0, atol=0)
    last_changed = video.clone()
    last_changed[:, -1] = random_faces(1, 1, seed=9)[:, 0]
    assert (original_scores(original, last_changed) - base).abs().max() > 1e-4


def test_original_batched_forward_mixes_videos(original):
    videos = real_face_videos(2, 3, seed=2)
    with torch.inference_mode():
        _, batched = original(videos)
    alone = original_scores(original, videos)
    torch.testing.assert_close(batched[0], alone[0])
    assert (batched[1] - alone[1]).abs().max() > 1e-4, "the second video's row depends on the first video"


def test_independent_single_step_matches_original(original, demo_state):
    """A numpy LSTM step written from the equations, against the original forward."""
    video = real_face_videos(1, 4, seed=4)
    with torch.inference_mode():
        fmap, logits = original(video)
    features = fmap.mean(dim=(2, 3))[-1].double().numpy()
    w = demo_state["lstm.weight_ih_l0"].double().numpy()
    i, _f, g, o = np.split(w @ features, 4)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    hidden = sigmoid(o) * np.tanh(sigmoid(i) * np.tanh(g))
    want = demo_state["linear1.weight"].double().numpy() @ hidden + demo_state["linear1.bias"].double().numpy()
    np.testing.assert_allclose(logits[0].numpy(), want, atol=1e-5)


def test_served_model_rows_are_independent_and_faithful(original):
    videos = real_face_videos(3, 4, seed=5)
    served = ServedModel(original).eval()
    with torch.inference_mode():
        logits, prob_fake, frame_prob, heatmap = served(videos)
        alone = [served(videos[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(logits, original_scores(original, videos), atol=1e-5, rtol=0)
    for i in range(3):
        torch.testing.assert_close(logits[i : i + 1], alone[i][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(prob_fake[:, 0], torch.softmax(logits, 1)[:, FAKE_INDEX])
    torch.testing.assert_close(frame_prob[:, -1], prob_fake[:, 0])
    assert heatmap.shape == (3, 4, 112, 112)
    assert float(heatmap.min()) >= 0.0 and float(heatmap.max()) <= 1.0 + 1e-6


# --- ONNX export ---------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx_export_is_verified(tmp_path, original, precision):
    frames = 3
    path = tmp_path / "model.onnx"
    write_onnx(original, frames, path, precision=precision)
    verification = verify_onnx(path, original, frames, precision)
    assert verification.ok, verification.failures
    limit = 1e-4 if precision == "fp32" else 1e-2
    key = "LOGITS" if precision == "fp32" else "PROB_FAKE"
    assert verification.max_abs_diff["real_faces/batch1"][key] <= limit
    assert verification.max_abs_diff["random/batch4_vs_singles"]["LOGITS"] <= 1e-5


def test_verification_catches_a_wrong_graph(tmp_path, original, demo_state):
    """An artifact exported from other weights must fail verification, naming the outputs."""
    other = OriginalModel()
    other.load_state_dict(demo_state_dict(seed=11), strict=True)
    path = tmp_path / "model.onnx"
    write_onnx(other.eval(), 2, path)
    verification = verify_onnx(path, original, 2, "fp32")
    assert not verification.ok
    assert any("LOGITS" in failure for failure in verification.failures)


def test_frame_axis_is_open_a_graph_traced_with_two_frames_scores_three(tmp_path, original):
    path = tmp_path / "model.onnx"
    write_onnx(original, 2, path)
    verification = verify_onnx(path, original, 3, "fp32")
    assert verification.failures == []
    assert verification.max_abs_diff["random/last_frame_vs_all"]["LOGITS"] <= 1e-5


# --- the served repository ---------------------------------------------------------------------


def _version_dir(frames: int) -> Path:
    return REPOSITORY / model_name(Kind.CLASSIFIER, frames) / DEFAULT_VERSION


def _exported_lengths() -> list[int]:
    return [frames for frames in served_lengths(REPOSITORY) if (_version_dir(frames) / ONNX_FILE).is_file()]


@pytest.mark.parametrize("frames", SERVED_LENGTHS)
def test_repository_models_match_their_checkpoint(frames):
    """The served ONNX against the original forward on the checkpoint named in export.json."""
    version_dir = _version_dir(frames)
    if frames not in _exported_lengths():
        pytest.fail(f"{version_dir}/{ONNX_FILE} is missing: `make models` exports it before the tests")
    metadata = json.loads((version_dir / contract.EXPORT_METADATA_FILE).read_text())
    assert metadata["frames"] == frames and metadata["verified"], metadata["failures"]
    for side, names in (("inputs", contract.CLASSIFIER_INPUTS), ("outputs", contract.CLASSIFIER_OUTPUTS)):
        assert metadata[side] == {name: ["batch", *contract.TENSORS[name].dims(frames)] for name in names}
    original = load_original_model(Path(metadata["checkpoint"]))
    session = ort.InferenceSession(str(version_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    videos = real_face_videos(2, frames, seed=frames)
    outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: videos.numpy()})))
    want = original_scores(original, videos).numpy()
    tolerance = 1e-4 if metadata["precision"] == "fp32" else 5e-2
    np.testing.assert_allclose(outputs["LOGITS"], want, atol=tolerance, rtol=0)
    single = session.run(["LOGITS"], {INPUT_NAME: videos[1:].numpy()})[0]
    np.testing.assert_allclose(outputs["LOGITS"][1:], single, atol=1e-5, rtol=0)


def test_tensorrt_without_tensorrt_or_gpu_exits_2_with_one_sentence(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401

        has_tensorrt = torch.cuda.is_available()
    except ImportError:
        has_tensorrt = False
    if has_tensorrt:
        pytest.skip("TensorRT and a GPU are present: the build itself runs in `make gpu-smoke`")
    proc = subprocess.run(
        [sys.executable, "-m", "export", "tensorrt", "--repository", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ("TensorRT" in lines[0] or "GPU" in lines[0])
