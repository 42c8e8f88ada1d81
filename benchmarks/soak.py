"""Soak test: mixed good and bad uploads at a fixed concurrency, checked answer by answer.

``python -m benchmarks.soak`` (``make soak``) starts the embedded server on the N-frame models
(or uses ``--url``), learns the score of each good clip once, then keeps ``--concurrency``
requests in flight for ``--duration`` seconds (or ``--requests`` in all), drawing from good clips
and from bad inputs that must be refused with INVALID_ARGUMENT naming the problem. It prints:

* wrong answers: a good clip scored differently from its reference (or refused), a bad input
  scored or refused with the wrong status or message;
* lost requests: no answer at all (deadline passed, connection lost, server error);
* the server's resident memory (tritonserver plus its python stubs) after warm-up and at the end,
  and its growth;
* latency percentiles (p50, p95, p99) of good and bad requests, and the throughput.

Exit status 0 when there is no wrong answer, no lost request and the memory grew less than
``--max-rss-growth`` percent; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.server import bench_repository, process_breakdown, process_tree_rss_mb, start_server, video_input
from contract import Kind, model_name
from serve.distribution import PROJECT_ROOT

DEFAULT_DURATION_S = 600.0
DEFAULT_CONCURRENCY = 8
DEFAULT_FRAMES = 10
DEFAULT_BAD_FRACTION = 0.3
DEFAULT_MAX_RSS_GROWTH_PCT = 10.0
DEFAULT_SEED = 0
GOOD_CLIPS = 6
GOOD_CLIP_SIZE = (160, 120)
# A score differing from the clip's own reference by more than this is a wrong answer; the same
# input must give the same number whatever runs beside it (batching safety).
SCORE_ATOL = 1e-5
REQUEST_TIMEOUT_S = 120.0
RSS_INTERVAL_S = 2.0
# Memory is compared between the first and the last samples after warm-up, a median each, so
# one sample taken mid-request does not decide the growth.
RSS_WINDOW = 5
WARMUP_ROUNDS = 1
# Allocator pools (torch's, ONNX Runtime's arena, the stubs' shared memory) grow under concurrent
# load until they hold the largest batch and the largest frames seen; the memory baseline is
# taken after this share of a timed run under full load (at least MIN_LOAD_WARMUP_S), so that
# growth measures what keeps growing, not pools filling once.
LOAD_WARMUP_FRACTION = 0.1
MIN_LOAD_WARMUP_S = 60.0
PERCENTILES = (50, 95, 99)
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
PERCENT = 100.0


@dataclass(frozen=True)
class Upload:
    """One input of the soak mix and the answer it must get."""

    name: str
    data: bytes
    good: bool
    phrase: str = ""


def bad_uploads() -> list[Upload]:
    """Inputs a server must refuse quickly and clearly, from cheap to expensive to reject."""
    from tests import corpus, media  # the generators of test media; imported late, they pull in scikit-image

    clip = media.face_clip(frames=DEFAULT_FRAMES + 2, seed=77)
    rng = np.random.default_rng(DEFAULT_SEED)
    return [
        Upload("random_bytes", rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes(), False, "unsupported input"),
        Upload("text", b"not a video\n" * 100, False, "unsupported input"),
        Upload("hls_playlist", media.hls_playlist("/etc/hostname"), False, "hls playlist"),
        Upload("truncated_mp4", clip[: len(clip) // 3], False, "cannot open the input as mp4"),
        # The media data garbled from its start: the first keyframe is lost, nothing after it decodes.
        Upload(
            "corrupted_mdat",
            corpus.corrupt_box(clip, b"mdat", DEFAULT_SEED, start=0.0, stop=0.75),
            False,
            "no decodable video frame",
        ),
        Upload("huge_png_header", corpus.png_with_header(corpus.HUGE_SIDE, corpus.HUGE_SIDE), False, "max_pixels"),
        Upload("no_face", media.no_face_clip(frames=DEFAULT_FRAMES), False, "no face"),
        Upload("all_black", media.black_clip(frames=DEFAULT_FRAMES), False, "no face"),
    ]


def good_uploads(count: int = GOOD_CLIPS) -> list[Upload]:
    """Face clips of different motion, one JPEG still and one rotated clip."""
    from tests import media

    uploads = [
        Upload(f"face_clip_{i}", media.face_clip(frames=DEFAULT_FRAMES + 2, size=GOOD_CLIP_SIZE, seed=200 + i), True)
        for i in range(count)
    ]
    uploads.append(Upload("still_jpeg", media.still_image("JPEG", size=GOOD_CLIP_SIZE), True))
    uploads.append(Upload("rotated_clip", media.face_clip(frames=DEFAULT_FRAMES, size=GOOD_CLIP_SIZE, rotate=90), True))
    return uploads


@dataclass
class SoakReport:
    """Figures of one soak run (all latencies in milliseconds, memory in MiB)."""

    requests: int = 0
    good: int = 0
    bad: int = 0
    wrong_answers: int = 0
    lost_requests: int = 0
    seconds: float = 0.0
    throughput_rps: float = 0.0
    concurrency: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_growth_pct: float = 0.0
    rss_first_mb: float = 0.0
    rss_warmup_s: float = 0.0
    rss_by_process_mb: dict[str, tuple[float, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lost_reasons: dict[str, int] = field(default_factory=dict)

    def passed(self, max_rss_growth_pct: float) -> bool:
        return self.wrong_answers == 0 and self.lost_requests == 0 and self.rss_growth_pct < max_rss_growth_pct

    def lines(self) -> list[str]:
        """The figures as printed."""
        out = [
            f"requests        {self.requests} ({self.good} good, {self.bad} bad) "
            f"in {self.seconds:.0f} s at concurrency "
            f"{self.concurrency}: {self.throughput_rps:.2f} requests/s",
            f"wrong answers   {self.wrong_answers}",
            f"lost requests   {self.lost_requests}" + (f" {self.lost_reasons}" if self.lost_reasons else ""),
            f"server RSS      {self.rss_start_mb:.0f} MiB after {self.rss_warmup_s:.0f} s of load "
            f"-> {self.rss_end_mb:.0f} MiB "
            f"at the end ({self.rss_growth_pct:+.1f} %), peak {self.rss_peak_mb:.0f} MiB, "
            f"{self.rss_first_mb:.0f} MiB when the load started",
        ]
        for name, (first, last) in sorted(self.rss_by_process_mb.items()):
            out.append(f"  RSS {name:22s} {first:6.0f} -> {last:6.0f} MiB")
        for kind, figures in self.latency_ms.items():
            parts = ", ".join(f"{name} {value:.0f}" for name, value in figures.items())
            out.append(f"latency {kind:7s} {parts} ms")
        out += [f"problem         {problem}" for problem in self.problems[:20]]
        return out


class _RssSampler:
    """Samples a process tree's resident memory in the background: ``(seconds since start, MiB)``."""

    def __init__(self, pid: int | None, interval_s: float = RSS_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        if self.pid is not None:
            self.samples.append((time.monotonic() - self.started, process_tree_rss_mb(self.pid)))

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES} | {"max": float(max(values))}


def references(url: str, model: str, uploads: Sequence[Upload]) -> dict[str, float]:
    """PROB_FAKE of each good upload, scored alone, one at a time.

    Raises:
        RuntimeError: a good upload was not scored (the soak would have nothing to compare with).
    """
    scores = {}
    with grpcclient.InferenceServerClient(url) as client:
        for upload in uploads:
            if not upload.good:
                continue
            try:
                result = client.infer(model, [video_input(upload.data)], client_timeout=REQUEST_TIMEOUT_S)
            except InferenceServerException as error:
                raise RuntimeError(f"the good upload {upload.name} was not scored: {error}") from error
            scores[upload.name] = float(result.as_numpy("PROB_FAKE")[0, 0])
    return scores


def run_soak(
    url: str,
    *,
    frames: int = DEFAULT_FRAMES,
    concurrency: int = DEFAULT_CONCURRENCY,
    duration_s: float | None = DEFAULT_DURATION_S,
    requests: int | None = None,
    bad_fraction: float = DEFAULT_BAD_FRACTION,
    server_pid: int | None = None,
    seed: int = DEFAULT_SEED,
    uploads: Sequence[Upload] | None = None,
    warmup_rounds: int = WARMUP_ROUNDS,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Runs the soak against a running server and returns its figures.

    Args:
        url: gRPC ``host:port``.
        frames: N of the ``deepfake_<N>`` ensemble.
        concurrency: requests in flight at once.
        duration_s: stop sending after this many seconds (None: only ``requests`` bounds the run).
        requests: stop after this many requests in all (None: only ``duration_s`` bounds it).
        bad_fraction: share of requests drawn from the bad inputs.
        server_pid: tritonserver's pid, for its memory (with its stubs); None skips memory figures.
        seed: seed of the mix, so that two runs send the same sequence.
        uploads: the inputs (default: :func:`good_uploads` and :func:`bad_uploads`).
        warmup_rounds: times every input is sent once before the memory baseline (scoring the
            references already warms the good inputs).
        progress: told a line of figures now and then.

    Raises:
        ValueError: neither ``duration_s`` nor ``requests`` is given, or a setting is out of range.
    """
    if duration_s is None and requests is None:
        raise ValueError("give duration_s or requests (or both): the soak must end")
    if concurrency < 1 or not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"concurrency must be >= 1 and bad_fraction within 0..1, got {concurrency}, {bad_fraction}")
    model = model_name(Kind.SCORE, frames)
    uploads = list(uploads) if uploads is not None else good_uploads() + bad_uploads()
    good = [u for u in uploads if u.good]
    bad = [u for u in uploads if not u.good]
    expected = references(url, model, good)

    # Warm-up: every input a few times, so that caches and allocator pools are filled before the
    # memory baseline is taken.
    with grpcclient.InferenceServerClient(url) as client:
        for _ in range(warmup_rounds):
            for upload in uploads:
                try:
                    client.infer(model, [video_input(upload.data)], client_timeout=REQUEST_TIMEOUT_S)
                except InferenceServerException:
                    continue

    rng = random.Random(seed)
    lock = threading.Lock()
    report = SoakReport(concurrency=concurrency)
    latencies: dict[str, list[float]] = {"good": [], "bad": []}
    lost: Counter[str] = Counter()
    issued = 0
    deadline = None if duration_s is None else time.monotonic() + duration_s

    def next_upload() -> Upload | None:
        nonlocal issued
        with lock:
            if (requests is not None and issued >= requests) or (deadline is not None and time.monotonic() >= deadline):
                return None
            issued += 1
            pool = bad if bad and (not good or rng.random() < bad_fraction) else good
            return rng.choice(pool)

    def judge(upload: Upload, outputs: dict[str, np.ndarray] | None, error: InferenceServerException | None) -> str:
        """Empty when the answer is right; else why it is wrong."""
        if upload.good:
            if error is not None:
                return f"{upload.name}: refused: {error.status()} {error.message()}"
            score = float(outputs["PROB_FAKE"][0, 0])
            if abs(score - expected[upload.name]) > SCORE_ATOL:
                return f"{upload.name}: scored {score:.6f}, alone {expected[upload.name]:.6f}"
            return ""
        if error is None:
            return f"{upload.name}: scored instead of refused"
        if str(error.status()) != INVALID_ARGUMENT or upload.phrase not in (error.message() or "").lower():
            return f"{upload.name}: {error.status()} {error.message()}"
        return ""

    def worker() -> None:
        with grpcclient.InferenceServerClient(url) as client:
            while (upload := next_upload()) is not None:
                started = time.monotonic()
                outputs, error = None, None
                try:
                    result = client.infer(model, [video_input(upload.data)], client_timeout=REQUEST_TIMEOUT_S)
                    outputs = {"PROB_FAKE": result.as_numpy("PROB_FAKE")}
                except InferenceServerException as caught:
                    error = caught
                seconds = time.monotonic() - started
                # Anything but an answer from the model (a score or a refusal of the input) means
                # the request is lost, whatever the input was.
                if error is not None and str(error.status()) != INVALID_ARGUMENT:
                    with lock:
                        report.requests += 1
                        report.lost_requests += 1
                        lost[str(error.status()).removeprefix("StatusCode.")] += 1
                        report.problems.append(f"lost: {upload.name}: {error.status()} {error.message()}")
                    continue
                problem = judge(upload, outputs, error)
                with lock:
                    report.requests += 1
                    latencies["good" if upload.good else "bad"].append(seconds * 1000.0)
                    if upload.good:
                        report.good += 1
                    else:
                        report.bad += 1
                    if problem:
                        report.wrong_answers += 1
                        report.problems.append(f"wrong: {problem}")

    started = time.monotonic()
    first_breakdown = process_breakdown(server_pid) if server_pid is not None else {}
    with _RssSampler(server_pid) as sampler, ThreadPoolExecutor(concurrency, thread_name_prefix="soak") as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        while not all(f.done() for f in futures):
            time.sleep(RSS_INTERVAL_S * 5)
            if progress is not None:
                with lock:
                    progress(
                        f"{time.monotonic() - started:5.0f} s: {report.requests} requests, "
                        f"{report.wrong_answers} wrong, {report.lost_requests} lost, "
                        f"RSS {sampler.samples[-1][1] if sampler.samples else 0:.0f} MiB"
                    )
        for future in futures:
            future.result()
    report.seconds = time.monotonic() - started
    report.throughput_rps = report.requests / report.seconds if report.seconds else 0.0
    report.latency_ms = {
        kind: _percentiles(values)
        for kind, values in (
            ("good", latencies["good"]),
            ("bad", latencies["bad"]),
            ("all", latencies["good"] + latencies["bad"]),
        )
        if values
    }
    report.lost_reasons = dict(lost)
    if sampler.samples:
        _memory_figures(report, sampler.samples, duration_s)
        last_breakdown = process_breakdown(server_pid) if server_pid is not None else {}
        report.rss_by_process_mb = {
            name: (first_breakdown.get(name, 0.0), last_breakdown.get(name, 0.0))
            for name in first_breakdown.keys() | last_breakdown.keys()
        }
    return report


def _memory_figures(report: SoakReport, samples: list[tuple[float, float]], duration_s: float | None) -> None:
    """Fills the memory figures; the baseline follows the load warm-up (see LOAD_WARMUP_FRACTION).

    A run bounded by a request count only (no duration) takes its baseline after the first
    third of its samples.
    """
    values = [mib for _, mib in samples]
    if duration_s is not None:
        warmup_s = min(max(LOAD_WARMUP_FRACTION * duration_s, MIN_LOAD_WARMUP_S), duration_s / 2)
        after = [i for i, (seconds, _) in enumerate(samples) if seconds >= warmup_s]
        start = after[0] if after else len(samples) // 3
    else:
        start = len(samples) // 3
    window = min(RSS_WINDOW, max(1, (len(samples) - start) // 3))
    report.rss_first_mb = values[0]
    report.rss_warmup_s = samples[start][0]
    report.rss_start_mb = statistics.median(values[start : start + window])
    report.rss_end_mb = statistics.median(values[-window:])
    report.rss_peak_mb = max(values)
    report.rss_growth_pct = (report.rss_end_mb - report.rss_start_mb) / report.rss_start_mb * PERCENT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url", help="gRPC host:port of a running server; by default one is started on the N-frame models"
    )
    parser.add_argument("--server-pid", type=int, help="pid of that server's tritonserver, for its memory figures")
    parser.add_argument(
        "--model-repository", type=Path, default=PROJECT_ROOT / "model_repository", help="repository to serve"
    )
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="N of the deepfake_<N> ensemble")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds of load")
    parser.add_argument(
        "--requests", type=int, help="stop after this many requests (with --duration, whichever comes first)"
    )
    parser.add_argument(
        "--bad-fraction", type=float, default=DEFAULT_BAD_FRACTION, help="share of bad inputs in the mix"
    )
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=DEFAULT_MAX_RSS_GROWTH_PCT,
        help="percent of memory growth that fails the run",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the request mix")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or not 0.0 <= args.bad_fraction <= 1.0:
        parser.error("--concurrency must be >= 1, --duration > 0 and --bad-fraction within 0..1")
    server = None
    scratch = tempfile.TemporaryDirectory(prefix="soak-")
    try:
        url, pid = args.url, args.server_pid
        if url is None:
            repository = bench_repository(args.model_repository, args.frames, Path(scratch.name) / "repository")
            print(f"starting the embedded server on the {args.frames}-frame models ...", flush=True)
            server = start_server(repository, Path(scratch.name) / "tritonserver.log")
            url, pid = server.grpc_url, server.pid
        report = run_soak(
            url,
            frames=args.frames,
            concurrency=args.concurrency,
            duration_s=args.duration,
            requests=args.requests,
            bad_fraction=args.bad_fraction,
            server_pid=pid,
            seed=args.seed,
            progress=lambda line: print(line, flush=True),
        )
    finally:
        if server is not None:
            server.stop()
        scratch.cleanup()
    for line in report.lines():
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    passed = report.passed(args.max_rss_growth)
    print("PASS" if passed else f"FAIL (wrong answers, lost requests, or memory growth >= {args.max_rss_growth:g} %)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
