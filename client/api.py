"""Python API of the deepfake detector served by Triton over gRPC.

Only ``tritonclient[grpc]`` and numpy are needed here. One
:class:`DeepfakeClient` holds one gRPC channel and is safe to share between
threads, so a batch of videos can be scored concurrently through it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

DEFAULT_URL = "localhost:8001"
DEFAULT_FRAMES = 20

SCORE_MODEL_TEMPLATE = "deepfake_{frames}"
EXPLAIN_MODEL_TEMPLATE = "explain_{frames}"
VERDICT_MODEL_TEMPLATE = "verdict_{frames}"
FACES_MODEL_TEMPLATE = "faces_{frames}"
ORIGINAL_MODEL_TEMPLATE = "original_{frames}"

VIDEO_INPUT = "VIDEO"
VIDEO_DATATYPE = "UINT8"

FACE_SIZE = 112
BOX_COORDINATES = 4

#: Output name -> shape of one video's tensor, ``None`` standing for N frames.
SCORE_OUTPUTS: dict[str, tuple] = {
    "PROB_FAKE": (1,),
    "LOGITS": (2,),
    "FRAME_PROB_FAKE": (None,),
    "FACE_BOXES": (None, BOX_COORDINATES),
    "FACE_FOUND": (None,),
    "FRAMES_DECODED": (1,),
    "FRAME_TIMES": (None,),
}
#: ``verdict_<N>``: the clip's score without the per-frame scores.
VERDICT_OUTPUTS: dict[str, tuple] = {name: shape for name, shape in SCORE_OUTPUTS.items() if name != "FRAME_PROB_FAKE"}
#: An axis of one row per face found (``faces_<N>``): any length, the same in every such output.
FACE_AXIS = "faces"
FACES_OUTPUTS: dict[str, tuple] = {
    **SCORE_OUTPUTS,
    "MAX_PROB_FAKE": (1,),
    "TRACK_PROB_FAKE": (FACE_AXIS,),
    "TRACK_FRAME_PROB_FAKE": (FACE_AXIS, None),
    "TRACK_BOXES": (FACE_AXIS, None, BOX_COORDINATES),
    "TRACK_FOUND": (FACE_AXIS, None),
    "TRACK_PROMINENCE": (FACE_AXIS,),
    "FACES_SEEN": (1,),
}
EXPLAIN_OUTPUTS: dict[str, tuple] = {
    **SCORE_OUTPUTS,
    "FACES": (None, 3, FACE_SIZE, FACE_SIZE),
    "HEATMAP": (None, FACE_SIZE, FACE_SIZE),
}

FAKE_INDEX = 0
REAL_INDEX = 1
LABEL_FAKE = "FAKE"
LABEL_REAL = "REAL"
PERCENT = 100.0

# The server accepts messages up to INT32_MAX bytes; tritonclient uses the
# same limit by default, but only when no channel arguments are given, so the
# limits are restated here next to the reconnect settings.
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
# Room left for the protobuf framing around the raw video bytes.
REQUEST_OVERHEAD_BYTES = 1 << 20
MAX_VIDEO_BYTES = MAX_GRPC_MESSAGE_BYTES - REQUEST_OVERHEAD_BYTES
# gRPC's own reconnect backoff grows to two minutes; a restarted server should
# be found within seconds so that retried requests reach it.
INITIAL_RECONNECT_BACKOFF_MS = 500
MAX_RECONNECT_BACKOFF_MS = 5_000
# tritonclient's keepalive defaults, restated because channel arguments
# replace them as a whole.
KEEPALIVE_TIME_MS = 2**31 - 1
KEEPALIVE_TIMEOUT_MS = 20_000

GRPC_STATUS_PREFIX = "StatusCode."
#: Status given to errors tritonclient raises without a gRPC status.
UNKNOWN_STATUS = "UNKNOWN"
#: The video's own fault; also given to input refused before sending it.
INVALID_ARGUMENT = "INVALID_ARGUMENT"
#: Status of a server answer that does not match the serving contract.
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
NOT_FOUND = "NOT_FOUND"
PERMISSION_DENIED = "PERMISSION_DENIED"
# Triton answers a call to a protocol restricted with a key (and no key sent)
# with UNAVAILABLE and this message; waiting does not help, so it is reported
# as PERMISSION_DENIED and not retried.
RESTRICTED_PROTOCOL_MESSAGE = "This protocol is restricted"
#: Statuses worth retrying: the server is restarting, overloaded or slow.
RETRYABLE_STATUSES = frozenset({UNAVAILABLE, "DEADLINE_EXCEEDED"})
# Triton (>= 24.07) does not restart a python-backend stub that died: the requests it held or
# is sent fail with INTERNAL and this message until a supervisor (the embedded server's
# watchdog, a Kubernetes readiness probe) loads the model again, so they are retried too.
DEAD_STUB_MESSAGE = re.compile(r"Stub process '[^']+' is not healthy")
# A server that is shutting down unloads its models before it closes its
# ports, answering NOT_FOUND meanwhile; a readiness probe (bounded by this
# deadline) tells that apart from a model that does not exist.
READINESS_PROBE_TIMEOUT_S = 5.0
SCORE_MODEL_PATTERN = re.compile(r"deepfake_(\d+)")
#: Sequence lengths whose models ``health`` checks by name when the server's
#: repository index is restricted (the lengths the project serves).
DEFAULT_HEALTH_FRAMES = (10, 20, 30)
#: Models that serve one sequence length N.
MODEL_TEMPLATES = (
    "deepfake_{frames}",
    "explain_{frames}",
    "verdict_{frames}",
    "faces_{frames}",
    "original_{frames}",
    "preprocess_{frames}",
    "preprocess_original_{frames}",
    "resnext_lstm_{frames}",
    # Live streams: the per-frame classifier of each length.
    "resnext_frame_{frames}",
)
#: Models that serve every length: live streams (``python -m client stream``) and model_info.
SHARED_MODELS = ("stream", "model_info")
# gRPC metadata keys are lowercase ASCII.
METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")

MODEL_STATE_READY = "READY"

#: The model that says which checkpoints the classifiers were exported from
#: (``triton_models/model_info.py``): no inputs, one JSON string out.
MODEL_INFO_MODEL = "model_info"
MODEL_INFO_OUTPUT = "INFO"
DEMO_WARNING = (
    "WARNING: the server's classifiers come from demo checkpoints (random weights: {checkpoints}); "
    "their scores mean nothing. Export the published checkpoints to get real scores."
)

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class ClientError(Exception):
    """A request that failed, with the gRPC status and the server's message.

    Attributes:
        status: gRPC status name without prefix, e.g. ``"INVALID_ARGUMENT"``
            or ``"UNAVAILABLE"``.
        message: the server's message (or the client's, for input rejected
            before sending and for answers that break the serving contract).
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (server side trouble)."""
        if self.status == INTERNAL and DEAD_STUB_MESSAGE.search(self.message) is not None:
            return True
        return self.status in RETRYABLE_STATUSES

    @classmethod
    def from_triton(cls, error: InferenceServerException) -> "ClientError":
        """Converts tritonclient's exception, keeping status and message."""
        status = error.status() or UNKNOWN_STATUS
        if status.startswith(GRPC_STATUS_PREFIX):
            status = status[len(GRPC_STATUS_PREFIX):]
        message = error.message()
        message = message if message is not None else str(error)
        if status == UNAVAILABLE and message.startswith(RESTRICTED_PROTOCOL_MESSAGE):
            status = PERMISSION_DENIED
        return cls(status, message)


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """One face of the video, as ``faces_<N>`` scores it.

    Attributes:
        prob_fake: its faithful score (its crop in the last frame).
        frame_prob_fake: [N] its fake probability in every frame.
        face_boxes: [N, 4] the region cropped in every frame.
        face_found: [N] whether it was detected there (else the nearest frame's box).
        prominence: sum over its frames of sqrt(box area) x confidence (the order of the faces).
    """

    prob_fake: float
    frame_prob_fake: np.ndarray
    face_boxes: np.ndarray
    face_found: np.ndarray
    prominence: float


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """One video's score as returned by ``deepfake_<N>`` (or ``verdict_<N>``).

    Attributes:
        video: name of the video (its path, or the name given for bytes).
        prob_fake: the faithful score: fake probability of the published
            N-frame model.
        logits: (fake, real) logits.
        frame_prob_fake: [N] fake probability of every frame on its own
            (None when the clip's score alone was asked for).
        frame_prob_fake_mean: mean of ``frame_prob_fake`` (None likewise).
        label: ``"REAL"`` when the real logit is larger, else ``"FAKE"``.
        confidence: softmax probability of ``label``, in percent.
        face_boxes: [N, 4] x1, y1, x2, y2 in pixels of the displayed frame.
        face_found: [N] whether a face was detected in each frame.
        frame_times: [N] when each frame is shown, in seconds from the start
            of the video stream (0 for a still image; repeated for the padding
            of a clip shorter than N).
        faces_found: number of frames in which a face was detected.
        frames_decoded: frames the server decoded from the video.
        latency_ms: round trip of the successful request, in milliseconds.
        face_tracks: with ``all_faces``: every face scored, most prominent first (the first is
            the main face, the one the other fields describe); else None.
        max_prob_fake: with ``all_faces``: "is any face fake", the largest over the faces of
            each face's mean frame score where it was detected; else None.
        faces_seen: with ``all_faces``: faces found in the clip, those not scored included.
    """

    video: str
    prob_fake: float
    logits: tuple
    frame_prob_fake: np.ndarray | None
    frame_prob_fake_mean: float | None
    label: str
    confidence: float
    face_boxes: np.ndarray
    face_found: np.ndarray
    frame_times: np.ndarray
    faces_found: int
    frames_decoded: int
    latency_ms: float
    face_tracks: tuple[FaceTrack, ...] | None = field(default=None, kw_only=True)
    max_prob_fake: float | None = field(default=None, kw_only=True)
    faces_seen: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True, eq=False)
class ExplainResult(ScoreResult):
    """A score plus what the classifier saw, from ``explain_<N>``.

    Attributes:
        faces: [N, 3, 112, 112] normalised classifier input (BGR channels).
        heatmap: [N, 112, 112] class activation map of FAKE, 0..1 per frame.
    """

    faces: np.ndarray
    heatmap: np.ndarray


def label_and_confidence(logits) -> tuple[str, float]:
    """Label and confidence as the original application showed them.

    REAL when the real logit is the larger one, else FAKE (the application
    took ``torch.max`` of the softmax, which gives a tie to index 0, FAKE);
    the confidence is that class's softmax probability times 100.

    Args:
        logits: the two logits (fake, real).

    Returns:
        ``("REAL" | "FAKE", confidence in percent)``.
    """
    if len(logits) != len((FAKE_INDEX, REAL_INDEX)):
        raise ValueError(f"expected two logits (fake, real), got {len(logits)}")
    fake, real = float(logits[FAKE_INDEX]), float(logits[REAL_INDEX])
    label = LABEL_REAL if real > fake else LABEL_FAKE
    predicted, other = (real, fake) if label == LABEL_REAL else (fake, real)
    # softmax of the larger logit of two, written so that exp cannot overflow
    probability = 1.0 / (1.0 + math.exp(other - predicted))
    return label, probability * PERCENT


def check_frames(frames) -> int:
    """Returns ``frames`` as a positive int or raises ValueError."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames}")
    return int(frames)


def load_video(video: VideoSource, name: str | None = None) -> tuple[str, np.ndarray]:
    """Reads a video file (or takes its bytes) as the request's UINT8 tensor.

    Args:
        video: path of the video file, or its raw bytes.
        name: name to report; defaults to the path, or ``"<N bytes>"``.

    Returns:
        ``(name, array of shape [1, nbytes])``.

    Raises:
        ClientError: INVALID_ARGUMENT when the file cannot be read, is empty
            or exceeds the gRPC message limit.
    """
    if isinstance(video, (bytes, bytearray, memoryview)):
        data = bytes(video)
        label = name if name is not None else f"<{len(data)} bytes>"
    elif isinstance(video, (str, os.PathLike)):
        label = name if name is not None else os.fspath(video)
        path = Path(video)
        try:
            # Refuse an oversized file before reading it into memory.
            _check_size(label, path.stat().st_size)
            data = path.read_bytes()
        except IsADirectoryError:
            raise ClientError(INVALID_ARGUMENT, f"video '{label}' is a directory") from None
        except OSError as error:
            raise ClientError(
                INVALID_ARGUMENT, f"cannot read video '{label}': {error.strerror or error}"
            ) from None
    else:
        raise TypeError(f"video must be a path or bytes, got {type(video).__name__}")
    _check_size(label, len(data))
    return label, np.frombuffer(data, dtype=np.uint8).reshape(1, -1)


def _check_size(label: str, size: int) -> None:
    if size == 0:
        raise ClientError(INVALID_ARGUMENT, f"video '{label}' is empty (0 bytes)")
    if size > MAX_VIDEO_BYTES:
        raise ClientError(
            INVALID_ARGUMENT,
            f"video '{label}' is {size} bytes, more than the "
            f"{MAX_VIDEO_BYTES} bytes one gRPC request can carry",
        )


def demo_warning(info: Mapping) -> str | None:
    """The warning to show when ``model_info`` says the checkpoints are demo ones, else None."""
    classifiers = info.get("classifiers") or {}
    demo = sorted(entry["checkpoint"] for entry in classifiers.values() if entry.get("demo"))
    if not demo:
        return None
    return DEMO_WARNING.format(checkpoints=", ".join(demo))


def parse_model_info(result) -> dict:
    """The JSON document of a ``model_info`` answer.

    Raises:
        ClientError: INTERNAL when the answer is not the expected JSON object.
    """
    array = result.as_numpy(MODEL_INFO_OUTPUT)
    if array is None or array.size != 1:
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned no single {MODEL_INFO_OUTPUT} string")
    raw = array.reshape(-1)[0]
    try:
        info = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned unreadable JSON: {error}") from None
    if not isinstance(info, dict) or not isinstance(info.get("classifiers"), dict):
        raise ClientError(INTERNAL, f"'{MODEL_INFO_MODEL}' returned no \"classifiers\" object")
    return info


def video_inputs(payload: np.ndarray, outputs: Mapping[str, tuple]):
    """The ``VIDEO`` input and the requested outputs of one request (any tritonclient flavour's classes work alike)."""
    video_input = grpcclient.InferInput(VIDEO_INPUT, list(payload.shape), VIDEO_DATATYPE)
    video_input.set_data_from_numpy(payload)
    return [video_input], [grpcclient.InferRequestedOutput(name) for name in outputs]


def unpack_outputs(model: str, result, outputs: Mapping[str, tuple], frames: int) -> dict[str, np.ndarray]:
    """One video's tensors of an answer, each checked against the serving contract's shape.

    Raises:
        ClientError: INTERNAL when an output is missing or has the wrong shape.
    """
    tensors = {}
    faces: int | None = None
    for output, shape in outputs.items():
        array = result.as_numpy(output)
        if array is None:
            raise ClientError(INTERNAL, f"'{model}' returned no {output} output")
        if FACE_AXIS in shape and faces is None and array.ndim == len(shape) + 1:
            faces = array.shape[1 + shape.index(FACE_AXIS)]
            if faces < 1:
                raise ClientError(INTERNAL, f"'{model}' returned {output} without any face")
        expected = (1, *(frames if dim is None else faces if dim == FACE_AXIS else dim for dim in shape))
        if array.shape != expected:
            raise ClientError(
                INTERNAL,
                f"'{model}' returned {output} with shape {list(array.shape)}, "
                f"expected {list(expected)}",
            )
        tensors[output] = array[0]
    return tensors


def score_result(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> ScoreResult:
    """A :class:`ScoreResult` from the unpacked outputs of ``deepfake_<N>`` or ``verdict_<N>``."""
    return ScoreResult(**_score_fields(video, tensors, latency_ms))


def faces_result(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> ScoreResult:
    """A :class:`ScoreResult` with ``face_tracks`` from the unpacked outputs of ``faces_<N>``."""
    track_scores = tensors["TRACK_PROB_FAKE"].astype(np.float32, copy=False)
    track_frames = tensors["TRACK_FRAME_PROB_FAKE"].astype(np.float32, copy=False)
    max_prob_fake = float(tensors["MAX_PROB_FAKE"][0])
    if not (np.all(np.isfinite(track_scores)) and np.all(np.isfinite(track_frames)) and math.isfinite(max_prob_fake)):
        raise ClientError(INTERNAL, f"server returned non-finite face scores for '{video}'")
    tracks = tuple(
        FaceTrack(prob_fake=float(score), frame_prob_fake=frame_scores, face_boxes=boxes.astype(np.float32, copy=False),
                  face_found=found.astype(bool, copy=False), prominence=float(prominence))
        for score, frame_scores, boxes, found, prominence in zip(
            track_scores, track_frames, tensors["TRACK_BOXES"], tensors["TRACK_FOUND"], tensors["TRACK_PROMINENCE"])
    )
    return ScoreResult(**_score_fields(video, tensors, latency_ms), face_tracks=tracks, max_prob_fake=max_prob_fake,
                       faces_seen=int(tensors["FACES_SEEN"][0]))


def explain_result(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> ExplainResult:
    """An :class:`ExplainResult` from the unpacked outputs of ``explain_<N>``."""
    heatmap = tensors["HEATMAP"].astype(np.float32, copy=False)
    if not np.all(np.isfinite(heatmap)):
        raise ClientError(INTERNAL, "server returned non-finite HEATMAP values")
    return ExplainResult(
        **_score_fields(video, tensors, latency_ms),
        faces=tensors["FACES"].astype(np.float32, copy=False),
        heatmap=heatmap,
    )


def score_request(frame_scores: bool, all_faces: bool, original: bool = False):
    """The model template, outputs and result builder of a ``score`` call (see :meth:`DeepfakeClient.score`).

    Raises:
        ValueError: ``all_faces`` without ``frame_scores``, or ``original`` with either of them.
    """
    if original:
        if all_faces or not frame_scores:
            raise ValueError("original gives the original app's answer (its first face, every frame scored): "
                             "it cannot be combined with all_faces or frame_scores=False")
        return ORIGINAL_MODEL_TEMPLATE, SCORE_OUTPUTS, score_result
    if all_faces:
        if not frame_scores:
            raise ValueError("all_faces scores every frame of every face: it cannot be combined with frame_scores=False")
        return FACES_MODEL_TEMPLATE, FACES_OUTPUTS, faces_result
    if frame_scores:
        return SCORE_MODEL_TEMPLATE, SCORE_OUTPUTS, score_result
    return VERDICT_MODEL_TEMPLATE, VERDICT_OUTPUTS, score_result


def connection_options(url: str, ssl: bool, root_certificates: str | None, private_key: str | None,
                       certificate_chain: str | None, timeout_s: float | None,
                       headers: Mapping[str, str] | None) -> tuple[dict, dict[str, str]]:
    """Checks a client's connection arguments (sync and asyncio clients alike).

    Returns:
        ``(options, headers)``: the keyword arguments of tritonclient's ``InferenceServerClient``
        after the URL (both flavours take the same), and the checked gRPC metadata.

    Raises:
        ValueError: an argument is malformed or a certificate file is unreadable (the message says which).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be 'host:port', got {url!r}")
    if "://" in url:
        raise ValueError(f"url must be 'host:port' without a scheme, got '{url}'")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client key and a client certificate must be given together")
    if not ssl and any(path is not None for path in (root_certificates, private_key, certificate_chain)):
        raise ValueError("certificate files are only used with ssl=True")
    options = {
        "ssl": ssl,
        "root_certificates": _check_pem_file(root_certificates, "root certificate"),
        "private_key": _check_pem_file(private_key, "client key"),
        "certificate_chain": _check_pem_file(certificate_chain, "client certificate"),
        "channel_args": _channel_args(),
    }
    return options, _check_headers(headers)


def _channel_args() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    checked = {}
    for key, value in (headers or {}).items():
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            raise ValueError(
                f"header name {key!r} must be lowercase letters, digits, '-', '_' or '.'"
            )
        if not isinstance(value, str) or not value:
            raise ValueError(f"header {key!r} needs a non-empty string value")
        checked[key] = value
    return checked


def _check_pem_file(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ValueError(f"{flag} file '{path}' does not exist")
    return os.fspath(path)


class DeepfakeClient:
    """Client of the ``deepfake_<N>`` and ``explain_<N>`` ensembles.

    Args:
        url: gRPC address ``host:port`` of the Triton server.
        ssl: use a TLS channel.
        root_certificates: PEM file of the CA certificates (TLS only).
        private_key: PEM file of the client key for mutual TLS.
        certificate_chain: PEM file of the client certificate for mutual TLS.
        timeout_s: deadline of every call in seconds; ``None`` waits forever.
        headers: gRPC metadata sent with every call, e.g. the key of a
            restricted protocol: ``{"triton-grpc-protocol-<key>": value}``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        options, self._headers = connection_options(url, ssl, root_certificates, private_key, certificate_chain,
                                                    timeout_s, headers)
        self._client = grpcclient.InferenceServerClient(url, **options)

    def __enter__(self) -> "DeepfakeClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Closes the gRPC channel; later calls fail."""
        self._client.close()

    def score(
        self,
        video: VideoSource,
        frames: int = DEFAULT_FRAMES,
        *,
        name: str | None = None,
        frame_scores: bool = True,
        all_faces: bool = False,
        original: bool = False,
    ) -> ScoreResult:
        """Scores one video with the N-frame model.

        Args:
            video: path of the video file, or its raw bytes.
            frames: N, the sequence length of the served model.
            name: name reported in the result (default: the path).
            frame_scores: False asks ``verdict_<N>`` for the clip's score alone: the
                classifier then runs on the last frame only (the frame the published
                weights score from), and ``frame_prob_fake`` is None.
            all_faces: True asks ``faces_<N>`` to score every face it follows (up to its
                ``max_faces``): ``face_tracks``, ``max_prob_fake`` and ``faces_seen`` are set,
                the other fields describe the main face as ``deepfake_<N>`` would.
            original: True asks ``original_<N>`` for the original app's answer: its frames, dlib's
                face detector and tight crops (slower: about 0.7 s of one core per 1080p frame).

        Raises:
            ValueError: ``all_faces`` without ``frame_scores``, or ``original`` with either.
            ClientError: the request failed or was rejected.
        """
        template, outputs, make_result = score_request(frame_scores, all_faces, original)
        label, tensors, latency_ms = self._request(template, outputs, video, frames, name)
        return make_result(label, tensors, latency_ms)

    def explain(
        self, video: VideoSource, frames: int = DEFAULT_FRAMES, *, name: str | None = None
    ) -> ExplainResult:
        """Scores one video and returns the face crops and heatmaps as well.

        Args:
            video: path of the video file, or its raw bytes.
            frames: N, the sequence length of the served model.
            name: name reported in the result (default: the path).

        Raises:
            ClientError: the request failed or was rejected.
        """
        label, tensors, latency_ms = self._request(EXPLAIN_MODEL_TEMPLATE, EXPLAIN_OUTPUTS, video, frames, name)
        return explain_result(label, tensors, latency_ms)

    def model_info(self) -> dict:
        """What the served classifiers were exported from (``model_info``; see :func:`demo_warning`).

        Returns:
            ``{"classifiers": {"<N>": {"checkpoint", "checkpoint_accuracy", "sha256",
            "precision", "demo", "export", ...}}, "demo": bool}``.

        Raises:
            ClientError: NOT_FOUND from a server without ``model_info``, or another failure.
        """
        requested = [grpcclient.InferRequestedOutput(MODEL_INFO_OUTPUT)]
        return parse_model_info(self._call(self._client.infer, MODEL_INFO_MODEL, [], outputs=requested))

    def _request(self, template: str, outputs, video: VideoSource, frames: int, name: str | None):
        """Checks ``frames``, reads the video and runs the ``template`` model for N = ``frames``."""
        frames = check_frames(frames)
        label, payload = load_video(video, name)
        tensors, latency_ms = self._infer(template.format(frames=frames), payload, outputs, frames)
        return label, tensors, latency_ms

    def health(self, frames: Sequence[int] = DEFAULT_HEALTH_FRAMES) -> dict:
        """Server liveness, readiness and each model's readiness.

        The models are those of the server's repository index. A server may
        restrict the index to callers holding a key; then the models of each
        length in ``frames`` are asked for by name instead.

        Args:
            frames: sequence lengths to check by name when the index is
                restricted.

        Returns:
            ``{"url", "live", "ready", "models", "models_from", "error"}``:
            ``models`` maps each model to ``{"ready": bool, "versions":
            {version: state}, "reason": str}`` (versions and reason only
            from the index); ``models_from`` is ``"index"`` or ``"names"``;
            ``error`` is ``None``, or why the server could not be asked
            (unreachable, shutting down or too slow: then ``models`` is
            empty and the flags not yet answered are False).

        Raises:
            ClientError: the server answered with an error other than
                being unreachable or too slow.
        """
        lengths = [check_frames(length) for length in frames]
        report = {
            "url": self.url,
            "live": False,
            "ready": False,
            "models": {},
            "models_from": "index",
            "error": None,
        }
        try:
            report["live"] = bool(self._call(self._client.is_server_live))
            report["ready"] = bool(self._call(self._client.is_server_ready))
            try:
                report["models"] = self._models_from_index()
            except ClientError as error:
                if error.status != PERMISSION_DENIED:
                    raise
                report["models_from"] = "names"
                report["models"] = self._models_by_name(lengths)
        except ClientError as error:
            if not error.retryable:
                raise
            report["models"] = {}
            report["error"] = error.message
        return report

    def _models_from_index(self) -> dict[str, dict]:
        models: dict[str, dict] = {}
        for entry in self._call(self._client.get_model_repository_index).models:
            model = models.setdefault(entry.name, {"ready": False, "versions": {}, "reason": ""})
            model["versions"][entry.version] = entry.state
            model["ready"] = model["ready"] or entry.state == MODEL_STATE_READY
            if entry.reason:
                model["reason"] = "; ".join(filter(None, (model["reason"], entry.reason)))
        return models

    def _models_by_name(self, lengths: Sequence[int]) -> dict[str, dict]:
        models = {}
        for length in lengths:
            for template in MODEL_TEMPLATES:
                name = template.format(frames=length)
                ready = bool(self._call(self._client.is_model_ready, name))
                models[name] = {"ready": ready, "versions": {}, "reason": ""}
        for name in SHARED_MODELS:
            models[name] = {"ready": bool(self._call(self._client.is_model_ready, name)), "versions": {}, "reason": ""}
        return models

    def _call(self, method, *args, timeout_s: float | None = None, **kwargs):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return method(*args, headers=self._headers or None, client_timeout=timeout_s, **kwargs)
        except InferenceServerException as error:
            raise ClientError.from_triton(error) from None

    def _explain_not_found(self, error: ClientError) -> ClientError:
        """Tells a restarting server from a model the server does not have.

        Returns:
            UNAVAILABLE (retryable) when the server is not ready, else
            NOT_FOUND, with the sequence lengths served when the server's
            repository index says them.
        """
        probe_s = READINESS_PROBE_TIMEOUT_S
        if self.timeout_s is not None:
            probe_s = min(probe_s, self.timeout_s)
        try:
            ready = self._call(self._client.is_server_ready, timeout_s=probe_s)
        except ClientError as probe_error:
            if probe_error.retryable:
                return ClientError(UNAVAILABLE, f"{error.message} (the server is going down)")
            return error
        if not ready:
            return ClientError(UNAVAILABLE, f"{error.message} (the server is not ready)")
        try:
            index = self._call(self._client.get_model_repository_index, timeout_s=probe_s)
        except ClientError:
            # The lengths only add to the message; the answer is NOT_FOUND either way.
            return error
        served = sorted(
            int(match.group(1))
            for entry in index.models
            if entry.state == MODEL_STATE_READY
            and (match := SCORE_MODEL_PATTERN.fullmatch(entry.name)) is not None
        )
        lengths = ", ".join(map(str, served)) if served else "none"
        return ClientError(NOT_FOUND, f"{error.message}; sequence lengths served: {lengths}")

    def _infer(
        self, model: str, payload: np.ndarray, outputs: dict[str, tuple], frames: int
    ) -> tuple[dict[str, np.ndarray], float]:
        inputs, requested = video_inputs(payload, outputs)
        start = time.perf_counter()
        try:
            result = self._call(self._client.infer, model, inputs, outputs=requested)
        except ClientError as error:
            if error.status == NOT_FOUND:
                raise self._explain_not_found(error) from None
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        return unpack_outputs(model, result, outputs, frames), latency_ms


def _score_fields(video: str, tensors: dict[str, np.ndarray], latency_ms: float) -> dict:
    logits = tuple(float(value) for value in tensors["LOGITS"])
    prob_fake = float(tensors["PROB_FAKE"][0])
    frame_prob_fake = tensors.get("FRAME_PROB_FAKE")
    if frame_prob_fake is not None:
        frame_prob_fake = frame_prob_fake.astype(np.float32, copy=False)
    if not all(math.isfinite(v) for v in (*logits, prob_fake)) or (
        frame_prob_fake is not None and not np.all(np.isfinite(frame_prob_fake))
    ):
        raise ClientError(INTERNAL, f"server returned non-finite scores for '{video}'")
    label, confidence = label_and_confidence(logits)
    face_found = tensors["FACE_FOUND"].astype(bool, copy=False)
    return {
        "video": video,
        "prob_fake": prob_fake,
        "logits": logits,
        "frame_prob_fake": frame_prob_fake,
        "frame_prob_fake_mean": (
            None if frame_prob_fake is None else float(np.mean(frame_prob_fake, dtype=np.float64))
        ),
        "label": label,
        "confidence": confidence,
        "face_boxes": tensors["FACE_BOXES"].astype(np.float32, copy=False),
        "face_found": face_found,
        "frame_times": tensors["FRAME_TIMES"].astype(np.float32, copy=False),
        "faces_found": int(np.count_nonzero(face_found)),
        "frames_decoded": int(tensors["FRAMES_DECODED"][0]),
        "latency_ms": latency_ms,
    }
