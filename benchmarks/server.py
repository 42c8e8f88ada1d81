"""The embedded tritonserver for one sequence length: start it, read its statistics and memory."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from contract import ADMIN_KEY_HEADER, BASE_KINDS, SHARED_KINDS, Kind, model_name
from serve import EmbeddedServer, free_ports, processes
from serve.options import Restriction
from serve.server import CONTROL_PROTOCOL

_NS_PER_MS = 1e6
_KIB_PER_MIB = 1024.0
# Loading python models imports torch once per stub: slow on 2 busy cores.
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0


def models_of(frames: int) -> tuple[str, str, str]:
    """(preprocessing, classifier, scoring ensemble) names for N frames."""
    return model_name(Kind.PREPROCESS, frames), model_name(Kind.CLASSIFIER, frames), model_name(Kind.SCORE, frames)


def bench_repository(source: Path, frames: int, target: Path) -> Path:
    """A repository holding only the N-frame scoring models (``verdict_<N>`` and ``original_<N>`` too),
    as links to the real folders.

    Loading one length instead of every committed one saves minutes of start-up and the
    memory of the other lengths' stubs, which would otherwise share the two cores' caches.

    Raises:
        FileNotFoundError: A model folder is missing from ``source``.
    """
    target.mkdir(parents=True, exist_ok=True)
    also = (Kind.SELECT, Kind.VERDICT, Kind.ORIGINAL_PREPROCESS, Kind.ORIGINAL_SELECT, Kind.ORIGINAL)
    for name in (*models_of(frames), *(model_name(kind, frames) for kind in also)):
        folder = source / name
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is missing: the repository has no {frames}-frame models "
                f"(python -m export onnx --frames {frames})"
            )
        link = target / name
        if not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
    return target


#: Files linked, not copied, into a private repository: the exported graphs are large and read only.
_ARTIFACT_SUFFIXES = (".onnx", ".plan")


def private_repository(source: Path, frames: int, target: Path) -> Path:
    """A repository of one length's models (every base kind) and the shared ones, that can gain versions:
    folders and files copied, the exported graphs linked, links kept as links.

    Raises:
        FileNotFoundError: A model folder is missing from ``source``.
    """
    names = [model_name(kind, frames) for kind in BASE_KINDS] + [model_name(kind) for kind in SHARED_KINDS]
    for name in names:
        folder = source / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing (python -m export onnx --frames {frames})")
        _copy_tree(folder, target / name)
    return target


def _copy_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        destination = target / child.name
        if child.name == "__pycache__":
            continue
        if child.is_symlink():
            destination.symlink_to(os.readlink(child))
        elif child.is_dir():
            _copy_tree(child, destination)
        elif child.suffix in _ARTIFACT_SUFFIXES:
            destination.symlink_to(child.resolve())
        else:
            shutil.copy2(child, destination)


def start_server(
    repository: Path,
    log_path: Path,
    admin_key: str | None = None,
    env: dict[str, str] | None = None,
    response_cache_bytes: int | None = None,
) -> EmbeddedServer:
    """The embedded server (CPU configs) on free ports, every model ready; its model-control API
    restricted to ``admin_key`` (header ``admin-key``) when one is given; ``env``: more environment
    for the server (e.g. ``DEEPFAKE_BANK``)."""
    grpc_port, http_port, metrics_port = free_ports(3)
    restrictions = [Restriction((CONTROL_PROTOCOL,), ADMIN_KEY_HEADER, admin_key)] if admin_key else []
    server = EmbeddedServer(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=log_path,
        stop_timeout=STOP_TIMEOUT_S,
        http_restrictions=restrictions,
        env=env,
        response_cache_bytes=response_cache_bytes,
    )
    server.start(timeout=START_TIMEOUT_S)
    return server


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def video_input(data: bytes) -> grpcclient.InferInput:
    """An upload as the ensembles' ``VIDEO`` input: ``UINT8 [1, bytes]``."""
    array = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def process_breakdown(server_pid: int) -> dict[str, float]:
    """Resident memory of tritonserver and of each python stub (by model and pid), MiB."""
    parts = {"tritonserver": _rss_kib(server_pid) / _KIB_PER_MIB}
    for model, pids in processes.python_stubs(server_pid).items():
        for pid in sorted(pids):
            parts[f"{model} (pid {pid})"] = _rss_kib(pid) / _KIB_PER_MIB
    return parts


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (tritonserver and its python stubs), MiB."""
    total, pending, seen = 0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss_kib(current)
        pending += _children(current)
    return total / _KIB_PER_MIB


@dataclass(frozen=True)
class ModelStats:
    """Cumulative Triton statistics of one model (successful requests)."""

    count: int
    executions: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int

    def minus(self, earlier: ModelStats) -> ModelStats:
        return ModelStats(*(getattr(self, f) - getattr(earlier, f) for f in self.__dataclass_fields__))

    def per_request_ms(self) -> dict[str, float]:
        """Average milliseconds per request in the queue and in each compute phase."""
        n = max(self.count, 1)
        return {
            "queue": self.queue_ns / n / _NS_PER_MS,
            "compute_input": self.compute_input_ns / n / _NS_PER_MS,
            "compute_infer": self.compute_infer_ns / n / _NS_PER_MS,
            "compute_output": self.compute_output_ns / n / _NS_PER_MS,
            "requests": float(self.count),
            "batch_executions": float(self.executions),
        }


def model_stats(client: grpcclient.InferenceServerClient, models: tuple[str, ...]) -> dict[str, ModelStats]:
    """Triton's cumulative statistics of each model, summed over versions."""
    stats = {}
    for name in models:
        reply = client.get_inference_statistics(name, as_json=True)
        total = dict.fromkeys(ModelStats.__dataclass_fields__, 0)
        for entry in reply.get("model_stats", []):
            infer = entry.get("inference_stats", {})
            total["count"] += int(infer.get("success", {}).get("count", 0))
            total["executions"] += int(entry.get("execution_count", 0))
            total["queue_ns"] += int(infer.get("queue", {}).get("ns", 0))
            total["compute_input_ns"] += int(infer.get("compute_input", {}).get("ns", 0))
            total["compute_infer_ns"] += int(infer.get("compute_infer", {}).get("ns", 0))
            total["compute_output_ns"] += int(infer.get("compute_output", {}).get("ns", 0))
        stats[name] = ModelStats(**total)
    return stats


def stats_delta(after: dict[str, ModelStats], before: dict[str, ModelStats]) -> dict[str, dict[str, float]]:
    """Per-request averages of each model between two snapshots."""
    return {name: after[name].minus(before[name]).per_request_ms() for name in after}


def server_pid(server: EmbeddedServer) -> int:
    pid = server.pid
    if pid is None:
        raise RuntimeError("the benchmark server is not running")
    return pid


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
