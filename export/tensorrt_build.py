"""model.onnx -> TensorRT plan on the GPU it will serve from, checked against ONNX Runtime.

Plans are tied to the GPU model and the TensorRT version, so this runs on the target node
(inside the tritonserver container, see docker-compose's ``export`` service).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from contract import DEFAULT_VERSION, ONNX_FILE, PLAN_FILE, Kind, model_name, version_folders
from export.model import INPUT_NAME, OUTPUT_NAMES
from export.onnx_export import onnx_session
from export.repository import served_lengths
from export.samples import real_face_videos

log = logging.getLogger(__name__)

PLAN_METADATA = "tensorrt.json"
# The engine against ONNX Runtime (fp32 graph) on real face crops, per output.
TRT_TOLERANCES = {
    "fp32": {"LOGITS": 1e-3, "PROB_FAKE": 1e-3, "FRAME_PROB_FAKE": 1e-3, "HEATMAP": 1e-2},
    "fp16": {"LOGITS": 5e-2, "PROB_FAKE": 1e-2, "FRAME_PROB_FAKE": 1e-2, "HEATMAP": 5e-2},
}
OPT_BATCH = 4


class TensorRTUnavailable(Exception):
    """TensorRT or a CUDA GPU is missing here."""


def _require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed here: run `python -m export tensorrt` "
            "inside the tritonserver container on the target GPU"
        ) from exc
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "no CUDA GPU is visible here: TensorRT plans must be built on the GPU that will serve them"
        )
    return trt


def build_plan(trt, onnx_path: Path, frames: int, precision: str, max_batch: int, workspace_mib: int) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = (frames, 3, 112, 112)
    profile.set_shape(INPUT_NAME, (1, *shape), (min(OPT_BATCH, max_batch), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(serialized)


def run_plan(trt, plan: bytes, faces: np.ndarray) -> dict[str, np.ndarray]:
    """Runs the engine once on ``faces`` with torch CUDA tensors as buffers."""
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    context.set_input_shape(INPUT_NAME, faces.shape)
    device_input = torch.from_numpy(faces).cuda()
    context.set_tensor_address(INPUT_NAME, device_input.data_ptr())
    outputs = {}
    for name in OUTPUT_NAMES:
        outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}


def build_all(
    repository: Path, frames_list: list[int] | None, precision: str, max_batch: int, workspace_mib: int
) -> list[str]:
    """Builds and verifies a plan for every version of every exported length; returns the failures."""
    trt = _require_tensorrt()
    failures = []
    for frames in frames_list or served_lengths(repository):
        model_dir = repository / model_name(Kind.CLASSIFIER, frames)
        for version in version_folders(model_dir) or [int(DEFAULT_VERSION)]:
            failures += _build_version(trt, model_dir / str(version), frames, precision, max_batch, workspace_mib)
    return failures


def _build_version(trt, version_dir: Path, frames: int, precision: str, max_batch: int, workspace_mib: int) -> list:
    """Builds and verifies the plan of one version folder; returns the failures."""
    failures = []
    where = f"{frames} frames, version {version_dir.name}"
    onnx_path = version_dir / ONNX_FILE
    if not onnx_path.is_file():
        return [f"{where}: {onnx_path} is missing (run `python -m export onnx` first)"]
    started = time.perf_counter()
    plan = build_plan(trt, onnx_path, frames, precision, max_batch, workspace_mib)
    (version_dir / PLAN_FILE).write_bytes(plan)
    log.info(
        "%d frames, version %s: wrote %s (%.1f MB) in %.0f s",
        frames,
        version_dir.name,
        version_dir / PLAN_FILE,
        len(plan) / 1e6,
        time.perf_counter() - started,
    )
    faces = real_face_videos(min(OPT_BATCH, max_batch), frames).numpy()
    want = dict(zip(OUTPUT_NAMES, onnx_session(onnx_path).run(list(OUTPUT_NAMES), {INPUT_NAME: faces})))
    got = run_plan(trt, plan, faces)
    diffs = {}
    for name in OUTPUT_NAMES:
        diffs[name] = float(np.max(np.abs(got[name] - want[name])))
        tolerance = TRT_TOLERANCES[precision][name]
        log.info("  %-16s max abs diff vs ONNX Runtime %.3e (tolerance %.0e)", name, diffs[name], tolerance)
        if diffs[name] > tolerance:
            failures.append(f"{where}: {name} max abs diff {diffs[name]:.3e} exceeds {tolerance:.0e}")
    metadata = {
        "onnx": str(onnx_path),
        "frames": frames,
        "precision": precision,
        "max_batch": max_batch,
        "tensorrt": trt.__version__,
        "max_abs_diff_vs_onnxruntime": diffs,
        "tolerances": TRT_TOLERANCES[precision],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (version_dir / PLAN_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return failures
