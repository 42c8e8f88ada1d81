"""The video models' shared request handling: one upload through a pipeline, the preprocessing outputs.

Torch-free, so that ``preprocess_original_<N>`` (OpenCV and dlib only) loads without it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import BOX_COORDINATES, FACE_SIZE, VIDEO_INPUT
from preprocessing.errors import InputError, LimitError, NoFaceError
from preprocessing.fingerprint import fingerprint
from triton_models.metrics import FACES_FOUND, FACES_NONE

#: The decoder limits a pipeline's config may set, which the fingerprint obeys too.
_LIMITS = ("max_bytes", "max_pixels", "max_frames_scanned", "decode_timeout_s")


class Fingerprints:
    """Fingerprints each video (vPDQ, :mod:`preprocessing.fingerprint`) in a thread of its own while
    the pipeline decodes and detects, under the pipeline's decoder limits."""

    def __init__(self, name: str, config) -> None:
        self.name = name
        self.limits = {key: getattr(config, key) for key in _LIMITS if hasattr(config, key)}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")

    def submit(self, row: np.ndarray) -> Future:
        return self.pool.submit(fingerprint, row, **self.limits)

    def result(self, future: Future) -> bytes:
        """The fingerprint as JSON, or empty when the video could not be fingerprinted (the answer's
        ``known_match`` then says so; the scores do not depend on it)."""
        try:
            return future.result().to_json().encode()
        except InputError as exc:
            pb_utils.Logger.log_verbose(f"{self.name}: no fingerprint: {exc}")
        except (RuntimeError, MemoryError, OSError) as exc:
            pb_utils.Logger.log_error(f"{self.name}: fingerprinting failed: {type(exc).__name__}: {exc}")
        return b""

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


#: Limits that depend on the machine's load, not on the bytes.
TIME_LIMITS = frozenset({"decode_timeout_s"})


def process(pipeline, name: str, row: np.ndarray, counter=None):
    """One video through the pipeline: ``(result, None, "")``; ``(None, None, refusal)`` when the bytes
    themselves are refused (not a video, too large, no face); ``(None, error response, "")`` for a
    failure another try may not meet (the decode time limit, a server error).

    ``counter`` (a :class:`~triton_models.metrics.VideoCounter`) counts the videos with a face and
    those refused for having none.
    """
    try:
        result = pipeline(row)
    except InputError as exc:
        if isinstance(exc, NoFaceError) and counter is not None:
            counter.count(FACES_NONE)
        if isinstance(exc, LimitError) and exc.limit in TIME_LIMITS:
            # Another try may pass: an error answer (still the input's limit), not a refusal of these bytes.
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            return None, pb_utils.InferenceResponse(error=error), ""
        return None, None, str(exc) or type(exc).__name__
    except (RuntimeError, MemoryError, OSError) as exc:
        # Not the client's fault: say what broke, keep serving the next request.
        pb_utils.Logger.log_error(f"{name}: preprocessing failed: {type(exc).__name__}: {exc}")
        error = pb_utils.TritonError(f"preprocessing failed: {type(exc).__name__}: {exc}")
        return None, pb_utils.InferenceResponse(error=error), ""
    if counter is not None:
        counter.count(FACES_FOUND)
    return result, None, ""


def run_pipeline(pipeline, name: str, row: np.ndarray, counter=None):
    """One video through the pipeline: ``(result, None)``, or ``(None, error response)`` (a refusal
    as INVALID_ARGUMENT: for models whose answers are not cached)."""
    result, error, refusal = process(pipeline, name, row, counter)
    if refusal:
        error = pb_utils.InferenceResponse(error=pb_utils.TritonError(refusal, pb_utils.TritonError.INVALID_ARG))
    return result, error


class VideoModel:
    """A python model that turns each ``VIDEO`` row into the preprocessing outputs with ``self.pipeline``.

    Subclasses set ``self.name``, ``self.logger``, ``self.pipeline``, ``self.tensor`` (an
    :class:`~triton_models.common.OutputTensors` of their config), ``self.videos`` (a
    :class:`~triton_models.metrics.VideoCounter`) and ``self.fingerprints`` (:class:`Fingerprints`)
    in ``initialize``.
    """

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        videos = pb_utils.get_input_tensor_by_name(request, VIDEO_INPUT).as_numpy()
        prints = [self.fingerprints.submit(row) for row in videos]
        results, refusals = [], []
        for row in videos:
            result, error, refusal = process(self.pipeline, self.name, row, self.videos)
            if error is not None:
                for future in prints:
                    future.cancel()
                return error
            results.append(result)
            refusals.append(refusal)
        kept = [r for r in results if r is not None]
        if kept:
            timings = kept[0].timings
            self.logger.log_verbose(f"{self.name}: " + " ".join(f"{k}={v * 1000:.0f}ms" for k, v in timings.items()))
        frames = self.pipeline.config.frames
        empty = _Refused(frames)
        rows = [r if r is not None else empty for r in results]
        fingerprints = []
        for future, refusal in zip(prints, refusals):
            if refusal:
                future.cancel()
                fingerprints.append(b"")
            else:
                fingerprints.append(self.fingerprints.result(future))
        outputs = [
            self.tensor("FACES", np.stack([r.faces for r in rows])),
            self.tensor("FACE_BOXES", np.stack([r.boxes for r in rows])),
            self.tensor("FACE_FOUND", np.stack([r.found for r in rows])),
            self.tensor("FRAMES_DECODED", [[r.frames_decoded] for r in rows]),
            # Seconds from the stream's start; FP32 keeps 0.25 ms at one hour.
            self.tensor("FRAME_TIMES", np.stack([r.frame_times for r in rows])),
            self.tensor("FINGERPRINT", np.array([[f] for f in fingerprints], dtype=np.object_)),
            self.tensor("REFUSAL", np.array([[r.encode()] for r in refusals], dtype=np.object_)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)


class _Refused:
    """The outputs of a refused video: zeros of the contract's shapes (REFUSAL says why)."""

    def __init__(self, frames: int) -> None:
        self.faces = np.zeros((frames, 3, FACE_SIZE, FACE_SIZE), dtype=np.float32)
        self.boxes = np.zeros((frames, BOX_COORDINATES), dtype=np.float32)
        self.found = np.zeros(frames, dtype=bool)
        self.frames_decoded = 0
        self.frame_times = np.zeros(frames, dtype=np.float32)
