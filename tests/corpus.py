"""A corpus of bad, odd and hostile uploads, generated at run time, with what each must give.

Every case is built in memory from real encoders (PyAV, Pillow) or by damaging a real clip, so
nothing binary is committed. Each :class:`Case` says what the served model must answer:

* ``SCORE``: a score (the input is odd but usable: one frame, 10-bit, rotated, many faces, ...);
* ``REFUSE``: gRPC INVALID_ARGUMENT whose message holds ``phrase`` (case-insensitive).

Typical use::

    from tests import corpus

    for case in corpus.build(tmp_path):        # tmp_path receives the files playlists point at
        ...

Cases under :data:`REGRESSIONS` are inputs the fuzz run (``tests/test_fuzz.py``) once found
interesting; they stay here so that every later run tries them again.
"""

from __future__ import annotations

import io
import math
import struct
import wave
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata

from tests import media

SCORE = "score"
REFUSE = "refuse"

#: Seed of every random byte string, so a corpus run is repeatable.
SEED = 5
#: Size of the random-bytes cases.
RANDOM_BYTES = 64 * 1024
#: Frames of the clips the damaged cases start from.
BASE_FRAMES = 12
#: Declared size of the "huge dimensions" cases: far above the default max_pixels.
HUGE_SIDE = 60_000
#: Real frame size (width, height) of the "oversized frames" case: just above DCI 4K's area.
OVERSIZED = (4112, 2176)
#: Undecodable packets in front of a clip: more than the default max_frames_scanned (3000).
JUNK_PACKETS = 3100
# Frames of decode-order delay (B-frames) a remuxed clip may start with.
REORDER_ROOM = 4
#: A larger-than-usual upload of garbage: the server must refuse it quickly, not choke on it.
LARGE_GARBAGE_BYTES = 48 * 1024 * 1024

# Offsets inside an ISO BMFF visual sample entry (avc1/hvc1): size, type, 6 reserved bytes,
# data reference index, 16 bytes of pre-defined/reserved fields, then width and height.
_SAMPLE_ENTRY_WIDTH = 32
_SAMPLE_ENTRY_HEIGHT = 34
# tkhd ends with width and height as 16.16 fixed point.
_TKHD_SIZE_FIELDS = 8


@dataclass(frozen=True)
class Case:
    """One upload and the answer it must get.

    Attributes:
        name: short identifier (used as the test id).
        data: the uploaded bytes.
        expect: :data:`SCORE` or :data:`REFUSE`.
        phrase: for a refusal, a fragment the error message must hold (lowercase).
        frames_decoded: for a score, FRAMES_DECODED when it is known in advance, else None.
    """

    name: str
    data: bytes
    expect: str
    phrase: str = ""
    frames_decoded: int | None = None

    def __post_init__(self) -> None:
        if self.expect not in (SCORE, REFUSE):
            raise ValueError(f"{self.name}: expect must be {SCORE!r} or {REFUSE!r}, got {self.expect!r}")
        if self.expect == REFUSE and not self.phrase:
            raise ValueError(f"{self.name}: a refusal needs the phrase its message must hold")


# ----------------------------------------------------------------------------- ISO BMFF editing


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Top-level ISO BMFF boxes between ``start`` and ``end``: ``(type, offset, size)``."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
        elif size == 0:
            size = end - offset
        if size < 8:
            return
        yield kind, offset, size
        offset += size


def find_box(data: bytes, path: tuple[bytes, ...]) -> tuple[int, int]:
    """Offset and size of the box at ``path`` (e.g. ``(b"moov", b"trak", b"tkhd")``).

    Raises:
        LookupError: no such box.
    """
    start, end = 0, len(data)
    found = (0, 0)
    for depth, kind in enumerate(path):
        for box_kind, offset, size in boxes(data, start, end):
            if box_kind == kind:
                found = (offset, size)
                break
        else:
            raise LookupError(f"no {b'/'.join(path[: depth + 1]).decode()} box")
        # Containers hold their children right after the 8-byte header, except stsd (a full box
        # with an entry count) whose children start 8 bytes further.
        start = found[0] + 8 + (8 if kind == b"stsd" else 0)
        end = found[0] + found[1]
    return found


_VIDEO_SAMPLE_PATH = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")


def _sample_entry(data: bytes) -> int:
    """Offset of the first sample entry (avc1, hvc1, ...) of the first track."""
    stsd, _ = find_box(data, _VIDEO_SAMPLE_PATH)
    return stsd + 16


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The mp4 with its first track's declared width and height replaced (tkhd and sample entry)."""
    out = bytearray(data)
    entry = _sample_entry(data)
    struct.pack_into(">HH", out, entry + _SAMPLE_ENTRY_WIDTH, width, height)
    tkhd, size = find_box(data, (b"moov", b"trak", b"tkhd"))
    struct.pack_into(">II", out, tkhd + size - _TKHD_SIZE_FIELDS, (width & 0xFFFF) << 16, (height & 0xFFFF) << 16)
    return bytes(out)


def corrupt_box(data: bytes, kind: bytes, seed: int, start: float = 0.25, stop: float = 0.75) -> bytes:
    """Random bytes over a top-level box's payload, from fraction ``start`` to ``stop`` of it."""
    offset, size = find_box(data, (kind,))
    payload = size - 8
    begin = offset + 8 + int(payload * start)
    span = offset + 8 + int(payload * stop) - begin
    out = bytearray(data)
    out[begin : begin + span] = np.random.default_rng(seed).integers(0, 256, span, dtype=np.uint8).tobytes()
    return bytes(out)


def moov_first(data: bytes, scratch: Path) -> bytes:
    """The same mp4 remuxed with its index (moov) before the media data ("faststart").

    The muxer moves the index in a second pass over its output, which needs a real file:
    ``scratch`` is a folder for it.
    """
    path = scratch / "faststart.mp4"
    with (
        av.open(io.BytesIO(data)) as source,
        av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    result = path.read_bytes()
    path.unlink()
    return result


def junk_packets_first(data: bytes, junk: int, seed: int = SEED, junk_bytes: int = 64) -> bytes:
    """The clip remuxed behind ``junk`` video packets of random bytes that no decoder accepts.

    A decoder looking for the first frames has to read through all of them: this is what the
    ``max_frames_scanned`` limit bounds.
    """
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(buffer, "w", format="mp4") as out:
        template = source.streams.video[0]
        stream = out.add_stream_from_template(template)
        step = int(1 / (template.average_rate * template.time_base))
        for index in range(junk):
            packet = av.Packet(rng.integers(0, 256, junk_bytes, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = index * step
            packet.time_base = template.time_base
            out.mux(packet)
        # B-frames give the clip's first packets negative decode times: leave room for them.
        shift = (junk + REORDER_ROOM) * step
        for packet in source.demux(template):
            if packet.dts is None:
                continue
            packet.pts += shift
            packet.dts += shift
            packet.stream = stream
            out.mux(packet)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- other formats


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (valid CRC), with one tiny IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare another size."""
    buffer = io.BytesIO()
    Image.fromarray(media.face_frame(0)).save(buffer, "JPEG", quality=80)
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        raise LookupError("Pillow wrote no baseline SOF0 marker")
    # Marker, 2-byte length, 1-byte precision, then height and width.
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        tone = (8000 * np.sin(np.arange(8000) * 2 * math.pi * 440 / 8000)).astype("<i2")
        out.writeframes(tone.tobytes())
    return buffer.getvalue()


def _zip(inner: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("video.mp4", inner)
    return buffer.getvalue()


def _audio_only_mp4() -> bytes:
    buffer = io.BytesIO()
    rate = 16000
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        for index in range(8):
            samples = np.sin(np.arange(1024) * 0.05 + index).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def many_faces_clip(frames: int = 6, columns: int = 3, rows: int = 2, tile: tuple[int, int] = (160, 160)) -> bytes:
    """A crowd: the astronaut's face tiled ``columns`` x ``rows`` times, each tile drifting."""
    tile_w, tile_h = tile
    images = []
    for index in range(frames):
        canvas = np.zeros((rows * tile_h, columns * tile_w, 3), np.uint8)
        for row in range(rows):
            for column in range(columns):
                face = media.face_frame(index, (tile_w, tile_h), seed=row * columns + column)
                canvas[row * tile_h : (row + 1) * tile_h, column * tile_w : (column + 1) * tile_w] = face
        images.append(canvas)
    return _encode_rgb(images)


def _encode_rgb(images: list[np.ndarray], fps: int = 25) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = media.add_video_stream(out, "libx264", fps)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def _no_face_still() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(cv2.resize(skdata.coffee(), media.DEFAULT_SIZE)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- fuzzing seeds and edits

#: Frame size of the fuzzing seeds: small enough for fast decoding and detection, big enough
#: for MTCNN to find the face.
FUZZ_SEED_SIZE = (160, 120)
FUZZ_SEED_FRAMES = 3

#: Edit operations of :func:`mutate`, each a tuple ``(op, position, argument)``.
MUTATIONS = ("set", "xor", "insert", "delete", "truncate", "duplicate", "u32")
# Longest run an insert/delete/duplicate touches.
MAX_EDIT_SPAN = 256


def fuzz_seeds() -> dict[str, bytes]:
    """Small valid inputs of every accepted format: the starting points of fuzzing."""
    size = FUZZ_SEED_SIZE
    return {
        "mp4_h264": media.face_clip(frames=FUZZ_SEED_FRAMES, size=size),
        "mkv_vp9": media.face_clip(frames=FUZZ_SEED_FRAMES, size=size, codec="libvpx-vp9", container="mkv"),
        "avi_mjpeg": media.face_clip(
            frames=FUZZ_SEED_FRAMES, size=size, codec="mjpeg", container="avi", pix_fmt="yuvj420p"
        ),
        "mp4_rotated": media.face_clip(frames=FUZZ_SEED_FRAMES, size=size, rotate=90),
        "jpeg": media.still_image("JPEG", size=size, exif_orientation=6),
        "png": media.still_image("PNG", size=size),
    }


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """Applies edits in order; positions wrap around the current length, so any edit applies.

    ``set`` writes a byte, ``xor`` flips bits of one, ``insert`` puts ``argument % MAX_EDIT_SPAN``
    copies of byte ``position % 256`` at ``position``, ``delete`` and ``duplicate`` act on a run of
    ``argument % MAX_EDIT_SPAN`` bytes, ``truncate`` keeps ``argument`` bytes (at least one) and
    ``u32`` writes a big-endian 32-bit value (box sizes, declared dimensions).
    """
    out = bytearray(data)
    for op, position, argument in edits:
        if op not in MUTATIONS:
            raise ValueError(f"unknown edit {op!r}; known: {', '.join(MUTATIONS)}")
        if not out:
            out = bytearray(b"\0")
        at = position % len(out)
        span = argument % MAX_EDIT_SPAN
        if op == "set":
            out[at] = argument & 0xFF
        elif op == "xor":
            out[at] ^= argument & 0xFF or 1
        elif op == "insert":
            out[at:at] = bytes([position & 0xFF]) * span
        elif op == "delete":
            del out[at : at + span]
        elif op == "duplicate":
            out[at:at] = out[at : at + span]
        elif op == "truncate":
            del out[max(1, argument % (len(out) + 1)) :]
        else:
            out[at : at + 4] = struct.pack(">I", argument & 0xFFFFFFFF)
    return bytes(out)


# ----------------------------------------------------------------------------- the corpus

#: Inputs the fuzz run (tests/test_fuzz.py) found interesting, kept so that every corpus run
#: tries them again: name -> (fuzz seed, edits, expected answer, phrase of a refusal).
REGRESSIONS: dict[str, tuple[str, tuple[tuple[str, int, int], ...], str, str]] = {}


def build(scratch: Path, frames: int = 10) -> list[Case]:
    """Every case of the corpus (at least 30), for a model of ``frames`` frames.

    Args:
        scratch: an empty folder; it receives the local video the playlist and concat cases
            point at (the server must never read it).
        frames: N of the model the corpus is sent to (clips are made longer than N).

    Returns:
        The cases, in a fixed order.
    """
    rng = np.random.default_rng(SEED)
    clip = media.face_clip(frames=max(BASE_FRAMES, frames + 2), seed=3)
    fast = moov_first(clip, scratch)
    local = scratch / "local_target.mp4"
    local.write_bytes(media.face_clip(frames=4))
    _, mdat_size = find_box(clip, (b"mdat",))
    mdat_offset, _ = find_box(clip, (b"mdat",))

    cases = [
        # --- not a video at all
        Case("empty", b"", REFUSE, "empty input"),
        Case("one_byte", b"\x00", REFUSE, "unsupported input"),
        Case("random_bytes", rng.integers(0, 256, RANDOM_BYTES, dtype=np.uint8).tobytes(), REFUSE, "unsupported input"),
        Case(
            "large_random_bytes",
            rng.integers(0, 256, LARGE_GARBAGE_BYTES, dtype=np.uint8).tobytes(),
            REFUSE,
            "unsupported input",
        ),
        Case("text_as_mp4", b"this is a text file renamed to video.mp4\n" * 40, REFUSE, "unrecognised data"),
        Case(
            "html_as_mp4",
            b"<!DOCTYPE html><html><body><video src='a.mp4'></video></body></html>",
            REFUSE,
            "unsupported input",
        ),
        Case("wav_as_mp4", _wav(), REFUSE, "unsupported input"),
        Case("zip_as_mp4", _zip(clip), REFUSE, "unsupported input"),
        Case("gif_as_mp4", b"GIF89a" + bytes(64), REFUSE, "gif image"),
        # --- references to other files: never followed
        Case("hls_playlist", media.hls_playlist(local), REFUSE, "hls playlist"),
        Case("ffconcat_script", media.ffconcat_script(local), REFUSE, "ffconcat script"),
        Case(
            "dash_manifest",
            f'<?xml version="1.0"?><MPD><BaseURL>file://{local}</BaseURL></MPD>'.encode(),
            REFUSE,
            "dash manifest",
        ),
        # --- damaged mp4
        Case("ftyp_only", clip[: find_box(clip, (b"ftyp",))[1]], REFUSE, "mp4"),
        Case("truncated_at_64_bytes", clip[:64], REFUSE, "mp4"),
        Case("truncated_at_a_third", clip[: len(clip) // 3], REFUSE, "mp4"),
        Case("truncated_before_index", clip[: mdat_offset + mdat_size], REFUSE, "mp4"),
        Case("truncated_last_byte", clip[:-1], SCORE),
        Case("faststart_truncated_in_media", fast[: len(fast) * 4 // 5], SCORE),
        Case(
            "faststart_truncated_after_index",
            fast[: find_box(fast, (b"moov",))[0] + find_box(fast, (b"moov",))[1] + 16],
            REFUSE,
            "no decodable video frame",
        ),
        Case("corrupted_moov", corrupt_box(clip, b"moov", SEED), REFUSE, "mp4"),
        # The middle of the media data garbled: the frames that still decode show no face.
        Case("corrupted_mdat", corrupt_box(clip, b"mdat", SEED), REFUSE, "no face found"),
        # The media data garbled from its start: the first keyframe is lost, nothing after it decodes.
        Case(
            "corrupted_mdat_head",
            corrupt_box(clip, b"mdat", SEED, start=0.0, stop=0.75),
            REFUSE,
            "no decodable video frame",
        ),
        Case("corrupted_mdat_tail", corrupt_box(clip, b"mdat", SEED, start=0.8, stop=1.0), SCORE),
        Case("zero_declared_size", with_declared_size(clip, 0, 0), SCORE),
        # The container's declared size is only a hint: the decoder reads the real size from the
        # stream itself, so these clips still score.
        Case("huge_declared_size", with_declared_size(clip, HUGE_SIDE, HUGE_SIDE), SCORE),
        Case(
            "oversized_frames", _encode_rgb([np.zeros((OVERSIZED[1], OVERSIZED[0], 3), np.uint8)]), REFUSE, "max_pixels"
        ),
        Case("huge_png_header", png_with_header(HUGE_SIDE, HUGE_SIDE), REFUSE, "max_pixels"),
        Case("huge_jpeg_header", _jpeg_with_size(HUGE_SIDE, HUGE_SIDE), REFUSE, "max_pixels"),
        Case("zero_size_png_header", png_with_header(0, 0), REFUSE, "png"),
        Case("thousands_of_undecodable_packets", junk_packets_first(clip, JUNK_PACKETS), REFUSE, "max_frames_scanned"),
        Case("audio_only_mp4", _audio_only_mp4(), REFUSE, "no video stream"),
        # --- odd but usable
        Case("jpeg_as_mp4", media.still_image("JPEG"), SCORE, frames_decoded=1),
        Case("png_as_mp4", media.still_image("PNG"), SCORE, frames_decoded=1),
        Case("one_frame_video", media.face_clip(frames=1), SCORE, frames_decoded=1),
        Case("short_video", media.face_clip(frames=3), SCORE, frames_decoded=3),
        Case("rotated_90", media.face_clip(frames=frames, rotate=90), SCORE, frames_decoded=frames),
        Case("rotated_270", media.face_clip(frames=frames, rotate=270), SCORE, frames_decoded=frames),
        Case("ten_bit_hevc", media.ten_bit_clip(frames=frames), SCORE, frames_decoded=frames),
        Case("variable_frame_rate", media.face_clip(frames=frames + 2, vfr=True), SCORE, frames_decoded=frames),
        Case(
            "webm_vp9",
            media.face_clip(frames=frames, codec="libvpx-vp9", container="webm"),
            SCORE,
            frames_decoded=frames,
        ),
        Case(
            "avi_mjpeg",
            media.face_clip(frames=frames, codec="mjpeg", container="avi", pix_fmt="yuvj420p"),
            SCORE,
            frames_decoded=frames,
        ),
        Case("many_faces", many_faces_clip(frames=frames), SCORE, frames_decoded=frames),
        # --- no face to score
        Case("all_black", media.black_clip(frames=frames), REFUSE, "no face"),
        Case("no_face", media.no_face_clip(frames=frames), REFUSE, "no face"),
        Case("no_face_still", _no_face_still(), REFUSE, "no face"),
    ]
    seeds = fuzz_seeds() if REGRESSIONS else {}
    for name, (seed, edits, expect, phrase) in REGRESSIONS.items():
        cases.append(Case(f"regression_{name}", mutate(seeds[seed], list(edits)), expect, phrase))
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"corpus case names repeat: {duplicates}")
    return cases
