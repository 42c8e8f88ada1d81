"""Live streams on this machine: ``make bench-stream`` -> ``benchmarks/results/stream.{json,md}``.

For 480p, 720p and 1080p clips at 25 fps (the 1080p crowd sample, scaled and re-encoded with H.264,
played forwards then backwards; a generated face clip when the sample is absent), S streams are
sent at once in real time through the ``stream`` model, every frame scored (k = 1) and every
second frame (k = 2), S = 1, 2, ... until they are no longer followed. A stream is followed when
the p95 latency from a packet's sending to its frame's score stays under
:data:`FOLLOWED_P95_MS` and every frame due was scored. Also measured: p50/p95 latency, the
server's CPU time per scored frame (tritonserver and its stubs, from /proc), the adaptive pace on
one stream, and perf_analyzer's own view of the model (``--streaming`` with its sequence options).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.perf import PerfAnalyzerError, perf_analyzer_command
from benchmarks.server import start_server
from client.stream_client import Packet, StreamSession, open_source, play, settings_for
from contract import Kind, model_name
from serve.distribution import PROJECT_ROOT

SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
HEIGHTS = (480, 720, 1080)
FPS = 25
FRAMES = 20
FOLLOWED_P95_MS = 1000.0
MAX_STREAMS = 4
SCORE_EVERY = (1, 2)
ANSWER_TIMEOUT_S = 120.0
PERF_TIMEOUT_S = 300


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (user + system, seconds)."""
    ticks = 0
    pending, seen = [pid], set()
    clock = 100.0
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return ticks / clock


def make_clip(height: int, scratch: Path) -> Path:
    """The sample (or a generated face clip) at ``height`` lines, 25 fps, forwards then backwards, H.264."""
    path = scratch / f"stream_{height}p.mp4"
    if path.is_file():
        return path
    if SAMPLE.is_file():
        with av.open(str(SAMPLE)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    else:
        from tests import media

        frames = [media.face_frame(i, (1920, 1080)) for i in range(105)]
    frames = frames + frames[::-1]
    width = round(frames[0].shape[1] * height / frames[0].shape[0] / 2) * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"x264-params": "no-mbtree=1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 2 * FPS
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(width=width, height=height)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    path.write_bytes(buffer.getvalue())
    return path


def run_streams(url: str, clip: Path, count: int, score_every: int, server_pid: int) -> dict:
    """``count`` streams of ``clip`` at once, in real time; latency, followed or not, CPU per scored frame."""
    results: list[dict] = [{} for _ in range(count)]
    errors: list[str] = []

    def one(slot: int) -> None:
        source = open_source(str(clip))
        events: list[dict] = []
        try:
            with StreamSession(
                url, settings_for(source, FRAMES, FRAMES, score_every), source.extradata, timeout_s=ANSWER_TIMEOUT_S
            ) as session:
                outcome = play(session, source.packets, realtime=True, on_event=events.append)
        except Exception as exc:  # noqa: BLE001 - recorded and reported with the figures
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            source.closer()
        latencies = [e["latency_ms"] for e in events if e["type"] == "frame" and "latency_ms" in e]
        results[slot] = {"latencies": latencies, "summary": outcome.summary}

    cpu_before = _cpu_seconds(server_pid)
    threads = [threading.Thread(target=one, args=(slot,)) for slot in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    cpu = _cpu_seconds(server_pid) - cpu_before
    if errors:
        return {"streams": count, "score_every": score_every, "errors": errors, "followed": False}
    latencies = np.concatenate([r["latencies"] for r in results])
    scored = sum(r["summary"]["frames_scored"] for r in results)
    decoded = sum(r["summary"]["frames_decoded"] for r in results)
    due = sum(-(-r["summary"]["frames_decoded"] // score_every) for r in results)
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    return {
        "streams": count,
        "score_every": score_every,
        "frames_decoded": decoded,
        "frames_scored": scored,
        "frames_due": due,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_scored_frame": 1000.0 * cpu / max(scored, 1),
        "followed": bool(p95 < FOLLOWED_P95_MS and scored >= due),
    }


def adaptive_run(url: str, clip: Path) -> dict:
    """One stream with the server choosing k."""
    source = open_source(str(clip))
    events: list[dict] = []
    with StreamSession(
        url, settings_for(source, FRAMES, FRAMES, 0), source.extradata, timeout_s=ANSWER_TIMEOUT_S
    ) as session:
        outcome = play(session, source.packets, realtime=True, on_event=events.append)
    source.closer()
    latencies = [e["latency_ms"] for e in events if e["type"] == "frame" and "latency_ms" in e]
    return {
        **outcome.summary,
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
    }


def perf_streaming(url: str, clip: Path, scratch: Path) -> dict:
    """perf_analyzer's view: ``--streaming``, sequences of one clip's packets, one request per packet."""
    source = open_source(str(clip))
    packets: list[Packet] = list(source.packets)[: 2 * FPS]
    source.closer()
    declaration = json.dumps(settings_for(source, FRAMES, FRAMES, 1)).encode()
    steps = []
    for index, packet in enumerate(packets):
        step = {
            "PACKETS": {"b64": base64.b64encode(packet.data).decode(), "shape": [len(packet.data)]},
            "PACKET_SIZES": {"content": [len(packet.data)], "shape": [1]},
            "PACKET_PTS": {"content": [packet.pts], "shape": [1]},
        }
        if index == 0:
            step["STREAM"] = {
                "b64": base64.b64encode(len(declaration).to_bytes(4, "little") + declaration).decode(),
                "shape": [1],
            }
            step["EXTRADATA"] = {"b64": base64.b64encode(source.extradata).decode(), "shape": [len(source.extradata)]}
        steps.append(step)
    data_path = scratch / "stream_perf.json"
    data_path.write_text(json.dumps({"data": [steps]}))
    csv_path = RESULTS / "perf_stream_c1.csv"
    command, env = perf_analyzer_command()
    command += [
        "-m",
        model_name(Kind.STREAM),
        "-u",
        url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(data_path),
        "--sequence-length",
        str(len(packets)),
        "--sequence-length-variation",
        "0",
        "--concurrency-range",
        "1:1:1",
        "--measurement-interval",
        "8000",
        "--max-trials",
        "4",
        "--stability-percentage",
        "50",
        "-f",
        str(csv_path),
    ]
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=PERF_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"perf_analyzer ran past {PERF_TIMEOUT_S} s"}
    log = RESULTS / "perf_stream_c1.log"
    log.write_text(f"{' '.join(command)}\n\n{completed.stdout}\n{completed.stderr}")
    if completed.returncode != 0 or not csv_path.is_file():
        return {
            "error": f"perf_analyzer exited with {completed.returncode}: {(completed.stdout + completed.stderr)[-600:]}"
        }
    header, row = csv_path.read_text().splitlines()[:2]
    return dict(zip(header.split(","), row.split(",")))


def markdown(report: dict) -> str:
    lines = [
        "# Live streams (`make bench-stream`)",
        "",
        f"Machine: {report['machine']}; clip: {report['clip']}; N = {FRAMES}; streams sent in real time at "
        f"{FPS} fps; followed = p95 latency under {FOLLOWED_P95_MS:g} ms with every due frame scored.",
        "",
        "| clip | k | streams | followed | p50 ms | p95 ms | scored / due | CPU ms per scored frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for height, runs in report["runs"].items():
        for run in runs:
            if "errors" in run:
                lines.append(
                    f"| {height}p | {run['score_every']} | {run['streams']} | error | | | | {run['errors'][0][:80]} |"
                )
                continue
            lines.append(
                f"| {height}p | {run['score_every']} | {run['streams']} | {'yes' if run['followed'] else 'no'} | "
                f"{run['latency_p50_ms']:.0f} | {run['latency_p95_ms']:.0f} | "
                f"{run['frames_scored']} / {run['frames_due']} | "
                f"{run['cpu_ms_per_scored_frame']:.0f} |"
            )
    lines += ["", "Streams followed in real time (largest S followed):", ""]
    for height, best in report["followed"].items():
        lines.append(f"- {height}p: " + ", ".join(f"k = {k}: {s}" for k, s in best.items()))
    adaptive = report.get("adaptive")
    if adaptive:
        lines += [
            "",
            f"Adaptive pace, one 720p stream: {adaptive['frames_scored']} of {adaptive['frames_decoded']} frames "
            f"scored, {adaptive['frames_skipped']} skipped, p50 {adaptive['latency_p50_ms']:.0f} ms, "
            f"p95 {adaptive['latency_p95_ms']:.0f} ms.",
        ]
    perf = report.get("perf_analyzer", {})
    lines += [
        "",
        "perf_analyzer --streaming (one sequence of 50 one-packet requests, 720p, concurrency 1): "
        + (
            perf["error"]
            if "error" in perf
            else ", ".join(
                f"{k} {v}"
                for k, v in perf.items()
                if k in ("Inferences/Second", "p50 latency", "p95 latency", "Server Queue", "Server Compute Infer")
            )
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live_streams", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--scratch", type=Path, default=PROJECT_ROOT / ".serve" / "bench-stream")
    parser.add_argument("--heights", type=int, nargs="+", default=list(HEIGHTS))
    parser.add_argument("--max-streams", type=int, default=MAX_STREAMS)
    args = parser.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    repository = args.scratch / "repository"
    repository.mkdir(exist_ok=True)
    for name in (
        model_name(Kind.STREAM),
        model_name(Kind.FRAME_CLASSIFIER, FRAMES),
        model_name(Kind.CLASSIFIER, FRAMES),
    ):
        link = repository / name
        if not link.exists():
            link.symlink_to((args.model_repository / name).resolve(), target_is_directory=True)
    clips = {height: make_clip(height, args.scratch) for height in args.heights}
    server = start_server(repository, args.scratch / "tritonserver.log")
    model = Path("/proc/cpuinfo").read_text().split("model name")[1].split(":", 1)[1].splitlines()[0].strip()
    report: dict = {
        "machine": f"{model}, {len(__import__('os').sched_getaffinity(0))} cores",
        "clip": "people_walking_1080p.mp4 scaled" if SAMPLE.is_file() else "generated face clip",
        "runs": {},
        "followed": {},
    }
    try:
        pid = server.pid
        for height, clip in clips.items():
            report["runs"][height] = []
            report["followed"][height] = {}
            for k in SCORE_EVERY:
                best = 0
                for count in range(1, args.max_streams + 1):
                    run = run_streams(server.grpc_url, clip, count, k, pid)
                    report["runs"][height].append(run)
                    print(
                        json.dumps({"height": height, **{key: v for key, v in run.items() if key != "errors"}}),
                        flush=True,
                    )
                    if not run["followed"]:
                        break
                    best = count
                report["followed"][height][k] = best
        if 720 in clips:
            report["adaptive"] = adaptive_run(server.grpc_url, clips[720])
            try:
                report["perf_analyzer"] = perf_streaming(server.grpc_url, clips[720], args.scratch)
            except PerfAnalyzerError as exc:
                report["perf_analyzer"] = {"error": str(exc)}
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "stream.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
