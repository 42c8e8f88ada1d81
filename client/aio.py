"""The same client on gRPC asyncio (tritonclient's ``grpc.aio``), for servers such as the web page.

The request, the checks of the answer and the result types are those of :mod:`client.codec` and
:mod:`client.results`, so a video scored here gives exactly what :class:`client.DeepfakeClient`
gives. Create it inside the event loop that will use it (the channel belongs to that loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from contract import DEFAULT_FRAMES, EXPLAIN_OUTPUTS, Kind, Mode, model_name

from .codec import (
    MODEL_INFO_MODEL,
    check_frames,
    check_mode,
    load_video,
    model_info_outputs,
    parse_model_info,
    unpack_outputs,
    video_inputs,
)
from .connection import ConnectedClient
from .errors import NOT_FOUND, ClientError
from .results import ExplainResult, ScoreResult, explain_result, score_result
from .versions import TEMPORAL_NOT_SERVED, check_answered, check_version

#: The ensembles a length needs, by what they are used for (``temporal``: where a trained temporal
#: model is served).
MODEL_KINDS = {"score": Kind.SCORE, "verdict": Kind.VERDICT, "explain": Kind.EXPLAIN, "temporal": Kind.TEMPORAL}


class AsyncDeepfakeClient(ConnectedClient):
    """Client of ``deepfake_<N>`` and the other modes, ``explain_<N>`` and ``model_info`` on asyncio.

    Args: as for :class:`client.DeepfakeClient`.
    """

    CHANNEL = grpcaio.InferenceServerClient

    async def __aenter__(self) -> AsyncDeepfakeClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, method, *args, timeout_s: float | None = None, **kwargs):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await method(*args, headers=self.connection.metadata, client_timeout=timeout_s, **kwargs)
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
        """The lengths whose ensembles are ready, by use (``score``, ``verdict``, ``explain``, ``temporal``).

        Asked by name with ``is_model_ready``, as ``client health`` does where the repository index
        is restricted (both servers restrict it by key).
        """
        asked = [(use, check_frames(length)) for length in lengths for use in MODEL_KINDS]
        answers = await asyncio.gather(
            *(
                self._call(self._client.is_model_ready, model_name(MODEL_KINDS[use], length), timeout_s=timeout_s)
                for use, length in asked
            )
        )
        ready: dict[str, list[int]] = {use: [] for use in MODEL_KINDS}
        for (use, length), answer in zip(asked, answers):
            if answer:
                ready[use].append(length)
        return ready

    async def model_info(self, timeout_s: float | None = None) -> dict:
        """The ``model_info`` document (see :meth:`client.DeepfakeClient.model_info`)."""
        result = await self._call(
            self._client.infer, MODEL_INFO_MODEL, [], outputs=model_info_outputs(), timeout_s=timeout_s
        )
        return parse_model_info(result)

    async def score(
        self,
        video: bytes,
        frames: int = DEFAULT_FRAMES,
        *,
        name: str | None = None,
        mode: Mode = Mode.SCORE,
        version: int | None = None,
    ) -> ScoreResult:
        """Scores one video given as bytes (see :meth:`client.DeepfakeClient.score`)."""
        mode = check_mode(mode)
        label, tensors, latency_ms = await self._request(mode.kind, mode.outputs, video, frames, name, version)
        return score_result(mode, label, tensors, latency_ms)

    async def explain(
        self, video: bytes, frames: int = DEFAULT_FRAMES, *, name: str | None = None, version: int | None = None
    ) -> ExplainResult:
        """Scores one video and returns its face crops and heatmaps (``explain_<N>``)."""
        label, tensors, latency_ms = await self._request(Kind.EXPLAIN, EXPLAIN_OUTPUTS, video, frames, name, version)
        return explain_result(label, tensors, latency_ms)

    async def _request(
        self,
        kind: Kind,
        outputs: Sequence[str],
        video: bytes,
        frames: int,
        name: str | None,
        version: int | None = None,
    ):
        frames = check_frames(frames)
        version = check_version(version)
        if not isinstance(video, (bytes, bytearray, memoryview)):
            raise TypeError(f"video must be bytes here, got {type(video).__name__}")
        label, payload = load_video(video, name)
        model = model_name(kind, frames)
        inputs, requested = video_inputs(payload, outputs, version)
        start = time.perf_counter()
        try:
            result = await self._call(self._client.infer, model, inputs, outputs=requested)
        except ClientError as error:
            if error.status == NOT_FOUND:
                message = (
                    TEMPORAL_NOT_SERVED.format(frames=frames)
                    if kind is Kind.TEMPORAL
                    else f"{error.message}; the server does not serve {model}"
                )
                raise ClientError(NOT_FOUND, message) from None
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        tensors = unpack_outputs(model, result, outputs, frames)
        check_answered(model, version, tensors)
        return label, tensors, latency_ms
