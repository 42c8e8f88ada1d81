"""Decoding uploads from memory: containers, pixel formats, orientation, selection, limits, refusals."""

from __future__ import annotations

import ctypes
import gc
import io
import os
import struct
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from preprocessing import DecodedClip, InputError, LimitError, decode_frames, sniff_container
from preprocessing.decode import orientation_from_display_matrix
from tests import media

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WALKING = SHARED_DATA / "people_walking_1080p.mp4"

# Lossy codecs at these sizes stay within a few grey levels of the source on average.
MAX_MEAN_ABS_DIFF = 8.0


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


# --- containers and pixel formats --------------------------------------------------------------

CLIPS = {
    "mp4-h264": (lambda: media.face_clip(frames=8), "mp4"),
    "mov-h264": (lambda: media.face_clip(frames=8, container="mov"), "mp4"),
    "mov-prores-10bit": (
        lambda: media.face_clip(frames=8, codec="prores", container="mov", pix_fmt="yuv422p10le"),
        "mp4",
    ),
    "mkv-h264": (lambda: media.face_clip(frames=8, container="mkv"), "matroska"),
    "webm-vp9": (lambda: media.face_clip(frames=8, codec="libvpx-vp9", container="webm"), "matroska"),
    "webm-vp8": (lambda: media.face_clip(frames=8, codec="libvpx", container="webm"), "matroska"),
    "avi-mjpeg": (lambda: media.face_clip(frames=8, codec="mjpeg", container="avi", pix_fmt="yuvj420p"), "avi"),
    "avi-mpeg4": (lambda: media.face_clip(frames=8, codec="mpeg4", container="avi"), "avi"),
    "mp4-hevc-10bit": (lambda: media.ten_bit_clip(frames=8), "mp4"),
    "mkv-ffv1-10bit": (lambda: media.ten_bit_clip(frames=8, codec="ffv1", container="mkv"), "matroska"),
    "mp4-odd-size-444": (lambda: media.face_clip(frames=8, size=(161, 121), pix_fmt="yuv444p"), "mp4"),
    "avi-odd-size-mjpeg": (
        lambda: media.face_clip(frames=8, size=(161, 121), codec="mjpeg", container="avi", pix_fmt="yuvj420p"),
        "avi",
    ),
    "mp4-vfr": (lambda: media.face_clip(frames=8, vfr=True), "mp4"),
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_decodes_every_accepted_container_and_format(name: str) -> None:
    make, container = CLIPS[name]
    data = make()
    clip = decode_frames(data, 6)
    assert isinstance(clip, DecodedClip)
    assert clip.container == container
    assert clip.frames_decoded == 6
    assert clip.indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert clip.indices.dtype == np.int64
    width, height = clip.source_size
    for i, frame in enumerate(clip.frames):
        assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
        assert frame.flags.c_contiguous
        assert mean_abs_diff(frame, media.face_frame(i, (width, height))) < MAX_MEAN_ABS_DIFF, name
    # Frames differ from each other: the animation moved.
    assert mean_abs_diff(clip.frames[0], clip.frames[5]) > 1.0


def test_grayscale_stream_decodes_to_gray_rgb() -> None:
    clip = decode_frames(media.gray_clip(frames=6), 4)
    frame = clip.frames[0]
    assert frame.shape == (240, 320, 3)
    assert np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 1], frame[..., 2])
    assert mean_abs_diff(frame, gray_of(media.face_frame(0))) < MAX_MEAN_ABS_DIFF


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("gray", [False, True])
def test_still_image_is_one_frame_repeated(fmt: str, gray: bool) -> None:
    clip = decode_frames(media.still_image(fmt, gray=gray), 5)
    assert clip.container == fmt.lower()
    assert clip.frames_decoded == 1
    assert clip.indices.tolist() == [0] * 5
    assert all(frame is clip.frames[0] for frame in clip.frames)
    reference = media.face_frame(0)
    reference = gray_of(reference) if gray else reference
    assert mean_abs_diff(clip.frames[0], reference) < MAX_MEAN_ABS_DIFF


# --- orientation -------------------------------------------------------------------------------


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_video_rotation_metadata_gives_upright_frames(rotate: int) -> None:
    displayed = (240, 320) if rotate in (90, 270) else (320, 240)
    data = media.face_clip(frames=4, size=displayed, rotate=rotate)
    with av.open(io.BytesIO(data)) as container:  # the stored frames are turned
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    turned = np.rot90(media.face_frame(0, displayed), rotate // 90)
    assert stored.shape == turned.shape
    assert mean_abs_diff(stored, turned) < MAX_MEAN_ABS_DIFF
    clip = decode_frames(data, 2)
    assert clip.source_size == displayed
    assert mean_abs_diff(clip.frames[0], media.face_frame(0, displayed)) < MAX_MEAN_ABS_DIFF


def test_portrait_result_from_rotated_landscape_stream() -> None:
    clip = decode_frames(media.face_clip(frames=3, size=(240, 320), rotate=90), 3)
    height, width = clip.frames[0].shape[:2]
    assert height > width
    assert clip.orientation == 6


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_gives_upright_image(orientation: int, fmt: str) -> None:
    data = media.still_image(fmt, exif_orientation=orientation)
    # Independent reference: Pillow's own EXIF handling.
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    clip = decode_frames(data, 1)
    assert clip.frames[0].shape == expected.shape == (240, 320, 3)
    assert mean_abs_diff(clip.frames[0], expected) < 2.0
    assert mean_abs_diff(clip.frames[0], media.face_frame(0)) < MAX_MEAN_ABS_DIFF


def _matrix(a: float, b: float, c: float, d: float) -> tuple[int, ...]:
    one = 1 << 16
    return (int(a * one), int(b * one), 0, int(c * one), int(d * one), 0, 0, 0, 1 << 30)


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (_matrix(1, 0, 0, 1), 1),
        (_matrix(0, 1, -1, 0), 6),  # players turn 90 degrees clockwise
        (_matrix(0, -1, 1, 0), 8),  # 90 degrees counter-clockwise
        (_matrix(-1, 0, 0, -1), 3),
        (_matrix(-1, 0, 0, 1), 2),  # mirrored left-right
        (_matrix(1, 0, 0, -1), 4),  # mirrored top-bottom
        (_matrix(0, 1, 1, 0), 5),  # transpose
        (_matrix(0, -1, -1, 0), 7),  # transverse
    ],
)
def test_display_matrix_to_orientation(matrix: tuple[int, ...], expected: int) -> None:
    assert orientation_from_display_matrix(matrix) == expected


def test_display_matrix_with_odd_angle_is_refused() -> None:
    angle = np.radians(30)
    with pytest.raises(InputError, match="display rotation"):
        orientation_from_display_matrix(_matrix(np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle)))


# --- frame selection ---------------------------------------------------------------------------


def frame_numbers(clip: DecodedClip) -> list[int]:
    return [media.read_frame_number(frame) for frame in clip.frames]


@pytest.fixture(scope="module")
def numbered_mp4() -> bytes:
    return media.numbered_clip(frames=60, gop=10)


def test_first_selection_takes_the_first_frames_and_stops(numbered_mp4: bytes) -> None:
    clip = decode_frames(numbered_mp4, 8, "first")
    assert clip.indices.tolist() == list(range(8))
    assert frame_numbers(clip) == list(range(8))
    # Decoding stops soon after the frames needed (decoder delay aside).
    assert clip.frames_scanned < 20


def test_uniform_selection_picks_segment_middles_by_seeking(numbered_mp4: bytes) -> None:
    clip = decode_frames(numbered_mp4, 8, "uniform")
    expected = [(2 * i + 1) * 60 // 16 for i in range(8)]
    assert clip.indices.tolist() == expected == [3, 11, 18, 26, 33, 41, 48, 56]
    assert frame_numbers(clip) == expected
    assert clip.total_frames == 60


def test_uniform_selection_skips_most_of_a_long_clip() -> None:
    clip = decode_frames(media.numbered_clip(frames=120, gop=10), 4, "uniform")
    assert frame_numbers(clip) == clip.indices.tolist() == [15, 45, 75, 105]
    # Seeking to the keyframe before each target: well under half the clip is decoded.
    assert clip.frames_scanned < 60


@pytest.mark.parametrize(
    ("codec", "container", "vfr"),
    [
        ("libx264", "mkv", False),
        ("libvpx-vp9", "webm", False),
        ("mpeg4", "avi", False),
        ("libx264", "avi", False),  # no presentation timestamps in AVI: sequential decoding
        ("libx264", "mp4", True),
    ],
)
def test_uniform_selection_in_other_containers(codec: str, container: str, vfr: bool) -> None:
    data = media.numbered_clip(frames=40, gop=8, codec=codec, container=container, vfr=vfr)
    clip = decode_frames(data, 5, "uniform")
    expected = [(2 * i + 1) * 40 // 10 for i in range(5)]
    assert clip.indices.tolist() == expected
    assert frame_numbers(clip) == expected


@pytest.mark.parametrize("selection", ["first", "uniform"])
def test_short_clip_is_padded_with_its_last_frame(selection: str) -> None:
    clip = decode_frames(media.numbered_clip(frames=3, gop=2), 7, selection)
    assert clip.frames_decoded == 3
    assert clip.indices.tolist() == [0, 1, 2, 2, 2, 2, 2]
    assert frame_numbers(clip) == [0, 1, 2, 2, 2, 2, 2]
    assert all(frame is clip.frames[2] for frame in clip.frames[3:])


def test_vfr_first_frames_in_display_order() -> None:
    clip = decode_frames(media.numbered_clip(frames=12, vfr=True), 6)
    assert frame_numbers(clip) == list(range(6))


@pytest.mark.parametrize(
    ("container", "codec", "selection"),
    [
        ("mp4", "libx264", "first"),
        ("mp4", "libx264", "uniform"),
        ("mkv", "libx264", "uniform"),
        ("webm", "libvpx-vp9", "first"),
        ("avi", "mpeg4", "first"),
        ("avi", "libx264", "uniform"),
    ],
)
def test_frame_times_are_display_times_from_the_stream_start(container: str, codec: str, selection: str) -> None:
    clip = decode_frames(media.numbered_clip(frames=40, gop=8, codec=codec, container=container), 5, selection)
    assert clip.times.dtype == np.float64 and clip.times.shape == (5,)
    # 25 fps: frame k is shown at k / 25 s, whatever the container's timestamps look like.
    np.testing.assert_allclose(clip.times, np.asarray(frame_numbers(clip)) / 25.0, atol=1e-6)


def test_frame_times_follow_variable_timestamps_and_padding() -> None:
    clip = decode_frames(media.numbered_clip(frames=12, vfr=True), 6)
    pts, _ = media._vfr_timestamps(12, seed=0)
    np.testing.assert_allclose(clip.times, np.asarray(pts[:6]) / 1000.0, atol=1e-6)
    short = decode_frames(media.numbered_clip(frames=3, gop=2), 5)
    np.testing.assert_allclose(short.times, [0.0, 0.04, 0.08, 0.08, 0.08], atol=1e-6)
    assert decode_frames(media.still_image("PNG"), 3).times.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.skipif(not WALKING.exists(), reason=f"shared test media absent: {WALKING}")
def test_real_1080p_frames_match_opencv() -> None:
    clip = decode_frames(WALKING.read_bytes(), 20)
    assert clip.source_size == (1920, 1080)
    capture = cv2.VideoCapture(str(WALKING))
    try:
        for i in range(20):
            ok, bgr = capture.read()
            assert ok
            assert np.array_equal(clip.frames[i], bgr[..., ::-1]), f"frame {i} differs from OpenCV"
    finally:
        capture.release()


def test_bt709_tagged_video_converts_like_opencv(tmp_path: Path) -> None:
    """OpenCV (which read the training videos) ignores the colour tag; so must we."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = media.add_video_stream(
            out, "libx264", 25, {"x264-params": "colormatrix=bt709:transfer=bt709:colorprim=bt709"}
        )
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(media.face_frame(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    path = tmp_path / "bt709.mp4"
    path.write_bytes(buffer.getvalue())
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).colorspace == 1  # tagged BT.709
    clip = decode_frames(buffer.getvalue(), 3)
    capture = cv2.VideoCapture(str(path))
    try:
        for frame in clip.frames:
            ok, bgr = capture.read()
            assert ok and np.array_equal(frame, bgr[..., ::-1])
    finally:
        capture.release()


# --- limits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_clip() -> bytes:
    return media.face_clip(frames=12)


def test_max_bytes(small_clip: bytes) -> None:
    with pytest.raises(LimitError, match=rf"max_bytes: {len(small_clip)} > {len(small_clip) - 1}") as info:
        decode_frames(small_clip, 4, max_bytes=len(small_clip) - 1)
    assert info.value.limit == "max_bytes" and info.value.value == len(small_clip)


def test_max_pixels(small_clip: bytes) -> None:
    with pytest.raises(LimitError, match=r"max_pixels: 76800 > 76799 \(frame of 320x240\)"):
        decode_frames(small_clip, 4, max_pixels=320 * 240 - 1)
    assert decode_frames(small_clip, 4, max_pixels=320 * 240).frames_decoded == 4


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (5000, 5000, r"max_pixels: 25000000 > 8847360 \(image of 5000x5000\)"),
        (30000, 30000, r"max_pixels: .* \(the image header declares at least that many pixels\)"),
    ],
)
def test_max_pixels_is_checked_on_the_image_header_before_decoding(width: int, height: int, message: str) -> None:
    with pytest.raises(LimitError, match=message):
        decode_frames(png_header(width, height), 2)


@pytest.mark.parametrize("selection", ["first", "uniform"])
def test_max_frames_scanned(small_clip: bytes, selection: str) -> None:
    with pytest.raises(LimitError, match=r"max_frames_scanned: 6 > 5") as info:
        decode_frames(small_clip, 12, selection, max_frames_scanned=5, threads=1)
    assert info.value.limit == "max_frames_scanned"


def test_decode_timeout(small_clip: bytes) -> None:
    with pytest.raises(LimitError, match=r"decode_timeout_s: .* > 1e-09"):
        decode_frames(small_clip, 4, decode_timeout_s=1e-9)


# --- refusals: playlists and scripts must not reach other files --------------------------------


class OpenWatch:
    """Linux inotify watch reporting whether anyone opened or read a file."""

    IN_ACCESS = 0x001
    IN_OPEN = 0x020
    _EVENT = struct.Struct("iIII")

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._fd, str(path).encode(), self.IN_OPEN | self.IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")

    def touched(self) -> bool:
        """Whether the file was opened or read since the last call."""
        seen = 0
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                return seen != 0
            offset = 0
            while offset < len(chunk):
                _, mask, _, name_len = self._EVENT.unpack_from(chunk, offset)
                seen |= mask
                offset += self._EVENT.size + name_len

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture()
def local_video(tmp_path: Path):
    path = tmp_path / "private.mp4"
    path.write_bytes(media.face_clip(frames=4))
    watch = OpenWatch(path)
    yield path, watch
    watch.close()


@pytest.mark.parametrize(
    ("make", "ffmpeg_format", "kind"),
    [
        (media.hls_playlist, "hls", "HLS playlist"),
        (media.ffconcat_script, "concat", "ffconcat script"),
    ],
)
def test_playlists_and_scripts_are_refused_without_opening_the_file(local_video, make, ffmpeg_format, kind) -> None:
    path, watch = local_video
    data = make(path)
    # Control: FFmpeg itself, told the format, opens the local file and decodes it.
    with av.open(io.BytesIO(data), format=ffmpeg_format, options={"safe": "0"}) as container:
        assert len(list(container.decode(video=0))) == 4
    assert watch.touched(), "the watch must see FFmpeg opening the file"

    with pytest.raises(InputError, match=f"{kind}.*references other files"):
        decode_frames(data, 4)
    assert not watch.touched(), "the referenced file was opened"


def test_playlist_behind_a_byte_order_mark_is_refused(local_video) -> None:
    path, watch = local_video
    with pytest.raises(InputError, match="HLS playlist"):
        decode_frames(b"\xef\xbb\xbf" + media.hls_playlist(path), 4)
    assert not watch.touched()


# --- garbage -----------------------------------------------------------------------------------


def _truncated_mp4() -> bytes:
    data = media.face_clip(frames=8)
    return data[: len(data) // 2]


GARBAGE = {
    "empty": (b"", "empty input"),
    "one byte": (b"\x00", "unsupported input"),
    "text": (b"hello, this is not a video\n", "unsupported input: unrecognised data"),
    "random": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "unsupported input"),
    "truncated mp4": (_truncated_mp4(), "cannot open the input as mp4"),
    "mp4 header only": (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "mp4"),
    "matroska magic then junk": (b"\x1a\x45\xdf\xa3" + b"\x01" * 64, "matroska"),
    "avi header then junk": (b"RIFF\x10\x00\x00\x00AVI LIST" + b"\x00" * 32, "avi"),
    "jpeg magic then junk": (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "cannot read the jpeg image header"),
    "png magic then junk": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "cannot read the png image header"),
    "gif": (b"GIF89a" + b"\x00" * 32, "a GIF image"),
    "mpeg-ts": ((b"\x47" + b"\x00" * 187) * 3, "MPEG transport stream"),
    "dash manifest": (b'<?xml version="1.0"?><MPD></MPD>', "DASH manifest"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_raises_input_error_with_a_clear_message(name: str) -> None:
    data, message = GARBAGE[name]
    with pytest.raises(InputError, match=message):
        decode_frames(data, 4)


def test_truncated_mp4_with_index_first_keeps_the_frames_it_has() -> None:
    # Matroska writes its header first: a truncated file still has readable frames.
    data = media.face_clip(frames=12, container="mkv")
    clip = decode_frames(data[: len(data) * 2 // 3], 12)
    assert 1 <= clip.frames_decoded < 12
    assert len(clip.frames) == 12


def test_audio_only_input_is_refused() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        decode_frames(buffer.getvalue(), 4)


def test_numpy_input_as_triton_delivers_it() -> None:
    data = media.face_clip(frames=3)
    as_tensor = np.frombuffer(data, dtype=np.uint8).reshape(1, -1)  # VIDEO with shape [1, nbytes]
    clip = decode_frames(as_tensor, 3)
    assert clip.frames_decoded == 3
    assert np.array_equal(clip.frames[2], decode_frames(data, 3).frames[2])


def test_sniff_container_names() -> None:
    assert sniff_container(media.face_clip(frames=2)) == "mp4"
    assert sniff_container(media.face_clip(frames=2, container="webm", codec="libvpx")) == "matroska"
    assert sniff_container(media.still_image("PNG")) == "png"


@pytest.fixture(scope="module")
def fuzz_seed_clip() -> bytes:
    return media.face_clip(frames=4, size=(64, 48))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12), cut=st.integers(0, 10_000))
def test_damaged_files_raise_only_input_errors(fuzz_seed_clip: bytes, edits, cut: int) -> None:
    data = bytearray(fuzz_seed_clip)
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut)])
    try:
        clip = decode_frames(data, 3, max_frames_scanned=200, decode_timeout_s=10.0)
    except InputError:
        return
    assert len(clip.frames) == 3 and 1 <= clip.frames_decoded <= 3


def test_decoding_leaves_no_decoded_picture_in_reference_cycles():
    # Reading a frame's side data (its rotation) builds a frame <-> container reference cycle in
    # PyAV; the decoded pictures must not be in it, or they wait for a full garbage collection.
    clip = media.face_clip(frames=4, rotate=90)
    gc.collect()
    was_enabled, flags = gc.isenabled(), gc.get_debug()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        decoded = decode_frames(clip, 4, "first")
        del decoded
        gc.collect()
        pictures = [(o.width, o.height) for o in gc.garbage if isinstance(o, av.VideoFrame)]
    finally:
        gc.garbage.clear()
        gc.set_debug(flags)
        if was_enabled:
            gc.enable()
    assert all(width * height <= 4 for width, height in pictures), pictures
