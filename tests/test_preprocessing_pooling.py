"""The exact, faster ceil-mode max pooling that MTCNN runs with."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocessing.detect import FaceDetector
from preprocessing.mtcnn import CeilMaxPool, ceil_max_pool, exact_fast_pooling
from tests import media


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(3, 40),
    width=st.integers(3, 40),
    kernel=st.sampled_from([2, 3]),
    stride=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**16),
)
def test_same_values_as_torch_max_pool(height, width, kernel, stride, seed):
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(seed))
    want = F.max_pool2d(x, kernel, stride, ceil_mode=True)
    got = ceil_max_pool(x, kernel, stride)
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_large_pnet_sized_input_is_bit_identical():
    x = torch.randn(3, 10, 351, 631)
    assert torch.equal(ceil_max_pool(x, 2, 2), F.max_pool2d(x, 2, 2, ceil_mode=True))


def test_only_ceil_mode_pools_are_replaced():
    net = torch.nn.Sequential(
        torch.nn.MaxPool2d(2, 2, ceil_mode=True),
        torch.nn.MaxPool2d(2, 2),
        torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, ceil_mode=True)),
        torch.nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        torch.nn.MaxPool2d(2, 3, ceil_mode=True),
    )
    assert exact_fast_pooling(net) == 2
    assert isinstance(net[0], CeilMaxPool) and isinstance(net[2][0], CeilMaxPool)
    assert isinstance(net[1], torch.nn.MaxPool2d) and isinstance(net[3], torch.nn.MaxPool2d)


def test_detector_finds_the_same_boxes_as_stock_mtcnn():
    face = media.face_frame(0)
    frames = [face, np.ascontiguousarray(np.concatenate([face, face[::2, ::2].repeat(2, 0).repeat(2, 1)], axis=1))]
    detector = FaceDetector(detect_size=10_000)  # no downscaling: the frames go to MTCNN as they are
    stock = MTCNN(keep_all=True, min_face_size=detector.min_face_size, post_process=False).eval()
    assert not any(isinstance(m, CeilMaxPool) for m in stock.modules())
    for frame, got in zip(frames, detector.detect(frames)):
        boxes, probs = stock.detect(frame)
        assert len(probs) >= 1
        height, width = frame.shape[:2]
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        np.testing.assert_array_equal(got.boxes, boxes)
        np.testing.assert_array_equal(got.probs, probs.astype(np.float32))
