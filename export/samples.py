"""Inputs for verifying exported artifacts: random tensors and real face crops."""

from __future__ import annotations

import numpy as np
import torch

from export.model import FACE_SIZE
from preprocessing.crop import normalize_faces

# MTCNN's box of the face in skimage.data.astronaut() (512 x 512), x1, y1, x2, y2.
ASTRONAUT_FACE_BOX = (181, 62, 268, 172)
MAX_JITTER_PX = 12


def random_faces(videos: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Standard-normal tensors shaped like normalised face crops."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(videos, frames, 3, FACE_SIZE, FACE_SIZE, generator=generator)


def real_face_videos(videos: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Face crops from a real photo (scikit-image's astronaut), jittered per frame.

    Each frame takes the face box shifted by a few pixels, as a tracked face moves between frames.
    """
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    image = data.astronaut()
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    height, width = image.shape[:2]
    out = np.empty((videos, frames, 3, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    for v in range(videos):
        crops = []
        for _ in range(frames):
            dx, dy = rng.integers(-MAX_JITTER_PX, MAX_JITTER_PX + 1, size=2)
            box = (max(0, x1 + dx), max(0, y1 + dy), min(width, x2 + dx), min(height, y2 + dy))
            crop = Image.fromarray(image).crop(box).resize((FACE_SIZE, FACE_SIZE), Image.BILINEAR)
            crops.append(np.asarray(crop))
        out[v] = normalize_faces(np.stack(crops))
    return torch.from_numpy(out)
