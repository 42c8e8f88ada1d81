"""Choosing and following one face through a clip (pure box logic, no detector)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from preprocessing import Detections, NoFaceError, follow_face
from preprocessing.track import iou_matrix

MIN_PROB = 0.9
IOU = 0.3


def frame(*faces: tuple[float, float, float, float, float]) -> Detections:
    """Detections of one frame from (x1, y1, x2, y2, prob) tuples."""
    if not faces:
        return Detections.empty()
    array = np.array(faces, dtype=np.float32)
    return Detections(array[:, :4], array[:, 4])


def moving(x: float, y: float, size: float, step: float, prob: float = 0.99):
    """A face box drifting right by ``step`` pixels per frame."""
    return lambda t: (x + step * t, y, x + step * t + size, y + size * 1.2, prob)


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], dtype=float)
    overlaps = iou_matrix(a, b)
    np.testing.assert_allclose(overlaps[0], [1.0, 25 / 175, 0.0])
    np.testing.assert_allclose(overlaps[1], [0.25, 0.0, 0.0])


def test_largest_face_is_chosen_and_kept() -> None:
    big, small = moving(200, 50, 100, 4), moving(20, 60, 50, 2)
    detections = [frame(small(t), big(t)) for t in range(8)]
    boxes, found = follow_face(detections, MIN_PROB, IOU)
    assert found.all()
    np.testing.assert_allclose(boxes, [big(t)[:4] for t in range(8)])


def test_a_face_present_throughout_beats_a_bigger_face_seen_once() -> None:
    steady = moving(40, 40, 60, 1)
    detections = [frame(steady(t)) for t in range(10)]
    detections[4] = frame(steady(4), (200, 20, 330, 170, 0.99))
    boxes, found = follow_face(detections, MIN_PROB, IOU)
    assert found.all()
    np.testing.assert_allclose(boxes[4], steady(4)[:4])


def test_missing_frames_reuse_the_nearest_box_earlier_on_a_tie() -> None:
    face = moving(100, 100, 80, 3)
    present = {0, 3, 7}
    detections = [frame(face(t)) if t in present else frame() for t in range(10)]
    boxes, found = follow_face(detections, MIN_PROB, IOU)
    assert found.tolist() == [t in present for t in range(10)]
    # Frame 1 -> 0, 2 -> 3, 5 -> 3 (tie between 3 and 7 goes to the earlier), 6 -> 7, 8, 9 -> 7.
    nearest = [0, 0, 3, 3, 3, 3, 7, 7, 7, 7]
    np.testing.assert_allclose(boxes, [face(t)[:4] for t in nearest])


def test_other_face_does_not_take_over_when_the_chosen_one_vanishes() -> None:
    big, small = moving(200, 50, 100, 4), moving(20, 60, 50, 2)
    detections = [frame(small(t), big(t)) for t in range(6)]
    detections[2] = frame(small(2))
    boxes, found = follow_face(detections, MIN_PROB, IOU)
    assert found.tolist() == [True, True, False, True, True, True]
    np.testing.assert_allclose(boxes[2], big(1)[:4])


def test_low_confidence_detections_are_ignored() -> None:
    face, ghost = moving(100, 100, 80, 0), moving(0, 0, 200, 0, prob=0.5)
    detections = [frame(ghost(t), face(t)) for t in range(3)]
    boxes, _ = follow_face(detections, MIN_PROB, IOU)
    np.testing.assert_allclose(boxes, [face(t)[:4] for t in range(3)])


def test_no_confident_face_raises_no_face_error_saying_why() -> None:
    expected = r"no face found in any of the 4 decoded frames \(the detector found no face\)"
    with pytest.raises(NoFaceError, match=expected):
        follow_face([frame() for _ in range(4)], MIN_PROB, IOU)
    weak = [frame((10, 10, 50, 50, 0.62)) for _ in range(3)]
    with pytest.raises(NoFaceError, match=re.escape("best detector confidence 0.62 is below min_face_prob 0.9")):
        follow_face(weak, MIN_PROB, IOU)
