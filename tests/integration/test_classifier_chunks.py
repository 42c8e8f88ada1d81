"""The classifier run in chunks of frames on several threads gives what one session run gives, to the bit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from contract import classifier_file
from triton_models.chunks import ChunkedSession

FRAMES = 10
OUTPUTS = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE", "HEATMAP")


@pytest.fixture(scope="module")
def session(classifier_repository) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    path = classifier_file(classifier_repository, FRAMES)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def faces(videos: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((videos, frames, 3, 112, 112), dtype=np.float32)


@pytest.mark.parametrize("chunks", [2, 3])
def test_frame_chunks_equal_one_run(session, chunks):
    batch = faces(2, FRAMES)
    want = session.run(list(OUTPUTS), {"FACES": batch})
    chunked = ChunkedSession(session, "FACES", chunks)
    try:
        got = chunked.run(OUTPUTS, batch)
    finally:
        chunked.close()
    for name, a, b in zip(OUTPUTS, want, got):
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_score_alone_is_split_by_video_and_keeps_the_order(session):
    batch = faces(3, 1, seed=1)  # what the adapter sends for LOGITS / PROB_FAKE alone: the last frames
    names = ["PROB_FAKE", "LOGITS"]
    want = session.run(names, {"FACES": batch})
    chunked = ChunkedSession(session, "FACES", 2)
    try:
        got = chunked.run(names, batch)
    finally:
        chunked.close()
    for name, a, b in zip(names, want, got):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got[0].shape == (3, 1)


def test_more_chunks_than_frames_and_one_chunk(session):
    batch = faces(1, 2, seed=2)
    want = session.run(["FRAME_PROB_FAKE", "LOGITS"], {"FACES": batch})
    for chunks in (1, 4):
        chunked = ChunkedSession(session, "FACES", chunks)
        try:
            got = chunked.run(["FRAME_PROB_FAKE", "LOGITS"], batch)
        finally:
            chunked.close()
        np.testing.assert_array_equal(want[0], got[0])
        np.testing.assert_array_equal(want[1], got[1])


def test_a_failing_chunk_raises_in_the_caller(session):
    chunked = ChunkedSession(session, "FACES", 2)
    try:
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
            chunked.run(["FRAME_PROB_FAKE"], np.zeros((1, 4, 3, 64, 64), np.float32))  # wrong face size
    finally:
        chunked.close()


def test_chunks_must_be_positive(session):
    with pytest.raises(ValueError, match="chunks"):
        ChunkedSession(session, "FACES", 0)
