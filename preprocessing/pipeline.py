"""Bytes in, face tensor out: decode, detect, follow, crop, normalise."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

from preprocessing.config import PipelineConfig
from preprocessing.crop import crop_faces
from preprocessing.decode import DecodedClip, decode_frames
from preprocessing.detect import FaceDetector
from preprocessing.result import FaceTrackResult, PreprocessResult

__all__ = ["FacePipeline", "FaceTrackResult", "PreprocessResult"]


class FacePipeline:
    """The preprocessing of one model: MTCNN is built once, here.

    Args:
        config: The settings; ``config.device`` must be usable here.

    Raises:
        ConfigError: The device is not available.

    Example::

        pipeline = FacePipeline(PipelineConfig(frames=20))
        result = pipeline(open("clip.mp4", "rb").read())
        result.faces.shape  # (20, 3, 112, 112)
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.detector = FaceDetector(
            detect_size=config.detect_size,
            min_face_size=config.min_face_size,
            thresholds=config.thresholds,
            device=config.device,
        )

    def __call__(self, data: bytes | bytearray | memoryview | np.ndarray) -> PreprocessResult:
        """Run the pipeline on one uploaded file (bytes-like, e.g. Triton's ``uint8`` array).

        Raises:
            InputError: The input cannot be used (the message says why);
                :class:`LimitError` and :class:`NoFaceError` are subclasses.
        """
        cfg = self.config
        started = time.perf_counter()
        decoding = _DecodeThread(data, cfg)
        # Frames are searched for faces while the later ones decode: the two overlap on two cores.
        tracker = self.detector.detect_tracked(
            decoding.frames(),
            cfg.detect_every,
            cfg.min_face_prob,
            cfg.max_followed,
            cfg.window_every,
            cfg.iou_threshold,
        )
        clip = decoding.result()
        followed = tracker.faces(clip.frames_decoded, cfg.max_faces)
        detected = time.perf_counter()
        # Padding repeats frames: each output frame maps to the distinct frame it repeats.
        _, position = np.unique(clip.indices, return_inverse=True)
        tracks = []
        for boxes, found, track in followed:
            faces, cropped = crop_faces(
                clip.frames, boxes[position], margin=cfg.margin, square=cfg.square, shift_y=cfg.shift_y
            )
            tracks.append(
                FaceTrackResult(
                    faces=faces, boxes=cropped, found=found[position].astype(np.bool_), prominence=track.prominence
                )
            )
        main = tracks[0]
        finished = time.perf_counter()
        return PreprocessResult(
            faces=main.faces,
            boxes=main.boxes,
            found=main.found,
            frames_decoded=clip.frames_decoded,
            frame_indices=clip.indices,
            frame_times=clip.times,
            timings={
                "decode": decoding.finished_at - started,
                "detect": detected - started - decoding.waited,
                "crop": finished - detected,
            },
            source_size=clip.source_size,
            wall_seconds=finished - started,
            tracks=tuple(tracks),
            faces_seen=len(tracker.tracks),
        )


_END = object()


class _DecodeThread:
    """Decodes one input on a thread of its own, handing each frame over as soon as it is ready.

    PyAV and the detector's torch operations release the GIL, so decoding the next frames and
    searching the current one run at the same time.
    """

    def __init__(self, data: bytes | bytearray | memoryview | np.ndarray, cfg: PipelineConfig) -> None:
        # Copied here, not on the thread: Triton's input buffer belongs to the request, and the caller
        # may return (an error in detection) before the thread is done with it.
        self._data = data if isinstance(data, bytes) else bytes(data)
        self._cfg = cfg
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._clip: DecodedClip | None = None
        self._error: Exception | None = None
        self.finished_at = 0.0
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cfg = self._cfg
        try:
            self._clip = decode_frames(
                self._data,
                cfg.frames,
                cfg.selection,
                max_bytes=cfg.max_bytes,
                max_pixels=cfg.max_pixels,
                max_frames_scanned=cfg.max_frames_scanned,
                decode_timeout_s=cfg.decode_timeout_s,
                threads=cfg.decode_threads,
                on_frame=self._queue.put,
            )
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = exc
        finally:
            self.finished_at = time.perf_counter()
            self._queue.put(_END)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in clip order, while they decode; ends when decoding ends (for any reason)."""
        while True:
            asked = time.perf_counter()
            item = self._queue.get()
            self.waited += time.perf_counter() - asked
            if item is _END:
                return
            yield item

    def result(self) -> DecodedClip:
        """The decoded clip, once decoding has ended.

        Raises:
            InputError: Whatever :func:`~preprocessing.decode.decode_frames` raised, re-raised here.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._clip is not None
        return self._clip
