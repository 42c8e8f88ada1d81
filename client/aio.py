"""The same client on gRPC asyncio (tritonclient's ``grpc.aio``), for servers such as the web page.

The request, the checks of the answer and the result types are those of :mod:`client.api`, so a
video scored here gives exactly what :class:`client.DeepfakeClient` gives. Create it inside the
event loop that will use it (the channel belongs to that loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from .api import (
    DEFAULT_FRAMES,
    DEFAULT_URL,
    EXPLAIN_MODEL_TEMPLATE,
    EXPLAIN_OUTPUTS,
    MODEL_INFO_MODEL,
    MODEL_INFO_OUTPUT,
    NOT_FOUND,
    SCORE_MODEL_TEMPLATE,
    VERDICT_MODEL_TEMPLATE,
    ClientError,
    ExplainResult,
    ScoreResult,
    check_frames,
    connection_options,
    explain_result,
    load_video,
    parse_model_info,
    score_request,
    unpack_outputs,
    video_inputs,
)

#: The ensembles a length needs, by what they are used for.
MODEL_KINDS = {"score": SCORE_MODEL_TEMPLATE, "verdict": VERDICT_MODEL_TEMPLATE, "explain": EXPLAIN_MODEL_TEMPLATE}


class AsyncDeepfakeClient:
    """Client of ``deepfake_<N>``, ``verdict_<N>``, ``explain_<N>`` and ``model_info`` on asyncio.

    Args: as for :class:`client.DeepfakeClient`.
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
        self._client = grpcaio.InferenceServerClient(url, **options)

    async def __aenter__(self) -> "AsyncDeepfakeClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, method, *args, timeout_s: float | None = None, **kwargs):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await method(*args, headers=self._headers or None, client_timeout=timeout_s, **kwargs)
        except InferenceServerException as error:
            raise ClientError.from_triton(error) from None

    async def server_ready(self, timeout_s: float | None = None) -> tuple[bool, bool]:
        """``(live, ready)`` of the server.

        Raises:
            ClientError: the server could not be asked (UNAVAILABLE when unreachable).
        """
        live = bool(await self._call(self._client.is_server_live, timeout_s=timeout_s))
        ready = bool(await self._call(self._client.is_server_ready, timeout_s=timeout_s))
        return live, ready

    async def ready_lengths(self, lengths: Sequence[int], timeout_s: float | None = None) -> dict[str, list[int]]:
        """The lengths whose ensembles are ready, by kind (``score``, ``verdict``, ``explain``).

        Asked by name with ``is_model_ready``, as ``client health`` does where the repository
        index is restricted (both servers restrict it by key).
        """
        asked = [(kind, check_frames(length)) for length in lengths for kind in MODEL_KINDS]
        answers = await asyncio.gather(*(
            self._call(self._client.is_model_ready, MODEL_KINDS[kind].format(frames=length), timeout_s=timeout_s)
            for kind, length in asked
        ))
        ready: dict[str, list[int]] = {kind: [] for kind in MODEL_KINDS}
        for (kind, length), answer in zip(asked, answers):
            if answer:
                ready[kind].append(length)
        return ready

    async def model_info(self, timeout_s: float | None = None) -> dict:
        """The ``model_info`` document (see :meth:`client.DeepfakeClient.model_info`)."""
        requested = [grpcaio.InferRequestedOutput(MODEL_INFO_OUTPUT)]
        result = await self._call(self._client.infer, MODEL_INFO_MODEL, [], outputs=requested, timeout_s=timeout_s)
        return parse_model_info(result)

    async def score(
        self, video: bytes, frames: int = DEFAULT_FRAMES, *, name: str | None = None, frame_scores: bool = True,
        all_faces: bool = False, original: bool = False,
    ) -> ScoreResult:
        """Scores one video given as bytes (see :meth:`client.DeepfakeClient.score`)."""
        template, outputs, make_result = score_request(frame_scores, all_faces, original)
        label, tensors, latency_ms = await self._request(template, outputs, video, frames, name)
        return make_result(label, tensors, latency_ms)

    async def explain(self, video: bytes, frames: int = DEFAULT_FRAMES, *, name: str | None = None) -> ExplainResult:
        """Scores one video and returns its face crops and heatmaps (``explain_<N>``)."""
        label, tensors, latency_ms = await self._request(EXPLAIN_MODEL_TEMPLATE, EXPLAIN_OUTPUTS, video, frames, name)
        return explain_result(label, tensors, latency_ms)

    async def _request(self, template: str, outputs, video: bytes, frames: int, name: str | None):
        frames = check_frames(frames)
        if not isinstance(video, (bytes, bytearray, memoryview)):
            raise TypeError(f"video must be bytes here, got {type(video).__name__}")
        label, payload = load_video(video, name)
        model = template.format(frames=frames)
        inputs, requested = video_inputs(payload, outputs)
        start = time.perf_counter()
        try:
            result = await self._call(self._client.infer, model, inputs, outputs=requested)
        except ClientError as error:
            if error.status == NOT_FOUND:
                raise ClientError(NOT_FOUND, f"{error.message}; the server does not serve {model}") from None
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        return label, unpack_outputs(model, result, outputs, frames), latency_ms
