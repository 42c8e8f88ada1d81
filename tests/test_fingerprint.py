"""Video fingerprints from the project's own decoder against Meta's ``vpdq`` on the same files."""

from __future__ import annotations

from pathlib import Path

import pytest
import vpdq

from preprocessing.errors import InputError
from preprocessing.fingerprint import Fingerprint, fingerprint
from tests import media
from tests.training_set import _photo, clip

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "people_walking_1080p.mp4"


def _theirs(tmp_path: Path, data: bytes, suffix: str = ".mp4") -> list:
    path = tmp_path / f"clip{suffix}"
    path.write_bytes(data)
    return vpdq.computeHash(str(path), seconds_per_hash=1.0)


def _same(ours: Fingerprint, theirs: list) -> None:
    assert len(ours.features) == len(theirs)
    for mine, other in zip(ours.features, theirs):
        assert (mine.pdq_hex, mine.quality, mine.frame_number) == (other.hex, other.quality, other.frame_number)
        assert mine.timestamp == pytest.approx(other.timestamp, abs=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: clip(_photo(), seed=4, frames=90), id="face-pan-25fps"),
        pytest.param(lambda: media.face_clip(frames=75, size=(322, 242), fps=30), id="odd-size-30fps"),
        pytest.param(lambda: media.face_clip(frames=48, codec="libvpx-vp9", container="webm"), id="vp9-webm"),
    ],
)
def test_the_fingerprint_is_vpdqs(tmp_path, data) -> None:
    video = data()
    suffix = ".webm" if video[:4] == b"\x1a\x45\xdf\xa3" else ".mp4"
    _same(fingerprint(video), _theirs(tmp_path, video, suffix))


def test_the_shared_1080p_sample_is_fingerprinted_as_vpdq_does(tmp_path) -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (the shared test media are not part of the project)")
    data = SHARED.read_bytes()
    _same(fingerprint(data), _theirs(tmp_path, data))


def test_the_fingerprint_covers_the_first_seconds_and_says_so() -> None:
    video = clip(_photo(), seed=5, frames=100)
    whole = fingerprint(video)
    assert not whole.truncated and [f.frame_number for f in whole.features] == [0, 25, 50, 75]
    capped = fingerprint(video, max_seconds=1.5)
    assert capped.truncated and [f.frame_number for f in capped.features] == [0, 25]
    limited = fingerprint(video, max_frames_scanned=30)
    assert limited.truncated and [f.frame_number for f in limited.features] == [0, 25]
    assert Fingerprint.from_json(whole.to_json()) == whole


def test_what_is_not_a_video_is_refused() -> None:
    with pytest.raises(InputError):
        fingerprint(b"#EXTM3U\nhttp://example.invalid/x.ts\n")
    with pytest.raises(ValueError, match="not a fingerprint"):
        Fingerprint.from_json(b"{")
