"""Inputs for verifying exported artifacts: random tensors and real face crops."""

from __future__ import annotations

import numpy as np
import torch

from export.model import FACE_SIZE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# MTCNN's box of the face in skimage.data.astronaut() (512 x 512), x1, y1, x2, y2.
ASTRONAUT_FACE_BOX = (181, 62, 268, 172)
MAX_JITTER_PX = 12


def random_faces(videos: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Standard-normal tensors shaped like normalised face crops."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(videos, frames, 3, FACE_SIZE, FACE_SIZE, generator=generator)


def normalize_rgb_crops(crops: np.ndarray) -> torch.Tensor:
    """uint8 RGB crops [k, 112, 112, 3] -> the classifier's BGR-normalised [k, 3, 112, 112].

    The weights were trained on OpenCV (BGR) frames normalised with the RGB ImageNet constants
    applied by channel index, so channel 0 is blue and gets mean 0.485.
    """
    bgr = crops[..., ::-1].astype(np.float32) / 255.0
    normalised = (bgr - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


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
        out[v] = normalize_rgb_crops(np.stack(crops)).numpy()
    return torch.from_numpy(out)
