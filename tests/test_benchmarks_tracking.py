"""Key-frame face detection (``detect_every``), the CPU server's speed setting: same faces, fewer searches."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import ConfigError, FacePipeline, PipelineConfig, decode_frames
from preprocessing.detect import FaceDetector
from preprocessing.track import iou_matrix
from tests import media

FRAMES = 12
KEY_EVERY = 5


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return decode_frames(media.face_clip(frames=FRAMES, seed=3), FRAMES, "first").frames


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def tracked_detections(detector: FaceDetector, frames, *args, **kwargs) -> list:
    """What :meth:`FaceDetector.detect_tracked`'s tracks hold for each frame."""
    tracker = detector.detect_tracked(frames, *args, **kwargs)
    return tracker.detections(tracker.frames)


def _largest(boxes: np.ndarray) -> np.ndarray:
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


def test_followed_face_matches_detection_on_every_frame(frames, detector):
    every = detector.detect(frames)
    tracked = tracked_detections(detector, frames, KEY_EVERY, min_prob=0.9)
    assert len(tracked) == FRAMES
    for index, (whole, followed) in enumerate(zip(every, tracked)):
        assert len(followed.boxes) >= 1, f"face lost in frame {index}"
        overlap = iou_matrix(_largest(whole.boxes)[None], _largest(followed.boxes)[None])[0, 0]
        assert overlap >= 0.7, f"frame {index}: IoU {overlap:.2f} with whole-frame detection"


def test_followed_boxes_track_the_known_face(frames, detector):
    tracked = tracked_detections(detector, frames, FRAMES, min_prob=0.9)  # key frames: first and last only
    for index, found in enumerate(tracked):
        truth = np.array(media.face_box(index, seed=3), dtype=np.float32)
        assert iou_matrix(truth[None], _largest(found.boxes)[None])[0, 0] >= 0.5, f"frame {index}"


def test_interval_one_is_plain_detection(frames, detector):
    plain = detector.detect(frames[:3])
    same = tracked_detections(detector, iter(frames[:3]), 1, min_prob=0.9)
    assert len(same) == 3
    for a, b in zip(plain, same):
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_frames_from_a_generator_give_the_same_detections_as_a_list(frames, detector):
    listed = tracked_detections(detector, frames, KEY_EVERY, min_prob=0.9)
    streamed = tracked_detections(detector, (frame for frame in frames), KEY_EVERY, min_prob=0.9)
    assert len(streamed) == len(listed) == FRAMES
    for a, b in zip(listed, streamed):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.probs, b.probs)


def test_face_absent_from_the_first_frame_is_found_at_the_next_key_frame(detector):
    clip = media.face_clip(frames=8, seed=2, hide_face=range(3))
    frames = decode_frames(clip, 8, "first").frames
    tracked = tracked_detections(detector, frames, 4, min_prob=0.9)
    assert all(len(found.probs) == 0 or found.probs.max() < 0.9 for found in tracked[:3])
    assert all(found.probs.max() >= 0.9 for found in tracked[4:])


def test_bad_interval_is_refused(detector, frames):
    with pytest.raises(ValueError, match="detect_every"):
        detector.detect_tracked(frames[:2], 0, min_prob=0.9)
    with pytest.raises(ConfigError, match="detect_every"):
        PipelineConfig.from_parameters({"frames": "10", "detect_every": "0"})
    with pytest.raises(ConfigError, match="detect_every"):
        PipelineConfig.from_parameters({"frames": "10", "detect_every": "often"})


def test_pipeline_uses_the_interval():
    clip = media.face_clip(frames=FRAMES, seed=5)
    every = FacePipeline(PipelineConfig(frames=FRAMES))(clip)
    keyed = FacePipeline(PipelineConfig(frames=FRAMES, detect_every=KEY_EVERY))(clip)
    assert keyed.found.all()
    ious = [iou_matrix(every.boxes[i : i + 1], keyed.boxes[i : i + 1])[0, 0] for i in range(FRAMES)]
    assert min(ious) >= 0.7, ious


def _windows_per_frame(
    detector: FaceDetector,
    frames: list[np.ndarray],
    max_followed: int,
    key_every: int = KEY_EVERY,
    window_every: int = 1,
) -> tuple[list[int], list]:
    """Runs detect_tracked, counting the windows searched in each searched frame (the real search still runs)."""
    counts: list[int] = []
    search = detector._detect_in_windows

    def counting(frame, boxes):
        counts.append(len(boxes))
        return search(frame, boxes)

    detector._detect_in_windows = counting
    try:
        tracked = tracked_detections(
            detector, frames, key_every, min_prob=0.9, max_followed=max_followed, window_every=window_every
        )
    finally:
        del detector._detect_in_windows
    return counts, tracked


def test_max_followed_bounds_the_windows_searched(frames, detector):
    # Three copies of the face side by side: three faces of equal prominence.
    crowd = [np.ascontiguousarray(np.concatenate([f, f, f], axis=1)) for f in frames[:6]]
    every_face, _ = _windows_per_frame(detector, crowd, 0)
    one_face, tracked = _windows_per_frame(detector, crowd, 1)
    assert max(every_face) == 3
    assert max(one_face) == 1
    # The followed face is still found in every frame, and key frames still see all three.
    assert all(found.probs.max() >= 0.9 for found in tracked)
    assert len(tracked[0].probs) == 3 and len(tracked[KEY_EVERY].probs) == 3


def test_max_followed_is_checked(detector, frames):
    with pytest.raises(ValueError, match="max_followed"):
        detector.detect_tracked(frames[:2], 2, min_prob=0.9, max_followed=-1)
    with pytest.raises(ConfigError, match="max_followed"):
        PipelineConfig.from_parameters({"frames": "10", "max_followed": "-1"})
    assert PipelineConfig.from_parameters({"frames": "10", "max_followed": "2"}).max_followed == 2


def _truth(index: int, shift: float = 0.0) -> np.ndarray:
    x1, y1, x2, y2 = media.face_box(index, seed=3)
    return np.array([x1 + shift, y1, x2 + shift, y2], np.float32)


def _best_iou(truth: np.ndarray, found) -> float:
    return float(iou_matrix(truth[None], found.boxes).max()) if len(found.boxes) else 0.0


@pytest.mark.parametrize("window_every", [2, 3])
def test_window_interval_searches_fewer_frames_and_places_the_face_in_the_others(frames, detector, window_every):
    every, _ = _windows_per_frame(detector, frames, 0, key_every=FRAMES)
    counts, tracked = _windows_per_frame(detector, frames, 0, key_every=FRAMES, window_every=window_every)
    assert len(every) == FRAMES
    # First frame, the one after it (a new face's motion), every window_every-th after that, the last.
    assert len(counts) <= 3 + (FRAMES - 2) // window_every < FRAMES
    for index, found in enumerate(tracked):
        assert found.probs.max() >= 0.9, f"frame {index}: no face"
        assert _best_iou(_truth(index), found) >= 0.5, f"frame {index}"


def test_frames_between_two_searches_are_interpolated(frames, detector):
    tracked = tracked_detections(detector, frames, FRAMES, min_prob=0.9, window_every=2)
    plain = tracked_detections(detector, frames, FRAMES, min_prob=0.9)
    # Searched: 0, 1 (after the face is first seen), 3, 5, ..., 11 (the last). Frame 2 lies halfway between 1 and 3.
    np.testing.assert_allclose(tracked[2].boxes[0], (tracked[1].boxes[0] + tracked[3].boxes[0]) / 2, atol=1e-3)
    assert tracked[2].probs[0] == min(tracked[1].probs[0], tracked[3].probs[0])
    # A searched frame's box is MTCNN's own, as when every frame is searched.
    np.testing.assert_array_equal(tracked[1].boxes[0], plain[1].boxes[0])


def test_a_fast_face_is_kept_with_a_window_interval(frames, detector):
    # The face moves right by 0.45 of its width per frame, on a canvas three frames wide: from the
    # first frame alone, a window two frames later would miss it; its motion comes from frame 1.
    step = 0.45 * (_truth(0)[2] - _truth(0)[0])
    moving = []
    for index, frame in enumerate(frames):
        canvas = np.zeros((frame.shape[0], frame.shape[1] * 3, 3), np.uint8)
        left = round(step * index)
        canvas[:, left : left + frame.shape[1]] = frame
        moving.append(canvas)
    tracked = tracked_detections(detector, moving, FRAMES, min_prob=0.9, max_followed=1, window_every=2)
    for index, found in enumerate(tracked):
        assert _best_iou(_truth(index, round(step * index)), found) >= 0.5, f"frame {index}"


def test_window_interval_is_checked(detector, frames):
    with pytest.raises(ValueError, match="window_every"):
        detector.detect_tracked(frames[:2], 2, min_prob=0.9, window_every=0)
    with pytest.raises(ConfigError, match="window_every"):
        PipelineConfig.from_parameters({"frames": "10", "window_every": "0"})
    assert PipelineConfig.from_parameters({"frames": "10", "window_every": "2"}).window_every == 2
