"""preprocessing/original.py in process: settings, limits, the app's box rules, threads."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import ConfigError, InputError, LimitError, NoFaceError
from preprocessing.original import OriginalConfig, OriginalPipeline, first_face, read_frames, resize_crop
from tests import media

FRAMES = 6


class Rect:
    """dlib.rectangle's four accessors, for the box rules."""

    def __init__(self, left: int, top: int, right: int, bottom: int) -> None:
        self._box = (left, top, right, bottom)

    def left(self) -> int:
        return self._box[0]

    def top(self) -> int:
        return self._box[1]

    def right(self) -> int:
        return self._box[2]

    def bottom(self) -> int:
        return self._box[3]


@pytest.fixture(scope="module")
def pipeline():
    pipe = OriginalPipeline(OriginalConfig(frames=FRAMES, detect_threads=2))
    yield pipe
    pipe.close()


def test_config_from_parameters_and_its_checks():
    config = OriginalConfig.from_parameters({"frames": "20", "detect_threads": "2", "decode_timeout_s": "12.5"})
    assert (config.frames, config.detect_threads, config.decode_timeout_s) == (20, 2, 12.5)
    with pytest.raises(ConfigError, match="unknown parameters"):
        OriginalConfig.from_parameters({"frames": "20", "detect_every": "2"})
    with pytest.raises(ConfigError, match="'frames' parameter is required"):
        OriginalConfig.from_parameters({})
    with pytest.raises(ConfigError, match="detect_threads must be int"):
        OriginalConfig.from_parameters({"frames": "20", "detect_threads": "two"})
    for bad in ({"frames": 0}, {"frames": 20, "detect_threads": 0}, {"frames": 20, "decode_timeout_s": 0}):
        with pytest.raises(ConfigError):
            OriginalConfig(**bad)


def test_first_face_takes_dlibs_first_box_clipped_to_the_frame():
    frame = np.zeros((100, 200, 3), np.uint8)
    assert first_face(lambda image, upsample: [Rect(-5, 10, 50, 120), Rect(0, 0, 9, 9)], frame) == (0, 10, 50, 100)
    assert first_face(lambda image, upsample: [Rect(150, -20, 230, 60)], frame) == (150, 0, 200, 60)
    assert first_face(lambda image, upsample: [], frame) is None
    # Wholly outside: the app's crop would be empty.
    assert first_face(lambda image, upsample: [Rect(210, 10, 260, 60)], frame) is None


def test_the_detector_is_called_once_upsampling_once():
    calls = []

    def detector(image, upsample):
        calls.append((image.shape, upsample))
        return []

    first_face(detector, np.zeros((40, 60, 3), np.uint8))
    assert calls == [((40, 60, 3), 1)]


def test_resize_crop_is_pils_bilinear_to_112():
    crop = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    resized = resize_crop(crop[:, 3:20])
    assert resized.shape == (112, 112, 3) and resized.dtype == np.uint8


def test_limits_and_refusals():
    clip = media.face_clip(frames=FRAMES)
    with pytest.raises(LimitError, match="max_bytes"):
        read_frames(clip, OriginalConfig(frames=FRAMES, max_bytes=len(clip) - 1))
    with pytest.raises(LimitError, match="max_pixels"):
        read_frames(clip, OriginalConfig(frames=FRAMES, max_pixels=320 * 240 - 1))
    with pytest.raises(InputError, match="unsupported input"):
        read_frames(b"\x00" * 100, OriginalConfig(frames=FRAMES))
    with pytest.raises(InputError, match="OpenCV"):
        read_frames(clip[:100], OriginalConfig(frames=FRAMES))


def test_frames_are_the_first_n_with_their_times():
    read = read_frames(media.face_clip(frames=FRAMES + 3), OriginalConfig(frames=FRAMES))
    assert len(read.frames) == FRAMES and read.source_size == (320, 240)
    assert read.times == pytest.approx([i / 25 for i in range(FRAMES)], abs=1e-3)


def test_a_clip_without_a_face_is_refused(pipeline):
    with pytest.raises(NoFaceError, match="dlib's HOG detector found no face"):
        pipeline(media.no_face_clip(frames=FRAMES))


def test_threads_do_not_change_the_result(pipeline):
    clip = media.face_clip(frames=FRAMES, hide_face=(3,))
    single = OriginalPipeline(OriginalConfig(frames=FRAMES, detect_threads=1))
    try:
        one, two = single(clip), pipeline(clip)
    finally:
        single.close()
    np.testing.assert_array_equal(one.faces, two.faces)
    np.testing.assert_array_equal(one.boxes, two.boxes)
    assert one.found.tolist() == two.found.tolist() == [True, True, True, False, True, True]
    # The frame without a face is the whole frame.
    assert one.boxes[3].tolist() == [0, 0, 320, 240]
