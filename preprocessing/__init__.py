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

from preprocessing.config import PipelineConfig
from preprocessing.crop import FACE_SIZE, IMAGENET_MEAN, IMAGENET_STD, crop_box, crop_faces, normalize_faces
from preprocessing.decode import SELECTIONS, DecodedClip, decode_frames, sniff_container
from preprocessing.detect import FaceDetector
from preprocessing.errors import ConfigError, InputError, LimitError, NoFaceError
from preprocessing.pipeline import FacePipeline, FaceTrackResult, PreprocessResult
from preprocessing.track import Detections, follow_face

__all__ = [
    "FACE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SELECTIONS",
    "ConfigError",
    "DecodedClip",
    "Detections",
    "FaceDetector",
    "FacePipeline",
    "FaceTrackResult",
    "InputError",
    "LimitError",
    "NoFaceError",
    "PipelineConfig",
    "PreprocessResult",
    "crop_box",
    "crop_faces",
    "decode_frames",
    "follow_face",
    "normalize_faces",
    "sniff_container",
]
