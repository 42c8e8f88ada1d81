"""Real encoded test media, generated in memory at run time with PyAV.

Nothing here is committed as a binary: every clip is encoded on demand from
``skimage.data.astronaut()`` (a real photograph with one frontal face, shipped
inside scikit-image) or from other scikit-image photographs without faces.

The face clips animate the photograph (a slow zoom and a small drift) so that
consecutive frames differ, and they know where the face is in every frame:
:func:`face_box` returns the expected box for a frame of :func:`face_clip` in
displayed (upright) pixels, so a test can check a detector against it.

Typical use::

    from tests import media

    data = media.face_clip(frames=12, container="matroska")
    expected = media.face_box(0)          # (x1, y1, x2, y2) in frame 0

Keep clips small (the defaults are 320 x 240, a dozen frames): they encode in
milliseconds and keep test suites fast.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata

#: Face box (x1, y1, x2, y2) in ``skimage.data.astronaut()`` (512 x 512),
#: checked by eye on the photograph: hairline-to-chin, ear-to-ear.
ASTRONAUT_FACE_BOX = (181.0, 62.0, 268.0, 172.0)

#: Default frame size (width, height) of generated clips.
DEFAULT_SIZE = (320, 240)

#: Fraction of the frame height the face occupies in :func:`face_clip` frames.
FACE_HEIGHT_FRACTION = 0.45

#: EXIF tag number of the orientation field.
EXIF_ORIENTATION_TAG = 0x0112

# Relative zoom amplitude and drift (fraction of the frame size) of the animation.
_ZOOM_AMPLITUDE = 0.06
_DRIFT_FRACTION = 0.04
_ZOOM_PERIOD_FRAMES = 16

# Short container names accepted by the generators, mapped to PyAV muxer names.
_CONTAINER_BY_NAME = {
    "mp4": "mp4",
    "mov": "mov",
    "mkv": "matroska",
    "matroska": "matroska",
    "webm": "webm",
    "avi": "avi",
}


@functools.lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    photo = skdata.astronaut()
    photo.flags.writeable = False  # shared between calls
    return photo


def _face_center() -> tuple[float, float]:
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def _face_transform(
    index: int, size: tuple[int, int], seed: int, scale: float = 1.0, center: tuple[float, float] | None = None
) -> np.ndarray:
    """Affine 2x3 matrix mapping astronaut pixels to the pixels of frame ``index``.

    Args:
        index: Frame number.
        size: Frame size (width, height).
        seed: Seed of the drift; the same seed gives the same clip.
        scale: Face size relative to the default (``FACE_HEIGHT_FRACTION``).
        center: Where the face centre sits, as fractions of (width, height);
            the frame centre when None.
    """
    width, height = size
    face_height = ASTRONAUT_FACE_BOX[3] - ASTRONAUT_FACE_BOX[1]
    base = FACE_HEIGHT_FRACTION * height / face_height * scale
    zoom = base * (1.0 + _ZOOM_AMPLITUDE * math.sin(2.0 * math.pi * index / _ZOOM_PERIOD_FRAMES))
    phase = (seed % 97) * 0.37
    dx = _DRIFT_FRACTION * width * math.sin(0.5 * index + phase)
    dy = _DRIFT_FRACTION * height * math.cos(0.4 * index + phase)
    cx, cy = _face_center()
    fx, fy = center if center is not None else (0.5, 0.5)
    tx = fx * width + dx - zoom * cx
    ty = fy * height + dy - zoom * cy
    return np.array([[zoom, 0.0, tx], [0.0, zoom, ty]], dtype=np.float64)


def face_box(index: int, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> tuple[float, ...]:
    """Expected face box (x1, y1, x2, y2) in upright pixels of frame ``index`` of :func:`face_clip`.

    Args:
        index: Frame number.
        size: Displayed frame size (width, height) given to :func:`face_clip`.
        seed: The seed given to :func:`face_clip`.
    """
    matrix = _face_transform(index, size, seed)
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    corners = np.array([[x1, y1, 1.0], [x2, y2, 1.0]]) @ matrix.T
    return (float(corners[0, 0]), float(corners[0, 1]), float(corners[1, 0]), float(corners[1, 1]))


def face_frame(index: int, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> np.ndarray:
    """Frame ``index`` of :func:`face_clip` as an upright RGB uint8 array (height, width, 3)."""
    width, height = size
    return cv2.warpAffine(
        _astronaut(),
        _face_transform(index, size, seed),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def _hide_face(frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Cover a face with a flat patch (1.5 x the box) so no detector finds it."""
    x1, y1, x2, y2 = box
    pad_x, pad_y = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
    height, width = frame.shape[:2]
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(width, math.ceil(x2 + pad_x)), min(height, math.ceil(y2 + pad_y))
    out = frame.copy()
    out[top:bottom, left:right] = (90, 110, 130)
    return out


# Encoder settings that make the output a function of the input frames alone (see add_video_stream).
_DETERMINISTIC_PARAMS = {
    "libx264": ("x264-params", "no-mbtree=1"),
    "libx265": ("x265-params", "pools=1:frame-threads=1:no-cutree=1"),
}


def add_video_stream(
    out: av.container.OutputContainer, codec: str, fps: int, options: dict[str, str] | None = None
) -> av.video.stream.VideoStream:
    """A video stream whose encoder runs on one thread.

    Multi-threaded x264 and libvpx write other bitstreams on other core counts, and x264's
    macroblock-tree rate control gave other bitstreams from run to run in one process even on
    one thread (x265's analogue, its CU tree, and its thread pools are turned off likewise): the
    generated media must be the same video on every machine and in every run, so that a test of a
    damaged file damages the same file everywhere, and two runs of the same test see the same frames.
    """
    options = dict(options or {})
    if codec in _DETERMINISTIC_PARAMS:
        key, value = _DETERMINISTIC_PARAMS[codec]
        options[key] = ":".join(filter(None, (options.get(key), value)))
    stream = out.add_stream(codec, rate=fps, options=options)
    stream.codec_context.thread_count = 1
    return stream


def _encode(
    frames: Iterable[np.ndarray],
    *,
    codec: str,
    container: str,
    pix_fmt: str,
    fps: int,
    rotate: int | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """Encode upright RGB frames into an in-memory container.

    ``rotate`` is the clockwise rotation a player applies to show the stored
    frames (the phone-style ``rotate`` tag): frames are stored turned the other
    way and a display matrix is written, so the displayed result is upright.
    """
    frames = list(frames)
    if rotate is not None and rotate % 90 != 0:
        raise ValueError(f"rotate must be a multiple of 90, got {rotate}")
    quarter_turns = (rotate or 0) // 90 % 4
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=_CONTAINER_BY_NAME.get(container, container)) as out:
        stream = add_video_stream(out, codec, fps, options)
        stored = [np.ascontiguousarray(np.rot90(frame, quarter_turns)) for frame in frames]
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotate:
            # PyAV takes the counter-clockwise angle of the display transform.
            stream.set_display_rotation(-rotate)
        for i, image in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def face_clip(
    frames: int = 12,
    size: tuple[int, int] = DEFAULT_SIZE,
    codec: str = "libx264",
    container: str = "mp4",
    pix_fmt: str = "yuv420p",
    rotate: int | None = None,
    fps: int = 25,
    vfr: bool = False,
    seed: int = 0,
    hide_face: Iterable[int] = (),
) -> bytes:
    """A short clip of the astronaut's face, slowly zooming and drifting.

    Args:
        frames: Number of frames.
        size: Displayed (upright) frame size (width, height). With a rotation
            of 90 or 270 the stored frames are (height, width).
        codec: PyAV encoder name (libx264, libx265, libvpx-vp9, libvpx, mjpeg,
            mpeg4, ffv1, prores, ...).
        container: mp4, mov, mkv (matroska), webm or avi.
        pix_fmt: Pixel format of the encoded stream (yuv420p, yuv420p10le, gray, ...).
        rotate: Clockwise degrees a player turns the stored frames to show them
            (written as a display matrix); None writes no rotation.
        fps: Nominal frame rate.
        vfr: Give the frames irregular timestamps (variable frame rate).
        seed: Changes the drift; :func:`face_box` with the same seed gives the
            expected face box of each frame.
        hide_face: Frame numbers in which the face is covered by a flat patch.

    Returns:
        The encoded file as bytes.
    """
    hidden = set(hide_face)
    images = []
    for i in range(frames):
        image = face_frame(i, size, seed)
        if i in hidden:
            image = _hide_face(image, face_box(i, size, seed))
        images.append(image)
    pts, time_base = _vfr_timestamps(frames, seed) if vfr else (None, None)
    return _encode(
        images, codec=codec, container=container, pix_fmt=pix_fmt, fps=fps, rotate=rotate, pts=pts, time_base=time_base
    )


def ten_bit_clip(
    frames: int = 8, size: tuple[int, int] = DEFAULT_SIZE, codec: str = "libx265", container: str = "mp4"
) -> bytes:
    """A 10-bit 4:2:0 (yuv420p10le) face clip; ``codec`` may also be ``ffv1`` (in mkv)."""
    options = {"x265-params": "log-level=error"} if codec == "libx265" else None
    images = [face_frame(i, size) for i in range(frames)]
    return _encode(images, codec=codec, container=container, pix_fmt="yuv420p10le", fps=25, options=options)


def gray_clip(frames: int = 8, size: tuple[int, int] = DEFAULT_SIZE) -> bytes:
    """A grayscale face clip (FFV1, pix_fmt ``gray``, in mkv): it decodes to gray frames."""
    return face_clip(frames=frames, size=size, codec="ffv1", container="mkv", pix_fmt="gray")


def two_face_clip(
    frames: int = 10,
    size: tuple[int, int] = (480, 240),
    small_scale: float = 0.55,
    hide_large: Iterable[int] = (),
    seed: int = 0,
) -> bytes:
    """Two copies of the astronaut's face: a large one on the right, a small one on the left.

    Args:
        frames: Number of frames.
        size: Frame size (width, height).
        small_scale: Size of the left face relative to the right one.
        hide_large: Frame numbers in which the large face is covered.
        seed: Changes the drift.

    Returns:
        The encoded mp4 (H.264) as bytes. :func:`two_face_boxes` gives the boxes.
    """
    hidden = set(hide_large)
    width, height = size
    images = []
    for i in range(frames):
        large_box, small_box = two_face_boxes(i, size, small_scale, seed)
        canvas = cv2.warpAffine(
            _astronaut(),
            _two_face_transform(i, size, 1.0, seed),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        small = cv2.warpAffine(
            _astronaut(),
            _two_face_transform(i, size, small_scale, seed),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        # Paste the small face with its surroundings (hair, collar) on the left half.
        sx1, sy1, sx2, sy2 = small_box
        pad_x, pad_y = 0.6 * (sx2 - sx1), 0.5 * (sy2 - sy1)
        left, top = max(0, int(sx1 - pad_x)), max(0, int(sy1 - pad_y))
        right, bottom = min(width // 2, int(sx2 + pad_x)), min(height, int(sy2 + pad_y))
        canvas[:, : width // 2] = (120, 120, 120)
        canvas[top:bottom, left:right] = small[top:bottom, left:right]
        if i in hidden:
            canvas = _hide_face(canvas, large_box)
        images.append(canvas)
    return _encode(images, codec="libx264", container="mp4", pix_fmt="yuv420p", fps=25)


def _two_face_transform(index: int, size: tuple[int, int], scale: float, seed: int) -> np.ndarray:
    center = (0.72, 0.5) if scale == 1.0 else (0.24, 0.45)
    return _face_transform(index, size, seed, scale=scale, center=center)


def two_face_boxes(
    index: int, size: tuple[int, int] = (480, 240), small_scale: float = 0.55, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Expected (large, small) face boxes in frame ``index`` of :func:`two_face_clip`."""
    boxes = []
    for scale in (1.0, small_scale):
        matrix = _two_face_transform(index, size, scale, seed)
        x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
        corners = np.array([[x1, y1, 1.0], [x2, y2, 1.0]]) @ matrix.T
        boxes.append(tuple(float(v) for v in corners.reshape(-1)))
    return boxes[0], boxes[1]


def no_face_clip(frames: int = 8, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> bytes:
    """A clip of a real photograph without any face (``skimage.data.coffee()``), drifting."""
    width, height = size
    photo = skdata.coffee()
    images = []
    for i in range(frames):
        dx = _DRIFT_FRACTION * width * math.sin(0.5 * i + seed)
        matrix = np.array(
            [
                [width / photo.shape[1] * 1.1, 0.0, dx - 0.05 * width],
                [0.0, height / photo.shape[0] * 1.1, -0.05 * height],
            ]
        )
        images.append(cv2.warpAffine(photo, matrix, (width, height), borderMode=cv2.BORDER_REFLECT))
    return _encode(images, codec="libx264", container="mp4", pix_fmt="yuv420p", fps=25)


def black_clip(frames: int = 6, size: tuple[int, int] = DEFAULT_SIZE) -> bytes:
    """All-black H.264 frames in mp4."""
    width, height = size
    images = [np.zeros((height, width, 3), np.uint8) for _ in range(frames)]
    return _encode(images, codec="libx264", container="mp4", pix_fmt="yuv420p", fps=25)


def _index_code_frame(index: int, size: tuple[int, int], bits: int) -> np.ndarray:
    """A frame whose top band shows ``index`` in binary (white = 1), under a face."""
    width, height = size
    frame = face_frame(index, size)
    band = height // 8
    cell = width // bits
    for bit in range(bits):
        value = 255 if (index >> bit) & 1 else 0
        frame[:band, bit * cell : (bit + 1) * cell] = value
    return frame


def read_frame_number(frame_rgb: np.ndarray, bits: int = 8) -> int:
    """Read back the frame number drawn by :func:`numbered_clip` from an upright RGB frame."""
    height, width = frame_rgb.shape[:2]
    band = height // 8
    cell = width // bits
    number = 0
    for bit in range(bits):
        patch = frame_rgb[band // 4 : 3 * band // 4, bit * cell + cell // 4 : bit * cell + 3 * cell // 4]
        if patch.mean() > 127:
            number |= 1 << bit
    return number


def numbered_clip(
    frames: int = 60,
    size: tuple[int, int] = (192, 144),
    gop: int = 10,
    codec: str = "libx264",
    container: str = "mp4",
    vfr: bool = False,
) -> bytes:
    """Face frames that show their own frame number (8-bit binary band at the top).

    Use :func:`read_frame_number` on a decoded frame to learn which frame it is,
    independently of any timestamp bookkeeping. A short ``gop`` (keyframe
    interval) gives a decoder that seeks something to skip; libx264 also uses
    B-frames by default, so decode order differs from display order. ``vfr``
    gives the frames irregular timestamps.
    """
    if frames > 256:
        raise ValueError("numbered_clip encodes at most 256 frames (8-bit codes)")
    images = [_index_code_frame(i, size, 8) for i in range(frames)]
    pts, time_base = _vfr_timestamps(frames, seed=0) if vfr else (None, None)
    return _encode(
        images, codec=codec, container=container, pix_fmt="yuv420p", fps=25, gop=gop, pts=pts, time_base=time_base
    )


def _vfr_timestamps(frames: int, seed: int) -> tuple[list[int], Fraction]:
    """Strictly increasing millisecond timestamps with frame durations of 20..100 ms."""
    durations = [20 + 80 * ((i * 7 + seed) % 5) // 4 for i in range(frames)]
    return [int(v) for v in np.cumsum([0] + durations[:-1])], Fraction(1, 1000)


def still_image(
    fmt: str = "JPEG", size: tuple[int, int] = DEFAULT_SIZE, exif_orientation: int | None = None, gray: bool = False
) -> bytes:
    """The first :func:`face_clip` frame as a JPEG or PNG file.

    Args:
        fmt: ``"JPEG"`` or ``"PNG"``.
        size: Displayed (upright) size (width, height).
        exif_orientation: EXIF orientation (1..8) to write. The pixels are
            stored transformed so that a viewer honouring the tag shows the
            upright picture of :func:`face_frame`.
        gray: Store a single-channel (grayscale) image.

    Returns:
        The encoded image file as bytes.
    """
    upright = Image.fromarray(face_frame(0, size))
    if gray:
        upright = upright.convert("L")
    stored = upright
    exif = Image.Exif()
    if exif_orientation is not None:
        stored = upright.transpose(_EXIF_STORE_TRANSPOSE[exif_orientation]) if exif_orientation != 1 else upright
        exif[EXIF_ORIENTATION_TAG] = exif_orientation
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        stored.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    elif fmt.upper() == "PNG":
        stored.save(buffer, "PNG", exif=exif.tobytes())
    else:
        raise ValueError(f"fmt must be JPEG or PNG, got {fmt!r}")
    return buffer.getvalue()


# How to store the upright picture so that applying EXIF orientation N shows it
# upright: the inverse of the transform each orientation asks a viewer to apply.
_EXIF_STORE_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # viewer turns 90 clockwise; store turned counter-clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def hls_playlist(target: str | Path) -> bytes:
    """An HLS playlist whose only segment is the local file ``target``."""
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:1.0,\n{Path(target).resolve()}\n#EXT-X-ENDLIST\n"
    ).encode()


def ffconcat_script(target: str | Path) -> bytes:
    """An ffconcat script that plays the local file ``target``."""
    return f"ffconcat version 1.0\nfile '{Path(target).resolve()}'\n".encode()
