"""Fingerprints and the bank: ``make bench-fingerprints`` -> ``benchmarks/results/fingerprints.{json,md}``.

Five measurements, in this order:

1. **Copies found**: the originals (the real 1080p sample when ``../shared/data`` has it, generated
   pans of the astronaut photo from ``tests/training_set.py`` and ``tests/media.py``, and generated
   pans of other scikit-image photos) go into a :class:`bank.match.BankIndex`; each is copied the ways
   a re-uploader copies (re-encoded at crf 34, scaled to 0.6, trimmed at the start or the end,
   captioned, cropped at the borders, and all at once), every copy is fingerprinted with
   :func:`preprocessing.fingerprint.fingerprint` and matched. Per transformation: copies matched to
   their own original, the query-side similarity to it and the median Hamming distance of its frames
   that match.
2. **False matches**: every original against every other (leave one out: a bank of the others) and
   extra clips never banked. Pairs of clips of the same astronaut photo (other pans) are counted apart
   from truly unrelated content.
3. **Hashing cost**: seconds to fingerprint (decode + PDQ, one core) the 1080p sample and generated
   480p / 720p clips of 10, 30, 60 and 120 s (the fingerprint stops at 60 s), median of 3 runs; and
   (``share``) what it adds to a run of ``preprocess_10``'s pipeline when it runs beside it, as served.
4. **Lookup**: a bank of random PDQ hashes of 1,000, 100,000 and 1,000,000 videos: build time of the
   index, its numpy arrays' size, the median latency of a 10-frame query with and without a planted
   near-duplicate.
5. **Response cache**: an embedded server (``deepfake_10`` and its steps only) scores the same bytes
   again and again: the first request (a miss of ``preprocess_10``'s response cache) against the
   repeats (hits), with Triton's ``nv_cache_*`` counters, then new bytes (misses).

``--parts`` runs some of ``copies,false_matches,cost,share,lookup,cache`` and keeps the others' results
from the results file already there; each part records when it ran and the load average around it.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from bank.match import BankIndex, Usable, distances
from contract import PDQ_MATCH_DISTANCE, QUERY_MATCH_SHARE
from preprocessing.fingerprint import fingerprint
from serve.distribution import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
FPS = 25
#: Frame size of the generated clips of the match set (even, so that every copy stays yuv420p).
MATCH_SIZE = (480, 270)
#: The crf of every copy unless the transformation changes it (x264's default).
COPY_CRF = 23
COPY_PRESET = "veryfast"
CAPTION = "SHOCKING - watch till the end  #viral  @reuploads"
COST_SIZES = {"480p": (854, 480), "720p": (1280, 720)}
COST_SECONDS = (10, 30, 60, 120)
COST_RUNS = 3
LOOKUP_SIZES = (1_000, 100_000, 1_000_000)
#: Features per video of the synthetic banks (fewer at the largest size: see :func:`features_per_video`).
LOOKUP_FEATURES = 10
LOOKUP_FEATURES_LARGE = 5
LARGE_BANK = 1_000_000
QUERY_FEATURES = 10
#: Bits flipped in each hash of the planted near-duplicate (a re-encode's median distance is about 8).
PLANTED_FLIPS = 8
QUERY_REPEATS = 15
CACHE_FRAMES = 10
CACHE_REPEATS = 10


# --- the media ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A video of the benchmark: its name, what it shows (``source``: clips of the same photo share
    it), whether it is banked (an original) and its bytes."""

    name: str
    source: str
    banked: bool
    data: bytes


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _photo(name: str) -> np.ndarray:
    import skimage.data as skdata

    return _rgb(getattr(skdata, name)())


def match_clips(quick: bool, sample: Path = SAMPLE, workers: int = 2) -> list[Clip]:
    """The originals (banked) and the clips that are only ever queries.

    Astronaut pans: ``tests/training_set.py``'s ``clip`` (seeds 1-8, 6 to 10 s) and ``tests/media.py``'s
    ``face_clip`` (seeds 0-1, 8 s); other photos: ``clip`` over other scikit-image photos and
    ``media.no_face_clip`` (coffee). ``quick`` keeps fewer of each.
    """
    from tests import media
    from tests.training_set import _photo as astronaut
    from tests.training_set import clip

    planned: list[tuple[str, str, bool, Callable[[], bytes]]] = []
    if sample.is_file():
        planned.append(("people_walking_1080p (real)", "people_walking", True, sample.read_bytes))
    seconds = (6, 7, 8, 9, 10, 6, 8, 10)[: 3 if quick else 8]
    for seed, duration in enumerate(seconds, start=1):
        make = functools.partial(clip, astronaut(), seed=seed, frames=duration * FPS, size=MATCH_SIZE)
        planned.append((f"astronaut pan seed {seed} ({duration} s)", "astronaut", True, make))
    for seed in range(1 if quick else 2):
        make = functools.partial(media.face_clip, frames=8 * FPS, seed=seed)
        planned.append((f"astronaut media.face_clip seed {seed} (8 s)", "astronaut", True, make))
    make = functools.partial(media.no_face_clip, frames=8 * FPS, seed=3)
    planned.append(("coffee media.no_face_clip (8 s)", "coffee", True, make))
    for number, name in enumerate(("chelsea", "rocket", "hubble_deep_field")[: 1 if quick else 3]):
        make = functools.partial(clip, _photo(name), seed=20 + number, frames=8 * FPS, size=MATCH_SIZE)
        planned.append((f"{name} pan (8 s)", name, True, make))
    # Never banked: only queries of the false-match test.
    for number, name in enumerate(("camera", "immunohistochemistry", "coins", "clock")[: 2 if quick else 4]):
        make = functools.partial(clip, _photo(name), seed=40 + number, frames=6 * FPS, size=MATCH_SIZE)
        planned.append((f"{name} pan (6 s, not banked)", name, False, make))
    for seed in (100, 101, 102, 103)[: 2 if quick else 4]:
        make = functools.partial(clip, astronaut(), seed=seed, frames=6 * FPS, size=MATCH_SIZE)
        planned.append((f"astronaut pan seed {seed} (6 s, not banked)", "astronaut", False, make))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = list(pool.map(lambda plan: plan[3](), planned))
    return [Clip(name, source, banked, data) for (name, source, banked, _), data in zip(planned, made)]


# --- the transformations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """A re-upload: frames cropped at each border by ``crop`` (the cropped size kept), a caption
    (``"bar"``: white text on a black bar over the bottom 10 %; ``"text"``: outlined white text there,
    no bar), scaled by ``scale``, the first ``trim_start_s`` and last ``trim_end_s`` seconds dropped,
    re-encoded with x264 at ``crf``."""

    name: str
    crf: int = COPY_CRF
    scale: float = 1.0
    crop: float = 0.0
    trim_start_s: float = 0.0
    trim_end_s: float = 0.0
    caption: str = ""


TRANSFORMS = (
    Transform("re-encoded (crf 34)", crf=34),
    Transform("scaled 0.6x", scale=0.6),
    Transform("trimmed: first 2 s dropped", trim_start_s=2.0),
    Transform("trimmed: first 1.5 s dropped (off the 1 s grid)", trim_start_s=1.5),
    Transform("trimmed: last 2 s dropped", trim_end_s=2.0),
    Transform("captioned (text on a black bar, bottom 10 %)", caption="bar"),
    Transform("subtitled (outlined text, no bar, bottom 10 %)", caption="text"),
    Transform("cropped 0 % (re-encoded at crf 23 only)", crop=0.0),
    Transform("cropped 2 % each border", crop=0.02),
    Transform("cropped 5 % each border", crop=0.05),
    Transform("cropped 10 % each border", crop=0.10),
    Transform("combined: crf 34 + cropped 2 % + first 2 s dropped", crf=34, crop=0.02, trim_start_s=2.0),
)


def caption(image: np.ndarray, text: str = CAPTION, bar: bool = True) -> np.ndarray:
    """The frame with ``text`` across its bottom 10 %: white on a black bar, or outlined in black."""
    out = image.copy()
    height, width = out.shape[:2]
    band = max(2, round(height * 0.10))
    if bar:
        out[height - band :] = 0
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_width, text_height), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(0.7 * band / text_height, 0.95 * width / text_width)
    thickness = max(1, round(scale * 2))
    (text_width, text_height), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_width) // 2, height - (band - text_height) // 2)
    if not bar:
        cv2.putText(out, text, origin, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(out, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def crop_borders(image: np.ndarray, share: float) -> np.ndarray:
    """``share`` of the width cut from the left and the right, of the height from the top and the bottom."""
    if share <= 0:
        return image
    height, width = image.shape[:2]
    dy, dx = round(height * share), round(width * share)
    return image[dy : height - dy, dx : width - dx]


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def transform_frame(image: np.ndarray, transform: Transform) -> np.ndarray:
    """One RGB frame as the copy shows it: cropped, captioned, scaled, cut to even dimensions."""
    image = crop_borders(image, transform.crop)
    if transform.caption:
        image = caption(image, bar=transform.caption == "bar")
    height, width = image.shape[:2]
    if transform.scale != 1.0:
        size = (_even(width * transform.scale), _even(height * transform.scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    return np.ascontiguousarray(image[: _even(height), : _even(width)])


def decode_all(data: bytes) -> tuple[list[np.ndarray], float]:
    """(every frame as RGB, the frame rate) of a file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or FPS)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], rate


def encode(frames: Iterable[np.ndarray], fps: float, crf: int = COPY_CRF, preset: str = COPY_PRESET) -> bytes:
    """RGB frames as an H.264 MP4 (one encoder thread: the same bytes on every machine)."""
    from tests.media import add_video_stream

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = None
        for image in frames:
            if stream is None:
                rate = round(fps) if abs(fps - round(fps)) < 1e-3 else fps
                stream = add_video_stream(out, "libx264", rate, {"crf": str(crf), "preset": preset})
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError("no frame left to encode")
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def copy_of(frames: list[np.ndarray], fps: float, transform: Transform) -> bytes:
    """The copy that ``transform`` describes of a video's decoded frames, as MP4 bytes (made in memory)."""
    first = round(transform.trim_start_s * fps)
    last = len(frames) - round(transform.trim_end_s * fps)
    kept = frames[first:last]
    if not kept:
        raise ValueError(f"{transform.name}: no frame left")
    return encode((transform_frame(image, transform) for image in kept), fps, transform.crf)


def transcode(data: bytes, transform: Transform) -> bytes:
    """The copy of a file that ``transform`` describes."""
    frames, fps = decode_all(data)
    return copy_of(frames, fps, transform)


# --- matching -------------------------------------------------------------------------------------


@functools.cache
def clip_rows(clip: Clip) -> list[list]:
    """The feature rows of a clip's fingerprint (each clip fingerprinted once)."""
    return rows_of(fingerprint(clip.data))


def rows_of(print_) -> list[list]:
    """A fingerprint's features as the bank stores them: ``[pdq_hex, quality, frame, timestamp]``."""
    return [[f.pdq_hex, f.quality, f.frame_number, f.timestamp] for f in print_.features]


def nearest(query: Usable, entry: Usable) -> np.ndarray:
    """For each usable frame of ``query``, its Hamming distance to the nearest usable frame of ``entry``."""
    if not len(query.times) or not len(entry.times):
        return np.full(len(query.times), 256, dtype=np.int32)
    return np.array([int(distances(entry.words, words).min()) for words in query.words], dtype=np.int32)


def pair_distances(query: Usable, entry: Usable) -> np.ndarray:
    """Every distance between a usable frame of ``query`` and one of ``entry`` (flat)."""
    if not len(query.times) or not len(entry.times):
        return np.empty(0, np.int32)
    return np.concatenate([distances(entry.words, words) for words in query.words])


def similarity(query: Usable, entry: Usable) -> tuple[float, float | None, int]:
    """(query-side share of frames within the match distance, median distance of those, usable query frames)."""
    near = nearest(query, entry)
    if not len(near):
        return 0.0, None, 0
    hits = near[near <= PDQ_MATCH_DISTANCE]
    return float(len(hits) / len(near)), float(np.median(hits)) if len(hits) else None, len(near)


def measure_copies(clips: list[Clip], workers: int = 2, progress: Callable[[str], None] = print) -> dict:
    """Part 1: every banked clip copied by every transformation, each copy matched against the bank."""
    originals = [c for c in clips if c.banked]
    prints = {c.name: clip_rows(c) for c in originals}
    index = BankIndex([(i, "fake", c.name, prints[c.name]) for i, c in enumerate(originals)])
    usable = {c.name: Usable.of(prints[c.name]) for c in originals}
    copies = []
    started = time.monotonic()

    def one(position: int, original: Clip, frames: list[np.ndarray], fps: float, transform: Transform) -> dict:
        row = {"original": original.name, "source": original.source, "transform": transform.name}
        try:
            rows = rows_of(fingerprint(copy_of(frames, fps, transform)))
        except Exception as exc:  # noqa: BLE001 - a copy that cannot be made or read is a result too
            return {**row, "error": f"{type(exc).__name__}: {exc}", "matched": False, "wrong_entry": False}
        found = index.match(rows)
        share, median, usable_frames = similarity(Usable.of(rows), usable[original.name])
        return {
            **row,
            "features": len(rows),
            "usable": usable_frames,
            "matched": bool(found and found["id"] == position),
            "wrong_entry": bool(found and found["id"] != position),
            "matched_entry": None if not found else originals[found["id"]].name,
            "similarity": round(share, 4),
            "median_distance": median,
        }

    # Copies in threads (x264, the decoder and OpenCV release the GIL), one original decoded at a time.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for position, original in enumerate(originals):
            frames, fps = decode_all(original.data)
            copies += pool.map(functools.partial(one, position, original, frames, fps), TRANSFORMS)
            del frames
            progress(f"  copies of {original.name}: done ({time.monotonic() - started:.0f} s)")
    by_transform = []
    for transform in TRANSFORMS:
        rows = [c for c in copies if c["transform"] == transform.name]
        by_transform.append(_summary(transform.name, rows))
    by_source = []
    for group, test in (
        ("real 1080p sample", lambda c: c["source"] == "people_walking"),
        ("astronaut pans", lambda c: c["source"] == "astronaut"),
        ("other photos", lambda c: c["source"] not in ("people_walking", "astronaut")),
    ):
        rows = [c for c in copies if test(c)]
        if rows:
            by_source.append(_summary(group, rows))
    return {
        "originals": [
            {"name": c.name, "features": len(prints[c.name]), "usable": len(usable[c.name].times), "bytes": len(c.data)}
            for c in originals
        ],
        "transforms": [asdict(t) for t in TRANSFORMS],
        "by_transform": by_transform,
        "by_source": by_source,
        "copies": copies,
        "seconds": round(time.monotonic() - started, 1),
    }


def _summary(name: str, rows: list[dict]) -> dict:
    shares = [r["similarity"] for r in rows if "similarity" in r]
    medians = [r["median_distance"] for r in rows if r.get("median_distance") is not None]
    return {
        "name": name,
        "copies": len(rows),
        "matched": sum(r["matched"] for r in rows),
        "wrong_entry": sum(r["wrong_entry"] for r in rows),
        "errors": sum("error" in r for r in rows),
        "mean_similarity": round(statistics.fmean(shares), 3) if shares else None,
        "min_similarity": round(min(shares), 3) if shares else None,
        "median_distance": round(statistics.median(medians), 1) if medians else None,
    }


def measure_false_matches(clips: list[Clip]) -> dict:
    """Part 2: unrelated videos against the bank, and the distances between their frames."""
    prints = {c.name: clip_rows(c) for c in clips}
    usable = {c.name: Usable.of(prints[c.name]) for c in clips}
    originals = [c for c in clips if c.banked]
    groups: dict[str, dict] = {
        "unrelated content": {"pairs": 0, "pairs_matched": 0, "frames": 0, "frames_near": 0, "distances": []},
        "same astronaut photo, other pan": {"pairs": 0, "pairs_matched": 0, "frames": 0, "frames_near": 0,
                                            "distances": []},
    }  # fmt: skip
    worst: dict[str, tuple[float, str, str]] = {}
    for query in clips:
        for entry in originals:
            if entry.name == query.name:
                continue
            group = "unrelated content" if query.source != entry.source else "same astronaut photo, other pan"
            share, _, frames = similarity(usable[query.name], usable[entry.name])
            tally = groups[group]
            tally["pairs"] += 1
            tally["pairs_matched"] += share >= QUERY_MATCH_SHARE
            tally["frames"] += frames
            tally["frames_near"] += round(share * frames)
            tally["distances"].append(pair_distances(usable[query.name], usable[entry.name]))
            if group not in worst or share > worst[group][0]:
                worst[group] = (share, query.name, entry.name)
    # Video level, through the index itself: each clip against a bank of the unrelated originals, and each
    # astronaut clip against a bank of the other astronaut originals.
    videos = {"unrelated content": [0, 0], "same astronaut photo, other pan": [0, 0]}
    false_videos = []
    for query in clips:
        for group, others in (
            ("unrelated content", [c for c in originals if c.source != query.source]),
            ("same astronaut photo, other pan", [c for c in originals if c.source == query.source != "people_walking"
                                                 and c.name != query.name]),
        ):  # fmt: skip
            if not others:
                continue
            index = BankIndex([(i, "fake", c.name, prints[c.name]) for i, c in enumerate(others)])
            found = index.match(prints[query.name])
            videos[group][0] += 1
            if found:
                videos[group][1] += 1
                false_videos.append({"query": query.name, "entry": found["note"], "similarity": found["similarity"]})
    out = {}
    for group, tally in groups.items():
        every = np.concatenate(tally["distances"]) if tally["distances"] else np.empty(0, np.int32)
        out[group] = {
            "pairs": tally["pairs"],
            "pairs_matched": int(tally["pairs_matched"]),
            "query_frames": tally["frames"],
            "query_frames_within_31": tally["frames_near"],
            "frame_false_match_rate": round(tally["frames_near"] / tally["frames"], 4) if tally["frames"] else None,
            "frame_pairs": len(every),
            "min_distance": int(every.min()) if len(every) else None,
            "p1_distance": float(np.percentile(every, 1)) if len(every) else None,
            "median_distance": float(np.median(every)) if len(every) else None,
            "highest_similarity": round(worst[group][0], 3) if group in worst else None,
            "highest_pair": list(worst[group][1:]) if group in worst else None,
            "videos_queried": videos[group][0],
            "videos_matched": videos[group][1],
        }
    return {"groups": out, "false_video_matches": false_videos, "clips": len(clips), "banked": len(originals)}


# --- hashing cost ---------------------------------------------------------------------------------


def pan_clip(seconds: float, size: tuple[int, int], seed: int = 0, fps: int = FPS) -> bytes:
    """A pan over the astronaut photo, made fast (x264 superfast, crf 23, the encoder's own threads), with a
    key frame every 10 s exactly (so that :func:`cut` can cut it there)."""
    from tests.training_set import _photo as astronaut

    photo = astronaut()
    width, height = size
    zoom = 1.4 * height / photo.shape[0]
    options = {"crf": "23", "preset": "superfast", "x264-params": f"keyint={10 * fps}:min-keyint={10 * fps}:scenecut=0"}
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(round(seconds * fps)):
            dx = 0.08 * width * math.sin(0.05 * index + seed)
            dy = 0.05 * height * math.cos(0.04 * index + seed)
            matrix = np.array([[zoom, 0.0, width / 2 - zoom * 256 + dx], [0.0, zoom, height / 2 - zoom * 256 + dy]])
            image = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def loop(data: bytes, times: int) -> bytes:
    """An MP4 played ``times`` times in a row: its packets copied (no re-encoding), the timestamps of each
    round shifted by the clip's length. Each 10 s of :func:`pan_clip` is a closed group of pictures, so the
    result decodes like a clip made that long (the same bitstream per second)."""
    with av.open(io.BytesIO(data)) as source:
        stream = source.streams.video[0]
        length = round(stream.frames / float(stream.average_rate) / stream.time_base)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        target = None
        for round_ in range(times):
            with av.open(io.BytesIO(data)) as source:
                stream = source.streams.video[0]
                if target is None:
                    target = out.add_stream_from_template(stream)
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts += round_ * length
                    packet.dts += round_ * length
                    packet.stream = target
                    out.mux(packet)
    return buffer.getvalue()


def time_fingerprint(data: bytes, runs: int = COST_RUNS) -> dict:
    """Median seconds of ``runs`` fingerprints of ``data``, and what the fingerprint covered."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        print_ = fingerprint(data)
        seconds.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "runs_s": [round(s, 3) for s in seconds],
        "features": len(print_.features),
        "covered_s": round(print_.covered_seconds, 2),
        "frames_decoded": print_.frames_scanned,
        "truncated": print_.truncated,
        "bytes": len(data),
    }


def measure_cost(quick: bool, sample: Path = SAMPLE, progress: Callable[[str], None] = print) -> list[dict]:
    """Part 3: seconds to fingerprint the 1080p sample and generated clips (a 10 s pan per size, played 1, 3,
    6 and 12 times by :func:`loop`)."""
    rows = []
    if sample.is_file():
        rows.append({"video": "people_walking_1080p (1920x1080, 4.2 s)", **time_fingerprint(sample.read_bytes())})
        progress(f"  {rows[-1]['video']}: {rows[-1]['median_s']} s")
    unit = min(COST_SECONDS)
    for label, size in COST_SIZES.items():
        started = time.perf_counter()
        pan = pan_clip(unit, size)
        made = time.perf_counter() - started
        for seconds in COST_SECONDS[:2] if quick else COST_SECONDS:
            data = loop(pan, seconds // unit)
            row = {"video": f"generated {label} ({size[0]}x{size[1]}), {seconds} s", **time_fingerprint(data)}
            row["generated_in_s"] = round(made, 1)
            rows.append(row)
            progress(f"  {row['video']}: {row['median_s']} s")
    return rows


def preprocess_pipeline(frames: int = CACHE_FRAMES):
    """The pipeline ``preprocess_<N>``'s CPU config describes, with its torch thread count set (as the
    server's model does), and that count."""
    import torch
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from preprocessing import FacePipeline, PipelineConfig

    path = PROJECT_ROOT / "model_repository" / f"preprocess_{frames}" / "configs" / "cpu.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    params = {key: value.string_value for key, value in config.parameters.items()}
    threads = int(params.pop("torch_threads", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    params["device"] = "cpu"
    return FacePipeline(PipelineConfig.from_parameters(params)), threads


def measure_share(videos: list[tuple[str, bytes]], runs: int = COST_RUNS) -> list[dict]:
    """Part 3b: what the fingerprint adds to a preprocessing run of ``preprocess_10``'s pipeline in this
    process: the pipeline alone, the fingerprint alone, and both at once (the fingerprint in a thread of
    its own, as the server's model runs it), median of ``runs`` each."""
    pipeline, threads = preprocess_pipeline()
    rows = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, data in videos:
            try:
                pipeline(data)  # warm
            except Exception as exc:  # noqa: BLE001 - a video the pipeline refuses is reported, not fatal
                rows.append({"video": name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            alone, printing, both = [], [], []
            for _ in range(runs):
                begun = time.perf_counter()
                pipeline(data)
                alone.append(time.perf_counter() - begun)
                begun = time.perf_counter()
                fingerprint(data)
                printing.append(time.perf_counter() - begun)
                begun = time.perf_counter()
                future = pool.submit(fingerprint, data)
                pipeline(data)
                future.result()
                both.append(time.perf_counter() - begun)
            row = {
                "video": name,
                "torch_threads": threads,
                "pipeline_s": round(statistics.median(alone), 3),
                "fingerprint_s": round(statistics.median(printing), 3),
                "both_s": round(statistics.median(both), 3),
            }
            row["added_s"] = round(row["both_s"] - row["pipeline_s"], 3)
            row["added_share"] = round(row["added_s"] / row["both_s"], 3) if row["both_s"] else None
            rows.append(row)
    return rows


# --- lookup ---------------------------------------------------------------------------------------


def features_per_video(videos: int) -> int:
    """10 features per video, 5 for the 1,000,000-video bank (10 million rows would not fit the run's time)."""
    return LOOKUP_FEATURES_LARGE if videos >= LARGE_BANK else LOOKUP_FEATURES


def flip_bits(words: np.ndarray, flips: int, rng: np.random.Generator) -> np.ndarray:
    """Each hash [n, 4] with ``flips`` distinct random bits flipped."""
    out = words.copy()
    for row in range(len(out)):
        for bit in rng.choice(256, size=flips, replace=False):
            out[row, bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return out


def _hex(words: np.ndarray) -> str:
    return words.astype(">u8").tobytes().hex()


def synthetic_bank(
    videos: int, per_video: int, rng: np.random.Generator, query_features: int = QUERY_FEATURES
) -> tuple[list[tuple[int, str, str, list]], list[list], int]:
    """(entries for :class:`BankIndex`, a query's feature rows, the id of its planted entry).

    Every entry holds ``per_video`` random PDQ hashes (quality 100, one a second), except the planted
    one at the middle: the query's ``query_features`` hashes with :data:`PLANTED_FLIPS` bits flipped each.
    """
    raw = rng.integers(0, 256, size=(videos * per_video, 32), dtype=np.uint8)
    hexes = [bytes(row).hex() for row in raw]
    entries = [
        (i, "fake", "", [[hexes[i * per_video + j], 100, j * FPS, float(j)] for j in range(per_video)])
        for i in range(videos)
    ]
    query_words = np.frombuffer(rng.bytes(query_features * 32), dtype=">u8").reshape(-1, 4).astype(np.uint64)
    query = [[_hex(w), 100, j * FPS, float(j)] for j, w in enumerate(query_words)]
    planted = videos // 2
    near = flip_bits(query_words, PLANTED_FLIPS, rng)
    entries[planted] = (planted, "fake", "planted", [[_hex(w), 100, j * FPS, float(j)] for j, w in enumerate(near)])
    return entries, query, planted


def random_query(rng: np.random.Generator, features: int = QUERY_FEATURES) -> list[list]:
    return [[bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex(), 100, j * FPS, float(j)] for j in range(features)]


def index_nbytes(index: BankIndex) -> int:
    return sum(a.nbytes for a in (index.words, index.times, index.owners, index.order, index.sorted))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_lookup(sizes: Iterable[int], progress: Callable[[str], None] = print) -> list[dict]:
    """Part 4: build, size and query latency of indexes of random hashes."""
    rows = []
    for videos in sizes:
        rng = np.random.default_rng(videos)
        per_video = features_per_video(videos)
        started = time.perf_counter()
        entries, query, planted = synthetic_bank(videos, per_video, rng)
        made = time.perf_counter() - started
        rss = _rss_mib()
        started = time.perf_counter()
        index = BankIndex(entries)
        build = time.perf_counter() - started
        grown = _rss_mib() - rss
        del entries
        hit_s, found = [], None
        for _ in range(QUERY_REPEATS):
            started = time.perf_counter()
            found = index.match(query)
            hit_s.append(time.perf_counter() - started)
        miss_s, false = [], 0
        for _ in range(QUERY_REPEATS):
            other = random_query(rng)
            started = time.perf_counter()
            false += index.match(other) is not None
            miss_s.append(time.perf_counter() - started)
        rows.append(
            {
                "videos": videos,
                "features_per_video": per_video,
                "frames": index.frames,
                "generated_s": round(made, 1),
                "build_s": round(build, 2),
                "numpy_mib": round(index_nbytes(index) / 2**20, 1),
                "rss_growth_mib": round(grown, 1),
                "query_planted_ms": round(1000 * statistics.median(hit_s), 2),
                "planted_found": bool(found and found["id"] == planted),
                "planted_similarity": None if not found else found["similarity"],
                "query_no_match_ms": round(1000 * statistics.median(miss_s), 2),
                "false_matches": false,
            }
        )
        progress(f"  {videos:,} videos x {per_video}: build {build:.1f} s, query {rows[-1]['query_planted_ms']} ms")
        del index
    return rows


# --- the response cache ---------------------------------------------------------------------------


def score_repository(source: Path, frames: int, target: Path) -> Path:
    """A repository of links to ``deepfake_<N>`` and its steps alone (preprocess, classify, resnext_lstm)."""
    from contract import Kind, model_name

    target.mkdir(parents=True, exist_ok=True)
    for kind in (Kind.SCORE, Kind.PREPROCESS, Kind.SELECT, Kind.CLASSIFIER):
        folder = source / model_name(kind, frames)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing (python -m export onnx --frames {frames})")
        (target / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return target


_METRIC = re.compile(r'^(nv_cache_\w+)\{(?:[^}]*model="([^"]*)")?[^}]*\}\s+(\S+)$|^(nv_cache_\w+)\s+(\S+)$')


def parse_cache_metrics(text: str, model: str) -> dict[str, float]:
    """The ``nv_cache_*`` values of a metrics page: the per-model ones of ``model`` (summed over versions),
    and the global ones."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        found = _METRIC.match(line.strip())
        if not found:
            continue
        if found.group(1):
            if found.group(2) in (None, model):
                values[found.group(1)] = values.get(found.group(1), 0.0) + float(found.group(3))
        else:
            values[found.group(4)] = float(found.group(5))
    return values


def cache_metrics(url: str, model: str) -> dict[str, float]:
    """:func:`parse_cache_metrics` of the server's metrics page."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        return parse_cache_metrics(reply.read().decode(), model)


def measure_cache(clips: list[Clip], sample: Path = SAMPLE, progress: Callable[[str], None] = print) -> dict:
    """Part 5: the same bytes scored again and again through ``deepfake_10`` on an embedded server."""
    from benchmarks.server import start_server
    from client import DeepfakeClient
    from contract import RESPONSE_CACHE_BYTES, Kind, model_name

    scratch = Path(tempfile.mkdtemp(prefix="bench_fingerprints_"))
    os.environ["DEEPFAKE_BANK"] = str(scratch / "bank.sqlite3")  # an empty bank of its own
    repository = score_repository(PROJECT_ROOT / "model_repository", CACHE_FRAMES, scratch / "repository")
    preprocess = model_name(Kind.PREPROCESS, CACHE_FRAMES)
    started = time.perf_counter()
    server = start_server(repository, scratch / "tritonserver.log", response_cache_bytes=RESPONSE_CACHE_BYTES)
    start_s = time.perf_counter() - started
    progress(f"  server ready in {start_s:.0f} s")
    faces = [c for c in clips if c.source == "astronaut"]
    results: dict = {"frames": CACHE_FRAMES, "server_start_s": round(start_s, 1), "videos": []}
    try:
        with DeepfakeClient(server.grpc_url) as client:

            def timed(data: bytes) -> tuple[float, float]:
                begun = time.perf_counter()
                answer = client.score(data, frames=CACHE_FRAMES)
                return 1000 * (time.perf_counter() - begun), float(answer.prob_fake)

            client.score(faces[-1].data, frames=CACHE_FRAMES)  # warm the stubs (torch, ORT) on bytes not used again
            before = cache_metrics(server.metrics_url, preprocess)
            subjects = [(faces[0].name, faces[0].data, CACHE_REPEATS)]
            if sample.is_file():
                subjects.append(("people_walking_1080p (real)", sample.read_bytes(), 5))
            for name, data, repeats in subjects:
                miss_ms, prob = timed(data)
                hits = [timed(data) for _ in range(repeats)]
                results["videos"].append(
                    {
                        "video": name,
                        "bytes": len(data),
                        "first_ms": round(miss_ms, 1),
                        "repeats": repeats,
                        "repeat_median_ms": round(statistics.median(h for h, _ in hits), 1),
                        "repeat_min_ms": round(min(h for h, _ in hits), 1),
                        "same_answer": all(p == prob for _, p in hits),
                    }
                )
                progress(f"  {name}: first {miss_ms:.0f} ms, repeats {results['videos'][-1]['repeat_median_ms']} ms")
            middle = cache_metrics(server.metrics_url, preprocess)
            others = [timed(c.data)[0] for c in faces[1 : min(6, len(faces) - 1)]]
            after = cache_metrics(server.metrics_url, preprocess)
    finally:
        server.stop()
    results["new_bytes"] = {"requests": len(others), "median_ms": round(statistics.median(others), 1)}
    results["metrics_before"] = before
    results["metrics_after_repeats"] = middle
    results["metrics_after_new_bytes"] = after

    def delta(name: str, later: dict, earlier: dict) -> float | None:
        return None if name not in later else later[name] - earlier.get(name, 0.0)

    hits = delta("nv_cache_num_hits_per_model", middle, before)
    misses = delta("nv_cache_num_misses_per_model", middle, before)
    hit_us = delta("nv_cache_hit_duration_per_model", middle, before)
    results["repeats_phase"] = {
        "hits": hits,
        "misses": misses,
        "hit_lookup_ms_mean": round(hit_us / hits / 1000, 3) if hits and hit_us is not None else None,
    }
    results["new_bytes_phase"] = {
        "hits": delta("nv_cache_num_hits_per_model", after, middle),
        "misses": delta("nv_cache_num_misses_per_model", after, middle),
    }
    return results


# --- the report -----------------------------------------------------------------------------------


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def render_markdown(results: dict) -> str:
    lines = [
        "# Fingerprints and the bank",
        "",
        f"{results['machine']}. Match rule: Hamming distance <= {PDQ_MATCH_DISTANCE}, PDQ quality >= 50, "
        f"query-side share >= {QUERY_MATCH_SHARE:.0%}.",
        "",
        "| part | run at | seconds | load average (start, end) | quick |",
        "| --- | --- | --- | --- | --- |",
    ]
    for part, run in results.get("parts", {}).items():
        lines.append(
            f"| {part} | {run['when']} | {run['seconds']} | {run['load_start']}, {run['load_end']} | "
            f"{'yes' if run['quick'] else 'no'} |"
        )
    if not results["sample"]:
        lines += ["", f"**The real 1080p sample is absent ({SAMPLE}): only generated media were used.**"]
    copies = results.get("copies")
    if copies:
        lines += [
            "",
            "## Copies found",
            "",
            f"{len(copies['originals'])} originals in the bank, {sum(r['copies'] for r in copies['by_transform'])} "
            f"copies ({copies['seconds']} s). Similarity: the copy's share of frames within {PDQ_MATCH_DISTANCE} of "
            "a frame of its own original; distance: the median over copies of each copy's median matched distance.",
            "",
            "| transformation | matched | wrong entry | mean similarity | lowest | median distance |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in copies["by_transform"]:
            lines.append(
                f"| {row['name']} | {row['matched']}/{row['copies']} | {row['wrong_entry']} | "
                f"{row['mean_similarity']} | {row['min_similarity']} | {row['median_distance']} |"
            )
        lines += ["", "| originals | matched | wrong entry | mean similarity | lowest |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for row in copies["by_source"]:
            lines.append(
                f"| {row['name']} | {row['matched']}/{row['copies']} | {row['wrong_entry']} | "
                f"{row['mean_similarity']} | {row['min_similarity']} |"
            )
        sample_rows = [c for c in copies["copies"] if c["source"] == "people_walking"]
        if sample_rows:
            lines += ["", "The real 1080p sample, copy by copy:", "",
                      "| transformation | matched | similarity | usable frames | median distance |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for row in sample_rows:
                lines.append(
                    f"| {row['transform']} | {'yes' if row['matched'] else 'no'} | {row.get('similarity')} | "
                    f"{row.get('usable')} | {row.get('median_distance')} |"
                )
        unusable = [o["name"] for o in copies["originals"] if not o.get("usable", 1)]
        if unusable:
            lines += [
                "",
                f"No frame of {', '.join(unusable)} has a PDQ quality of 50 or more: it takes no part in matching,"
                " and its copies count as not matched.",
            ]
    false = results.get("false_matches")
    if false:
        lines += [
            "",
            "## False matches",
            "",
            f"{false['clips']} clips ({false['banked']} banked); every clip against every banked clip but itself.",
            "",
            "| pairs of | pairs | pairs matching (>= 80 %) | frames within 31 | min distance | 1st pct | median "
            "| highest similarity | videos matched (leave one out) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for group, row in false["groups"].items():
            lines.append(
                f"| {group} | {row['pairs']} | {row['pairs_matched']} | {row['query_frames_within_31']}/"
                f"{row['query_frames']} | {row['min_distance']} | {row['p1_distance']} | {row['median_distance']} | "
                f"{row['highest_similarity']} | {row['videos_matched']}/{row['videos_queried']} |"
            )
        for item in false["false_video_matches"]:
            lines.append(f"\n- false match: {item['query']} -> {item['entry']} (similarity {item['similarity']})")
    cost = results.get("cost")
    if cost:
        lines += [
            "",
            "## Hashing cost (decode + PDQ, one thread)",
            "",
            "| video | median s | features | covered s | frames decoded | truncated |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in cost:
            lines.append(
                f"| {row['video']} | {row['median_s']} | {row['features']} | {row['covered_s']} | "
                f"{row['frames_decoded']} | {'yes' if row['truncated'] else 'no'} |"
            )
    share = results.get("share")
    if share:
        lines += [
            "",
            f"## What the fingerprint adds to a `preprocess_{CACHE_FRAMES}` run (in process, one run at a time)",
            "",
            "| video | pipeline alone s | fingerprint alone s | both at once s | added s | share of the run |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in share:
            if "error" in row:
                lines.append(f"| {row['video']} | {row['error']} | | | | |")
                continue
            lines.append(
                f"| {row['video']} | {row['pipeline_s']} | {row['fingerprint_s']} | {row['both_s']} | "
                f"{row['added_s']} | {row['added_share']:.0%} |"
            )
    lookup = results.get("lookup")
    if lookup:
        lines += [
            "",
            "## Lookup (random PDQ hashes)",
            "",
            "| videos | features each | frames | build s | numpy MiB | RSS growth MiB | query, planted match ms "
            "| query, no match ms | planted found |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in lookup:
            lines.append(
                f"| {row['videos']:,} | {row['features_per_video']} | {row['frames']:,} | {row['build_s']} | "
                f"{row['numpy_mib']} | {row['rss_growth_mib']} | {row['query_planted_ms']} | "
                f"{row['query_no_match_ms']} | {'yes' if row['planted_found'] else 'no'} |"
            )
    cache = results.get("cache")
    if cache:
        lines += [
            "",
            f"## Response cache (`deepfake_{cache['frames']}`, `preprocess_{cache['frames']}` cached)",
            "",
            "| video | first request ms (miss) | repeats | repeat median ms (hits) | same answer |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in cache["videos"]:
            lines.append(
                f"| {row['video']} | {row['first_ms']} | {row['repeats']} | {row['repeat_median_ms']} | "
                f"{'yes' if row['same_answer'] else 'no'} |"
            )
        repeats, new = cache["repeats_phase"], cache["new_bytes_phase"]
        lines += [
            "",
            f"- repeats phase: {repeats['hits']} hits, {repeats['misses']} misses of `preprocess_{cache['frames']}`; "
            f"mean cache lookup of a hit {repeats['hit_lookup_ms_mean']} ms",
            f"- {cache['new_bytes']['requests']} new byte strings: {new['hits']} hits, {new['misses']} misses, "
            f"median {cache['new_bytes']['median_ms']} ms",
        ]
    return "\n".join(lines) + "\n"


PARTS = ("copies", "false_matches", "cost", "share", "lookup", "cache")


def _share_videos(clips: list[Clip]) -> list[tuple[str, bytes]]:
    videos = [("astronaut pan seed 1 (480x270, 6 s)", next(c.data for c in clips if c.source == "astronaut"))]
    if SAMPLE.is_file():
        videos.insert(0, ("people_walking_1080p (1920x1080, 4.2 s)", SAMPLE.read_bytes()))
    for label, size in COST_SIZES.items():
        videos.append((f"generated {label}, 30 s", loop(pan_clip(10, size), 3)))
    return videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fingerprints", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips, shorter cost clips, no 1,000,000 bank")
    parser.add_argument("--no-server", action="store_true", help="skip the response-cache part (no tritonserver)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)}); the other parts' results are "
        "kept from the results file already there",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    parts = [part for part in PARTS if part in args.parts.split(",")]
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.no_server and "cache" in parts:
        parts.remove("cache")
    started = time.monotonic()
    workers = len(os.sched_getaffinity(0))
    results: dict = {}
    previous = args.out / "fingerprints.json"
    if set(parts) != set(PARTS) and previous.is_file():
        results = json.loads(previous.read_text())
    results.update(machine=machine(), quick=args.quick, sample=SAMPLE.is_file())
    results.setdefault("parts", {})
    if not SAMPLE.is_file():
        print(f"{SAMPLE} is absent: the real 1080p sample is skipped, generated media only")
    print("making the clips")
    clips = match_clips(args.quick, workers=workers)
    steps: dict[str, Callable[[], object]] = {
        "copies": lambda: measure_copies(clips, workers=workers),
        "false_matches": lambda: measure_false_matches(clips),
        "cost": lambda: measure_cost(args.quick),
        "share": lambda: measure_share(_share_videos(clips)),
        "lookup": lambda: measure_lookup(LOOKUP_SIZES[:2] if args.quick else LOOKUP_SIZES),
        "cache": lambda: measure_cache(clips),
    }
    for number, part in enumerate(parts, start=1):
        print(f"{number}. {part}")
        load, begun, when = os.getloadavg()[0], time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S")
        results[part] = steps[part]()
        results["parts"][part] = {
            "when": when,
            "seconds": round(time.monotonic() - begun, 1),
            "load_start": round(load, 2),
            "load_end": round(os.getloadavg()[0], 2),
            "quick": args.quick,
        }
    results["last_run_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "fingerprints.md").write_text(render_markdown(results))
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
