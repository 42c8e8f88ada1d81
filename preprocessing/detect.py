"""Face detection with facenet-pytorch's MTCNN on downscaled frames.

The MTCNN weights ship inside the facenet-pytorch wheel (``pnet.pt``,
``rnet.pt``, ``onet.pt``); nothing is downloaded. Frames are shrunk so their
longest side is ``detect_size`` (never enlarged), all frames of one size go
through MTCNN in a single batched call, and boxes are mapped back to source
pixels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN

from preprocessing.errors import ConfigError
from preprocessing.track import Detections

#: Default longest side, in pixels, of the frames MTCNN sees.
DEFAULT_DETECT_SIZE = 640
#: Default smallest face MTCNN looks for, in pixels of the detection frame.
DEFAULT_MIN_FACE_SIZE = 20
#: Default MTCNN stage thresholds (P-Net, R-Net, O-Net), facenet-pytorch's own.
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)

# Boxes thinner than this (in source pixels) after clipping cannot be cropped.
_MIN_BOX_SIDE = 2.0

_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device_name(device: object) -> None:
    """Raise :class:`ConfigError` unless ``device`` reads "cpu", "cuda" or "cuda:<index>"."""
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")


def resolve_device(device: str) -> torch.device:
    """Check a device name ("cpu", "cuda", "cuda:<index>") against this machine.

    Raises:
        ConfigError: Unknown name, or CUDA asked for where it is not available.
    """
    check_device_name(device)
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available to torch "
                              f"{torch.__version__} on this machine")
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} "
                              "CUDA device(s) are visible")
    return resolved


class FaceDetector:
    """MTCNN built once; detects all faces in batches of frames.

    Args:
        detect_size: Longest side of the frames MTCNN sees, in pixels.
        min_face_size: Smallest face MTCNN looks for, in detection-frame pixels.
        thresholds: MTCNN's three stage thresholds.
        device: "cpu", "cuda" or "cuda:<index>".
    """

    def __init__(self, detect_size: int = DEFAULT_DETECT_SIZE, min_face_size: int = DEFAULT_MIN_FACE_SIZE,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, device: str = "cpu") -> None:
        self.detect_size = detect_size
        self.min_face_size = min_face_size
        self.device = resolve_device(device)
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, thresholds=list(thresholds),
                            post_process=False, device=self.device)
        self._mtcnn.eval()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """All faces in each frame, boxes in the frame's own pixels.

        Args:
            frames: RGB ``uint8`` frames (height, width, 3).

        Returns:
            One :class:`~preprocessing.track.Detections` per frame, in order.
        """
        results: list[Detections | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape[:2], []).append(i)
        for (height, width), members in groups.items():
            scale = min(1.0, self.detect_size / max(height, width))
            small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
            if min(small_w, small_h) < self.min_face_size:
                continue  # no face of the minimum size fits: MTCNN's image pyramid would be empty
            if (small_w, small_h) == (width, height):
                batch = np.stack([frames[i] for i in members])
            else:
                # INTER_AREA: the alias-free way to shrink by large factors.
                batch = np.stack([cv2.resize(frames[i], (small_w, small_h), interpolation=cv2.INTER_AREA)
                                  for i in members])
            boxes, probs = self._mtcnn.detect(batch)
            back = np.array([width / small_w, height / small_h, width / small_w, height / small_h],
                            dtype=np.float32)
            for i, frame_boxes, frame_probs in zip(members, boxes, probs):
                results[i] = _detections(frame_boxes, frame_probs, back, (width, height))
        return [r if r is not None else Detections.empty() for r in results]


def _detections(boxes: object, probs: object, back: np.ndarray, size: tuple[int, int]) -> Detections:
    if boxes is None:
        return Detections.empty()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * back
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    # MTCNN boxes may reach past the frame edge; keep the visible part only.
    width, height = size
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    visible = (boxes[:, 2] - boxes[:, 0] >= _MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= _MIN_BOX_SIDE)
    return Detections(boxes[visible], probs[visible])
