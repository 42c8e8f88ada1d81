"""perf_analyzer (tritonclient 2.51) against a running server over gRPC, CSV kept and parsed."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Milliseconds per microsecond: perf_analyzer's CSV gives latencies in microseconds.
_US_PER_MS = 1000.0
# perf_analyzer on top of its own measurement windows: start-up, warm-up, connection set-up.
_PROCESS_SLACK_S = 120.0
# Upper bound of one end-to-end request on a busy 2-core machine, for the count-window time-out.
_SLOW_REQUEST_S = 30.0


class PerfAnalyzerError(Exception):
    """perf_analyzer is missing, failed or wrote nothing usable; the message says which."""


@dataclass(frozen=True)
class PerfPoint:
    """One concurrency level as perf_analyzer measured it (times in milliseconds).

    Attributes:
        concurrency: Requests kept in flight.
        throughput: Inferences per second.
        p50_ms, p90_ms, p95_ms, p99_ms, avg_ms: Client-side latency.
        queue_ms: Average time requests waited in the server's queues.
        compute_ms: Average server compute (input + infer + output).
        requests: Requests completed in the measured windows (0 when the console output was
            not available to count them).
    """

    concurrency: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    queue_ms: float
    compute_ms: float
    requests: int = 0


@dataclass(frozen=True)
class PerfSettings:
    """How one perf_analyzer sweep measures.

    A level is measured in windows until 3 consecutive ones agree within ``stability_percent``
    (or ``max_trials`` windows have passed); the figures are those of the last 3 windows.

    Attributes:
        concurrency: (first, last) levels, every level in between is measured.
        window_ms: Length of one measurement window (time windows), or None to count requests.
        window_requests: With ``window_ms`` None: completed requests per window (count windows,
            the robust choice when one request takes seconds).
        max_trials: Most windows per level before it gives up on stability.
        stability_percent: Allowed spread of throughput and latency over 3 windows.
    """

    concurrency: tuple[int, int]
    window_ms: int | None
    max_trials: int
    stability_percent: int
    window_requests: int = 0

    def __post_init__(self) -> None:
        if self.window_ms is None and self.window_requests < 1:
            raise ValueError("count windows need window_requests >= 1")

    def worst_case_s(self) -> float:
        levels = self.concurrency[1] - self.concurrency[0] + 1
        window_s = self.window_ms / 1000.0 if self.window_ms is not None else self.window_requests * _SLOW_REQUEST_S
        return levels * self.max_trials * window_s + _PROCESS_SLACK_S

    def arguments(self) -> list[str]:
        if self.window_ms is not None:
            return ["--measurement-mode", "time_windows", "--measurement-interval", str(self.window_ms)]
        return ["--measurement-mode", "count_windows", "--measurement-request-count", str(self.window_requests)]


def perf_analyzer_command() -> tuple[list[str], dict[str, str]]:
    """The perf_analyzer of this interpreter's environment and the environment it needs.

    Raises:
        PerfAnalyzerError: It is not installed next to this interpreter.
    """
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.is_file():
        raise PerfAnalyzerError(f"{binary} is missing: install tritonclient[all]==2.51.0 (it ships perf_analyzer)")
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime  # the wheel holding libcudart.so.12, which perf_analyzer links
    except ImportError as exc:
        raise PerfAnalyzerError("perf_analyzer needs libcudart.so.12: install nvidia-cuda-runtime-cu12") from exc
    libraries = [str(Path(entry) / "lib") for entry in nvidia.cuda_runtime.__path__]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        libraries + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    )
    return [str(binary)], env


def write_video_input(data: bytes, path: Path) -> Path:
    """``--input-data`` JSON that sends ``data`` as the ``VIDEO`` tensor (UINT8 [nbytes])."""
    payload = {"data": [{"VIDEO": {"b64": base64.b64encode(data).decode("ascii"), "shape": [len(data)]}}]}
    path.write_text(json.dumps(payload))
    return path


def run_sweep(
    model: str, grpc_url: str, settings: PerfSettings, csv_path: Path, input_data: Path | None = None
) -> list[PerfPoint]:
    """Runs perf_analyzer over a concurrency range and parses its CSV.

    Args:
        model: Model (or ensemble) name.
        grpc_url: ``host:port`` of the server's gRPC endpoint.
        settings: Concurrency range and windows.
        csv_path: Where perf_analyzer writes its CSV; its console output goes next to it (``.log``).
        input_data: ``--input-data`` JSON; None sends random data.

    Raises:
        PerfAnalyzerError: It failed or timed out (the message holds the end of its output).
    """
    command, env = perf_analyzer_command()
    first, last = settings.concurrency
    command += [
        "-m",
        model,
        "-u",
        grpc_url,
        "-i",
        "grpc",
        "--concurrency-range",
        f"{first}:{last}:1",
        *settings.arguments(),
        "--max-trials",
        str(settings.max_trials),
        "--stability-percentage",
        str(settings.stability_percent),
        "--input-data",
        str(input_data) if input_data is not None else "random",
        "-f",
        str(csv_path),
        "--verbose-csv",
    ]
    log_path = csv_path.with_suffix(".log")
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=settings.worst_case_s(), check=False
        )
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(f"{' '.join(command)}\n\n{exc.stdout or ''}\n{exc.stderr or ''}")
        raise PerfAnalyzerError(
            f"perf_analyzer on {model} ran past {settings.worst_case_s():.0f} s; see {log_path}"
        ) from exc
    log_path.write_text(f"{' '.join(command)}\n\n{completed.stdout}\n{completed.stderr}")
    if completed.returncode != 0 or not csv_path.is_file():
        tail = (completed.stdout + completed.stderr)[-2000:]
        raise PerfAnalyzerError(f"perf_analyzer on {model} exited with {completed.returncode}:\n{tail}")
    return parse_csv(csv_path, completed.stdout)


REQUIRED_COLUMNS = (
    "Concurrency",
    "Inferences/Second",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
)
_LEVEL = re.compile(r"Request concurrency: (\d+)\s+Client:\s+Request count: (\d+)")


def request_counts(console: str) -> dict[int, int]:
    """Requests measured at each concurrency level, from perf_analyzer's console output."""
    return {int(level): int(count) for level, count in _LEVEL.findall(console)}


def parse_csv(path: Path, console: str = "") -> list[PerfPoint]:
    """The rows of a perf_analyzer ``--verbose-csv`` file, lowest concurrency first.

    Args:
        path: The CSV file.
        console: perf_analyzer's console output of the same run, to count the requests.
    """
    counts = request_counts(console)
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Concurrency", "").strip()]
    if not rows:
        raise PerfAnalyzerError(f"{path} holds no measurement rows")
    missing = [column for column in REQUIRED_COLUMNS if column not in rows[0]]
    if missing:
        raise PerfAnalyzerError(f"{path} lacks the columns {', '.join(missing)} (run perf_analyzer with --verbose-csv)")
    points = []
    for row in rows:

        def ms(column: str, row: dict[str, str] = row) -> float:
            return float(row[column]) / _US_PER_MS

        compute = ms("Server Compute Input") + ms("Server Compute Infer") + ms("Server Compute Output")
        points.append(
            PerfPoint(
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Inferences/Second"]),
                p50_ms=ms("p50 latency"),
                p90_ms=ms("p90 latency"),
                p95_ms=ms("p95 latency"),
                p99_ms=ms("p99 latency"),
                avg_ms=ms("Avg latency"),
                queue_ms=ms("Server Queue"),
                compute_ms=compute,
                requests=counts.get(int(row["Concurrency"]), 0),
            )
        )
    return sorted(points, key=lambda p: p.concurrency)
