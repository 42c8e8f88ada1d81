"""Face crops and heatmap overlays from an ``explain_<N>`` answer.

The arithmetic is numpy only; pillow is imported when PNG files are written
and nowhere else, so scoring never needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from contract import (
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    KNOWN_MATCH_KEY,
    MODEL_VERSION_KEY,
    OPERATING_POINT_KEY,
    PROB_FAKE_CALIBRATED_KEY,
)

from .errors import MissingExtraError
from .results import ExplainResult

# The classifier's input normalisation, applied per channel index. The
# channels are BGR while these are the ImageNet RGB constants: the original
# training code normalised OpenCV (BGR) frames with them, and so does FACES.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CHANNEL_AXIS = 1
BGR_TO_RGB = [2, 1, 0]
PIXEL_MAX = 255.0

#: Weight of the heatmap colour in the overlay (the face keeps the rest).
HEATMAP_ALPHA = 0.5

# The "jet" colour ramp: each RGB channel is a tent of height 1.5 clipped to
# 0..1, centred at 3/4 (red), 1/2 (green) and 1/4 (blue) of the value range.
JET_SLOPE = 4.0
JET_PEAK = 1.5
JET_CENTRES_RGB = (3.0, 2.0, 1.0)

SUMMARY_FILE = "summary.json"
FACE_PNG = "frame_{index:0{width}d}_face.png"
OVERLAY_PNG = "frame_{index:0{width}d}_heatmap.png"
MIN_INDEX_DIGITS = 3

PILLOW_MISSING = "explain writes PNG files with pillow, which is not installed; install it with 'pip install pillow'"


def require_pillow():
    """Imports pillow's Image module or raises :class:`client.errors.MissingExtraError`."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError(PILLOW_MISSING) from None
    return Image


def unnormalise_faces(faces: np.ndarray) -> np.ndarray:
    """Turns FACES back into displayable RGB images.

    Args:
        faces: [N, 3, H, W] float, BGR channel order, ImageNet-normalised.

    Returns:
        [N, H, W, 3] uint8 RGB.
    """
    faces = np.asarray(faces, dtype=np.float32)
    if faces.ndim != 4 or faces.shape[CHANNEL_AXIS] != len(IMAGENET_MEAN):
        raise ValueError(f"faces must have shape [N, 3, H, W], got {list(faces.shape)}")
    scale = IMAGENET_STD.reshape(1, -1, 1, 1)
    shift = IMAGENET_MEAN.reshape(1, -1, 1, 1)
    unit = faces * scale + shift
    rgb = unit[:, BGR_TO_RGB].transpose(0, 2, 3, 1)
    return np.clip(np.rint(rgb * PIXEL_MAX), 0, PIXEL_MAX).astype(np.uint8)


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Maps values in 0..1 to jet RGB colours in 0..1 (dark blue to dark red).

    Args:
        values: array of any shape; values outside 0..1 are clipped.

    Returns:
        float32 array of shape ``values.shape + (3,)``.
    """
    values = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    channels = [np.clip(JET_PEAK - np.abs(JET_SLOPE * values - centre), 0.0, 1.0) for centre in JET_CENTRES_RGB]
    return np.stack(channels, axis=-1).astype(np.float32)


def blend_heatmap(face_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """Lays the jet-coloured heatmap over a face crop.

    Args:
        face_rgb: [H, W, 3] uint8 RGB.
        heatmap: [H, W] values in 0..1.
        alpha: weight of the heatmap colour, 0..1.

    Returns:
        [H, W, 3] uint8 RGB: ``(1 - alpha) * face + alpha * colour``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    face_rgb = np.asarray(face_rgb)
    heatmap = np.asarray(heatmap)
    if face_rgb.ndim != 3 or face_rgb.shape[-1] != 3 or heatmap.shape != face_rgb.shape[:2]:
        raise ValueError(
            f"face [H, W, 3] and heatmap [H, W] must match, got {list(face_rgb.shape)} and {list(heatmap.shape)}"
        )
    colour = jet_colormap(heatmap) * PIXEL_MAX
    mixed = (1.0 - alpha) * face_rgb.astype(np.float32) + alpha * colour
    return np.clip(np.rint(mixed), 0, PIXEL_MAX).astype(np.uint8)


def write_explanation(
    result: ExplainResult, out_dir: str | os.PathLike, model: str, alpha: float = HEATMAP_ALPHA
) -> dict:
    """Writes each frame's face crop and overlay as PNG, plus summary.json.

    Args:
        result: the explain answer.
        out_dir: folder to write into (created if absent).
        model: name of the ensemble that answered, for the summary.
        alpha: weight of the heatmap colour in the overlays.

    Returns:
        The summary that was written to ``summary.json``.

    Raises:
        MissingExtraError: pillow is not installed.
    """
    image_module = require_pillow()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = unnormalise_faces(result.faces)
    frames = len(faces)
    width = max(MIN_INDEX_DIGITS, len(str(frames - 1)))
    per_frame = []
    for index in range(frames):
        face_name = FACE_PNG.format(index=index, width=width)
        overlay_name = OVERLAY_PNG.format(index=index, width=width)
        image_module.fromarray(faces[index]).save(out_dir / face_name)
        overlay = blend_heatmap(faces[index], result.heatmap[index], alpha)
        image_module.fromarray(overlay).save(out_dir / overlay_name)
        per_frame.append(
            {
                "index": index,
                "prob_fake": float(result.frame_prob_fake[index]),
                "face_found": bool(result.face_found[index]),
                "face_box": [float(v) for v in result.face_boxes[index]],
                "face_png": face_name,
                "heatmap_png": overlay_name,
            }
        )
    summary = {
        "video": result.video,
        "model": model,
        "frames": frames,
        "prob_fake": result.prob_fake,
        "frame_prob_fake_mean": result.frame_prob_fake_mean,
        "logits": list(result.logits),
        "label": result.label,
        "confidence": result.confidence,
        "faces_found": result.faces_found,
        "frames_decoded": result.frames_decoded,
        "latency_ms": result.latency_ms,
        "heatmap_alpha": alpha,
        "per_frame": per_frame,
        MODEL_VERSION_KEY: result.model_version,
        CHECKPOINT_SHA256_KEY: result.checkpoint_sha256,
        DECISION_KEY: result.decision,
        PROB_FAKE_CALIBRATED_KEY: result.prob_fake_calibrated,
        OPERATING_POINT_KEY: result.operating_point,
        KNOWN_MATCH_KEY: result.known_match,
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
