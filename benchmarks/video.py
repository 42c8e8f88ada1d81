"""The benchmark video: the real 1080p sample when it is there, else a generated 1080p clip."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data as skdata

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The real sample (1920 x 1080 H.264, 105 frames, a crowd walking) of the shared test media.
SAMPLE_VIDEO = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
GENERATED_SIZE = (1920, 1080)
GENERATED_FRAMES = 105
GENERATED_FPS = 25
# Face box (x1, y1, x2, y2) of the astronaut in skimage's 512 x 512 photograph.
_ASTRONAUT_FACE = (181.0, 62.0, 268.0, 172.0)
# The face takes this fraction of the frame height, and drifts by these fractions of the frame.
_FACE_HEIGHT = 0.3
_DRIFT = (0.1, 0.05)


@dataclass(frozen=True)
class BenchVideo:
    """One input file of the benchmark.

    Attributes:
        path: Where it lies (the reference pipeline reads it with OpenCV from disk, like the app).
        data: Its bytes (what a client uploads).
        label: How the report names it.
        generated: True when it was made here because the real sample is absent.
    """

    path: Path
    data: bytes
    label: str
    generated: bool


def generated_clip(frames: int = GENERATED_FRAMES, size: tuple[int, int] = GENERATED_SIZE) -> bytes:
    """An H.264 MP4 of ``skimage.data.astronaut()`` drifting across a 1080p frame."""
    width, height = size
    photo = skdata.astronaut()
    x1, y1, x2, y2 = _ASTRONAUT_FACE
    zoom = _FACE_HEIGHT * height / (y2 - y1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=GENERATED_FPS)
        # One encoder thread: the same bytes on every core count.
        stream.codec_context.thread_count = 1
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            phase = 2.0 * math.pi * i / frames
            cx = width * (0.5 + _DRIFT[0] * math.sin(phase)) - zoom * (x1 + x2) / 2.0
            cy = height * (0.5 + _DRIFT[1] * math.cos(phase)) - zoom * (y1 + y2) / 2.0
            matrix = np.array([[zoom, 0.0, cx], [0.0, zoom, cy]])
            image = cv2.warpAffine(
                photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def bench_video(path: Path | None, scratch: Path) -> BenchVideo:
    """The video to measure with.

    Args:
        path: A video chosen by the user; None takes the real sample when present, else a
            generated 1080p clip written into ``scratch``.
        scratch: Folder for a generated clip.

    Raises:
        FileNotFoundError: ``path`` was given and does not exist.
    """
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"benchmark video {path} does not exist")
        return BenchVideo(path, path.read_bytes(), path.name, generated=False)
    if SAMPLE_VIDEO.is_file():
        return BenchVideo(SAMPLE_VIDEO, SAMPLE_VIDEO.read_bytes(), SAMPLE_VIDEO.name, generated=False)
    data = generated_clip()
    target = scratch / "generated_1080p.mp4"
    target.write_bytes(data)
    return BenchVideo(target, data, "generated 1080p astronaut clip (real sample absent)", generated=True)
