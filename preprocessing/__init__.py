"""Video or image bytes to the face tensor of the ResNeXt-LSTM deepfake classifier.

A plain library (no serving code): the Triton ``preprocess_<N>`` model is a
thin adapter around :class:`FacePipeline`.

Example::

    from preprocessing import FacePipeline, PipelineConfig, InputError

    pipeline = FacePipeline(PipelineConfig(frames=20))   # builds MTCNN once
    try:
        result = pipeline(video_bytes)
    except InputError as exc:       # the client's mistake, message says why
        ...
    result.faces    # float32 [20, 3, 112, 112], BGR, ImageNet-normalised
    result.boxes    # float32 [20, 4], cropped region in displayed-frame pixels
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported from their modules when first asked for, so that importing one light module
# (``preprocessing.original``, ``preprocessing.errors``) does not load torch and MTCNN with them.
_EXPORTS = {
    "IMAGENET_MEAN": "crop",
    "IMAGENET_STD": "crop",
    "crop_box": "crop",
    "crop_faces": "crop",
    "normalize_faces": "crop",
    "SELECTIONS": "decode",
    "DecodedClip": "decode",
    "decode_frames": "decode",
    "sniff_container": "decode",
    "ConfigError": "errors",
    "InputError": "errors",
    "LimitError": "errors",
    "NoFaceError": "errors",
    "PipelineConfig": "config",
    "FaceDetector": "detect",
    "FacePipeline": "pipeline",
    "FaceTrackResult": "result",
    "PreprocessResult": "result",
    "Detections": "track",
    "follow_face": "track",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'preprocessing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"preprocessing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from preprocessing.config import PipelineConfig
    from preprocessing.crop import IMAGENET_MEAN, IMAGENET_STD, crop_box, crop_faces, normalize_faces
    from preprocessing.decode import SELECTIONS, DecodedClip, decode_frames, sniff_container
    from preprocessing.detect import FaceDetector
    from preprocessing.errors import ConfigError, InputError, LimitError, NoFaceError
    from preprocessing.pipeline import FacePipeline
    from preprocessing.result import FaceTrackResult, PreprocessResult
    from preprocessing.track import Detections, follow_face
