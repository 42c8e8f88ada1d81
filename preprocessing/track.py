"""Face tracks through a clip: one tracker, one matching rule.

:class:`FaceTracker` links the faces found in successive frames into tracks. Its one rule: a
detection continues the track it overlaps best (IoU with the track's predicted box, its last box
moved on by its last motion, or with its last box, whichever is larger; see
:func:`track_overlaps`), when that overlap reaches ``iou_threshold``; pairs are taken
best first, each track and each detection at most once. Confident detections (``min_prob``)
left over start new tracks; weaker ones are ignored. The same tracker serves both ways through
a clip: every frame searched whole (:func:`follow_face`), and the key-frame search of
:meth:`~preprocessing.detect.FaceDetector.detect_tracked`, which asks it where to look.

The followed face is the most prominent track: the largest sum over its frames of
``sqrt(box area) * confidence``, so a face that is large *and* present in many frames wins over
a large face glimpsed once. Prominences are compared in steps of :data:`PROMINENCE_STEP`, and
equal ones go to the track seen first: two faces of the same size and confidence (a tie that
arithmetic noise would otherwise break either way) always give the same choice. Frames where the
followed face was not found reuse the box of the nearest frame where it was (the earlier one on a
tie), like the training data preparation reused the previous frame's box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from preprocessing.errors import NoFaceError

#: Default least box overlap (IoU) that continues a face track into the next frame.
DEFAULT_IOU_THRESHOLD = 0.3
#: Prominences closer than this are equal (one frame of a face 1 px wider, at confidence 1).
PROMINENCE_STEP = 1.0


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
class Track:
    """One face through the clip.

    Attributes:
        boxes: Its box in each frame it was found in (or placed in, between two such frames).
        probs: Its confidence there.
        first: The frame it was first found in.
        order: Its rank among the tracks by creation (the earlier, the lower).
        velocity: Its last motion, per frame, between the last two frames it was found in.
        misses: Searched frames in a row it was not found in.
        prominence: Sum over its frames of :func:`frame_prominence`.
    """

    first: int
    order: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    probs: dict[int, float] = field(default_factory=dict)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    misses: int = 0
    prominence: float = 0.0

    #: The latest frame it was found in (frames placed between two of its detections come earlier).
    last: int = -1

    @property
    def box(self) -> np.ndarray:
        """Its latest box."""
        return self.boxes[self.last]

    def predict(self, frame: int) -> np.ndarray:
        """Where its last motion puts it in ``frame``."""
        return (self.box + self.velocity * np.float32(frame - self.last)).astype(np.float32)

    def add(self, frame: int, box: np.ndarray, prob: float) -> None:
        """Found at ``box`` in ``frame`` (a later frame than any before)."""
        box = np.asarray(box, np.float32)
        if self.boxes:
            self.velocity = ((box - self.box) / np.float32(frame - self.last)).astype(np.float32)
        self.boxes[frame] = box.copy()
        self.probs[frame] = float(prob)
        self.last = frame
        self.misses = 0
        self.prominence += frame_prominence(box, prob)

    def rank(self) -> tuple[int, int, int]:
        """Sort key, most prominent first: prominence in steps of :data:`PROMINENCE_STEP`, then age."""
        return -math.floor(self.prominence / PROMINENCE_STEP), self.first, self.order


class FaceTracker:
    """Links detections of successive frames into :class:`Track` objects.

    Args:
        min_prob: Least confidence for a detection to start a track.
        iou_threshold: Least IoU between a detection and a track's predicted box for the
            detection to continue that track.
    """

    def __init__(self, min_prob: float, iou_threshold: float) -> None:
        self.min_prob = min_prob
        self.iou_threshold = iou_threshold
        self.tracks: list[Track] = []
        self.best_rejected = 0.0
        #: Frames of the clip seen so far (searched or not).
        self.frames = 0

    def update(self, frame: int, found: Detections) -> None:
        """Adds one searched frame's detections (frames in increasing order)."""
        self.frames = max(self.frames, frame + 1)
        probs = np.asarray(found.probs, dtype=np.float64).reshape(-1)
        boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
        keep = probs >= self.min_prob
        if probs.size and not keep.all():
            self.best_rejected = max(self.best_rejected, float(probs[~keep].max()))
        boxes, probs = boxes[keep], probs[keep]
        matched_tracks: set[int] = set()
        matched_boxes: set[int] = set()
        if self.tracks and len(boxes):
            overlaps = np.stack([track_overlaps(t, frame, boxes) for t in self.tracks])
            # Stable sort: of equal overlaps, the earlier track and the earlier detection go first.
            for flat in np.argsort(-overlaps, axis=None, kind="stable"):
                t, d = divmod(int(flat), overlaps.shape[1])
                if overlaps[t, d] < self.iou_threshold:
                    break
                if t in matched_tracks or d in matched_boxes:
                    continue
                self.tracks[t].add(frame, boxes[d], float(probs[d]))
                matched_tracks.add(t)
                matched_boxes.add(d)
        for t, track in enumerate(self.tracks):
            if t not in matched_tracks:
                track.misses += 1
        for d in range(len(boxes)):
            if d not in matched_boxes:
                track = Track(first=frame, order=len(self.tracks))
                track.add(frame, boxes[d], float(probs[d]))
                self.tracks.append(track)

    def interpolate(self, start: int, stop: int) -> None:
        """Places every track found in both ``start`` and ``stop`` in the frames between them.

        The boxes lie on the straight line between its two boxes, with the lower of the two
        confidences.
        """
        for track in self.tracks:
            if start not in track.boxes or stop not in track.boxes:
                continue
            first, last = track.boxes[start], track.boxes[stop]
            prob = min(track.probs[start], track.probs[stop])
            placed = {
                frame: (first + np.float32((frame - start) / (stop - start)) * (last - first)).astype(np.float32)
                for frame in range(start + 1, stop)
            }
            for frame, box in placed.items():
                track.boxes[frame] = box
                track.probs[frame] = prob
                track.prominence += frame_prominence(box, prob)
            track.boxes = dict(sorted(track.boxes.items()))

    def ranked(self) -> list[Track]:
        """The tracks, most prominent first (see :meth:`Track.rank`)."""
        return sorted(self.tracks, key=Track.rank)

    def detections(self, count: int) -> list[Detections]:
        """What the tracks hold for each of ``count`` frames, in track order."""
        frames: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(count)]
        for track in self.tracks:
            for frame, box in track.boxes.items():
                if frame < count:
                    frames[frame].append((box, track.probs[frame]))
        return [
            Detections(
                np.array([b for b, _ in found], np.float32).reshape(-1, 4), np.array([p for _, p in found], np.float32)
            )
            for found in frames
        ]

    def main_face(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes of the most prominent face in each of ``count`` frames.

        Returns:
            ``(boxes, found)``: ``float32 [count, 4]`` boxes (reused from the nearest frame where
            the face was not found) and ``bool [count]``.

        Raises:
            NoFaceError: No detection reached ``min_prob`` in any frame.
        """
        boxes, found, _ = self.faces(count, 1)[0]
        return boxes, found

    def faces(self, count: int, limit: int) -> list[tuple[np.ndarray, np.ndarray, Track]]:
        """The ``limit`` most prominent faces, most prominent first, each as :meth:`main_face` gives it.

        Returns:
            Up to ``limit`` entries ``(boxes, found, track)``; the first is the main face.

        Raises:
            NoFaceError: No detection reached ``min_prob`` in any frame.
        """
        if not self.tracks:
            detail = (
                f"best detector confidence {self.best_rejected:.2f} is below min_face_prob {self.min_prob}"
                if self.best_rejected > 0
                else "the detector found no face"
            )
            raise NoFaceError(f"no face found in any of the {count} decoded frames ({detail})")
        return [(*_fill_missing(track, count), track) for track in self.ranked()[:limit]]


def track_overlaps(track: Track, frame: int, boxes: np.ndarray) -> np.ndarray:
    """The tracker's matching measure of each box against ``track`` in ``frame``.

    The IoU with where the track's last motion puts it, or with its last box, whichever is larger:
    the prediction follows a moving face, the last box holds a face whose motion changed (a
    prediction carried over several unsearched frames can overshoot a face that turned back).
    """
    return np.maximum(iou_matrix(track.predict(frame)[None], boxes)[0], iou_matrix(track.box[None], boxes)[0])


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


def follow_face(
    detections: Sequence[Detections], min_prob: float, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the most prominent face in every frame, every frame searched whole.

    Args:
        detections: One entry per frame, in display order.
        min_prob: Detections below this confidence are ignored.
        iou_threshold: Least overlap with a track's predicted box for a
            detection to continue that track.

    Returns:
        ``(boxes, found)``: see :meth:`FaceTracker.main_face`.

    Raises:
        NoFaceError: No detection reaches ``min_prob`` in any frame.
    """
    tracker = FaceTracker(min_prob, iou_threshold)
    for frame, found in enumerate(detections):
        tracker.update(frame, found)
    return tracker.main_face(len(detections))


def _fill_missing(track: Track, count: int) -> tuple[np.ndarray, np.ndarray]:
    present = np.array(sorted(f for f in track.boxes if f < count), dtype=np.int64)
    found = np.zeros(count, dtype=bool)
    found[present] = True
    boxes = np.empty((count, 4), dtype=np.float32)
    for frame in range(count):
        # argmin returns the first of equal distances: the earlier frame wins a tie.
        nearest = int(present[np.argmin(np.abs(present - frame))])
        boxes[frame] = track.boxes[nearest]
    return boxes, found
