"""Crop geometry, resizing and the BGR ImageNet normalisation of the classifier input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from contract import FACE_SIZE
from preprocessing import IMAGENET_MEAN, IMAGENET_STD, crop_box, crop_faces, normalize_faces

# Written out here rather than imported, so the checks below are independent.
TRAINING_MEAN = [0.485, 0.456, 0.406]
TRAINING_STD = [0.229, 0.224, 0.225]


def test_constants() -> None:
    assert FACE_SIZE == 112
    assert list(IMAGENET_MEAN) == TRAINING_MEAN
    assert list(IMAGENET_STD) == TRAINING_STD


def test_normalisation_matches_the_training_transform() -> None:
    """The training code: OpenCV BGR frame -> ToPILImage -> ToTensor -> Normalize(ImageNet)."""
    rng = np.random.default_rng(1)
    crops_rgb = rng.integers(0, 256, (3, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    training = transforms.Compose(
        [transforms.ToPILImage(), transforms.ToTensor(), transforms.Normalize(TRAINING_MEAN, TRAINING_STD)]
    )
    expected = torch.stack([training(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)) for crop in crops_rgb]).numpy()
    faces = normalize_faces(crops_rgb)
    assert faces.dtype == np.float32 and faces.shape == (3, 3, FACE_SIZE, FACE_SIZE)
    assert faces.flags.c_contiguous
    np.testing.assert_allclose(faces, expected, rtol=0, atol=1e-6)


def test_channel_zero_is_blue() -> None:
    pure_blue = np.zeros((1, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    pure_blue[..., 2] = 255  # RGB blue
    faces = normalize_faces(pure_blue)
    np.testing.assert_allclose(faces[0, 0], (1.0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(faces[0, 1], (0.0 - 0.456) / 0.224, rtol=1e-6)
    np.testing.assert_allclose(faces[0, 2], (0.0 - 0.406) / 0.225, rtol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 112, 112), np.uint8),
        np.zeros((2, 112, 112, 3), np.float32),
        np.zeros((2, 112, 112, 4), np.uint8),
    ],
)
def test_normalize_rejects_wrong_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        normalize_faces(bad)


def test_default_crop_is_a_width_square_moved_down() -> None:
    # An MTCNN-like box, taller than wide: 80 x 100 centred at (140, 150).
    box = (100.0, 100.0, 180.0, 200.0)
    left, top, right, bottom = crop_box(box, (640, 480))
    assert right - left == 80 and bottom - top == 80
    assert (left + right) / 2 == 140
    assert (top + bottom) / 2 == pytest.approx(150 + 0.06 * 100, abs=0.5)


def test_crop_box_options() -> None:
    box = (100.0, 100.0, 180.0, 200.0)
    assert crop_box(box, (640, 480), square=False, shift_y=0.0).tolist() == [100, 100, 180, 200]
    # 25 % of the side on every side: 80 -> 120 wide.
    assert crop_box(box, (640, 480), margin=0.25, shift_y=0.0).tolist() == [80, 90, 200, 210]
    # A tiny box with a strongly negative margin keeps its sub-pixel size: no rounding.
    left, top, right, bottom = crop_box((10.0, 10.0, 12.0, 12.0), (100, 60), margin=-0.49)
    assert right - left == pytest.approx(0.04) and bottom - top == pytest.approx(0.04)


def test_crop_box_is_a_continuous_function_of_the_box() -> None:
    box = np.array([100.3, 100.7, 180.1, 200.9])
    base = crop_box(box, (640, 480))
    for shift in (1e-4, -1e-4, 0.25, 0.5):
        moved = crop_box(box + shift, (640, 480))
        np.testing.assert_allclose(moved - base, shift, atol=1e-9)


def test_crop_box_is_clipped_to_the_frame() -> None:
    assert crop_box((-20.0, -10.0, 40.0, 70.0), (100, 60), square=False, shift_y=0.0).tolist() == [0, 0, 40, 60]
    with pytest.raises(ValueError, match="outside"):
        crop_box((200.0, 10.0, 240.0, 50.0), (100, 60))
    with pytest.raises(ValueError, match="empty"):
        crop_box((10.0, 10.0, 10.0, 50.0), (100, 60))


def _random_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(count)]


def test_crop_on_whole_pixels_equals_opencv_bilinear_resize_away_from_the_edge() -> None:
    """On a whole-pixel region the samples are cv2.resize's (INTER_LINEAR), without its 8-bit rounding."""
    frames = _random_frames(2)
    boxes = np.array([[50.0, 40.0, 150.0, 170.0], [0.0, 0.0, 320.0, 240.0]])
    faces, cropped = crop_faces(frames, boxes, shift_y=0.0)
    assert faces.shape == (2, 3, FACE_SIZE, FACE_SIZE) and faces.dtype == np.float32
    assert cropped.dtype == np.float32 and cropped.shape == (2, 4)
    # Squared to their widths; the full-frame box clipped to the frame height.
    assert cropped.tolist() == [[50.0, 55.0, 150.0, 155.0], [0.0, 0.0, 320.0, 240.0]]
    for frame, (x1, y1, x2, y2), face in zip(frames, cropped.astype(int), faces):
        expected = normalize_faces(
            cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)[None]
        )[0]
        inner = (slice(None), slice(1, -1), slice(1, -1))  # cv2 clamps at the crop's edge, we at the frame's
        # One grey level of rounding is 1 / 255 / 0.224 = 0.0175 after normalisation.
        assert np.abs(face[inner] - expected[inner]).max() <= 0.0176
        assert np.abs(face[inner] - expected[inner]).mean() < 0.005
    whole = crop_faces([frames[1]], np.array([[0.0, 0.0, 320.0, 320.0]]), shift_y=0.0)[0][0]
    np.testing.assert_allclose(
        whole,
        normalize_faces(cv2.resize(frames[1], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)[None])[0],
        atol=0.0176,
    )


def test_crop_moves_by_as_little_as_the_box() -> None:
    """Float noise in a box (1e-4 px) changes the crop by about as much, never by a pixel's worth."""
    frame = np.asarray(Image.effect_mandelbrot((320, 240), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB"))
    box = np.array([[100.5, 60.5, 220.5, 200.5]])  # half-pixel edges: where rounding used to jump
    base = crop_faces([frame], box)[0]
    for noise in (1e-4, -1e-4):
        moved = crop_faces([frame], box + noise)[0]
        # At most 255 grey levels per pixel of shift, over the normalisation's smallest std.
        assert np.abs(moved - base).max() <= abs(noise) * 255 / 0.224 / 255 * 4
    shifted = crop_faces([frame], box + 1.0)[0]
    assert np.abs(shifted - base).max() > 0.1  # a whole pixel does move it: the check above can fail


def test_crop_faces_close_to_pil_bilinear_for_mild_scaling() -> None:
    """At near-1 scale factors cv2 and PIL bilinear agree (PIL antialiases stronger shrinks)."""
    frame = np.asarray(Image.effect_mandelbrot((320, 240), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB"))
    box = np.array([[100.0, 60.0, 220.0, 200.0]])
    faces, cropped = crop_faces([frame], box, shift_y=0.0)
    x1, y1, x2, y2 = np.round(cropped[0]).astype(int)
    pil = np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize((FACE_SIZE, FACE_SIZE), Image.BILINEAR))
    assert np.abs(faces[0] - normalize_faces(pil[None])[0]).mean() < 0.1


def test_crop_faces_rejects_mismatched_input() -> None:
    frame = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="2 frames but 1 boxes"):
        crop_faces([frame, frame], np.array([[0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        crop_faces([frame], np.array([0.0, 0.0, 10.0, 10.0]))
    with pytest.raises(ValueError, match="RGB uint8"):
        crop_faces([frame.astype(np.float32)], np.array([[0.0, 0.0, 10.0, 10.0]]))
