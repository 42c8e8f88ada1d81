"""Face detection with facenet-pytorch's MTCNN on downscaled frames.

The MTCNN weights ship inside the facenet-pytorch wheel (``pnet.pt``,
``rnet.pt``, ``onet.pt``); nothing is downloaded. Frames are shrunk so their
longest side is ``detect_size`` (never enlarged), all frames of one size go
through MTCNN in a single batched call, and boxes are mapped back to source
pixels.

:meth:`FaceDetector.detect_tracked` is the cheap way through a clip: full-frame detection on key
frames only (every ``detect_every``-th frame and always the last), and in the frames between, MTCNN
on small windows around the faces found in the frame before. A face keeps being detected, with
real MTCNN boxes in every frame, at a fraction of the cost; a face that enters the picture between
two key frames is picked up at the next key frame.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN

from preprocessing.errors import ConfigError
from preprocessing.mtcnn import Cascade, exact_fast_pooling
from preprocessing.track import DEFAULT_IOU_THRESHOLD, Detections, FaceTracker, Track, iou_matrix, track_overlaps

#: Default longest side, in pixels, of the frames MTCNN sees.
DEFAULT_DETECT_SIZE = 640
#: Default smallest face MTCNN looks for, in pixels of the detection frame.
DEFAULT_MIN_FACE_SIZE = 20
#: Default MTCNN stage thresholds (P-Net, R-Net, O-Net), facenet-pytorch's own.
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)

# Boxes thinner than this (in source pixels) after clipping cannot be cropped.
_MIN_BOX_SIDE = 2.0

#: Side, in pixels, of the square window around a known face that MTCNN searches between key frames.
WINDOW_SIZE = 64
#: Window side over the face box's longest side: room for the face to move and change size.
WINDOW_CONTEXT = 2.0
#: Window sides are snapped to this many sizes per octave (steps of 9 %; see :func:`window_for`).
WINDOW_SIDE_STEPS = 8
# A face is about WINDOW_SIZE / WINDOW_CONTEXT = 32 px in its window; MTCNN looks down to this size
# there (faces that shrink by a quarter between two frames are still found), which keeps its image
# pyramid to three levels.
_WINDOW_MIN_FACE = 24
# A window holds a face where one was a frame ago: a stricter first stage passes fewer candidates to
# the later stages, whose per-candidate work dominates MTCNN's cost.
_WINDOW_PNET_THRESHOLD = 0.8
#: Frames in a row a followed face may be missed in its window before it is no longer searched for.
MAX_MISSES = 2
# Two boxes overlapping this much are the same face (seen from two windows, or a window and a key frame).
_SAME_FACE_IOU = 0.5

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
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available to torch {torch.__version__} on this machine"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return resolved


class FaceDetector:
    """MTCNN built once; detects all faces in batches of frames.

    Args:
        detect_size: Longest side of the frames MTCNN sees, in pixels.
        min_face_size: Smallest face MTCNN looks for, in detection-frame pixels.
        thresholds: MTCNN's three stage thresholds.
        device: "cpu", "cuda" or "cuda:<index>".
    """

    def __init__(
        self,
        detect_size: int = DEFAULT_DETECT_SIZE,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        device: str = "cpu",
    ) -> None:
        self.detect_size = detect_size
        self.min_face_size = min_face_size
        self.device = resolve_device(device)
        # One set of networks (the weights inside the facenet-pytorch wheel), two cascades over it.
        nets = MTCNN(
            keep_all=True,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            post_process=False,
            device=self.device,
        )
        nets.eval()
        exact_fast_pooling(nets)
        self._cascade = Cascade(nets.pnet, nets.rnet, nets.onet, min_face_size, thresholds)
        window_thresholds = [max(thresholds[0], _WINDOW_PNET_THRESHOLD), *list(thresholds)[1:]]
        self._window_cascade = Cascade(nets.pnet, nets.rnet, nets.onet, _WINDOW_MIN_FACE, window_thresholds)

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
                batch = np.stack(
                    [cv2.resize(frames[i], (small_w, small_h), interpolation=cv2.INTER_AREA) for i in members]
                )
            back = np.array([width / small_w, height / small_h, width / small_w, height / small_h], dtype=np.float32)
            for i, (frame_boxes, frame_probs) in zip(members, self._cascade(batch)):
                results[i] = _detections(frame_boxes, frame_probs, back, (width, height))
        return [r if r is not None else Detections.empty() for r in results]

    def detect_tracked(
        self,
        frames: Iterable[np.ndarray],
        detect_every: int,
        min_prob: float,
        max_followed: int = 0,
        window_every: int = 1,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    ) -> FaceTracker:
        """Faces through a clip, searching the whole frame on key frames only.

        Key frames are every ``detect_every``-th frame and the last one. In the searched frames
        (every ``window_every``-th one, and every key frame), each face tracked so far is searched
        in a window around where its last motion puts it (:func:`window_for`); a face missed in
        up to :data:`MAX_MISSES` searched frames in a row is still searched for. On key frames the
        whole frame is searched too, and whole-frame detections of a face already found in its
        window are dropped, so a followed face keeps boxes of one kind. All detections of a
        frame then go to one :class:`~preprocessing.track.FaceTracker`, whose single matching
        rule links them to the tracks.

        Frames between two searched ones (``window_every`` > 1) are not searched: a track found
        in both gets boxes interpolated linearly between its two detections, with the lower of
        their two confidences. A newly found face is searched in the next frame too, which gives
        its motion.

        Each window costs an MTCNN pass: ``max_followed`` > 0 searches only that many tracks, the
        most prominent so far (the order that picks the followed face in the end); the others
        are still seen whole on key frames.

        ``frames`` may be a generator that yields frames while they are being decoded: each frame
        is searched as soon as the next one (or the end) arrives, which tells whether it is the last.

        Args:
            frames: RGB ``uint8`` frames (height, width, 3), in display order.
            detect_every: Key-frame interval; 1 searches every frame whole (one batched call).
            min_prob: Least confidence for a face to start a track.
            max_followed: Most tracks searched in windows at a time (0: every track).
            window_every: Interval of the frames searched in windows (1: every frame).
            iou_threshold: The tracker's matching threshold.

        Returns:
            The tracker, holding every track; ``tracker.frames`` is the number of frames seen.
        """
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if max_followed < 0:
            raise ValueError(f"max_followed must be >= 0, got {max_followed}")
        if window_every < 1:
            raise ValueError(f"window_every must be >= 1, got {window_every}")
        tracker = FaceTracker(min_prob, iou_threshold)
        if detect_every == 1:
            # Every frame is searched whole: one batched call once all have arrived (what a GPU wants).
            listed = list(frames)
            for index, found in enumerate(self.detect(listed)):
                tracker.update(index, found)
            tracker.frames = len(listed)
            return tracker
        searched_last = -1
        index = -1
        remaining = iter(frames)
        upcoming = next(remaining, None)
        while upcoming is not None:
            index, frame = index + 1, upcoming
            upcoming = next(remaining, None)
            key = index % detect_every == 0 or upcoming is None
            searched = followed_tracks(tracker, max_followed)
            # A face first seen in the last searched frame has no motion yet: it is searched again
            # in the very next frame, so that the searches after that know where to look.
            due = index - searched_last >= window_every or any(len(t.boxes) == 1 for t in searched)
            if not key and not due:
                continue  # placed by interpolation once the next searched frame is known
            self.search_frame(tracker, index, frame, searched, whole=key)
            if index - searched_last > 1:
                tracker.interpolate(searched_last, index)
            searched_last = index
        tracker.frames = index + 1
        return tracker

    def search_frame(
        self, tracker: FaceTracker, index: int, frame: np.ndarray, searched: Sequence[Track], whole: bool
    ) -> None:
        """One searched frame: each of ``searched`` in its window, the whole frame too when ``whole``.

        The detections go to ``tracker`` (:meth:`FaceTracker.update`) for frame ``index``; a whole-frame
        detection of a face already found in its window is dropped. The step both the clip's key-frame
        search (:meth:`detect_tracked`) and the live streams' online following take.
        """
        min_prob, iou_threshold = tracker.min_prob, tracker.iou_threshold
        found_whole = self.detect([frame])[0] if whole else Detections.empty()
        predicted = np.array([t.predict(index) for t in searched], np.float32).reshape(-1, 4)
        per_window = self._detect_in_windows(frame, predicted)
        # Each window's own face (its best match to the prediction) first: a neighbour's box seen
        # from that window, or a box spanning two faces, must not displace it.
        own = [_best_match(track, index, found, min_prob, iou_threshold) for track, found in zip(searched, per_window)]
        own = [o for o in own if o is not None]
        parts = [*own, *per_window, found_whole]
        tracker.update(
            index,
            _distinct_faces(
                np.concatenate([p.boxes for p in parts]), np.concatenate([p.probs for p in parts]), first=len(own)
            ),
        )

    def _detect_in_windows(self, frame: np.ndarray, boxes: np.ndarray) -> list[Detections]:
        """Faces found in a square window around each box, in frame pixels (one entry per box)."""
        if len(boxes) == 0:
            return []
        windows, origins = [], []
        for box in boxes:
            left, top, side = window_for(box)
            scale = WINDOW_SIZE / side
            # One affine warp crops, scales and pads (black) past the frame edge in one pass.
            matrix = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]])
            windows.append(
                cv2.warpAffine(
                    frame, matrix, (WINDOW_SIZE, WINDOW_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT
                )
            )
            origins.append((np.array([left, top, left, top], np.float32), np.float32(1.0 / scale)))
        height, width = frame.shape[:2]
        return [
            _detections(window_boxes, window_probs, back, (width, height), offset)
            for (offset, back), (window_boxes, window_probs) in zip(origins, self._window_cascade(np.stack(windows)))
        ]


def followed_tracks(tracker: FaceTracker, max_followed: int) -> list[Track]:
    """The tracks searched in windows: missed at most :data:`MAX_MISSES` times in a row, the
    ``max_followed`` most prominent (0: all)."""
    searched = [t for t in tracker.ranked() if t.misses <= MAX_MISSES]
    return searched[:max_followed] if max_followed else searched


def window_for(box: np.ndarray) -> tuple[float, float, float]:
    """The square window searched for a face expected at ``box``: ``(left, top, side)`` in frame pixels.

    The window is centred on the box, :data:`WINDOW_CONTEXT` times its longest side, then snapped:
    its corner to whole pixels, its side to one of :data:`WINDOW_SIDE_STEPS` sizes per octave. MTCNN's
    answer on a window is not a smooth function of where the window lies (its stage thresholds and
    non-maximum suppression make choices), so a window that moved with the arithmetic noise of the
    box before it (another thread count, instruction set or device) would let that noise grow
    frame after frame. Snapped, the window is the same pixels unless the box lies within noise of a
    step, and the face still fills it as intended (within half a pixel and 4.5 % of its size).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    wanted = WINDOW_CONTEXT * max(x2 - x1, y2 - y1, 1.0)
    side = 2.0 ** (round(math.log2(wanted) * WINDOW_SIDE_STEPS) / WINDOW_SIDE_STEPS)
    return float(math.floor((x1 + x2 - side) / 2.0 + 0.5)), float(math.floor((y1 + y2 - side) / 2.0 + 0.5)), side


def _best_match(
    track: Track, frame: int, found: Detections, min_prob: float, iou_threshold: float
) -> Detections | None:
    """The confident detection the tracker's rule matches best to ``track``, if it reaches ``iou_threshold``."""
    sure = found.probs >= min_prob
    if not sure.any():
        return None
    overlaps = track_overlaps(track, frame, found.boxes[sure])
    best = int(np.argmax(overlaps))
    if overlaps[best] < iou_threshold:
        return None
    return Detections(found.boxes[sure][best : best + 1], found.probs[sure][best : best + 1])


def _distinct_faces(boxes: np.ndarray, probs: np.ndarray, first: int = 0) -> Detections:
    """Drops boxes of a face already kept: the ``first`` boxes in their order, then by confidence."""
    keep: list[int] = []
    order = [*range(first), *(first + np.argsort(-probs[first:], kind="stable"))]
    for i in order:
        if not keep or iou_matrix(boxes[i : i + 1], boxes[keep]).max() < _SAME_FACE_IOU:
            keep.append(int(i))
    return Detections(boxes[keep].astype(np.float32), probs[keep].astype(np.float32))


def _detections(
    boxes: np.ndarray,
    probs: np.ndarray,
    back: np.ndarray | np.float32,
    size: tuple[int, int],
    offset: np.ndarray | None = None,
) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * back
    if offset is not None:
        boxes = boxes + offset
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    # MTCNN boxes may reach past the frame edge; keep the visible part only.
    width, height = size
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    visible = (boxes[:, 2] - boxes[:, 0] >= _MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= _MIN_BOX_SIDE)
    return Detections(boxes[visible], probs[visible])
