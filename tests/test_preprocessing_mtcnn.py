"""The MTCNN cascade with stage crops from a summed-area table: the boxes of facenet-pytorch's MTCNN, bit for bit."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocessing import decode_frames
from preprocessing.mtcnn import Cascade, _area_crops, _summed_area_table, exact_fast_pooling
from tests import media

WALKING = Path(__file__).resolve().parents[2] / "shared" / "data" / "people_walking_1080p.mp4"


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([24, 48]), seed=st.integers(0, 2**16), count=st.integers(1, 12))
def test_area_crops_equal_torch_area_interpolation(size, seed, count):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    frames = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    top, left = torch.tensor(rng.integers(0, 89, count)), torch.tensor(rng.integers(0, 119, count))
    bottom = torch.minimum(top + torch.tensor(rng.integers(1, 90, count)), torch.tensor(90))
    right = torch.minimum(left + torch.tensor(rng.integers(1, 120, count)), torch.tensor(120))
    image = torch.tensor(rng.integers(0, 2, count))
    got = _area_crops(_summed_area_table(torch.from_numpy(pixels)), image, top, bottom, left, right, size)
    want = torch.cat(
        [
            F.interpolate(frames[i : i + 1, :, t:b, x0:x1], size=(size, size), mode="area")
            for i, t, b, x0, x1 in zip(image, top, bottom, left, right)
        ]
    )
    assert torch.equal(got, want)
    assert got.is_contiguous()


def _stock(min_face_size: int, thresholds: list[float]) -> MTCNN:
    """facenet-pytorch's own MTCNN, untouched: what the cascade must agree with."""
    return MTCNN(keep_all=True, min_face_size=min_face_size, thresholds=thresholds, post_process=False).eval()


def _assert_same_faces(cascade: Cascade, stock: MTCNN, images: np.ndarray) -> int:
    want_boxes, want_probs = stock.detect(images)
    found = 0
    for got, boxes, probs in zip(cascade(images), want_boxes, want_probs):
        if boxes is None:
            assert got[0].shape == (0, 4) and got[1].shape == (0,)
            continue
        np.testing.assert_array_equal(got[0], boxes.astype(np.float32))
        np.testing.assert_array_equal(got[1], probs.astype(np.float32))
        found += len(boxes)
    return found


def _fast_cascade(min_face_size: int, thresholds: list[float]) -> Cascade:
    nets = _stock(min_face_size, thresholds)
    exact_fast_pooling(nets)
    return Cascade(nets.pnet, nets.rnet, nets.onet, min_face_size, thresholds)


@pytest.mark.parametrize(
    ("min_face_size", "thresholds"), [(20, [0.6, 0.7, 0.7]), (40, [0.6, 0.7, 0.7]), (24, [0.8, 0.7, 0.7])]
)
def test_same_boxes_as_facenet_on_face_frames(min_face_size, thresholds):
    face = media.face_frame(0)
    double = np.ascontiguousarray(np.concatenate([face, face[:, ::-1]], axis=1))
    stock, cascade = _stock(min_face_size, thresholds), _fast_cascade(min_face_size, thresholds)
    assert _assert_same_faces(cascade, stock, np.stack([media.face_frame(i) for i in range(3)])) >= 3
    assert _assert_same_faces(cascade, stock, double[None]) >= 2


@pytest.mark.skipif(not WALKING.exists(), reason="shared sample video not present")
def test_same_boxes_as_facenet_on_the_sample_video_and_its_windows():
    frames = decode_frames(WALKING.read_bytes(), 12, "first").frames
    small = np.stack([cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in frames])
    stock, cascade = _stock(40, [0.6, 0.7, 0.7]), _fast_cascade(40, [0.6, 0.7, 0.7])
    assert _assert_same_faces(cascade, stock, small[[0, 5, 11]]) >= 3
    # The 64-pixel windows searched between key frames, at random places (faces or not).
    rng = np.random.default_rng(0)
    windows = np.stack(
        [
            cv2.resize(small[i % 12][y : y + 80, x : x + 80], (64, 64), interpolation=cv2.INTER_AREA)
            for i, y, x in zip(range(24), rng.integers(0, 280, 24), rng.integers(0, 560, 24))
        ]
    )
    stock, cascade = _stock(24, [0.8, 0.7, 0.7]), _fast_cascade(24, [0.8, 0.7, 0.7])
    for start in range(0, 24, 2):
        _assert_same_faces(cascade, stock, windows[start : start + 2])


def test_images_too_small_or_faceless_give_no_faces():
    cascade = _fast_cascade(20, [0.6, 0.7, 0.7])
    assert [len(p) for _, p in cascade(np.zeros((2, 10, 10, 3), np.uint8))] == [0, 0]
    assert [len(p) for _, p in cascade(np.full((1, 120, 160, 3), 128, np.uint8))] == [0]


def test_refuses_anything_but_a_uint8_rgb_batch():
    cascade = _fast_cascade(20, [0.6, 0.7, 0.7])
    with pytest.raises(ValueError, match="uint8"):
        cascade(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        cascade(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="three"):
        Cascade(*(torch.nn.Identity(),) * 3, 20, [0.6, 0.7])
