"""Thin gRPC client of the deepfake detector served by Triton.

Needs only ``tritonclient[grpc]`` and numpy (pillow for ``explain`` files)::

    from client import DeepfakeClient

    with DeepfakeClient("localhost:8001") as detector:
        result = detector.score("video.mp4", frames=20)
        print(result.label, f"{result.confidence:.1f}%", result.prob_fake)
"""

from .api import (
    DEFAULT_FRAMES,
    DEFAULT_URL,
    RETRYABLE_STATUSES,
    ClientError,
    DeepfakeClient,
    ExplainResult,
    FaceTrack,
    ScoreResult,
    label_and_confidence,
)

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_URL",
    "RETRYABLE_STATUSES",
    "ClientError",
    "DeepfakeClient",
    "ExplainResult",
    "FaceTrack",
    "ScoreResult",
    "label_and_confidence",
]
