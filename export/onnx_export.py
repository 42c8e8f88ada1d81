"""Checkpoint -> ONNX, verified against the original PyTorch forward as part of the export."""

from __future__ import annotations

import logging
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from contract import FRAMES, LAST_FRAME_OUTPUTS, TENSORS
from export.model import FACE_SIZE, FAKE_INDEX, INPUT_NAME, OUTPUT_NAMES, OriginalModel, ServedModel, original_scores
from export.samples import random_faces, real_face_videos

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PRECISIONS = ("fp32", "fp16")
BATCH_AXIS = "batch"
# The frame axis is left open too: the served configs pin it to N, and the CPU classifier feeds the
# last frame alone when a request asks for the score only (the only frame the score depends on).
FRAMES_AXIS = "frames"
#: The outputs that depend on the last frame only (see REFERENCE: the LSTM quirk).
SCORE_ONLY_OUTPUTS = LAST_FRAME_OUTPUTS
BATCH_CHECK_SIZE = 4

# Max abs difference allowed between the artifact and the original forward, per output.
TOLERANCES = {
    "fp32": {"LOGITS": 1e-4, "PROB_FAKE": 1e-4, "FRAME_PROB_FAKE": 1e-4, "HEATMAP": 1e-3},
    "fp16": {"LOGITS": 5e-2, "PROB_FAKE": 1e-2, "FRAME_PROB_FAKE": 1e-2, "HEATMAP": 5e-2},
}
# Rows of a batch against the same videos scored one at a time by the same artifact.
BATCH_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-5}


class HalfPrecision(torch.nn.Module):
    """Runs a module in fp16 while keeping float32 inputs and outputs (the served signature)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(out.float() for out in self.inner(faces.half()))


def served_module(original: OriginalModel, precision: str) -> torch.nn.Module:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    served = ServedModel(original).eval()
    if precision == "fp16":
        # ServedModel shares parameters with the original; convert a copy so the reference stays fp32.
        served = HalfPrecision(ServedModel(_copy_of(original)).eval()).eval()
    return served


def _copy_of(original: OriginalModel) -> OriginalModel:
    clone = OriginalModel()
    clone.load_state_dict(original.state_dict(), strict=True)
    return clone.eval()


def write_onnx(
    original: OriginalModel, frames: int, path: Path, precision: str = "fp32", opset: int = DEFAULT_OPSET
) -> None:
    """Exports the served form, traced with ``frames``-frame videos; batch and frame axes dynamic."""
    module = served_module(original, precision)
    example = torch.zeros(1, frames, 3, FACE_SIZE, FACE_SIZE)
    dynamic_axes = {name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    for name in (INPUT_NAME, "FRAME_PROB_FAKE", "HEATMAP"):
        dynamic_axes[name][1] = FRAMES_AXIS
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which does
        # not yet give named dynamic axes this simply; its output is verified below either way.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference_heatmaps(fmap: torch.Tensor, fake_weight: torch.Tensor) -> np.ndarray:
    """The original app's CAM drawing, in numpy/OpenCV, for every frame: [k, 112, 112]."""
    import cv2

    maps = []
    weights = fake_weight.detach().numpy().astype(np.float64)
    for frame_map in fmap.detach().numpy().astype(np.float64):
        channels, height, width = frame_map.shape
        cam = (frame_map.reshape(channels, height * width).T @ weights).reshape(height, width)
        cam = cam - cam.min()
        peak = cam.max()
        cam = cam / peak if peak > 0 else cam
        maps.append(cv2.resize(cam.astype(np.float32), (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR))
    return np.stack(maps)


@dataclass
class Verification:
    """What the export checked, with the max abs differences reached."""

    precision: str
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, case: str, output: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> None:
        if got.shape != want.shape:
            self.failures.append(f"{case}: {output} has shape {got.shape}, expected {want.shape}")
            return
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        self.max_abs_diff.setdefault(case, {})[output] = diff
        status = "ok" if diff <= tolerance else "FAIL"
        log.info("  %-30s %-16s max abs diff %.3e (tolerance %.0e) %s", case, output, diff, tolerance, status)
        if diff > tolerance:
            self.failures.append(f"{case}: {output} max abs diff {diff:.3e} exceeds {tolerance:.0e}")

    @property
    def ok(self) -> bool:
        return not self.failures


def _graph_signature(name: str) -> tuple[str, list[int | str]]:
    """(name, shape) a graph tensor must have: the contract's shape behind a batch axis, the frame axis named."""
    shape = [FRAMES_AXIS if axis == FRAMES else axis for axis in TENSORS[name].shape]
    return name, [BATCH_AXIS, *shape]


def check_signature(session) -> list[str]:
    """Names, element types and shapes of the graph against the served contract."""
    problems = []
    inputs = session.get_inputs()
    expected_inputs = [_graph_signature(INPUT_NAME)]
    expected_outputs = [_graph_signature(name) for name in OUTPUT_NAMES]
    for kind, got, want in (("input", inputs, expected_inputs), ("output", session.get_outputs(), expected_outputs)):
        got_sig = [(t.name, list(t.shape)) for t in got]
        if got_sig != want:
            problems.append(f"graph {kind}s are {got_sig}, expected {want}")
        for tensor in got:
            if tensor.type != "tensor(float)":
                problems.append(f"{kind} {tensor.name} has type {tensor.type}, expected tensor(float)")
    return problems


def verify_onnx(path: Path, original: OriginalModel, frames: int, precision: str, seed: int = 0) -> Verification:
    """Checks the ONNX artifact against the original forward (one video at a time).

    Cases: random inputs and real face crops (batch 1 against the original), a batch of four
    against the same four videos one at a time, per-frame scores against the original run on
    the video cut after that frame, and heatmaps against the app's own CAM drawing.
    """
    tolerances = TOLERANCES[precision]
    result = Verification(precision=precision)
    session = onnx_session(path)
    log.info("verifying %s (%s)", path, precision)
    for problem in check_signature(session):
        log.info("  signature: %s", problem)
        result.failures.append(f"signature: {problem}")
    if result.failures:
        return result
    for tensor in session.get_inputs() + session.get_outputs():
        log.info("  %-16s %s %s", tensor.name, tensor.type, tensor.shape)

    cases = {
        "random": random_faces(BATCH_CHECK_SIZE, frames, seed=seed),
        "real_faces": real_face_videos(BATCH_CHECK_SIZE, frames, seed=seed),
    }
    for case, videos in cases.items():
        batched = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: videos.numpy()})))
        singles = [
            dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: videos[i : i + 1].numpy()})))
            for i in range(len(videos))
        ]
        want_logits = original_scores(original, videos).numpy()
        want_prob = torch.softmax(torch.from_numpy(want_logits), dim=1)[:, FAKE_INDEX : FAKE_INDEX + 1].numpy()
        single_logits = np.concatenate([s["LOGITS"] for s in singles])
        single_prob = np.concatenate([s["PROB_FAKE"] for s in singles])
        result.record(f"{case}/batch1", "LOGITS", single_logits, want_logits, tolerances["LOGITS"])
        result.record(f"{case}/batch1", "PROB_FAKE", single_prob, want_prob, tolerances["PROB_FAKE"])
        for name in OUTPUT_NAMES:
            single = np.concatenate([s[name] for s in singles])
            result.record(f"{case}/batch4_vs_singles", name, batched[name], single, BATCH_TOLERANCE[precision])
        # The score-only path: the last frame alone gives the same score as all N frames.
        last = dict(
            zip(
                SCORE_ONLY_OUTPUTS,
                session.run(list(SCORE_ONLY_OUTPUTS), {INPUT_NAME: np.ascontiguousarray(videos[:, -1:].numpy())}),
            )
        )
        for name in SCORE_ONLY_OUTPUTS:
            result.record(f"{case}/last_frame_vs_all", name, last[name], batched[name], BATCH_TOLERANCE[precision])
        _check_frames_and_heatmaps(result, original, videos[:1], singles[0], tolerances, case)
    return result


def _check_frames_and_heatmaps(
    result: Verification, original: OriginalModel, video: torch.Tensor, served: dict, tolerances: dict, case: str
) -> None:
    frames = video.shape[1]
    # Frame k's own score is what the original forward gives for the video cut after frame k.
    picks = sorted({0, frames // 2, frames - 1})
    want = []
    for k in picks:
        logits = original_scores(original, video[:, : k + 1])
        want.append(torch.softmax(logits, dim=1)[0, FAKE_INDEX].item())
    got = served["FRAME_PROB_FAKE"][0, picks]
    result.record(
        f"{case}/frame_scores", "FRAME_PROB_FAKE", got, np.array(want, dtype=np.float32), tolerances["FRAME_PROB_FAKE"]
    )
    with torch.inference_mode():
        fmap, _ = original(video)
    want_maps = reference_heatmaps(fmap, original.linear1.weight[FAKE_INDEX])
    result.record(f"{case}/heatmaps", "HEATMAP", served["HEATMAP"][0], want_maps, tolerances["HEATMAP"])


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
