"""The served crops: each video's faces from the running server's ``preprocess_<N>``, cached on disk.

Training must see exactly what serving sees, so the crops are not made here: the video's bytes go
to the server over gRPC, as a client's would, and its ``FACES`` (float32 ``[N, 3, 112, 112]``,
normalised, BGR: what the classifier reads) and ``FACE_FOUND`` come back. They are cached as
``<cache>/crops/<settings>/<sha256 of the video>.npz``, where ``<settings>`` is the sha256 of the
served model's name and its config's ``parameters`` (read from the server with the model-config
call, as canonical JSON): a second run, a resumed run, or a run with another head on the same set
asks the server nothing, and a server with other preprocessing settings gets a cache of its own.
What a key covers is written beside the files (``settings.json``).

A video the server refuses (INVALID_ARGUMENT: no face, damaged, unreadable) is left out with the
server's reason; the refusal is cached too, except one for the decoding time budget, which depends
on the server's load. A failure of the server itself (UNAVAILABLE after the retries, INTERNAL)
stops the run.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.api import DeepfakeClient
from client.batch import backoff_delays, call_with_retries
from client.codec import load_video, unpack_outputs, video_inputs
from client.errors import INVALID_ARGUMENT, NOT_FOUND, ClientError
from client.results import check_not_refused
from contract import PREPROCESS_OUTPUTS, REFUSAL_INPUT, Exit, Kind, model_name

from .errors import TrainError
from .files import canonical_json, read_json, sha256_text, write_atomic, write_json_atomic

FACES = "FACES"
FACE_FOUND = "FACE_FOUND"
CROP_OUTPUTS = (FACES, FACE_FOUND)
CROPS_FOLDER = "crops"
SETTINGS_FILE = "settings.json"
CROP_SUFFIX = ".npz"
REFUSED_SUFFIX = ".refused.json"
#: Length of the settings hash in the cache's folder name.
SETTINGS_KEY_CHARS = 16
#: A refusal naming this limit depends on the server's load at the time: it is not cached.
TIME_BUDGET_LIMIT = "decode_timeout_s"


@dataclass(frozen=True)
class PreprocessSettings:
    """The served preprocessing: the model's name and its config's parameters (strings)."""

    model: str
    parameters: dict[str, str]

    def as_json(self) -> dict:
        return {"model": self.model, "parameters": dict(sorted(self.parameters.items()))}

    @property
    def sha256(self) -> str:
        return sha256_text(canonical_json(self.as_json()))


class PreprocessClient(DeepfakeClient):
    """The server's ``preprocess_<N>``: a video's bytes to its face crops, and the model's settings."""

    def preprocess_settings(self, frames: int) -> PreprocessSettings:
        """The served ``preprocess_<N>``'s parameters, through the model-config call.

        Raises:
            ClientError: the server has no such model (NOT_FOUND) or failed.
        """
        name = model_name(Kind.PREPROCESS, frames)
        answer = self._call(self._client.get_model_config, name, as_json=True)
        parameters = answer.get("config", {}).get("parameters", {})
        return PreprocessSettings(
            name, {key: str(value.get("string_value", "")) for key, value in sorted(parameters.items())}
        )

    def crops(self, data: bytes, frames: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(FACES float32 [N, 3, 112, 112], FACE_FOUND bool [N])`` of one video.

        Raises:
            ClientError: INVALID_ARGUMENT when the server refuses the video, else the failure.
        """
        model = model_name(Kind.PREPROCESS, frames)
        _, payload = load_video(data, name)
        # Every output is asked for: the server caches preprocess_<N>'s answers keyed by its inputs
        # alone, so an answer cut to a few outputs would be what the next caller gets.
        inputs, requested = video_inputs(payload, PREPROCESS_OUTPUTS)
        result = self._call(self._client.infer, model, inputs, outputs=requested)
        tensors = unpack_outputs(model, result, (*CROP_OUTPUTS, REFUSAL_INPUT), frames)
        check_not_refused(model, tensors)
        return tensors[FACES].astype(np.float32, copy=False), tensors[FACE_FOUND].astype(bool, copy=False)


class CropCache:
    """``<root>/crops/<settings sha256[:16]>/``: one ``.npz`` per video content, or its refusal."""

    def __init__(self, root: Path, settings: PreprocessSettings) -> None:
        self.settings = settings
        self.folder = Path(root) / CROPS_FOLDER / settings.sha256[:SETTINGS_KEY_CHARS]
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.folder / SETTINGS_FILE
        if not settings_file.is_file():
            write_json_atomic(settings_file, {**settings.as_json(), "sha256": settings.sha256})

    def key(self, sha256: str) -> str:
        """The name crops of this content get everywhere (the features cache uses it too)."""
        return f"{self.settings.sha256[:SETTINGS_KEY_CHARS]}-{sha256}"

    def path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}{CROP_SUFFIX}"

    def refusal(self, sha256: str) -> str | None:
        """The cached reason the server refused this content, or None."""
        path = self.folder / f"{sha256}{REFUSED_SUFFIX}"
        if not path.is_file():
            return None
        return str(read_json(path)["reason"])

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file() or self.refusal(sha256) is not None

    def store(self, sha256: str, faces: np.ndarray, found: np.ndarray) -> None:
        def write(handle) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, faces=faces, found=found)
            handle.write(buffer.getvalue())

        write_atomic(self.path(sha256), write)

    def store_refusal(self, sha256: str, reason: str) -> None:
        if TIME_BUDGET_LIMIT not in reason:
            write_json_atomic(self.folder / f"{sha256}{REFUSED_SUFFIX}", {"reason": reason})

    def load(self, sha256: str) -> tuple[np.ndarray, np.ndarray]:
        """``(faces, found)`` of cached content."""
        with np.load(self.path(sha256), allow_pickle=False) as stored:
            return stored["faces"], stored["found"]


@dataclass(frozen=True)
class CropRequest:
    """One video to preprocess: its content hash, a name for messages, and how to get its bytes."""

    sha256: str
    name: str
    load: Callable[[], bytes]


@dataclass
class CropStats:
    """What the server was asked: preprocessing calls made, cache hits, refusals."""

    calls: int = 0
    cache_hits: int = 0
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, calls: int = 0, hits: int = 0, refused: int = 0) -> None:
        with self._lock:
            self.calls += calls
            self.cache_hits += hits
            self.refused += refused

    def as_json(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "refused": self.refused}


def fetch_crops(
    client: PreprocessClient,
    cache: CropCache,
    requests: Sequence[CropRequest],
    frames: int,
    *,
    concurrency: int,
    retries: int,
    stats: CropStats,
    seed: int = 0,
    on_done: Callable[[CropRequest, str | None], None] | None = None,
) -> dict[str, str | None]:
    """Makes sure every request's crops (or refusal) are in the cache.

    Args:
        client: the server.
        cache: where crops go.
        requests: the videos; those already cached are not sent.
        frames: N.
        concurrency: requests in flight at once.
        retries: retries of a request that failed with a retryable status, with backoff.
        stats: counts calls, hits and refusals.
        seed: the retry jitter's seed.
        on_done: told each request and its refusal (None when it has crops) as it finishes.

    Returns:
        sha256 -> None (crops cached) or the server's reason for refusing it.

    Raises:
        TrainError: the server failed (exit status 1) or has no ``preprocess_<N>`` (2).
    """
    outcome: dict[str, str | None] = {}
    pending: list[CropRequest] = []
    seen: set[str] = set()
    for request in requests:
        if request.sha256 in seen:
            continue
        seen.add(request.sha256)
        if cache.has(request.sha256):
            outcome[request.sha256] = cache.refusal(request.sha256)
            stats.add(hits=1)
            if on_done is not None:
                on_done(request, outcome[request.sha256])
        else:
            pending.append(request)
    delays = backoff_delays(retries)
    jitter = random.Random(seed)
    lock = threading.Lock()

    def work(request: CropRequest) -> str | None:
        with lock:
            rng = random.Random(jitter.random())
        try:
            faces, found = call_with_retries(
                lambda: client.crops(request.load(), frames, request.name), delays, rng=rng
            )
        except ClientError as error:
            stats.add(calls=1)
            if error.status == INVALID_ARGUMENT:
                stats.add(refused=1)
                cache.store_refusal(request.sha256, error.message)
                return error.message
            if error.status == NOT_FOUND:
                raise TrainError(
                    f"the server at {client.url} has no {model_name(Kind.PREPROCESS, frames)}: serve a repository "
                    f"with that length, or give the --frames it serves ({error.message})"
                ) from None
            raise TrainError(
                f"preprocessing {request.name} failed on the server: {error}", status=Exit.FAILED
            ) from None
        stats.add(calls=1)
        cache.store(request.sha256, faces, found)
        return None

    if pending:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="preprocess") as pool:
            futures: dict[Future, CropRequest] = {pool.submit(work, request): request for request in pending}
            try:
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for future in done:
                        request = futures[future]
                        outcome[request.sha256] = future.result()
                        if on_done is not None:
                            on_done(request, outcome[request.sha256])
            finally:
                for future in futures:
                    future.cancel()
    return outcome
