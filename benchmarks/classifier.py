"""The classifier alone: ONNX Runtime (what the server runs) against PyTorch eager (the app's way).

Both get the same faces ``[1, N, 3, 112, 112]`` and the same number of cores, and both give the
video's score. ONNX Runtime runs as the served classifier does: single-threaded session runs, the
frames split into one chunk per core run at once (:mod:`triton_models.chunks`). PyTorch eager runs
the original forward, which computes the trunk on all N frames and keeps the last frame's step.
ONNX Runtime runs what the served classifier runs for a score request (``LOGITS``, ``PROB_FAKE``):
the last frame alone, the only frame the score depends on (the LSTM quirk). A second ONNX Runtime
figure is asked for the per-frame scores as well (``FRAME_PROB_FAKE``, what the scoring ensemble
requests), which needs all N frames; a last figure times PyTorch eager on the last frame alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from contract import LAST_FRAME_OUTPUTS
from export.model import INPUT_NAME, OriginalModel
from triton_models.chunks import ChunkedSession

# The last frame's outputs alone, then with the per-frame score (what the scoring ensemble asks).
SCORE_OUTPUTS = LAST_FRAME_OUTPUTS
FRAME_OUTPUTS = (*LAST_FRAME_OUTPUTS, "FRAME_PROB_FAKE")


@dataclass(frozen=True)
class ClassifierTiming:
    """Median milliseconds per call of each way, and their agreement.

    Attributes:
        ort_ms: ONNX Runtime, the served score request (the last frame alone).
        ort_all_frames_ms: ONNX Runtime, N frames, the score and the per-frame scores.
        torch_ms: PyTorch eager, the original forward, N frames.
        torch_last_frame_ms: PyTorch eager on the last frame alone (all the faithful score needs).
        max_abs_logit_diff: Largest difference of ONNX Runtime's logits (either way) from eager's.
        threads: Cores given to both: torch's intra-op threads, ONNX Runtime's frame chunks.
        repeats: Timed calls per way (after one warm-up call).
    """

    ort_ms: float
    ort_all_frames_ms: float
    torch_ms: float
    torch_last_frame_ms: float
    max_abs_logit_diff: float
    threads: int
    repeats: int

    @property
    def speedup(self) -> float:
        return self.torch_ms / self.ort_ms

    @property
    def all_frames_speedup(self) -> float:
        return self.torch_ms / self.ort_all_frames_ms


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def time_classifier(
    onnx_path: Path, model: OriginalModel, faces: np.ndarray, repeats: int = 5, threads: int | None = None
) -> ClassifierTiming:
    """Times ONNX Runtime and PyTorch eager on the same faces.

    Args:
        onnx_path: The served ``model.onnx``.
        model: The original model with the same weights (eval mode).
        faces: ``float32 [N, 3, 112, 112]``.
        repeats: Timed calls per way.
        threads: Cores for both (torch's threads, ONNX Runtime's frame chunks); None uses torch's current setting.
    """
    if faces.ndim != 4:
        raise ValueError(f"faces must be [N, 3, 112, 112], got shape {faces.shape}")
    threads = threads or torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ChunkedSession(
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"]), INPUT_NAME, threads
    )
    batch = np.ascontiguousarray(faces[None], dtype=np.float32)
    tensor = torch.from_numpy(batch)
    last = tensor[:, -1:].contiguous()

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:

        def eager() -> torch.Tensor:
            with torch.inference_mode():
                return model(tensor)[1]

        last_frame = np.ascontiguousarray(batch[:, -1:])
        ort_ms = _median_ms(lambda: session.run(SCORE_OUTPUTS, last_frame), repeats)
        ort_all_ms = _median_ms(lambda: session.run(FRAME_OUTPUTS, batch), repeats)
        torch_ms = _median_ms(eager, repeats)

        def eager_last() -> torch.Tensor:
            with torch.inference_mode():
                return model(last)[1]

        last_ms = _median_ms(eager_last, repeats)
        want = eager().numpy()
        diff = max(float(np.abs(session.run(["LOGITS"], feed)[0] - want).max()) for feed in (last_frame, batch))
    finally:
        torch.set_num_threads(previous)
        session.close()
    return ClassifierTiming(
        ort_ms=ort_ms,
        ort_all_frames_ms=ort_all_ms,
        torch_ms=torch_ms,
        torch_last_frame_ms=last_ms,
        max_abs_logit_diff=diff,
        threads=threads,
        repeats=repeats,
    )
