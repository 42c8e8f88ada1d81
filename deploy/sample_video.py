"""Writes a short H.264 clip with one real face, for smoke tests on a machine without test media.

The clip animates ``skimage.data.astronaut()`` (a photograph shipped inside scikit-image) with a
slow zoom, so consecutive frames differ the way a filmed face does; the image has everything it
needs (PyAV, scikit-image, numpy), so nothing is downloaded.

    python3 -m deploy.sample_video /tmp/sample.mp4 --frames 40
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from skimage import data
from skimage.transform import resize

DEFAULT_FRAMES = 40
FRAME_RATE = 25
WIDTH, HEIGHT = 640, 480
# The zoom runs from the full photograph to this fraction of it over the clip.
FINAL_CROP = 0.8
CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"


def frames(count: int) -> list[np.ndarray]:
    """``count`` RGB frames (HEIGHT x WIDTH x 3, uint8) zooming in on the astronaut."""
    photo = data.astronaut()
    side = photo.shape[0]
    out = []
    for index in range(count):
        scale = 1.0 - (1.0 - FINAL_CROP) * index / max(count - 1, 1)
        crop = int(side * scale)
        offset = (side - crop) // 2
        window = photo[offset : offset + crop, offset : offset + crop]
        # The square photo is letterboxed into the 4:3 frame.
        square = (resize(window, (HEIGHT, HEIGHT), anti_aliasing=True) * 255).astype(np.uint8)
        frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        left = (WIDTH - HEIGHT) // 2
        frame[:, left : left + HEIGHT] = square
        out.append(frame)
    return out


def write_clip(path: Path, count: int) -> None:
    """Encodes ``count`` frames to ``path`` (the container follows the file suffix)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODEC, rate=FRAME_RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, PIXEL_FORMAT
        stream.time_base = Fraction(1, FRAME_RATE)
        for image in frames(count):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.sample_video", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="file to write (.mp4, .mkv, ...)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames in the clip (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    write_clip(args.out, args.frames)
    print(f"wrote {args.out} ({args.frames} frames, {WIDTH}x{HEIGHT}, {CODEC})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
