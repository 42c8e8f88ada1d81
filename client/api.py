"""The Python API: :class:`DeepfakeClient`, the detector served by Triton over gRPC.

Only ``tritonclient[grpc]`` and numpy are needed here. One :class:`DeepfakeClient` holds one gRPC
channel and is safe to share between threads, so a batch of videos can be scored concurrently
through it. The request and the checks of the answer are :mod:`client.codec`'s, the result types
:mod:`client.results`', the connection :mod:`client.connection`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from contract import (
    DEFAULT_FRAMES,
    EXPLAIN_OUTPUTS,
    PER_LENGTH_KINDS,
    PREPROCESS_OUTPUTS,
    SERVED_LENGTHS,
    SHARED_KINDS,
    TEMPORAL_KINDS,
    Kind,
    Mode,
    lengths_of,
    model_name,
    parse_model_name,
)

from .codec import (
    MODEL_INFO_MODEL,
    VideoSource,
    check_frames,
    check_mode,
    load_video,
    model_info_outputs,
    parse_model_info,
    unpack_outputs,
    video_inputs,
)
from .connection import ConnectedClient
from .errors import INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE, ClientError
from .results import ExplainResult, ScoreResult, check_not_refused, explain_result, fingerprint_of, score_result
from .versions import TEMPORAL_NOT_SERVED, check_answered, check_version

MODEL_STATE_READY = "READY"
# A server that is shutting down unloads its models before it closes its ports, answering NOT_FOUND
# meanwhile; a readiness probe (bounded by this deadline) tells that apart from a model that does
# not exist.
READINESS_PROBE_TIMEOUT_S = 5.0


class DeepfakeClient(ConnectedClient):
    """Client of the served models: ``deepfake_<N>`` and the other modes, ``explain_<N>``, ``model_info``.

    Args:
        url: gRPC address ``host:port`` of the Triton server, or a whole :class:`client.Connection`.
        **settings: the other fields of :class:`client.Connection` (``ssl``, ``root_certificates``,
            ``private_key``, ``certificate_chain``, ``timeout_s``, ``headers``) when ``url`` is an address.

    Raises:
        ValueError: a malformed setting (see :class:`client.Connection`).
    """

    CHANNEL = grpcclient.InferenceServerClient

    def __enter__(self) -> DeepfakeClient:
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
        mode: Mode = Mode.SCORE,
        version: int | None = None,
    ) -> ScoreResult:
        """Scores one video with the N-frame model of ``mode``.

        Args:
            video: path of the video file, or its raw bytes.
            frames: N, the sequence length of the served model.
            name: name reported in the result (default: the path).
            mode: which model answers (:class:`contract.Mode`): ``SCORE`` (``deepfake_<N>``); ``VERDICT``
                (``verdict_<N>``: the clip's score alone, the classifier on the last frame only, and
                ``frame_prob_fake`` None); ``FACES`` (``faces_<N>``: every face it follows scored,
                ``face_tracks``, ``max_prob_fake`` and ``faces_seen`` set, the other fields describing the
                main face); ``ORIGINAL`` (``original_<N>``: the original app's frames, dlib's face
                detector and tight crops; slower, about 0.7 s of one core per 1080p frame); ``TEMPORAL``
                (``temporal_<N>``: a trained temporal model, where one is served; ``frame_weight`` set).
            version: the classifier version to answer (default: the latest the server serves); the
                result's ``model_version`` and ``checkpoint_sha256`` say which answered either way.

        Raises:
            ValueError: ``frames`` or ``version`` is not a positive integer.
            TypeError: ``mode`` is not a Mode.
            ClientError: the request failed or was rejected (INVALID_ARGUMENT for a version the
                server does not serve; NOT_FOUND for a length, or a temporal model, it does not serve).
        """
        mode = check_mode(mode)
        label, tensors, latency_ms = self._request(mode.kind, mode.outputs, video, frames, name, version)
        return score_result(mode, label, tensors, latency_ms)

    def explain(
        self, video: VideoSource, frames: int = DEFAULT_FRAMES, *, name: str | None = None, version: int | None = None
    ) -> ExplainResult:
        """Scores one video and returns the face crops and heatmaps as well (``explain_<N>``).

        Args:
            video: path of the video file, or its raw bytes.
            frames: N, the sequence length of the served model.
            name: name reported in the result (default: the path).
            version: the classifier version to answer (default: the latest served).

        Raises:
            ValueError: ``frames`` or ``version`` is not a positive integer.
            ClientError: the request failed or was rejected.
        """
        label, tensors, latency_ms = self._request(Kind.EXPLAIN, EXPLAIN_OUTPUTS, video, frames, name, version)
        return explain_result(label, tensors, latency_ms)

    def fingerprint(self, video: VideoSource, frames: int | None = None) -> str:
        """The video's vPDQ fingerprint as the server computes it (JSON), from ``preprocess_<N>``'s
        ``FINGERPRINT`` (its preprocessing also finds the faces: a video without a face is refused).
        The fingerprint does not depend on N; ``frames`` None takes the shortest length served.

        Raises:
            ClientError: the request failed or was rejected, or the server could not fingerprint it.
        """
        if frames is None:
            served = sorted(int(length) for length in self.model_info().get("classifiers", {}))
            if not served:
                raise ClientError(UNAVAILABLE, "the server serves no classifier length to fingerprint with")
            frames = served[0]
        frames = check_frames(frames)
        label, payload = load_video(video, None)
        model = model_name(Kind.PREPROCESS, frames)
        # Every output is asked for (PREPROCESS_OUTPUTS): the server caches this model's answers keyed by
        # its inputs alone, so an answer cut to one output would be what the ensembles get next.
        tensors, _ = self._infer(model, payload, PREPROCESS_OUTPUTS, frames)
        check_not_refused(model, tensors)
        fingerprint = fingerprint_of(tensors)
        if fingerprint is None:
            raise ClientError(INVALID_ARGUMENT, f"the server could not fingerprint {label}")
        return fingerprint

    def model_info(self) -> dict:
        """What the served classifiers were exported from (``model_info``; see :func:`client.codec.demo_warning`).

        Returns:
            ``{"classifiers": {"<N>": {<the latest served version's entry>, "versions": {"<V>":
            {entry}, ...}}}, "temporal": {same shape, where a temporal model is served}, "demo": bool}``;
            an entry has ``model``, ``frames``, ``version``, ``checkpoint``, ``checkpoint_accuracy``,
            ``sha256``, ``precision``, ``demo``, ``lineage``, ``ready``, ``export``
            (:mod:`client.versions` reads it).

        Raises:
            ClientError: NOT_FOUND from a server without ``model_info``, or another failure.
        """
        return parse_model_info(self._call(self._client.infer, MODEL_INFO_MODEL, [], outputs=model_info_outputs()))

    def health(self, frames: Sequence[int] = SERVED_LENGTHS) -> dict:
        """Server liveness, readiness and each model's readiness.

        The models are those of the server's repository index. A server may restrict the index to
        callers holding a key; then the models of each length in ``frames`` are asked for by name.

        Args:
            frames: sequence lengths to check by name when the index is restricted.

        Returns:
            ``{"url", "live", "ready", "models", "models_from", "error"}``: ``models`` maps each
            model to ``{"ready": bool, "versions": {version: state}, "reason": str}`` (versions and
            reason only from the index); ``models_from`` is ``"index"`` or ``"names"``; ``error``
            is ``None``, or why the server could not be asked (unreachable, shutting down or too
            slow: then ``models`` is empty and the flags not yet answered are False).

        Raises:
            ClientError: the server answered with an error other than being unreachable or too slow.
        """
        lengths = [check_frames(length) for length in frames]
        report = {"url": self.url, "live": False, "ready": False, "models": {}, "models_from": "index", "error": None}
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

    def _request(
        self,
        kind: Kind,
        outputs: Sequence[str],
        video: VideoSource,
        frames: int,
        name: str | None,
        version: int | None = None,
    ):
        """Checks ``frames`` and ``version``, reads the video and runs the ``kind`` model for N = ``frames``."""
        frames = check_frames(frames)
        version = check_version(version)
        label, payload = load_video(video, name)
        model = model_name(kind, frames)
        tensors, latency_ms = self._infer(model, payload, outputs, frames, version)
        check_answered(model, version, tensors)
        return label, tensors, latency_ms

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
        """Each model of ``lengths`` asked by name, in the contract's order.

        The temporal models exist only where one was trained and exported, so they are listed only
        when they are ready: a length without one is not a length with a model missing.
        """
        models = {}
        for name, optional in [
            *((model_name(kind, length), kind in TEMPORAL_KINDS) for length in lengths for kind in PER_LENGTH_KINDS),
            *((model_name(kind), False) for kind in SHARED_KINDS),
        ]:
            ready = bool(self._call(self._client.is_model_ready, name))
            if ready or not optional:
                models[name] = {"ready": ready, "versions": {}, "reason": ""}
        return models

    def _call(self, method, *args, timeout_s: float | None = None, **kwargs):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return method(*args, headers=self.connection.metadata, client_timeout=timeout_s, **kwargs)
        except InferenceServerException as error:
            raise ClientError.from_triton(error) from None

    def _explain_not_found(self, error: ClientError, model: str) -> ClientError:
        """Tells a restarting server from a model the server does not have.

        Returns:
            UNAVAILABLE (retryable) when the server is not ready, else NOT_FOUND, with the sequence
            lengths served when the server's repository index says them.
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
        kind, frames = parse_model_name(model) or (None, None)
        if kind is Kind.TEMPORAL:
            return ClientError(NOT_FOUND, TEMPORAL_NOT_SERVED.format(frames=frames))
        try:
            index = self._call(self._client.get_model_repository_index, timeout_s=probe_s)
        except ClientError:
            # The lengths only add to the message; the answer is NOT_FOUND either way.
            return error
        served = lengths_of(Kind.SCORE, (entry.name for entry in index.models if entry.state == MODEL_STATE_READY))
        lengths = ", ".join(map(str, served)) if served else "none"
        return ClientError(NOT_FOUND, f"{error.message}; sequence lengths served: {lengths}")

    def _infer(
        self, model: str, payload: np.ndarray, outputs: Sequence[str], frames: int, version: int | None = None
    ) -> tuple[dict[str, np.ndarray], float]:
        inputs, requested = video_inputs(payload, outputs, version)
        start = time.perf_counter()
        try:
            result = self._call(self._client.infer, model, inputs, outputs=requested)
        except ClientError as error:
            if error.status == NOT_FOUND:
                raise self._explain_not_found(error, model) from None
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        return unpack_outputs(model, result, outputs, frames), latency_ms
