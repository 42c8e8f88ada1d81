"""Bytes in, face tensor out: decode, detect, follow, crop, normalise."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from preprocessing.config import PipelineConfig
from preprocessing.crop import crop_faces
from preprocessing.decode import decode_frames
from preprocessing.detect import FaceDetector
from preprocessing.track import follow_face


@dataclass(frozen=True)
class PreprocessResult:
    """What the pipeline made of one input.

    Attributes:
        faces: ``float32 [N, 3, 112, 112]``: BGR, ImageNet-normalised face crops.
        boxes: ``float32 [N, 4]``: (x1, y1, x2, y2) of the region actually
            cropped, in pixels of the displayed (upright) frame.
        found: ``bool [N]``: whether the followed face was detected in that
            frame (False: the nearest frame's box was reused).
        frames_decoded: Distinct real frames used (< N when the clip was short
            and its last frame was repeated).
        frame_indices: ``int64 [N]``: display-order index of each frame in the clip.
        timings: Seconds spent in ``"decode"``, ``"detect"`` (including
            downscaling and face tracking) and ``"crop"`` (crop, resize, normalise).
        source_size: Displayed frame size (width, height).
    """

    faces: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    frames_decoded: int
    frame_indices: np.ndarray
    timings: dict[str, float]
    source_size: tuple[int, int]


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
        self.detector = FaceDetector(detect_size=config.detect_size, min_face_size=config.min_face_size,
                                     thresholds=config.thresholds, device=config.device)

    def __call__(self, data: bytes | bytearray | memoryview | np.ndarray) -> PreprocessResult:
        """Run the pipeline on one uploaded file (bytes-like, e.g. Triton's ``uint8`` array).

        Raises:
            InputError: The input cannot be used (the message says why);
                :class:`LimitError` and :class:`NoFaceError` are subclasses.
        """
        cfg = self.config
        started = time.perf_counter()
        clip = decode_frames(data, cfg.frames, cfg.selection, max_bytes=cfg.max_bytes,
                             max_pixels=cfg.max_pixels, max_frames_scanned=cfg.max_frames_scanned,
                             decode_timeout_s=cfg.decode_timeout_s, threads=cfg.decode_threads)
        decoded = time.perf_counter()

        # Padding repeats frames: detect each distinct frame once.
        _, first_of, position = np.unique(clip.indices, return_index=True, return_inverse=True)
        detections = self.detector.detect_tracked([clip.frames[i] for i in first_of], cfg.detect_every,
                                                  cfg.min_face_prob, cfg.max_followed)
        boxes, found = follow_face(detections, cfg.min_face_prob, cfg.iou_threshold)
        detected = time.perf_counter()

        faces, cropped = crop_faces(clip.frames, boxes[position], margin=cfg.margin, square=cfg.square,
                                    shift_y=cfg.shift_y)
        finished = time.perf_counter()
        return PreprocessResult(
            faces=faces,
            boxes=cropped,
            found=found[position].astype(np.bool_),
            frames_decoded=clip.frames_decoded,
            frame_indices=clip.indices,
            timings={"decode": decoded - started, "detect": detected - decoded, "crop": finished - detected},
            source_size=clip.source_size,
        )
