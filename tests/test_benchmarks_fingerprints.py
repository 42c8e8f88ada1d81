"""The fingerprint benchmark's pure parts on tiny inputs: copies that decode, the synthetic bank, the report."""

from __future__ import annotations

import numpy as np
import pytest

from bank.match import BankIndex, Usable, distances, hex_words
from benchmarks import fingerprints as bench
from contract import PDQ_MATCH_DISTANCE
from preprocessing.fingerprint import fingerprint
from tests import media

SIZE = (160, 120)
FRAMES = 50  # 2 s at 25 fps


@pytest.fixture(scope="module")
def clip() -> bytes:
    return media.face_clip(frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def decoded(clip) -> tuple[list[np.ndarray], float]:
    return bench.decode_all(clip)


def test_frame_transformations_keep_even_sizes():
    image = np.full((120, 160, 3), 128, np.uint8)
    assert bench.transform_frame(image, bench.Transform("crop", crop=0.10)).shape == (96, 128, 3)
    assert bench.transform_frame(image, bench.Transform("scale", scale=0.6)).shape == (72, 96, 3)
    combined = bench.Transform("both", crop=0.05, scale=0.6)
    assert all(side % 2 == 0 for side in bench.transform_frame(image, combined).shape[:2])


def test_captions_touch_only_the_bottom_tenth():
    image = np.full((120, 160, 3), 128, np.uint8)
    for bar in (True, False):
        out = bench.caption(image, bar=bar)
        assert np.array_equal(out[:108], image[:108])
        assert not np.array_equal(out[108:], image[108:])
    barred = bench.caption(image, bar=True)
    assert np.median(barred[108:]) == 0  # mostly the black bar, with white text on it


@pytest.mark.parametrize(
    ("transform", "frames", "size"),
    [
        (bench.Transform("trim start", trim_start_s=1.0), 25, SIZE),
        (bench.Transform("trim end", trim_end_s=0.5), 38, SIZE),
        (bench.Transform("crop", crop=0.10), FRAMES, (128, 96)),
        (bench.Transform("caption", caption="bar", crf=34), FRAMES, SIZE),
        (bench.Transform("all", crf=34, crop=0.02, trim_start_s=1.0, scale=0.6), 25, (92, 68)),
    ],
)
def test_copies_decode_and_fingerprint(decoded, transform, frames, size):
    images, fps = decoded
    copy = bench.copy_of(images, fps, transform)
    out, rate = bench.decode_all(copy)
    assert rate == pytest.approx(25)
    assert len(out) == frames
    assert (out[0].shape[1], out[0].shape[0]) == size
    assert fingerprint(copy).features


def test_a_light_copy_matches_its_original(clip):
    original = bench.rows_of(fingerprint(clip))
    copy = bench.rows_of(fingerprint(bench.transcode(clip, bench.Transform("re-encoded", crf=30))))
    share, median, usable = bench.similarity(Usable.of(copy), Usable.of(original))
    assert usable == len(copy)
    assert share == 1.0
    assert median is not None and median <= PDQ_MATCH_DISTANCE
    assert BankIndex([(7, "fake", "original", original)]).match(copy)["id"] == 7


def test_a_trim_past_the_end_is_refused(decoded):
    images, fps = decoded
    with pytest.raises(ValueError, match="no frame left"):
        bench.copy_of(images, fps, bench.Transform("too much", trim_start_s=3.0))


def test_loop_repeats_a_clip_without_reencoding():
    short = bench.pan_clip(1, SIZE)
    looped = bench.loop(short, 3)
    images, _ = bench.decode_all(looped)
    assert len(images) == 75
    print_ = fingerprint(looped)
    assert len(print_.features) == 3
    assert len({f.pdq_hex for f in print_.features}) == 1  # the same first frame each second


def test_flip_bits_flips_exactly_that_many():
    rng = np.random.default_rng(0)
    words = np.frombuffer(rng.bytes(5 * 32), dtype=">u8").reshape(5, 4).astype(np.uint64)
    flipped = bench.flip_bits(words, 8, rng)
    for before, after in zip(words, flipped):
        assert distances(after[None], before)[0] == 8


def test_synthetic_bank_plants_one_near_duplicate():
    rng = np.random.default_rng(1)
    entries, query, planted = bench.synthetic_bank(40, 4, rng)
    assert len(entries) == 40 and planted == 20
    assert all(len(features) == 4 for entry_id, _, _, features in entries if entry_id != planted)
    assert len(entries[planted][3]) == len(query) == bench.QUERY_FEATURES
    for row, near in zip(query, entries[planted][3]):
        assert distances(hex_words(near[0])[None], hex_words(row[0]))[0] == bench.PLANTED_FLIPS
    index = BankIndex(entries)
    assert index.match(query)["id"] == planted
    assert index.match(bench.random_query(rng)) is None
    assert bench.index_nbytes(index) > 0
    assert bench.features_per_video(bench.LARGE_BANK) < bench.features_per_video(1000)


def test_cache_metrics_are_read_per_model():
    text = "\n".join(
        [
            "# HELP nv_cache_num_hits_per_model Number of cache hits per model",
            'nv_cache_num_hits_per_model{model="preprocess_10",version="1"} 15',
            'nv_cache_num_hits_per_model{model="preprocess_20",version="1"} 4',
            'nv_cache_hit_duration_per_model{model="preprocess_10",version="1"} 4537',
            "nv_cache_num_entries 3",
            'nv_inference_count{model="preprocess_10",version="1"} 99',
        ]
    )
    assert bench.parse_cache_metrics(text, "preprocess_10") == {
        "nv_cache_num_hits_per_model": 15.0,
        "nv_cache_hit_duration_per_model": 4537.0,
        "nv_cache_num_entries": 3.0,
    }


def test_report_renders_the_parts_present():
    results = {
        "machine": "a CPU, 2 cores",
        "quick": True,
        "sample": False,
        "parts": {
            "lookup": {"when": "2026-12-04 03:00:00", "seconds": 1.0, "load_start": 0.1, "load_end": 0.2, "quick": True}
        },
        "lookup": [
            {
                "videos": 1000,
                "features_per_video": 10,
                "frames": 10000,
                "build_s": 0.03,
                "numpy_mib": 1.3,
                "rss_growth_mib": 2.0,
                "query_planted_ms": 2.5,
                "query_no_match_ms": 2.4,
                "planted_found": True,
            }
        ],
    }
    text = bench.render_markdown(results)
    assert "1080p sample is absent" in text
    assert "| 1,000 | 10 | 10,000 |" in text
    assert "| lookup | 2026-12-04 03:00:00 | 1.0 | 0.1, 0.2 | yes |" in text
    assert "## Copies found" not in text
