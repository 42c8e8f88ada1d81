"""What the web page costs: ``python -m benchmarks.web`` -> benchmarks/results/web.{json,md}.

One run, one machine, one warm server:

1. Latency: upload to verdict through the page's API (``POST /api/score``, httpx, the JSON answer
   parsed) against ``DeepfakeClient.score()`` on the same bytes, alternating, median of ``--rounds``
   each, after warm-up calls of both. The goal: the page adds less than 100 ms.
2. Memory: the web process's resident memory (VmRSS) after each of ``--uploads`` uploads through
   the page's full analysis (``POST /api/explain``: scores, face crops, heatmap PNGs). The goal:
   under 5 % growth from upload 20 to the last. Measured with glibc's malloc as
   ``python -m client web`` tunes it (client/web/server.py, also in the web image), and for
   comparison with jemalloc preloaded and returning freed pages at once, each in a fresh process.

The server holds the models of one length (and ``model_info``), as links to the real folders.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.cli import _git_commit, _machine
from benchmarks.server import cpu_count, models_of, start_server
from benchmarks.web_process import PROJECT_ROOT, WebProcess
from client import DeepfakeClient
from contract import Kind, model_name

DEFAULT_VIDEO = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
WARMUP = 3
LATENCY_GOAL_MS = 100.0
RSS_GOAL_PERCENT = 5.0
RSS_FROM_UPLOAD = 20
TIMEOUT_S = 300.0
JEMALLOC = Path(f"/usr/lib/{platform.machine()}-linux-gnu/libjemalloc.so.2")
# For comparison: freed pages go back to the system at once.
JEMALLOC_ENV = {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}


def link_repository(source: Path, frames: int, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in (
        *models_of(frames),
        model_name(Kind.VERDICT, frames),
        model_name(Kind.EXPLAIN, frames),
        model_name(Kind.MODEL_INFO),
    ):
        folder = source / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing")
        (target / name).symlink_to(folder.resolve(), target_is_directory=True)
    return target


def post(http: httpx.Client, url: str, data: bytes, name: str, frames: int) -> dict:
    response = http.post(url, files={"file": (name, data, "video/mp4")}, data={"frames": str(frames)})
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def memory_series(grpc_url: str, data: bytes, name: str, frames: int, uploads: int, env: dict, workdir: Path) -> dict:
    """RSS of a fresh web process after each of ``uploads`` explain uploads."""
    web = WebProcess(grpc_url, workdir, env={"DEEPFAKE_WEB_TOKEN": "", **env}).start()
    rss_kib, explain_ms = [], []
    try:
        with httpx.Client(timeout=TIMEOUT_S) as http:
            for _ in range(uploads):
                start = time.perf_counter()
                post(http, web.url + "api/explain", data, name, frames)
                explain_ms.append((time.perf_counter() - start) * 1000.0)
                rss_kib.append(web.rss_kib())
    finally:
        web.stop()
    start_index = min(RSS_FROM_UPLOAD, len(rss_kib)) - 1
    reference = rss_kib[start_index]
    growth = (rss_kib[-1] - reference) / reference * 100.0
    return {
        "rss_kib": rss_kib,
        "explain_median_ms": statistics.median(explain_ms),
        "from_upload": start_index + 1,
        "rss_from_mib": reference / 1024.0,
        "rss_last_mib": rss_kib[-1] / 1024.0,
        "rss_range_mib": [min(rss_kib[start_index:]) / 1024.0, max(rss_kib[start_index:]) / 1024.0],
        "growth_percent": growth,
        "goal_percent": RSS_GOAL_PERCENT,
        "met": growth < RSS_GOAL_PERCENT,
    }


def measure(video: Path, frames: int, rounds: int, uploads: int, workdir: Path) -> dict:
    data = video.read_bytes()
    repository = link_repository(PROJECT_ROOT / "model_repository", frames, workdir / "repository")
    server = start_server(repository, workdir / "tritonserver.log")
    web = None
    allocators = {"glibc, tuned by python -m client web": {}}
    if JEMALLOC.is_file():
        allocators["jemalloc, pages returned at once"] = JEMALLOC_ENV
    memory = {}
    try:
        web = WebProcess(server.grpc_url, workdir / "web", env={"DEEPFAKE_WEB_TOKEN": ""}).start()
        with DeepfakeClient(server.grpc_url, timeout_s=TIMEOUT_S) as detector, httpx.Client(timeout=TIMEOUT_S) as http:
            score_url = web.url + "api/score"
            for _ in range(WARMUP):
                detector.score(data, frames)
                post(http, score_url, data, video.name, frames)
            page_ms, direct_ms, page_server_ms, direct_server_ms = [], [], [], []
            for _ in range(rounds):
                start = time.perf_counter()
                answer = post(http, score_url, data, video.name, frames)
                page_ms.append((time.perf_counter() - start) * 1000.0)
                page_server_ms.append(answer["latency_ms"])
                start = time.perf_counter()
                result = detector.score(data, frames)
                direct_ms.append((time.perf_counter() - start) * 1000.0)
                direct_server_ms.append(result.latency_ms)
                if answer["prob_fake"] != result.prob_fake:
                    raise RuntimeError(f"the page and the client disagree: {answer['prob_fake']} vs {result.prob_fake}")
        web.stop()
        web = None
        for index, (allocator, env) in enumerate(allocators.items()):
            memory[allocator] = memory_series(
                server.grpc_url, data, video.name, frames, uploads, env, workdir / f"memory{index}"
            )
    finally:
        if web is not None:
            web.stop()
        server.stop()
    page_median, direct_median = statistics.median(page_ms), statistics.median(direct_ms)
    return {
        "video": video.name,
        "video_bytes": len(data),
        "frames": frames,
        "rounds": rounds,
        "uploads": uploads,
        "machine": _machine(),
        "cpu_count": cpu_count(),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "latency": {
            "page_ms": page_ms,
            "client_ms": direct_ms,
            "page_grpc_ms": page_server_ms,
            "client_grpc_ms": direct_server_ms,
            "page_median_ms": page_median,
            "client_median_ms": direct_median,
            "added_median_ms": page_median - direct_median,
            "page_grpc_median_ms": statistics.median(page_server_ms),
            # Within each page request: what the page spends around its own gRPC call (HTTP,
            # multipart parsing, JSON), untouched by how busy the server was at that moment.
            "page_overhead_median_ms": statistics.median(total - grpc for total, grpc in zip(page_ms, page_server_ms)),
            "client_grpc_median_ms": statistics.median(direct_server_ms),
            "goal_ms": LATENCY_GOAL_MS,
            "met": page_median - direct_median < LATENCY_GOAL_MS,
        },
        "memory": memory,
    }


def markdown(results: dict) -> str:
    latency = results["latency"]
    yes_no = {True: "yes", False: "NO"}
    memory_rows = []
    for allocator, memory in results["memory"].items():
        low, high = memory["rss_range_mib"]
        memory_rows += [
            f"| web process RSS after upload {memory['from_upload']} / {results['uploads']} "
            f"(`POST /api/explain`; {allocator}) | "
            f"{memory['rss_from_mib']:.1f} / {memory['rss_last_mib']:.1f} MiB (range {low:.1f} to {high:.1f}) | | |",
            f"| RSS growth from upload {memory['from_upload']} to {results['uploads']} ({allocator}) | "
            f"{memory['growth_percent']:+.2f} % | "
            f"< {memory['goal_percent']:.0f} % | {yes_no[memory['met']]} |",
            f"| `POST /api/explain`, upload to answer (median of {results['uploads']}; {allocator}) | "
            f"{memory['explain_median_ms']:.0f} ms | | |",
        ]
    return "\n".join(
        [
            "# Web page: added latency and memory",
            "",
            f"{results['date']}, commit {results['git_commit']}, {results['machine']}, {results['cpu_count']} cores.",
            f"Video: {results['video']} ({results['video_bytes']} bytes), {results['frames']} frames, warm server "
            f"({results['frames']}-frame models only).",
            "",
            "| figure | value | goal | met |",
            "| --- | --- | --- | --- |",
            f"| upload to verdict, `POST /api/score` (median of {results['rounds']}) | "
            f"{latency['page_median_ms']:.0f} ms | | |",
            f"| `DeepfakeClient.score()` on the same bytes (median of {results['rounds']}) | "
            f"{latency['client_median_ms']:.0f} ms | | |",
            f"| added by the page | {latency['added_median_ms']:.1f} ms | < {latency['goal_ms']:.0f} ms | "
            f"{yes_no[latency['met']]} |",
            f"| gRPC round trip inside the page / the client (medians) | {latency['page_grpc_median_ms']:.0f} / "
            f"{latency['client_grpc_median_ms']:.0f} ms | | |",
            f"| the page's own time around its gRPC call, per request (median) | "
            f"{latency['page_overhead_median_ms']:.1f} ms | "
            f"< {latency['goal_ms']:.0f} ms | {yes_no[latency['page_overhead_median_ms'] < latency['goal_ms']]} |",
            *memory_rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video to upload (default: the 1080p sample)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="latency samples of each path (default: %(default)s)")
    parser.add_argument("--uploads", type=int, default=100, help="uploads in the memory series (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.video.is_file():
        parser.error(f"{args.video} is missing: give --video")
    with tempfile.TemporaryDirectory(prefix="bench-web-") as scratch:
        results = measure(args.video, args.frames, args.rounds, args.uploads, Path(scratch))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "web.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (args.out / "web.md").write_text(report)
    print(report)
    return 0 if results["latency"]["met"] and all(m["met"] for m in results["memory"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
