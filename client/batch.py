"""Scoring many videos: JSON records, a resumable results file, retries.

The results file holds one JSON object per line, one line per video with a
final outcome: a score, or an error that is the video's own fault (the
server answered INVALID_ARGUMENT). A video that failed for any other reason
(server unreachable after every retry, model missing, server fault) gets no
line, so running the same command again scores it, and nothing else.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from contract import (
    CHECKPOINT_SHA256_KEY,
    DECISION_KEY,
    KNOWN_MATCH_KEY,
    MODEL_KEY,
    MODEL_VERSION_KEY,
    OPERATING_POINT_KEY,
    PROB_FAKE_CALIBRATED_KEY,
    Mode,
    json_keys,
)

from .errors import INVALID_ARGUMENT, RETRYABLE_STATUSES, ClientError
from .results import ScoreResult

BOX_DECIMALS = 2

DEFAULT_RETRIES = 6
BACKOFF_BASE_S = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 30.0
#: Each delay is drawn from [(1 - JITTER) * nominal, nominal] so that
#: concurrent workers do not all come back to a restarted server at once.
BACKOFF_JITTER = 0.5

LATENCY_DECIMALS = 3
TAIL_CHUNK_BYTES = 1 << 16


def result_record(result: ScoreResult) -> dict:
    """The JSON line of a scored video: the keys of ``contract.json_keys`` of the mode that answered.

    ``SCORE_JSON_KEYS``; ``FACES_JSON_KEYS`` with face tracks, ``TEMPORAL_JSON_KEYS`` with frame weights.
    """
    return {
        "video": result.video,
        "prob_fake": result.prob_fake,
        "frame_prob_fake_mean": result.frame_prob_fake_mean,
        "label": result.label,
        "confidence": result.confidence,
        "faces_found": result.faces_found,
        "frames_decoded": result.frames_decoded,
        "latency_ms": round(result.latency_ms, LATENCY_DECIMALS),
        "error": None,
        MODEL_VERSION_KEY: result.model_version,
        CHECKPOINT_SHA256_KEY: result.checkpoint_sha256,
        DECISION_KEY: result.decision,
        PROB_FAKE_CALIBRATED_KEY: result.prob_fake_calibrated,
        OPERATING_POINT_KEY: result.operating_point,
        KNOWN_MATCH_KEY: result.known_match,
        **({} if result.frame_weight is None else {"frame_weight": [float(v) for v in result.frame_weight]}),
        **(
            {}
            if result.face_tracks is None
            else {
                "max_prob_fake": result.max_prob_fake,
                "faces_seen": result.faces_seen,
                "face_tracks": [
                    {
                        "prob_fake": track.prob_fake,
                        "frame_prob_fake": [float(v) for v in track.frame_prob_fake],
                        "face_boxes": [[round(float(v), BOX_DECIMALS) for v in box] for box in track.face_boxes],
                        "face_found": [bool(v) for v in track.face_found],
                        "prominence": track.prominence,
                    }
                    for track in result.face_tracks
                ],
            }
        ),
    }


def error_record(video: str, message: str, mode: Mode = Mode.SCORE) -> dict:
    """The JSON line of a video that could not be scored: the keys of ``mode``'s lines, null."""
    record = dict.fromkeys(json_keys(mode))
    record["video"] = video
    record["error"] = message
    return record


def backoff_delays(
    retries: int,
    base_s: float = BACKOFF_BASE_S,
    factor: float = BACKOFF_FACTOR,
    max_s: float = BACKOFF_MAX_S,
) -> list[float]:
    """Nominal waits before each retry: ``base_s * factor**i``, capped at ``max_s``."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    return [min(max_s, base_s * factor**attempt) for attempt in range(retries)]


def jittered(delay_s: float, rng: random.Random, jitter: float = BACKOFF_JITTER) -> float:
    """A wait drawn uniformly from ``[(1 - jitter) * delay_s, delay_s]``."""
    return delay_s * (1.0 - jitter * rng.random())


def call_with_retries(
    call: Callable[[], ScoreResult],
    delays: Sequence[float],
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[ClientError, int, float], None] | None = None,
) -> ScoreResult:
    """Runs ``call``, retrying retryable ClientErrors after each delay.

    Args:
        call: the request.
        delays: nominal wait before each retry; its length bounds the retries.
        sleep: how to wait (a test passes its own clock).
        rng: source of jitter; ``None`` waits exactly the nominal delays.
        on_retry: told ``(error, retry number, wait)`` before each wait.

    Raises:
        ClientError: a non-retryable error at once, or the last retryable
            one when the retries are used up.
    """
    attempt = 0
    while True:
        try:
            return call()
        except ClientError as error:
            if not error.retryable or attempt >= len(delays):
                raise
            wait_s = delays[attempt] if rng is None else jittered(delays[attempt], rng)
            attempt += 1
            if on_retry is not None:
                on_retry(error, attempt, wait_s)
            sleep(wait_s)


def video_key(video: str) -> str:
    """How a video is recognised in a results file: its normalised path."""
    return os.path.normpath(video)


def unique_videos(videos: Iterable[str]) -> list[str]:
    """The videos in order, each once (``a.mp4`` and ``./a.mp4`` are one)."""
    seen: set[str] = set()
    unique = []
    for video in videos:
        key = video_key(video)
        if key not in seen:
            seen.add(key)
            unique.append(video)
    return unique


def read_results(path: str | os.PathLike) -> dict[str, dict]:
    """Records of a results file by video key; an absent file has none.

    A last line without its newline is what an interrupted write leaves; it
    is ignored here and cut off by :class:`ResultsFile` before appending.

    Raises:
        ValueError: a complete line is not a JSON object with a ``video``.
    """
    path = Path(path)
    if not path.exists():
        return {}
    records: dict[str, dict] = {}
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.endswith(b"\n"):
                break
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from None
            if not isinstance(record, dict) or not isinstance(record.get("video"), str):
                raise ValueError(f"{path}: line {number} has no 'video' name")
            records.setdefault(video_key(record["video"]), record)
    return records


def other_models(records: dict[str, dict], model: str) -> list[str | None]:
    """The models other than ``model`` that a results file's lines name, sorted; None for lines naming none.

    A resumed run refuses a file with any: it would mix the answers of two modes or lengths.
    """
    return sorted({record.get(MODEL_KEY) for record in records.values()} - {model}, key=str)


def cut_partial_line(path: str | os.PathLike) -> int:
    """Removes an unterminated last line; returns how many bytes were cut."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as stream:
        size = stream.seek(0, os.SEEK_END)
        end = size
        # Scan backwards so that a long results file is not read whole.
        while end > 0:
            start = max(0, end - TAIL_CHUNK_BYTES)
            stream.seek(start)
            chunk = stream.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            stream.truncate(end)
        return size - end


class ResultsFile:
    """Appends JSON lines durably, repairing what an earlier crash left.

    Each record is written as one complete line, flushed and synced before
    the next video counts as done; a half line left by a crash during such a
    write is cut off when the file is opened again.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.cut_bytes = cut_partial_line(self.path)
        self._stream = self.path.open("a", encoding="utf-8")

    def append(self, record: dict) -> None:
        """Writes one record as one line and makes it durable."""
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass(frozen=True)
class Outcome:
    """What became of one video in a batch.

    Attributes:
        video: the video as given.
        record: its JSON line.
        final: whether the outcome belongs in the results file (a score, or
            an error that is the video's own fault).
        status: gRPC status of the error, ``None`` when scored.
    """

    video: str
    record: dict
    final: bool = True
    status: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the video was scored."""
        return self.record["error"] is None

    @property
    def server_gone(self) -> bool:
        """Whether the server stayed unreachable through every retry."""
        return self.status in RETRYABLE_STATUSES


def score_one(
    score: Callable[[str], ScoreResult],
    video: str,
    delays: Sequence[float],
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[str, ClientError, int, float], None] | None = None,
    to_record: Callable[[ScoreResult], dict] = result_record,
    mode: Mode = Mode.SCORE,
) -> Outcome:
    """Scores one video with retries and turns every failure into an Outcome.

    ``to_record`` turns a score into its record (default: the ``score --json`` line); an error's
    record has the keys of ``mode``'s lines.
    """

    def report_retry(error: ClientError, attempt: int, wait_s: float) -> None:
        if on_retry is not None:
            on_retry(video, error, attempt, wait_s)

    try:
        result = call_with_retries(lambda: score(video), delays, sleep=sleep, rng=rng, on_retry=report_retry)
    except ClientError as error:
        return Outcome(
            video,
            error_record(video, error.message, mode),
            final=error.status == INVALID_ARGUMENT,
            status=error.status,
        )
    return Outcome(video, to_record(result))


class BatchStopped(Exception):
    """Ends a worker's retry wait once the batch has been left."""


def run_batch(
    score: Callable[[str], ScoreResult],
    videos: Sequence[str],
    *,
    concurrency: int = 1,
    delays: Sequence[float] = (),
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[str, ClientError, int, float], None] | None = None,
    to_record: Callable[[ScoreResult], dict] = result_record,
    mode: Mode = Mode.SCORE,
) -> Iterator[Outcome]:
    """Scores videos with up to ``concurrency`` requests in flight.

    Outcomes are yielded in the order they finish, in the caller's thread,
    so the caller alone writes output. Videos are submitted only as workers
    free up. Leaving the loop early (break, Ctrl-C) submits nothing more,
    wakes workers waiting to retry so that they give up, and does not wait
    for requests in flight: closing the client cancels those.

    Args:
        score: scores one video (raises ClientError).
        videos: the videos, each once.
        concurrency: requests in flight at once.
        delays: nominal wait before each retry of a retryable error.
        sleep: how to wait between retries; by default a wait that ends
            early when the batch is left.
        rng: source of jitter for the waits; ``None`` waits exactly.
        on_retry: told ``(video, error, retry number, wait)`` before a wait.
        to_record: turns a score into its record (default: the ``score --json``
            line); an error's record is :func:`error_record`'s either way.
        mode: the mode ``score`` asks, for the keys of an error's record.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    left = threading.Event()

    def wait_unless_left(seconds: float) -> None:
        if left.wait(seconds):
            raise BatchStopped("the batch was left")

    pause = wait_unless_left if sleep is None else sleep
    pending_videos = iter(videos)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="score")
    in_flight: set[Future] = set()

    def submit_next() -> None:
        video = next(pending_videos, None)
        if video is not None:
            in_flight.add(
                pool.submit(
                    score_one,
                    score,
                    video,
                    delays,
                    sleep=pause,
                    rng=rng,
                    on_retry=on_retry,
                    to_record=to_record,
                    mode=mode,
                )
            )

    try:
        for _ in range(concurrency):
            submit_next()
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight.discard(future)
                yield future.result()
                submit_next()
    finally:
        left.set()
        pool.shutdown(wait=False, cancel_futures=True)
