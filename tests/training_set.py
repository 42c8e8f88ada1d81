"""A labelled set for ``python -m train``, made at test time: real pans of a face, and the same with the face altered.

Nothing is committed as a binary. Every clip animates ``skimage.data.astronaut()`` (a real photo
whose face MTCNN finds) with a pan and zoom of its own (position, size, brightness and motion
drawn from the clip's seed), encoded with H.264 on one thread (:func:`tests.media.add_video_stream`:
the same bytes on every machine).

- **real**: the photo as it is.
- **fake**: the face region (a feathered ellipse over the face) carries a colour cast: every
  pixel moved by :data:`CAST_LEVELS` 8-bit levels along the green-magenta axis ``(-1, 2, -1)/sqrt(6)``
  (a greener face, as a badly colour-matched face swap looks). Two reporting groups, ``cast_soft``
  and ``cast_strong``, differ in how far the mask reaches.

Why this alteration. The demo checkpoints have random weights, so the set must be learnable from a
random trunk's features and yet leave the demo score at chance. Measured on the 10-frame demo
checkpoint: moving the face by 30 levels along red, green or blue moved its faithful score by
-0.023, -0.017 and -0.011 (the spread between clips is 0.015), so along ``(-1, 2, -1)`` the moves
cancel (about 0.000): the demo cannot rank the fakes. The random trunk's pooled features still
shift with the cast, and the heads learn it: over four random splits of 32 clips (8 real and 8
fake to train, one mask), held-out AUC 0.81-1.0 for the published head and 0.88-1.0 for the
temporal head, against 0.56-0.72 for the demo; on this set of 40 clips, split as the end-to-end test
splits it, 0.92 and 1.0 against 0.47. Texture alterations were tried first: a texture the demo
cannot rank either was learnt unreliably (0.5-1.0), and a stronger one hid the face from MTCNN. Each clip is
its own source: the whole set shows one face, so a split by identity is not what is tested here
(see ENVIRONMENT.md: a random trunk does not carry to unseen faces).
"""

from __future__ import annotations

import csv
import functools
import io
import math
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data as skdata

from tests.media import ASTRONAUT_FACE_BOX, add_video_stream

SIZE = (256, 192)
FRAMES = 10
FPS = 25
CRF = "20"
#: How far the fakes' faces move along :data:`CAST_AXIS`, in 8-bit levels.
CAST_LEVELS = 30.0
#: The green-magenta colour axis (RGB), along which the demo checkpoint's score does not move.
CAST_AXIS = np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0)
#: Feathering of the face mask (Gaussian sigma, photo pixels), per fake group: a soft edge that
#: reaches beyond the ellipse, or a tighter one.
MASK_FEATHER = {"cast_soft": 12.0, "cast_strong": 6.0}
REAL_GROUP = "real"
FAKE_GROUPS = tuple(MASK_FEATHER)
CSV_NAME = "set.csv"
# Face height as a share of the frame height, and the per-clip ranges of the animation.
FACE_HEIGHT_FRACTION = 0.45
SCALE_RANGE = (0.85, 1.15)
CENTER_X_RANGE = (0.4, 0.6)
CENTER_Y_RANGE = (0.42, 0.58)
GAIN_RANGE = (0.85, 1.15)
ZOOM_AMPLITUDE = 0.05
DRIFT = 0.04


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    photo = skdata.astronaut()
    photo.flags.writeable = False
    return photo


@functools.lru_cache(maxsize=len(MASK_FEATHER))
def _face_mask(feather: float) -> np.ndarray:
    """A feathered ellipse over the astronaut's face, 0..1, shape (512, 512, 1)."""
    height, width = _photo().shape[:2]
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    mask = np.zeros((height, width), np.float32)
    center = (round((x1 + x2) / 2), round((y1 + y2) / 2 + 5))
    axes = (round((x2 - x1) / 2 * 0.85), round((y2 - y1) / 2 * 0.9))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather)[..., None]


def altered_photo(group: str) -> np.ndarray:
    """The photo with the face cast along :data:`CAST_AXIS` under the mask of ``group``."""
    photo = _photo().astype(np.float32)
    mask = _face_mask(MASK_FEATHER[group])
    return np.clip(photo + mask * (CAST_LEVELS * CAST_AXIS), 0, 255).astype(np.uint8)


def clip(photo: np.ndarray, seed: int, frames: int = FRAMES, size: tuple[int, int] = SIZE) -> bytes:
    """An H.264 MP4 of ``photo`` panned and zoomed with the motion of ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = size
    scale = rng.uniform(*SCALE_RANGE)
    fx, fy = rng.uniform(*CENTER_X_RANGE), rng.uniform(*CENTER_Y_RANGE)
    gain = rng.uniform(*GAIN_RANGE)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    base = FACE_HEIGHT_FRACTION * height / (y2 - y1) * scale
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = add_video_stream(out, "libx264", FPS, {"crf": CRF})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            zoom = base * (1.0 + ZOOM_AMPLITUDE * math.sin(2.0 * math.pi * index / 16.0 + phase))
            dx = DRIFT * width * math.sin(0.5 * index + phase)
            dy = DRIFT * height * math.cos(0.4 * index + phase)
            matrix = np.array([[zoom, 0.0, fx * width + dx - zoom * cx], [0.0, zoom, fy * height + dy - zoom * cy]])
            image = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def make_training_set(folder: Path, per_class: int = 20, frames: int = FRAMES, seed: int = 0) -> Path:
    """Writes ``per_class`` real and ``per_class`` fake clips and ``set.csv`` (path,label,group,source).

    Returns:
        The CSV's path (what ``python -m train`` reads).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(2 * per_class):
        clip_seed = seed * 1000 + index
        fake = index % 2 == 1
        if fake:
            group = FAKE_GROUPS[(index // 2) % len(FAKE_GROUPS)]
            photo = altered_photo(group)
        else:
            group, photo = REAL_GROUP, _photo()
        name = f"{'fake' if fake else 'real'}_{index:03d}.mp4"
        (folder / name).write_bytes(clip(photo, clip_seed, frames))
        rows.append((name, "fake" if fake else "real", group, f"clip{index:03d}"))
    path = folder / CSV_NAME
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label", "group", "source"), *rows])
    return path
