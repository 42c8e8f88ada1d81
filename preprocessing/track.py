"""Choose the face to follow through a clip.

Detections of consecutive frames are linked into tracks by box overlap (IoU,
greedy, best pairs first). The followed face is the most prominent track:
the largest sum over its frames of ``sqrt(box area) * confidence``, so a face
that is large *and* present in many frames wins over a large face glimpsed
once. Frames where the followed face was not found reuse the box of the
nearest frame where it was (the earlier one on a tie), like the training data
preparation reused the previous frame's box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from preprocessing.errors import NoFaceError


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame.

    Attributes:
        boxes: ``float32 [k, 4]`` (x1, y1, x2, y2) in frame pixels.
        probs: ``float32 [k]`` detector confidence.
    """

    boxes: np.ndarray
    probs: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass
class _Track:
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    probs: dict[int, float] = field(default_factory=dict)
    last_box: np.ndarray | None = None

    def add(self, frame: int, box: np.ndarray, prob: float) -> None:
        self.boxes[frame] = box
        self.probs[frame] = prob
        self.last_box = box

    def prominence(self) -> float:
        return float(sum(frame_prominence(self.boxes[f], self.probs[f]) for f in self.boxes))


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def frame_prominence(box: np.ndarray, prob: float) -> float:
    """One frame's share of a face's prominence: ``sqrt(box area) * confidence``."""
    return float(np.sqrt(_area(box)) * prob)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` [n, 4] with every box in ``b`` [m, 4]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def follow_face(detections: Sequence[Detections], min_prob: float,
                iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the most prominent face in every frame.

    Args:
        detections: One entry per frame, in display order.
        min_prob: Detections below this confidence are ignored.
        iou_threshold: Least overlap with a track's latest box for a
            detection to continue that track.

    Returns:
        ``(boxes, found)``: ``float32 [T, 4]`` boxes (reused from the nearest
        frame where the face was not found) and ``bool [T]``.

    Raises:
        NoFaceError: No detection reaches ``min_prob`` in any frame.
    """
    tracks: list[_Track] = []
    best_rejected = 0.0
    for frame, found in enumerate(detections):
        probs = np.asarray(found.probs, dtype=np.float64).reshape(-1)
        boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
        keep = probs >= min_prob
        if probs.size and not keep.all():
            best_rejected = max(best_rejected, float(probs[~keep].max()))
        boxes, probs = boxes[keep], probs[keep]
        _extend_tracks(tracks, frame, boxes, probs, iou_threshold)
    if not tracks:
        detail = (f"best detector confidence {best_rejected:.2f} is below min_face_prob {min_prob}"
                  if best_rejected > 0 else "the detector found no face")
        raise NoFaceError(f"no face found in any of the {len(detections)} decoded frames ({detail})")
    best = max(tracks, key=_Track.prominence)  # max() keeps the first of equals
    return _fill_missing(best, len(detections))


def _extend_tracks(tracks: list[_Track], frame: int, boxes: np.ndarray, probs: np.ndarray,
                   iou_threshold: float) -> None:
    taken_tracks: set[int] = set()
    taken_boxes: set[int] = set()
    if tracks and len(boxes):
        overlaps = iou_matrix(np.stack([t.last_box for t in tracks]), boxes)
        for flat in np.argsort(-overlaps, axis=None, kind="stable"):
            t, d = divmod(int(flat), overlaps.shape[1])
            if overlaps[t, d] < iou_threshold:
                break
            if t in taken_tracks or d in taken_boxes:
                continue
            tracks[t].add(frame, boxes[d], float(probs[d]))
            taken_tracks.add(t)
            taken_boxes.add(d)
    for d in range(len(boxes)):
        if d not in taken_boxes:
            track = _Track()
            track.add(frame, boxes[d], float(probs[d]))
            tracks.append(track)


def _fill_missing(track: _Track, count: int) -> tuple[np.ndarray, np.ndarray]:
    present = np.array(sorted(track.boxes), dtype=np.int64)
    found = np.zeros(count, dtype=bool)
    found[present] = True
    boxes = np.empty((count, 4), dtype=np.float32)
    for frame in range(count):
        # argmin returns the first of equal distances: the earlier frame wins a tie.
        nearest = int(present[np.argmin(np.abs(present - frame))])
        boxes[frame] = track.boxes[nearest]
    return boxes, found
