"""A new classifier version goes live, and is rolled back, under load: ``make bench-versions``.

The embedded server serves the 10-frame models from a private copy of the repository (the ONNX
files linked, everything else copied, so that a version folder can be added). Client threads score
a generated face clip through ``deepfake_<N>`` without pause, naming no version (they get the
latest) while, in turn:

1. ``export onnx --checkpoint FILE --version 2`` writes version 2 (timed on its own: it is
   the export and its parity checks, done before anything is loaded);
2. ``export reload`` loads it on the running server;
3. ``export retire --version 2 --url`` rolls it back (one command).

Every answer is recorded with its latency and the version that gave it. Written: requests and
failures per phase (a failure is any error answer), p50/p95 latency, the time from the reload's
start to the first answer of version 2 and from the rollback's start to the last one, to
``benchmarks/results/versions.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.server import private_repository, start_server
from contract import Kind, model_name
from serve.distribution import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
FRAMES = 10
PHASE_S = 20.0
CLIENTS = 2


class Recorder:
    """Answers of the client threads: (start time, latency s, version or None, error or None)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[tuple[float, float, int | None, str | None]] = []

    def add(self, started: float, latency: float, version: int | None, error: str | None) -> None:
        with self.lock:
            self.answers.append((started, latency, version, error))

    def between(self, start: float, stop: float) -> list[tuple[float, float, int | None, str | None]]:
        with self.lock:
            return [answer for answer in self.answers if start <= answer[0] < stop]


def _client_loop(url: str, video: bytes, recorder: Recorder, stop: threading.Event) -> None:
    client = grpcclient.InferenceServerClient(url)
    model = model_name(Kind.SCORE, FRAMES)
    data = np.frombuffer(video, dtype=np.uint8)[None]
    outputs = [grpcclient.InferRequestedOutput(name) for name in ("PROB_FAKE", "CLASSIFIER_VERSION")]
    while not stop.is_set():
        tensor = grpcclient.InferInput("VIDEO", list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        started = time.monotonic()
        try:
            result = client.infer(model, [tensor], outputs=outputs)
        except InferenceServerException as exc:
            recorder.add(started, time.monotonic() - started, None, str(exc))
            continue
        recorder.add(started, time.monotonic() - started, int(result.as_numpy("CLASSIFIER_VERSION")[0, 0]), None)


def _export(*args: str, key: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "export", *args], capture_output=True, text=True, env={"DEEPFAKE_ADMIN_KEY": key}
    )
    if done.returncode != 0:
        raise RuntimeError(f"export {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def _phase(name: str, answers) -> dict:
    latencies = [latency for _, latency, _, error in answers if error is None]
    errors = sorted({error for _, _, _, error in answers if error is not None})
    return {
        "phase": name,
        "requests": len(answers),
        "failed": sum(1 for answer in answers if answer[3] is not None),
        "errors": errors[:5],
        "versions": sorted({version for _, _, version, _ in answers if version is not None}),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1) if latencies else None,
        "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1) if latencies else None,
    }


def run(checkpoint: Path, phase_s: float, clients: int) -> dict:
    from tests import media

    scratch = Path(tempfile.mkdtemp(prefix="bench_versions_"))
    repository = private_repository(PROJECT_ROOT / "model_repository", FRAMES, scratch / "repository")
    key = secrets.token_urlsafe(24)
    server = start_server(repository, scratch / "tritonserver.log", admin_key=key)
    recorder, stop = Recorder(), threading.Event()
    video = media.face_clip(frames=FRAMES + 2)
    threads = [
        threading.Thread(target=_client_loop, args=(server.grpc_url, video, recorder, stop), daemon=True)
        for _ in range(clients)
    ]
    marks: dict[str, float] = {}
    try:
        for thread in threads:
            thread.start()
        marks["start"] = time.monotonic()
        time.sleep(phase_s)
        marks["export"] = time.monotonic()
        export_s = _export(
            "onnx", "--checkpoint", str(checkpoint), "--version", "2", "--repository", str(repository), key=key
        )
        marks["reload"] = time.monotonic()
        reload_s = _export("reload", "--url", server.http_url, key=key)
        marks["live"] = time.monotonic()
        time.sleep(phase_s)
        marks["rollback"] = time.monotonic()
        rollback_s = _export(
            "retire", "--frames", str(FRAMES), "--version", "2", "--repository", str(repository),
            "--url", server.http_url, key=key,
        )  # fmt: skip
        marks["rolled_back"] = time.monotonic()
        time.sleep(phase_s)
        marks["end"] = time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        server.stop()
    answers = recorder.between(marks["start"], marks["end"])
    first_v2 = min((s for s, _, v, _ in answers if v == 2), default=None)
    last_v2 = max((s for s, _, v, _ in answers if v == 2), default=None)
    phases = [
        _phase("version 1 only", recorder.between(marks["start"], marks["export"])),
        _phase("exporting version 2 (files only)", recorder.between(marks["export"], marks["reload"])),
        _phase("reloading", recorder.between(marks["reload"], marks["live"])),
        _phase("version 2 live", recorder.between(marks["live"], marks["rollback"])),
        _phase("rolling back", recorder.between(marks["rollback"], marks["rolled_back"])),
        _phase("rolled back", recorder.between(marks["rolled_back"], marks["end"])),
    ]
    return {
        "frames": FRAMES,
        "clients": clients,
        "phase_s": phase_s,
        "export_s": round(export_s, 1),
        "reload_s": round(reload_s, 2),
        "rollback_s": round(rollback_s, 2),
        "reload_to_first_v2_s": None if first_v2 is None else round(first_v2 - marks["reload"], 2),
        "rollback_to_last_v2_s": None if last_v2 is None else round(last_v2 - marks["rollback"], 2),
        "requests": len(answers),
        "failed": sum(1 for answer in answers if answer[3] is not None),
        "phases": phases,
        "machine": _machine(),
    }


def _machine() -> str:
    import os
    import platform

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def render_markdown(results: dict) -> str:
    lines = [
        "# A new version under load",
        "",
        f"{results['clients']} clients scoring `deepfake_{results['frames']}` without pause on {results['machine']}; "
        f"{results['requests']} requests, {results['failed']} failed.",
        "",
        f"- export of version 2 (ONNX + parity checks, before anything is loaded): {results['export_s']} s",
        f"- reload (`export reload`): {results['reload_s']} s; first answer of version 2 "
        f"{results['reload_to_first_v2_s']} s after it started",
        f"- rollback (`export retire --url`): {results['rollback_s']} s; last answer of version 2 "
        f"{results['rollback_to_last_v2_s']} s after it started",
        "",
        "| phase | requests | failed | versions | p50 ms | p95 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for phase in results["phases"]:
        versions = ", ".join(map(str, phase["versions"]))
        lines.append(
            f"| {phase['phase']} | {phase['requests']} | {phase['failed']} | {versions} | "
            f"{phase['p50_ms']} | {phase['p95_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versions", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="the checkpoint to serve as version 2 (default: seeded random weights in the published format)",
    )
    parser.add_argument("--phase-s", type=float, default=PHASE_S, help="seconds of load in each steady phase")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="client threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint is None:
        import torch

        from export.checkpoints import demo_state_dict

        checkpoint = (
            Path(tempfile.mkdtemp(prefix="bench_versions_ckpt_")) / f"model_50_acc_{FRAMES}_frames_trained_bench.pt"
        )
        torch.save(demo_state_dict(seed=FRAMES + 1000), checkpoint)
    results = run(checkpoint, args.phase_s, args.clients)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "versions.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "versions.md").write_text(render_markdown(results))
    print(render_markdown(results))
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
