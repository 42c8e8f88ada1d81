"""Thin gRPC client of the deepfake detector served by Triton.

Needs only ``tritonclient[grpc]`` and numpy (pillow for ``explain`` files)::

    from client import DeepfakeClient, Mode

    with DeepfakeClient("localhost:8001") as detector:
        result = detector.score("video.mp4", frames=20)
        print(result.label, f"{result.confidence:.1f}%", result.prob_fake)
        faces = detector.score("video.mp4", frames=20, mode=Mode.FACES)
        published = detector.score("video.mp4", frames=20, version=1)
        print(published.model_version, published.checkpoint_sha256)

Modules: :mod:`.api` (the sync client), :mod:`.aio` (the asyncio client), :mod:`.connection`
(where and how to reach Triton), :mod:`.codec` (requests and answers on the wire), :mod:`.results`
(what an answer means), :mod:`.versions` (classifier versions: the value given, what ``model_info``
says is served, one version per batch), :mod:`.errors`, :mod:`.batch` (many videos, resumable), :mod:`.explain`
(heatmap images), :mod:`.stream_client` (live streams, PyAV), :mod:`.cli` and :mod:`.commands`
(the command line), :mod:`.web` (the page) and :mod:`.evaluate` (labelled sets).
"""

from contract import DEFAULT_FRAMES, Mode, ModeError

from .api import DeepfakeClient
from .connection import DEFAULT_URL, Connection
from .errors import RETRYABLE_STATUSES, ClientError
from .results import ExplainResult, FaceTrack, ScoreResult, label_and_confidence

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_URL",
    "RETRYABLE_STATUSES",
    "ClientError",
    "Connection",
    "DeepfakeClient",
    "ExplainResult",
    "FaceTrack",
    "Mode",
    "ModeError",
    "ScoreResult",
    "label_and_confidence",
]
