"""The whole pipeline on real encoded media with the real MTCNN weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from preprocessing import (
    ConfigError,
    FacePipeline,
    InputError,
    LimitError,
    NoFaceError,
    PipelineConfig,
    crop_box,
    decode_frames,
)
from preprocessing.track import iou_matrix
from tests import media

logger = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WALKING = SHARED_DATA / "people_walking_1080p.mp4"
PORTRAITS = [SHARED_DATA / "face_portrait_1.jpg", SHARED_DATA / "face_portrait_2.jpg"]

FRAMES = 8
# The crop must overlap the crop of the known face box this much.
MIN_IOU = 0.7
# Generated faces are about 100 px tall: skipping MTCNN's search for faces under
# 40 px makes detection about 3 x cheaper without changing what it finds.
TEST_MIN_FACE_SIZE = 40


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(PipelineConfig(frames=FRAMES, min_face_size=TEST_MIN_FACE_SIZE))


def expected_crop(face: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    """The default crop of a known face box."""
    return crop_box(face, size).astype(np.float64)


def overlap(a, b) -> float:
    return float(iou_matrix(np.asarray(a, dtype=np.float64)[None], np.asarray(b, dtype=np.float64)[None])[0, 0])


def test_face_clip_result_types_and_boxes(pipeline: FacePipeline) -> None:
    result = pipeline(media.face_clip(frames=12))
    assert result.faces.shape == (FRAMES, 3, 112, 112) and result.faces.dtype == np.float32
    assert result.boxes.shape == (FRAMES, 4) and result.boxes.dtype == np.float32
    assert result.found.shape == (FRAMES,) and result.found.dtype == np.bool_
    assert result.frame_indices.dtype == np.int64 and result.frame_indices.tolist() == list(range(FRAMES))
    assert result.frames_decoded == FRAMES
    assert result.source_size == (320, 240)
    assert set(result.timings) == {"decode", "detect", "crop"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert result.found.all()
    for i, box in enumerate(result.boxes):
        assert overlap(box, expected_crop(media.face_box(i), (320, 240))) > MIN_IOU, f"frame {i}: {box}"


def test_faces_are_the_normalised_crops_of_the_reported_boxes(pipeline: FacePipeline) -> None:
    """Each face is the reported region sampled bilinearly at 112 x 112 pixel centres (SciPy here)."""
    data = media.face_clip(frames=FRAMES)
    result = pipeline(data)
    frames = decode_frames(data, FRAMES).frames
    assert not np.array_equal(result.boxes, np.round(result.boxes)), "boxes are fractional"
    for frame, (x1, y1, x2, y2), face in zip(frames, result.boxes.astype(np.float64), result.faces):
        centres = (np.arange(112) + 0.5) / 112
        ys = y1 + centres * (y2 - y1) - 0.5
        xs = x1 + centres * (x2 - x1) - 0.5
        grid = np.meshgrid(ys, xs, indexing="ij")
        crop = np.stack(
            [
                ndimage.map_coordinates(frame[..., c].astype(np.float64), grid, order=1, mode="nearest")
                for c in range(3)
            ],
            axis=-1,
        )
        bgr = crop[..., ::-1] / 255.0
        expected = ((bgr - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
        np.testing.assert_allclose(face, expected, atol=1e-4)


def test_rotated_portrait_clip_gives_upright_boxes(pipeline: FacePipeline) -> None:
    size = (240, 320)
    result = pipeline(media.face_clip(frames=FRAMES, size=size, rotate=90))
    assert result.source_size == size
    assert result.found.all()
    for i, box in enumerate(result.boxes):
        assert overlap(box, expected_crop(media.face_box(i, size), size)) > MIN_IOU


def test_larger_of_two_faces_is_followed_and_a_hidden_frame_reuses_the_nearest_box(pipeline: FacePipeline) -> None:
    result = pipeline(media.two_face_clip(frames=FRAMES, hide_large=[3]))
    assert result.found.tolist() == [i != 3 for i in range(FRAMES)]
    for i, box in enumerate(result.boxes):
        large, small = media.two_face_boxes(i)
        assert overlap(box, expected_crop(large, (480, 240))) > MIN_IOU or i == 3
        assert overlap(box, small) == 0.0
    # Frames 2 and 4 are equally near frame 3: the earlier one's box is reused.
    np.testing.assert_array_equal(result.boxes[3], result.boxes[2])


def test_hidden_face_frames_reuse_the_nearest_found_box(pipeline: FacePipeline) -> None:
    result = pipeline(media.face_clip(frames=FRAMES, hide_face=[0, 1, 6]))
    assert result.found.tolist() == [False, False, True, True, True, True, False, True]
    np.testing.assert_array_equal(result.boxes[0], result.boxes[2])
    np.testing.assert_array_equal(result.boxes[1], result.boxes[2])
    np.testing.assert_array_equal(result.boxes[6], result.boxes[5])


@pytest.mark.parametrize("make", [media.no_face_clip, media.black_clip], ids=["no-face", "black"])
def test_clip_without_a_face_raises_no_face_error(pipeline: FacePipeline, make) -> None:
    with pytest.raises(NoFaceError, match="no face found in any of the"):
        pipeline(make())


@pytest.mark.parametrize("size", [(16, 16), (2, 2), (48, 12)])
def test_frames_too_small_for_any_face_raise_no_face_error(pipeline: FacePipeline, size) -> None:
    with pytest.raises(NoFaceError, match="the detector found no face"):
        pipeline(media.face_clip(frames=2, size=size, pix_fmt="yuv444p"))


def test_still_image_fills_all_frames(pipeline: FacePipeline) -> None:
    result = pipeline(media.still_image("JPEG", exif_orientation=6))
    assert result.frames_decoded == 1
    assert result.frame_indices.tolist() == [0] * FRAMES
    assert result.found.all()
    assert (result.boxes == result.boxes[0]).all()
    assert (result.faces == result.faces[0]).all()
    assert overlap(result.boxes[0], expected_crop(media.face_box(0), (320, 240))) > MIN_IOU


def test_short_clip_is_padded(pipeline: FacePipeline) -> None:
    result = pipeline(media.face_clip(frames=3))
    assert result.frames_decoded == 3
    assert result.frame_indices.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(result.faces[3:], np.repeat(result.faces[2:3], FRAMES - 3, axis=0))


def test_uniform_selection_through_the_pipeline() -> None:
    pipeline = FacePipeline(PipelineConfig(frames=4, selection="uniform", min_face_size=TEST_MIN_FACE_SIZE))
    result = pipeline(media.face_clip(frames=16))
    assert result.frame_indices.tolist() == [2, 6, 10, 14]
    for i, box in zip(result.frame_indices, result.boxes):
        assert overlap(box, expected_crop(media.face_box(int(i)), (320, 240))) > MIN_IOU


def test_limits_from_the_config_are_applied() -> None:
    data = media.face_clip(frames=4)
    pipeline = FacePipeline(PipelineConfig(frames=4, max_bytes=len(data) - 1))
    with pytest.raises(LimitError, match="max_bytes"):
        pipeline(data)


def test_garbage_through_the_pipeline_is_an_input_error(pipeline: FacePipeline) -> None:
    with pytest.raises(InputError, match="unsupported input"):
        pipeline(b"not a video")


def test_cuda_device_is_refused_clearly_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the refusal cannot happen")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        FacePipeline(PipelineConfig(frames=4, device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(pipeline: FacePipeline) -> None:
    data = media.face_clip(frames=FRAMES)
    on_gpu = FacePipeline(PipelineConfig(frames=FRAMES, device="cuda"))(data)
    on_cpu = pipeline(data)
    assert on_gpu.found.tolist() == on_cpu.found.tolist()
    assert np.abs(on_gpu.boxes - on_cpu.boxes).max() <= 2.0


@pytest.mark.skipif(not WALKING.exists(), reason=f"shared test media absent: {WALKING}")
def test_real_1080p_clip_with_default_settings(capsys) -> None:
    pipeline = FacePipeline(PipelineConfig(frames=20))
    result = pipeline(WALKING.read_bytes())
    assert result.source_size == (1920, 1080)
    assert result.faces.shape == (20, 3, 112, 112)
    assert result.found.sum() >= 15
    width = result.boxes[:, 2] - result.boxes[:, 0]
    assert (width >= 20).all() and (result.boxes[:, 2] <= 1920).all() and (result.boxes[:, 3] <= 1080).all()
    # One person is followed: consecutive boxes overlap.
    for a, b in zip(result.boxes[:-1], result.boxes[1:]):
        assert overlap(a, b) > 0.3
    timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
    with capsys.disabled():
        print(f"\n1080p sample, 20 frames, detect_size {pipeline.config.detect_size}: {timings}")


@pytest.mark.parametrize("path", PORTRAITS, ids=lambda p: p.name)
def test_real_portraits(pipeline: FacePipeline, path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared test media absent: {path}")
    result = pipeline(path.read_bytes())
    assert result.found.all()
    width, _ = result.source_size
    box_width = float(result.boxes[0, 2] - result.boxes[0, 0])
    # One large face: the crop spans a good part of the picture.
    assert box_width > 0.25 * width


@pytest.mark.parametrize("detect_every", [1, 20])
def test_every_face_is_its_own_track_the_main_face_first(detect_every: int) -> None:
    clip = media.two_face_clip(frames=10)
    options = {"frames": FRAMES, "min_face_size": TEST_MIN_FACE_SIZE, "detect_every": detect_every}
    single = FacePipeline(PipelineConfig(**options))(clip)
    every = FacePipeline(PipelineConfig(**options, max_faces=4))(clip)
    assert len(single.tracks) == 1 and single.tracks[0].faces is single.faces
    assert len(every.tracks) == 2 == every.faces_seen  # two faces in the clip: no slot left over
    main, other = every.tracks
    # The main face is the one the single-face pipeline follows, with the same crops.
    np.testing.assert_array_equal(main.boxes, single.boxes)
    np.testing.assert_array_equal(main.faces, single.faces)
    assert main.prominence > other.prominence
    # The second track follows the small face in every frame, with its own crops.
    assert other.found.all()
    for i in range(FRAMES):
        large, small = media.two_face_boxes(i)
        assert overlap(main.boxes[i], expected_crop(large, (480, 240))) > MIN_IOU, f"frame {i}"
        assert overlap(other.boxes[i], expected_crop(small, (480, 240))) > 0.6, f"frame {i}"
    assert not np.allclose(other.faces, main.faces)


def test_max_faces_is_bounded_and_every_returned_face_is_followed() -> None:
    with pytest.raises(ConfigError, match="max_faces must be <= 8"):
        PipelineConfig(frames=10, max_faces=9)
    with pytest.raises(ConfigError, match="every returned face must be followed"):
        PipelineConfig(frames=10, max_faces=4, detect_every=20, max_followed=2)
    assert PipelineConfig(frames=10, max_faces=4, detect_every=20, max_followed=0).max_faces == 4
    assert PipelineConfig(frames=10, max_faces=4, max_followed=2).max_followed == 2  # every frame searched whole
