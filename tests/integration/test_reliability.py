"""Faults and overload against the session's real server: nothing lost, nothing wrong, service restored.

* a python stub of ``preprocess_10`` killed while the client's batch command has requests in
  flight: the watchdog restores the model by itself, the batch retries and ends with every video
  scored exactly once, each with the score it gets on its own;
* clients that give up or vanish mid-request do not hurt the server;
* a burst far over the queue limits is answered with UNAVAILABLE at once, not queued without bound;
* the python stubs keep no user video in a file; the shared memory the videos pass through is
  private to the server's user and removed even when the server is killed; the server binds to
  loopback only.

Figures (recovery time, rejection latency) are printed with ``-s``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client import DeepfakeClient
from serve import EmbeddedServer, free_ports, processes
from serve.distribution import PROJECT_ROOT
from tests import media
from tests.integration.test_tls import write_echo_repository

pytestmark = pytest.mark.integration

FRAMES = 10
MODEL = f"deepfake_{FRAMES}"
PREPROCESS = f"preprocess_{FRAMES}"
BATCH_VIDEOS = 12
BATCH_CONCURRENCY = 4
# The contract: a killed stub is recovered by itself in under a minute.
RECOVERY_BOUND_S = 60.0
CLI_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 120.0
POLL_S = 0.2
SAME_SCORE_ATOL = 1e-5
# Deadline of the clients that give up: far shorter than scoring a clip takes.
IMPATIENT_S = 0.3
IMPATIENT_CLIENTS = 8
# A burst well over preprocess_<N>'s queue (max_queue_size 32 and two instances busy).
BURST = 56
REJECTION_BOUND_S = 5.0
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def scores(url: str, videos: list[Path]) -> dict[str, float]:
    """Each video scored on its own (the reference a batch must reproduce)."""
    with DeepfakeClient(url, timeout_s=REQUEST_TIMEOUT_S) as detector, ThreadPoolExecutor(BATCH_CONCURRENCY) as pool:
        results = pool.map(lambda path: detector.score(path, frames=FRAMES), videos)
        return {result.video: result.prob_fake for result in results}


def busy_stub(server, model: str) -> int:
    """A running stub of ``model`` that is using the CPU now (it is working on a request)."""
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while time.monotonic() < deadline:
        for pid in sorted(server.stub_pids().get(model, ())):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state == "R":
                return pid
        time.sleep(0.01)
    pytest.fail(f"no stub of '{model}' was seen working within {REQUEST_TIMEOUT_S:g} s")


def test_stub_killed_mid_batch_loses_and_duplicates_nothing(triton_server, tmp_path, capsys):
    videos = []
    for index in range(BATCH_VIDEOS):
        path = tmp_path / f"clip_{index:02d}.mp4"
        # Seeds no other test uses: bytes the server has not seen, so they are not answered from its
        # response cache and a preprocessing stub is busy with them.
        path.write_bytes(media.face_clip(frames=FRAMES + 2, seed=7100 + index))
        videos.append(path)
    results = tmp_path / "results.jsonl"
    recoveries_before = len(triton_server.recoveries)
    command = [
        sys.executable,
        "-m",
        "client",
        "score",
        *map(str, videos),
        "--frames",
        str(FRAMES),
        "--url",
        triton_server.grpc_url,
        "--json",
        "--output",
        str(results),
        "--concurrency",
        str(BATCH_CONCURRENCY),
        "--retries",
        "10",
    ]
    batch = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not results.exists() or not results.read_text().strip():
            assert batch.poll() is None, batch.communicate()
            time.sleep(POLL_S)
        victim = busy_stub(triton_server, PREPROCESS)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = batch.communicate(timeout=CLI_TIMEOUT_S)
        finished_at = time.monotonic()
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.communicate()

    assert batch.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    names = sorted(record["video"] for record in records)
    assert names == sorted(map(str, videos)), "every video exactly once"
    assert all(record["error"] is None for record in records), [r["error"] for r in records if r["error"]]

    recovery = next((item for item in triton_server.recoveries[recoveries_before:] if item.model == PREPROCESS), None)
    assert recovery is not None, "the watchdog did not repair the model"
    seen_after = recovery.detected_at - killed_at
    reference = scores(triton_server.grpc_url, videos)
    for record in records:
        assert record["prob_fake"] == pytest.approx(reference[record["video"]], abs=SAME_SCORE_ATOL), record["video"]
    with capsys.disabled():
        print(
            f"\n[faults] killed a busy {PREPROCESS} stub mid-batch: seen after {seen_after:.1f} s, ready again "
            f"{recovery.seconds:.1f} s later; batch of {BATCH_VIDEOS} finished "
            f"{finished_at - killed_at:.1f} s after the kill, "
            f"retries: {stderr.count('retry')}"
        )
    assert seen_after + recovery.seconds < RECOVERY_BOUND_S


def _video_input(data: bytes) -> grpcclient.InferInput:
    array = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def test_clients_that_give_up_or_vanish_mid_request_do_not_hurt_the_server(triton_server):
    clip = media.face_clip(frames=FRAMES + 2, seed=7)
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        before = client.infer(MODEL, [_video_input(clip)], client_timeout=REQUEST_TIMEOUT_S).as_numpy("LOGITS")
    stubs = triton_server.stub_pids()
    recoveries = len(triton_server.recoveries)

    def give_up(_: int) -> str:
        with grpcclient.InferenceServerClient(triton_server.grpc_url) as impatient:
            try:
                impatient.infer(MODEL, [_video_input(clip)], client_timeout=IMPATIENT_S)
            except InferenceServerException as error:
                return str(error.status())
        return "answered"

    with ThreadPoolExecutor(IMPATIENT_CLIENTS) as pool:
        outcomes = list(pool.map(give_up, range(IMPATIENT_CLIENTS)))
    assert outcomes.count("StatusCode.DEADLINE_EXCEEDED") >= IMPATIENT_CLIENTS // 2, outcomes

    # Requests whose connection closes under them.
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "VIDEO", "UINT8"
    tensor.shape.extend([1, len(clip)])
    request.raw_input_contents.append(clip)
    for _ in range(IMPATIENT_CLIENTS):
        channel = grpc.insecure_channel(triton_server.grpc_url)
        future = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(request)
        time.sleep(0.05)
        future.cancel()
        channel.close()

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        after = client.infer(MODEL, [_video_input(clip)], client_timeout=REQUEST_TIMEOUT_S).as_numpy("LOGITS")
        assert client.is_server_ready() and client.is_model_ready(MODEL)
    np.testing.assert_allclose(after, before, atol=SAME_SCORE_ATOL, rtol=0)
    assert triton_server.stub_pids() == stubs, "a stub died"
    assert len(triton_server.recoveries) == recoveries


def _distinct(jpeg: bytes, index: int) -> bytes:
    """The same picture as new bytes: a JPEG comment segment (FF FE) after the start marker, so that
    the server's response cache has not seen it and it queues like a new upload."""
    comment = f"burst {index}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def test_a_burst_over_the_queue_limit_is_refused_quickly_with_unavailable(triton_server, capsys):
    still = _distinct(media.still_image("JPEG"), -1)
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        reference = client.infer(MODEL, [_video_input(still)], client_timeout=REQUEST_TIMEOUT_S).as_numpy("LOGITS")
    answers: list[tuple[float, np.ndarray | None, InferenceServerException | None]] = []
    done = threading.Event()
    lock = threading.Lock()

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        sent = {}

        def callback(index: int, result, error) -> None:
            with lock:
                answers.append(
                    (time.monotonic() - sent[index], None if result is None else result.as_numpy("LOGITS"), error)
                )
                if len(answers) == BURST:
                    done.set()

        for index in range(BURST):
            sent[index] = time.monotonic()
            client.async_infer(
                MODEL,
                [_video_input(_distinct(still, index))],
                callback=lambda result, error, index=index: callback(index, result, error),
                client_timeout=REQUEST_TIMEOUT_S,
            )
        assert done.wait(REQUEST_TIMEOUT_S * 2), f"only {len(answers)} of {BURST} answers came back"

    refused = [(seconds, error) for seconds, _, error in answers if error is not None]
    served = [(seconds, logits) for seconds, logits, error in answers if error is None]
    assert refused, "the burst never reached the queue limit"
    for _, error in refused:
        assert error.status() == "StatusCode.UNAVAILABLE", error
        assert "queue" in error.message().lower(), error.message()
    for _, logits in served:
        np.testing.assert_allclose(logits, reference, atol=SAME_SCORE_ATOL, rtol=0)
    slowest_refusal = max(seconds for seconds, _ in refused)
    with capsys.disabled():
        print(
            f"\n[overload] burst of {BURST}: {len(served)} served (slowest {max(s for s, _ in served):.1f} s), "
            f"{len(refused)} refused with UNAVAILABLE (slowest refusal {slowest_refusal:.2f} s)"
        )
    assert slowest_refusal < REJECTION_BOUND_S
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert client.is_server_ready() and client.is_model_ready(MODEL)


def _open_files(pid: int) -> list[str]:
    found = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            found.append(os.readlink(entry))
        except FileNotFoundError:
            continue
    return found


def test_stubs_hold_no_video_in_files_while_working(triton_server):
    """While requests are processed, no stub has a regular file open outside its code, libraries and shared memory."""
    clip = media.face_clip(frames=FRAMES + 2, seed=9)
    # ONNX Runtime keeps a small database of its own under the user's cache folder.
    runtime_cache = str(Path.home() / ".cache" / "Microsoft")
    allowed = (
        "/dev/shm/",
        "/proc/",
        "/dev/",
        "socket:",
        "pipe:",
        "anon_inode:",
        str(PROJECT_ROOT / ".venv"),
        sys.prefix,
        str(triton_server.log_path),
        runtime_cache,
    )
    seen: set[str] = set()
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        futures = []
        for _ in range(4):
            futures.append(client.async_infer(MODEL, [_video_input(clip)], callback=lambda result, error: None))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for pids in triton_server.stub_pids().values():
                for pid in pids:
                    try:
                        seen.update(_open_files(pid))
                    except (FileNotFoundError, PermissionError):
                        continue
            time.sleep(0.05)
    suspicious = sorted(
        path
        for path in seen
        if path.startswith("/") and not path.startswith(allowed) and not path.endswith((".so", ".py", ".pyc"))
    )
    assert suspicious == [], f"stubs had these files open: {suspicious}"


def test_every_endpoint_listens_on_loopback_only(triton_server):
    ports = {triton_server.grpc_port, triton_server.http_port, triton_server.metrics_port}
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address_hex, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) in ports:
                listening.setdefault(int(port_hex, 16), set()).add(address_hex)
    assert set(listening) == ports
    loopback_hex = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert all(addresses <= loopback_hex for addresses in listening.values()), listening


def _private(region: str) -> bool:
    return (processes.SHM_DIR / region).stat().st_mode & 0o077 == 0


def test_session_servers_shared_memory_is_private(triton_server):
    regions = processes.shm_regions(pid for pids in triton_server.stub_pids().values() for pid in pids)
    assert regions, "no shared-memory region found for the stubs"
    assert [region for region in regions if not _private(region)] == []


def test_shared_memory_of_a_killed_server_is_removed(tmp_path, capsys):
    repository = write_echo_repository(tmp_path / "repository")
    grpc_port, http_port, metrics_port = free_ports(3)
    server = EmbeddedServer(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=tmp_path / "tritonserver.log",
        stop_timeout=5.0,
    )
    with server:
        first = processes.shm_regions(pid for pids in server.stub_pids().values() for pid in pids)
        assert first and all(_private(region) for region in first)
        killed_at = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        while not any(item.model is None for item in server.recoveries):
            assert time.monotonic() - killed_at < RECOVERY_BOUND_S, "the server was not replaced"
            time.sleep(POLL_S)
        replaced_after = time.monotonic() - killed_at
        assert [region for region in first if (processes.SHM_DIR / region).exists()] == []
        second = processes.shm_regions(pid for pids in server.stub_pids().values() for pid in pids)
        assert second and not second & first and all(_private(region) for region in second)
    assert [region for region in second if (processes.SHM_DIR / region).exists()] == []
    with capsys.disabled():
        print(
            f"\n[faults] tritonserver killed: replaced after {replaced_after:.1f} s, "
            f"its {len(first)} shared-memory region(s) removed"
        )


def test_neither_client_nor_server_writes_video_bytes_to_logs_or_results(triton_server, tmp_path):
    marker = b"PRIVATE-UPLOAD-CONTENT-7f3a"
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(marker * 64)
    good = tmp_path / "clip.mp4"
    clip = media.face_clip(frames=FRAMES, seed=31)
    good.write_bytes(clip)
    results = tmp_path / "results.jsonl"
    log_size = triton_server.log_path.stat().st_size
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "score",
            str(bad),
            str(good),
            "--frames",
            str(FRAMES),
            "--url",
            triton_server.grpc_url,
            "--json",
            "--output",
            str(results),
            "--retries",
            "0",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr  # the bad file is reported, the good one scored
    written = completed.stdout + completed.stderr + results.read_bytes()
    with open(triton_server.log_path, "rb") as log:
        log.seek(log_size)
        written += log.read()
    assert marker not in written and marker.hex().encode() not in written
    # A short prefix of a clip's bytes (its container header) must not show up either.
    assert clip[32:64] not in written
