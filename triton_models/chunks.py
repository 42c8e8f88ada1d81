"""One ONNX Runtime session run on several threads at once, each thread on a share of the frames.

The published weights score every frame on its own (the LSTM quirk: one step from a zero state per
frame), so the frames of a call can be split into contiguous chunks, each chunk run on its own
thread by a single-threaded session, and the per-frame outputs joined back in order. The clip's own
outputs (``LOGITS``, ``PROB_FAKE``) come from the video's last frame, so they are taken from the
chunk that holds it. A call with one frame per video (the score alone) is split by video instead.

Why not ONNX Runtime's own intra-op threads: they split every operator and meet after each one, a
few hundred times per call. Chunks meet once. Measured on 2 cores, 20 frames: 250 ms and 495 ms of
CPU per call in two chunks, 284 ms and 549 ms with two intra-op threads; the results are the same
to the bit, because the per-frame arithmetic does not depend on how many frames share a call.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import onnxruntime as ort

# Outputs with a frame axis (axis 1): joined from every chunk. The others come from the last frame.
from contract import PER_FRAME_OUTPUTS


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _edges(count: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, nearly equal ranges covering ``range(count)`` (the later ones the larger)."""
    bounds = [count * i // chunks for i in range(chunks + 1)]
    return list(itertools.pairwise(bounds))


class ChunkedSession:
    """Runs a classifier session on up to ``chunks`` threads at once.

    Args:
        session: An ONNX Runtime session of the exported classifier (best with one intra-op thread).
        input_name: Its input, ``[videos, frames, 3, 112, 112]``.
        chunks: Most threads one call uses (1: plain ``session.run``).
        frames_independent: Whether each frame is computed on its own (the published weights); when
            not (a temporal model), calls are split by video only.
    """

    def __init__(
        self, session: ort.InferenceSession, input_name: str, chunks: int, frames_independent: bool = True
    ) -> None:
        if chunks < 1:
            raise ValueError(f"chunks must be at least 1, got {chunks}")
        self.session = session
        self.input_name = input_name
        self.chunks = chunks
        self.frames_independent = frames_independent
        # The calling thread runs the last chunk itself.
        self._pool = ThreadPoolExecutor(max_workers=chunks - 1, thread_name_prefix="chunk") if chunks > 1 else None

    def run(self, names: Sequence[str], faces: np.ndarray) -> list[np.ndarray]:
        """``session.run(names, {input: faces})``, computed in chunks; same outputs, same order."""
        names = list(names)
        videos, frames = faces.shape[:2]
        by_frame = self.frames_independent and frames > 1 and any(name in PER_FRAME_OUTPUTS for name in names)
        count = frames if by_frame else videos
        chunks = min(self.chunks, count)
        if chunks <= 1 or self._pool is None:
            return self.session.run(names, {self.input_name: faces})
        parts = []
        for start, stop in _edges(count, chunks):
            part = faces[:, start:stop] if by_frame else faces[start:stop]
            last = stop == count
            # Earlier frame chunks are asked for the per-frame outputs only: their "last frame" is not the clip's.
            wanted = names if last or not by_frame else [n for n in names if n in PER_FRAME_OUTPUTS]
            parts.append((wanted, np.ascontiguousarray(part)))
        futures = [self._pool.submit(self.session.run, wanted, {self.input_name: part}) for wanted, part in parts[:-1]]
        try:
            final = self.session.run(parts[-1][0], {self.input_name: parts[-1][1]})
        finally:
            wait(futures)  # no chunk of this call outlives it, even when one failed
        results = [dict(zip(wanted, future.result())) for (wanted, _), future in zip(parts, futures)]
        results.append(dict(zip(parts[-1][0], final)))
        joined = []
        for name in names:
            if by_frame and name not in PER_FRAME_OUTPUTS:
                joined.append(results[-1][name])
            else:
                joined.append(np.concatenate([result[name] for result in results], axis=1 if by_frame else 0))
        return joined

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
