"""Decode the frames a face pipeline needs from an uploaded file held in memory.

The input is never written to disk and never handed to FFmpeg's format
autodetection. :func:`sniff_container` recognises the file from its first
bytes and only an allow-listed demuxer is opened, explicitly:

* MP4 / MOV / 3GP: an ISO BMFF box first (``ftyp``, ``moov``, ...); demuxer
  ``mov`` with external data references disabled;
* Matroska / WebM: EBML magic ``1A 45 DF A3``; demuxer ``matroska``;
* AVI: ``RIFF....AVI ``; demuxer ``avi``;
* JPEG image: ``FF D8 FF``; demuxer ``jpeg_pipe`` (one frame);
* PNG image: ``89 P N G``; demuxer ``png_pipe`` (one frame).

Playlists and scripts that make a demuxer open other files or URLs (HLS
``#EXTM3U``, ``ffconcat``, DASH manifests, ...) are refused before any demuxer
sees them; as a second guard, every container is opened with an empty
protocol allow-list, so a nested open fails instead of reaching a file.

Frames come back as upright RGB ``uint8`` arrays: the display matrix of a
video (the ``rotate`` tag of phone recordings) and the EXIF orientation of a
JPEG/PNG are applied. YUV is converted with the BT.601 matrix whatever the
stream's colour tag says, which gives the same pixels as OpenCV's
``VideoCapture`` used to prepare the training data.
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av
import av.error
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from PIL import Image, UnidentifiedImageError

from contract import DECODE_TIMEOUT_S, MAX_FRAMES_SCANNED, MAX_PIXELS, MAX_UPLOAD_BYTES
from preprocessing.errors import InputError, LimitError

logger = logging.getLogger(__name__)

#: Frame selection strategies: the first N frames, or N frames spread over the clip.
SELECTIONS = ("first", "uniform")

# The decoder's default limits are the served ones (the contract): largest input in bytes, frame
# area in pixels, video packets read for one input, seconds of demuxing and decoding.
DEFAULT_MAX_BYTES = MAX_UPLOAD_BYTES
DEFAULT_MAX_PIXELS = MAX_PIXELS
DEFAULT_MAX_FRAMES_SCANNED = MAX_FRAMES_SCANNED
DEFAULT_DECODE_TIMEOUT_S = DECODE_TIMEOUT_S

# Pillow refuses image headers above twice its MAX_IMAGE_PIXELS outright.
_PIL_BOMB_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

#: EXIF orientation codes (1 = as stored; 2..8 = mirror and/or quarter turns).
EXIF_ORIENTATION_TAG = 0x0112
_EXIF_ORIENTATIONS = range(1, 9)

# ISO BMFF files start with a box: 4-byte size then one of these types.
_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MPEG_TS_SYNC = 0x47
_MPEG_TS_PACKET = 188

# Display-matrix entries are 16.16 fixed point; angles within this many
# degrees of a quarter turn count as that quarter turn.
_ANGLE_TOLERANCE_DEG = 1.0

# OpenCV's VideoCapture, which read the training videos, converts YUV with the
# BT.601 matrix whatever the stream is tagged; PyAV would follow a BT.709 tag.
_TRAINING_COLORSPACE = "ITU601"

# Seek forward only when that skips more frames than a decoder restart costs
# (its reordering and frame-threading delay).
_SEEK_MIN_SKIP = 16

_ACCEPTED = "MP4/MOV, Matroska/WebM or AVI video, or a JPEG/PNG image"


@dataclass(frozen=True)
class _Format:
    """An allow-listed input format."""

    label: str
    demuxer: str
    still: bool
    options: tuple[tuple[str, str], ...] = ()
    # AVI stores no presentation times: what FFmpeg puts on its frames are decode times.
    timestamps: bool = True


_MOV = _Format("mp4", "mov", still=False, options=(("enable_drefs", "0"), ("use_absolute_path", "0")))
_MATROSKA = _Format("matroska", "matroska", still=False)
_AVI = _Format("avi", "avi", still=False, timestamps=False)
_JPEG = _Format("jpeg", "jpeg_pipe", still=True)
_PNG = _Format("png", "png_pipe", still=True)


@dataclass(frozen=True)
class DecodedClip:
    """Frames chosen from one input.

    Attributes:
        frames: ``n`` upright RGB ``uint8`` arrays of shape (height, width, 3).
            When the clip has fewer than ``n`` frames the last real frame is
            repeated (the same array object).
        indices: ``int64 [n]``: the display-order index of each frame in the
            clip (repeated for padding).
        frames_decoded: How many distinct real frames were used (<= ``n``).
        source_size: Displayed (upright) size (width, height) of the first frame.
        container: ``"mp4"`` (MP4/MOV family), ``"matroska"``, ``"avi"``,
            ``"jpeg"`` or ``"png"``.
        orientation: The EXIF-style orientation code (1..8) that was applied
            to make the frames upright (1 = none, 6 = turned 90 degrees
            clockwise, ...).
        frames_scanned: Video packets handed to the decoder (what the
            ``max_frames_scanned`` limit counts).
        total_frames: Frames in the clip when it was counted (``uniform``
            selection, still images), else None.
        times: ``float64 [n]``: when each frame is shown, in seconds from the
            start of the video stream (its presentation time minus the stream's
            start time, which is where a player's clock starts); a frame without
            a timestamp gets ``index / frame rate``, a still image 0.
    """

    frames: list[np.ndarray]
    indices: np.ndarray
    frames_decoded: int
    source_size: tuple[int, int]
    container: str
    orientation: int
    frames_scanned: int
    total_frames: int | None = None
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


def sniff_container(data: bytes) -> str:
    """Name the allow-listed format of ``data`` from its magic bytes.

    Args:
        data: The uploaded file.

    Returns:
        ``"mp4"``, ``"matroska"``, ``"avi"``, ``"jpeg"`` or ``"png"``.

    Raises:
        InputError: Empty input, a playlist/script that references other files,
            or a format outside the allow-list.
    """
    return _sniff(data).label


def _sniff(data: bytes) -> _Format:
    if len(data) == 0:
        raise InputError("empty input: the file has 0 bytes")
    if len(data) >= 8 and data[4:8] in _ISO_BMFF_BOXES:
        return _MOV
    if data.startswith(_EBML_MAGIC):
        return _MATROSKA
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return _AVI
    if data.startswith(_JPEG_MAGIC):
        return _JPEG
    if data.startswith(_PNG_MAGIC):
        return _PNG
    raise InputError(f"unsupported input: {_describe_refused(data)}; accepted: {_ACCEPTED}")


def _describe_refused(data: bytes) -> str:
    """A short human description of a refused input, for the error message."""
    text = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"#extm3u"):
        return "an HLS playlist (#EXTM3U), refused because it references other files"
    if text.startswith(b"ffconcat"):
        return "an ffconcat script, refused because it references other files"
    if text.startswith((b"<?xml", b"<mpd", b"<smil")):
        return "an XML document (e.g. a DASH manifest), refused because it may reference other files"
    if data[:4] == b"GIF8":
        return "a GIF image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[0] == _MPEG_TS_SYNC and len(data) > _MPEG_TS_PACKET and data[_MPEG_TS_PACKET] == _MPEG_TS_SYNC:
        return "an MPEG transport stream"
    return f"unrecognised data ({len(data)} bytes starting {data[:8].hex(' ')})"


class _Budget:
    """Counts frames scanned and wall time against the configured limits."""

    def __init__(self, n: int, max_frames_scanned: int, decode_timeout_s: float, max_pixels: int) -> None:
        self.n = n
        self.max_frames_scanned = max_frames_scanned
        self.decode_timeout_s = decode_timeout_s
        self.max_pixels = max_pixels
        self.started = time.monotonic()
        self.scanned = 0
        self.failed_packets = 0

    def check_time(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.decode_timeout_s:
            raise LimitError("decode_timeout_s", elapsed, self.decode_timeout_s, "seconds spent decoding")

    def count_packet(self) -> None:
        self.scanned += 1
        if self.scanned > self.max_frames_scanned:
            raise LimitError(
                "max_frames_scanned",
                self.scanned,
                self.max_frames_scanned,
                f"video frames read while looking for {self.n} decodable frames",
            )
        self.check_time()

    def check_size(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise LimitError("max_pixels", width * height, self.max_pixels, f"frame of {width}x{height}")


class _SeekUnreliable(Exception):
    """Timestamps after a seek do not match the packet scan: decode sequentially instead."""


def decode_frames(
    data: bytes | bytearray | memoryview | np.ndarray,
    n: int,
    selection: str = "first",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames_scanned: int = DEFAULT_MAX_FRAMES_SCANNED,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
    threads: int = 1,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> DecodedClip:
    """Decode ``n`` upright RGB frames from an uploaded file held in memory.

    ``first`` decodes the first ``n`` frames in display order and stops (what
    the published weights were trained on). ``uniform`` counts the clip's
    frames from its packets (no decoding), picks the middle frame of each of
    ``n`` equal segments (index ``floor((2i + 1) * total / (2n))``) and
    reaches each one by seeking to the keyframe before it when that skips
    more than a few frames, else by decoding forward without converting the
    skipped frames. Files whose timestamps do not allow seeking (e.g. AVI
    with B-frames) are decoded sequentially.
    A clip with fewer than ``n`` frames is padded by repeating its last frame.
    Still images are one frame.

    Args:
        data: The file's bytes (or any bytes-like object, e.g. a ``uint8``
            numpy array as Triton delivers it).
        n: Number of frames wanted (>= 1).
        selection: ``"first"`` or ``"uniform"``.
        max_bytes: Largest accepted input size in bytes.
        max_pixels: Largest accepted frame area (width * height) in pixels.
        max_frames_scanned: Most video packets the decoder may read for this input.
        decode_timeout_s: Wall-time limit for demuxing and decoding, in seconds.
        threads: Decoder threads (>= 1; a fixed count, so that the frames are a function of the
            bytes whatever the machine's core count).
        on_frame: Called with each real frame (no padding), in clip order, once it is final:
            with ``first`` as soon as it is decoded, so a consumer can work while the rest
            decodes; with ``uniform`` when all are picked (a fallback from seeking to
            sequential decoding may start over).

    Returns:
        The decoded clip.

    Raises:
        InputError: The input is not an accepted file, has no video, or no
            frame of it can be decoded.
        LimitError: A limit above was exceeded (the message names it).
        ValueError: ``n`` or ``selection`` is invalid (a caller bug).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    data = bytes(data) if not isinstance(data, bytes) else data
    if len(data) > max_bytes:
        raise LimitError("max_bytes", len(data), max_bytes, "input size in bytes")
    fmt = _sniff(data)
    budget = _Budget(n, max_frames_scanned, decode_timeout_s, max_pixels)
    still_orientation = _still_header(data, fmt, max_pixels) if fmt.still else None
    try:
        if selection == "uniform" and not fmt.still:
            clip = _decode_uniform(data, fmt, n, budget, threads)
            if on_frame is not None:
                for frame in clip.frames[: clip.frames_decoded]:
                    on_frame(frame)
            return clip
        return _decode_first(data, fmt, n, budget, threads, still_orientation, on_frame)
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode the {fmt.label} input: {_ffmpeg_reason(exc)}") from exc


def scan_video(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames_scanned: int = DEFAULT_MAX_FRAMES_SCANNED,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
    threads: int = 1,
) -> Iterator[tuple[int, float, float | None, av.VideoFrame]]:
    """``(index, seconds, frame rate, frame)`` of every decodable frame in decoding order, as stored
    (not turned upright), through the same allow-listed demuxers and limits as :func:`decode_frames`.
    The rate is the stream's average frame rate (else its base rate: FFmpeg's ``avg_frame_rate``,
    else ``r_frame_rate``, as vPDQ reads it), None when it has neither.

    For consumers that walk a whole video (fingerprints); a still image gives one frame. The
    limits raise :class:`LimitError` where they are reached: a caller that wants what came before
    catches it.

    Raises:
        InputError: not an accepted file, or no video stream.
        LimitError: a limit was exceeded.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    if len(data) > max_bytes:
        raise LimitError("max_bytes", len(data), max_bytes, "input size in bytes")
    fmt = _sniff(data)
    budget = _Budget(1, max_frames_scanned, decode_timeout_s, max_pixels)
    try:
        with _open(data, fmt) as container:
            stream = _video_stream(container, fmt, threads, budget)
            rate = stream.average_rate or stream.base_rate
            rate = float(rate) if rate and not fmt.still else None
            for index, frame in enumerate(_decoded(container, stream, budget)):
                seconds = 0.0 if fmt.still else _frame_time(frame, stream, index, fmt.timestamps)
                yield index, seconds, rate, frame
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode the {fmt.label} input: {_ffmpeg_reason(exc)}") from exc


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    return exc.strerror or str(exc)


def _open(data: bytes, fmt: _Format) -> av.container.InputContainer:
    options = {"protocol_whitelist": "none", **dict(fmt.options)}
    try:
        return av.open(
            io.BytesIO(data), mode="r", format=fmt.demuxer, container_options=options, metadata_errors="replace"
        )
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open the input as {fmt.label}: {_ffmpeg_reason(exc)}") from exc


def _video_stream(
    container: av.container.InputContainer, fmt: _Format, threads: int, budget: _Budget
) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise InputError(f"the {fmt.label} input has no video stream")
    stream = streams[0]
    context = stream.codec_context
    if context is None:
        raise InputError(f"no decoder for the video codec of the {fmt.label} input")
    context.thread_type = "AUTO"
    context.thread_count = threads
    if context.width and context.height:
        budget.check_size(context.width, context.height)
    return stream


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, budget: _Budget
) -> Iterator[av.VideoFrame]:
    """Demux and decode ``stream``, skipping packets the decoder rejects.

    A read error (e.g. a truncated file) ends the stream: the frames decoded
    so far are kept and the decoder is drained.
    """
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            logger.info("stopped reading at a damaged or truncated part: %s", _ffmpeg_reason(exc))
            yield from _drain(stream, budget)
            return
        if packet.size:
            budget.count_packet()
        else:
            budget.check_time()
        try:
            frames = packet.decode()
        except av.error.EOFError:
            return
        except av.error.FFmpegError as exc:
            budget.failed_packets += 1
            logger.debug("skipped an undecodable packet: %s", _ffmpeg_reason(exc))
            continue
        for frame in frames:
            budget.check_size(frame.width, frame.height)
            yield frame


def _drain(stream: av.video.stream.VideoStream, budget: _Budget) -> Iterator[av.VideoFrame]:
    try:
        frames = stream.codec_context.decode(None)
    except av.error.FFmpegError:
        return
    for frame in frames:
        budget.check_size(frame.width, frame.height)
        yield frame


def _decode_first(
    data: bytes,
    fmt: _Format,
    n: int,
    budget: _Budget,
    threads: int,
    still_orientation: int | None,
    on_frame: Callable[[np.ndarray], None] | None,
) -> DecodedClip:
    wanted = 1 if fmt.still else n
    frames: list[np.ndarray] = []
    times: list[float] = []
    orientation = still_orientation
    with _open(data, fmt) as container:
        stream = _video_stream(container, fmt, threads, budget)
        for frame in _decoded(container, stream, budget):
            if orientation is None:
                orientation = _frame_orientation(frame)
            frames.append(frame_to_rgb(frame, orientation))
            times.append(0.0 if fmt.still else _frame_time(frame, stream, len(frames) - 1, fmt.timestamps))
            if on_frame is not None:
                on_frame(frames[-1])
            if len(frames) == wanted:
                break
    if not frames:
        raise _no_frames(fmt, budget)
    indices = list(range(len(frames)))
    return _finish(frames, indices, times, n, fmt, orientation, budget, total=1 if fmt.still else None)


def _uniform_indices(total: int, n: int) -> list[int]:
    """Middle frame of each of ``n`` equal segments; every frame when ``total <= n``."""
    if total <= n:
        return list(range(total))
    return [(2 * i + 1) * total // (2 * n) for i in range(n)]


def _decode_uniform(data: bytes, fmt: _Format, n: int, budget: _Budget, threads: int) -> DecodedClip:
    with _open(data, fmt) as container:
        stream = _video_stream(container, fmt, threads, budget)
        pts, keyframes = _scan_packets(container, stream, budget)
        total = len(pts)
        if total == 0:
            raise InputError(f"the {fmt.label} input has no video frames")
        targets = _uniform_indices(total, n)
        picked: list[tuple[int, np.ndarray, float]] = []
        orientation: int | None = None
        if pts[0] is not None:
            try:
                picked, orientation = _pick_by_seeking(container, stream, budget, pts, keyframes, targets)
            except _SeekUnreliable as exc:
                logger.info("seeking unreliable (%s); decoding sequentially", exc)
                picked = []
    if not picked:
        with _open(data, fmt) as container:
            stream = _video_stream(container, fmt, threads, budget)
            picked, orientation = _pick_sequentially(container, stream, budget, targets, fmt.timestamps)
    if not picked:
        raise _no_frames(fmt, budget)
    indices = [index for index, _, _ in picked]
    frames = [frame for _, frame, _ in picked]
    times = [time_s for _, _, time_s in picked]
    return _finish(frames, indices, times, n, fmt, orientation, budget, total=total)


def _scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, budget: _Budget
) -> tuple[list[int | None], list[int]]:
    """Read packet headers (no decoding).

    Returns:
        ``(timestamps, keyframes)``: the packets' timestamps in display order
        and the display-order indices of keyframes. Timestamps are
        ``[None] * count`` when they are missing or repeated, which rules out
        seeking.
    """
    timestamps: list[int | None] = []
    keyframe_pts: list[int] = []
    usable = True
    try:
        for packet in container.demux(stream):
            budget.check_time()
            if not packet.size or packet.is_discard:
                continue
            timestamps.append(packet.pts)
            if packet.pts is None:
                usable = False
            elif packet.is_keyframe:
                keyframe_pts.append(packet.pts)
    except av.error.FFmpegError as exc:
        logger.info("stopped counting packets at a damaged or truncated part: %s", _ffmpeg_reason(exc))
    if usable and len(set(timestamps)) == len(timestamps) and keyframe_pts:
        ordered = sorted(timestamps)
        index_of = {value: i for i, value in enumerate(ordered)}
        return ordered, sorted(index_of[value] for value in keyframe_pts)
    return [None] * len(timestamps), []


def _pick_by_seeking(
    container, stream, budget: _Budget, pts: list[int], keyframes: list[int], targets: list[int]
) -> tuple[list[tuple[int, np.ndarray, float]], int | None]:
    """Reach each target frame from the keyframe before it, checking every timestamp on the way.

    After a seek to keyframe ``k`` the decoder must deliver exactly
    ``pts[k], pts[k + 1], ...`` (frames before ``pts[k]``, leading pictures of
    an open GOP, are ignored). Anything else, such as AVI files whose
    timestamps are decode times, raises :class:`_SeekUnreliable`.
    """
    picked: list[tuple[int, np.ndarray, float]] = []
    orientation: int | None = None
    frames: Iterator[av.VideoFrame] | None = None
    cursor = 0  # display index of the next frame the decoder must deliver
    start_pts = pts[0]
    for target in targets:
        k = bisect.bisect_right(keyframes, target) - 1
        keyframe = keyframes[k] if k >= 0 else 0
        if frames is None or keyframe - cursor > _SEEK_MIN_SKIP:
            try:
                container.seek(pts[keyframe], stream=stream, backward=True)
            except av.error.FFmpegError as exc:
                raise _SeekUnreliable(f"seek failed: {_ffmpeg_reason(exc)}") from exc
            frames = _decoded(container, stream, budget)
            cursor, start_pts = keyframe, pts[keyframe]
        for frame in frames:
            if frame.pts is None:
                raise _SeekUnreliable("a decoded frame has no timestamp")
            if frame.pts < start_pts:
                continue
            if cursor >= len(pts) or frame.pts != pts[cursor]:
                raise _SeekUnreliable(f"decoded timestamp {frame.pts} where frame {cursor} was expected")
            cursor += 1
            if cursor - 1 == target:
                if orientation is None:
                    orientation = _frame_orientation(frame)
                picked.append((target, frame_to_rgb(frame, orientation), _frame_time(frame, stream, target, True)))
                break
        else:
            break  # end of readable data: keep what was found
    return picked, orientation


def _pick_sequentially(
    container, stream, budget: _Budget, targets: list[int], timestamps: bool
) -> tuple[list[tuple[int, np.ndarray, float]], int | None]:
    wanted = set(targets)
    last = max(targets)
    picked: list[tuple[int, np.ndarray, float]] = []
    orientation: int | None = None
    for index, frame in enumerate(_decoded(container, stream, budget)):
        if index in wanted:
            if orientation is None:
                orientation = _frame_orientation(frame)
            picked.append((index, frame_to_rgb(frame, orientation), _frame_time(frame, stream, index, timestamps)))
        if index >= last:
            break
    return picked, orientation


def _finish(
    frames: list[np.ndarray],
    indices: list[int],
    times: list[float],
    n: int,
    fmt: _Format,
    orientation: int | None,
    budget: _Budget,
    total: int | None,
) -> DecodedClip:
    real = len(frames)
    if real < n:
        frames = frames + [frames[-1]] * (n - real)
        indices = indices + [indices[-1]] * (n - real)
        times = times + [times[-1]] * (n - real)
    height, width = frames[0].shape[:2]
    return DecodedClip(
        frames=frames,
        indices=np.asarray(indices, dtype=np.int64),
        frames_decoded=real,
        source_size=(width, height),
        container=fmt.label,
        orientation=orientation or 1,
        frames_scanned=budget.scanned,
        total_frames=total,
        times=np.asarray(times, dtype=np.float64),
    )


def _frame_time(frame: av.VideoFrame, stream: av.video.stream.VideoStream, index: int, timestamps: bool) -> float:
    """Seconds from the stream's start to when ``frame``, the ``index``-th in display order, is shown.

    ``index / frame rate`` where the frame has no presentation time (or the container stores none).
    """
    time_base = frame.time_base or stream.time_base
    if timestamps and frame.pts is not None and time_base:
        start = stream.start_time if stream.start_time is not None else 0
        return max(0.0, float((frame.pts - start) * time_base))
    rate = stream.average_rate or stream.guessed_rate
    return float(index / rate) if rate else 0.0


def _no_frames(fmt: _Format, budget: _Budget) -> InputError:
    detail = f" ({budget.failed_packets} packets rejected by the decoder)" if budget.failed_packets else ""
    return InputError(f"no decodable video frame in the {fmt.label} input{detail}")


def frame_to_rgb(frame: av.VideoFrame, orientation: int) -> np.ndarray:
    """A decoded frame as RGB ``uint8`` in the training data's colour space, turned upright by
    ``orientation`` (EXIF)."""
    # One swscale thread: left to choose, it took 5.9 ms of CPU per 1080p frame here against 1.6 ms
    # (same pixels), and the decoder and detector already keep the cores busy.
    rgb = frame.to_ndarray(format="rgb24", src_colorspace=_TRAINING_COLORSPACE, threads=1)
    return np.ascontiguousarray(apply_orientation(rgb, orientation))


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored image upright according to an EXIF orientation code (1..8).

    Returns a view when possible (callers that need contiguous memory copy it).
    """
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, -1)
    if orientation == 7:
        return np.rot90(image, -1)[::-1]
    if orientation == 8:
        return np.rot90(image, 1)
    return image


def orientation_from_display_matrix(matrix: tuple[int, ...]) -> int:
    """EXIF orientation code equivalent to an FFmpeg display matrix.

    Follows the rule FFmpeg's command-line tool uses to auto-rotate (its
    ``transpose``/``hflip``/``vflip`` choice), so frames come out as players
    show them.

    Args:
        matrix: The 9 int32 values of ``AV_FRAME_DATA_DISPLAYMATRIX``.

    Raises:
        InputError: The matrix rotates by an angle that is not a quarter turn.
    """
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0.0 or scale_y == 0.0:
        return 1
    # FFmpeg's av_display_rotation_get() is counter-clockwise; players turn clockwise by -that.
    clockwise = math.degrees(math.atan2(b / scale_y, a / scale_x)) % 360.0
    quarter = round(clockwise / 90.0) % 4
    if abs(clockwise - 90.0 * round(clockwise / 90.0)) > _ANGLE_TOLERANCE_DEG:
        raise InputError(f"unsupported display rotation of {clockwise:.1f} degrees: only quarter turns are")
    if quarter == 0:
        return 4 if d < 0 else 1
    if quarter == 1:
        return 5 if c > 0 else 6
    if quarter == 2:
        return {(True, True): 3, (True, False): 2, (False, True): 4}.get((a < 0, d < 0), 1)
    return 7 if c < 0 else 8


def _frame_orientation(frame: av.VideoFrame) -> int:
    # PyAV's side-data container and its frame refer to each other: a reference cycle that only a
    # full garbage collection frees, and until then the frame holds its decoded picture and the
    # decoder's buffer pool (megabytes per request, freed in bursts). A 2 x 2 copy carries the
    # same side data (FFmpeg copies frame properties), so the cycle forms around the copy.
    probe = frame.reformat(width=2, height=2, interpolation="FAST_BILINEAR", threads=1)
    try:
        side_data = probe.side_data
    except ValueError:
        # PyAV cannot name a newer kind of side data on this frame, so the full
        # matrix is out of reach; its rotation (without mirroring) still is.
        logger.warning("reading the frame's rotation only (mirroring flags unreadable)")
        return {0: 1, -90: 6, 90: 8, 180: 3, -180: 3}.get(frame.rotation, 1)
    matrix = side_data.get(SideDataType.DISPLAYMATRIX)
    if matrix is None:
        return 1
    raw = np.frombuffer(bytes(matrix), dtype="<i4")
    if raw.size != 9:
        return 1
    return orientation_from_display_matrix(tuple(int(v) for v in raw))


def _still_header(data: bytes, fmt: _Format, max_pixels: int) -> int:
    """Check a JPEG/PNG header's size and return its EXIF orientation (1 when absent or invalid).

    Pillow reads the header only (no pixel decoding), so an oversized image is
    refused before any decoder allocates it. A PNG's EXIF block is read when
    it precedes the image data, as the PNG specification asks.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data), formats=[fmt.label.upper()]) as image:
                width, height = image.size
                # The EXIF block of the header only: Image.getexif() would decode a PNG's pixels.
                raw_exif = image.info.get("exif")
            exif = Image.Exif()
            if raw_exif:
                exif.load(raw_exif)
            value = exif.get(EXIF_ORIENTATION_TAG, 1)
    except Image.DecompressionBombError as exc:
        raise LimitError(
            "max_pixels", _PIL_BOMB_PIXELS, max_pixels, "the image header declares at least that many pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"cannot read the {fmt.label} image header: damaged or not a {fmt.label.upper()} file"
        ) from exc
    if width * height > max_pixels:
        raise LimitError("max_pixels", width * height, max_pixels, f"image of {width}x{height}")
    for warning in caught:
        logger.info("image header: %s", warning.message)
    if value not in _EXIF_ORIENTATIONS:
        logger.info("ignoring invalid EXIF orientation %r", value)
        return 1
    return value
