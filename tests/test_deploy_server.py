"""The container's entrypoint and health check against a real tritonserver 2.51 (the pip one).

The entrypoint starts the server exactly as the GPU container does (same flags, key from a
secret file), pointed at the pip-installed binary through ``TRITONSERVER``, over a one-model
python-backend repository. This checks what cannot be read off the files: the flag syntax that
Triton 2.51 accepts, which calls the admin key guards over HTTP and gRPC, the metric names the
dashboard and the autoscaler use, the release the image tag must match, that a dead python
stub is caught and ends in a restart, and what explicit model control does: a new version loaded
and a version retired on the running server (neither stops it, neither turns it not ready), a
version that fails to load leaving the others serving, a model that fails at start stopping it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from contract import ADMIN_KEY_HEADER, Exit
from deploy import entrypoint, health
from serve import TritonDistribution, TritonNotFoundError, free_ports, processes
from serve.distribution import server_environment
from tests.test_deploy import DOCKERFILE, GPU_METRICS, NGC_RELEASE_OF_TRITON, metric_names_used

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "5f0c1e7a9b2d4c6e8a1b3d5f7e9c0a2b"
MODEL = "echo"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# Short, so that a stopping server with a dead stub does not wait Triton's default 30 s.
TEST_EXIT_TIMEOUT_S = 2
POLL_S = 0.2

ECHO_CONFIG = f"""name: "{MODEL}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
# The same model serving every version folder it has, as the classifiers do.
VERSIONED_CONFIG = ECHO_CONFIG.replace("max_batch_size: 8", "max_batch_size: 8\nversion_policy: { all { } }")
BROKEN_MODEL = """class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this version cannot load")
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
            for r in requests
        ]
"""


@dataclass
class Server:
    process: subprocess.Popen[str]
    http: str
    grpc: str
    metrics: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def http_status(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def launch(tmp_path: Path, config: str = ECHO_CONFIG, model: str = ECHO_MODEL) -> Server:
    """Starts the entrypoint over a repository of one python model; returns at once."""
    try:
        distribution = TritonDistribution.locate()
    except TritonNotFoundError as error:
        pytest.fail(f"tritonserver is not installed: {error}", pytrace=False)
    repository = tmp_path / "repository"
    (repository / MODEL / "1").mkdir(parents=True)
    (repository / MODEL / "config.pbtxt").write_text(config)
    (repository / MODEL / "1" / "model.py").write_text(model)
    key_file = tmp_path / "triton_admin_key"
    key_file.write_text(ADMIN_KEY + "\n")
    backends = distribution.build_backend_directory(tmp_path)
    http, grpc, metrics = free_ports(3)
    env = server_environment(distribution)
    env.update(
        TRITONSERVER=str(distribution.binary),
        MODEL_REPOSITORY=str(repository),
        TRITON_ADMIN_KEY_FILE=str(key_file),
        TRITON_HTTP_PORT=str(http),
        TRITON_GRPC_PORT=str(grpc),
        TRITON_METRICS_PORT=str(metrics),
        TRITON_BIND_ADDRESS="127.0.0.1",
        TRITON_EXIT_TIMEOUT_S=str(TEST_EXIT_TIMEOUT_S),
        TRITON_EXTRA_ARGS=f"--backend-directory={backends} --pinned-memory-pool-byte-size=0",
        # The pip server keeps its cache implementations in its wheel, not in /opt/tritonserver/caches.
        TRITON_CACHE_DIRECTORY=str(distribution.caches),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.entrypoint"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"127.0.0.1:{metrics}", log)


def start(tmp_path: Path, config: str = ECHO_CONFIG) -> Server:
    """Starts the entrypoint and waits until the server is ready."""
    server = launch(tmp_path, config)
    process = server.process
    deadline = time.monotonic() + START_TIMEOUT_S
    while http_status_or_none(f"http://{server.http}/v2/health/ready") != 200:
        if process.poll() is not None:
            pytest.fail(f"the entrypoint exited with {process.returncode}:\n{server.log_text()}", pytrace=False)
        if time.monotonic() > deadline:
            stop(server)
            pytest.fail(f"server not ready after {START_TIMEOUT_S} s:\n{server.log_text()}", pytrace=False)
        time.sleep(POLL_S)
    return server


def http_status_or_none(url: str) -> int | None:
    try:
        return http_status(url)
    except (urllib.error.URLError, OSError):
        return None


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("deploy_server"))
    yield running
    stop(running)


def test_image_tag_is_the_release_of_the_installed_server(server: Server) -> None:
    with urllib.request.urlopen(f"http://{server.http}/v2", timeout=10) as response:
        version = json.load(response)["version"]
    release = NGC_RELEASE_OF_TRITON[".".join(version.split(".")[:2])]
    assert f"FROM nvcr.io/nvidia/tritonserver:{release}-py3" in DOCKERFILE.read_text(), (
        f"the embedded server is Triton {version}: the GPU image must be tritonserver:{release}-py3"
    )


def test_health_and_metadata_are_open_and_admin_http_apis_need_the_key(server: Server) -> None:
    base = f"http://{server.http}"
    assert http_status(f"{base}/v2/health/ready") == 200
    assert http_status(f"{base}/v2/models/{MODEL}") == 200
    key = {ADMIN_KEY_HEADER: ADMIN_KEY}
    wrong = {ADMIN_KEY_HEADER: "not-the-key-at-all"}
    infer = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
    for method, path, body in (
        ("POST", "/v2/repository/index", None),
        ("GET", f"/v2/models/{MODEL}/stats", None),
        ("GET", f"/v2/models/{MODEL}/config", None),
        ("POST", f"/v2/models/{MODEL}/infer", infer),
        ("GET", "/v2/systemsharedmemory/status", None),
    ):
        assert http_status(base + path, method, body=body) == 403, f"{method} {path} without the key"
        assert http_status(base + path, method, wrong, body) == 403, f"{method} {path} with a wrong key"
        assert http_status(base + path, method, key, body) == 200, f"{method} {path} with the key"


def test_grpc_inference_is_open_and_admin_protocols_need_the_key(server: Server) -> None:
    grpc = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(server.grpc)
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    tensor = grpc.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    np.testing.assert_array_equal(client.infer(MODEL, [tensor]).as_numpy("Y"), data)
    assert client.get_model_config(MODEL).config.name == MODEL, "perf_analyzer reads the config over gRPC"
    for call in (client.get_model_repository_index, lambda **kw: client.get_inference_statistics(MODEL, **kw)):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
        call(headers={f"triton-grpc-protocol-{ADMIN_KEY_HEADER}": ADMIN_KEY})


def test_dashboard_and_autoscaler_use_metrics_this_triton_exports(server: Server) -> None:
    grpc = pytest.importorskip("tritonclient.grpc")
    client = grpc.InferenceServerClient(server.grpc)
    tensor = grpc.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    client.infer(MODEL, [tensor])
    with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10) as response:
        exported = {line.split()[2] for line in response.read().decode().splitlines() if line.startswith("# TYPE ")}
    missing = metric_names_used() - GPU_METRICS - exported
    assert not missing, f"Triton 2.51 exports no {sorted(missing)}"


def test_a_dead_stub_fails_the_health_check_and_restarts_the_container(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        (server_pid,) = processes.children(server.process.pid)
        url = f"http://{server.http}"
        assert health.check(url, "ready", 5.0, server_pid=server_pid) == []
        # Let the entrypoint see the stub alive once, so it can name the model when it dies.
        time.sleep(entrypoint.WATCH_INTERVAL_S + 1)
        (stub,) = processes.stubs(parent=server_pid)
        os.kill(stub.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not processes.dead_stubs(server_pid):
            assert time.monotonic() < deadline, "the killed stub did not turn into a zombie"
            time.sleep(POLL_S)
        # Triton itself still claims to be ready: that is why the check looks at the stubs.
        assert http_status(f"{url}/v2/health/ready") == 200
        problems = health.check(url, "ready", 5.0, server_pid=server_pid)
        assert len(problems) == 1 and f"stub process(es) {stub.pid} died" in problems[0]
        returncode = server.process.wait(
            timeout=entrypoint.WATCH_INTERVAL_S + TEST_EXIT_TIMEOUT_S + entrypoint.KILL_GRACE_S + 10
        )
        assert returncode == Exit.STUB_DIED, server.log_text()
        assert f"python-backend stub of {MODEL} (pid {stub.pid}) died" in server.log_text()
    finally:
        stop(server)


def _infer(server: Server, version: str | None = None) -> tuple[int, dict]:
    """One HTTP inference (restricted: with the key), of a version or the latest; (status, answer)."""
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    request = urllib.request.Request(
        f"http://{server.http}{path}", method="POST", headers={ADMIN_KEY_HEADER: ADMIN_KEY}, data=body.encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _load(server: Server, model: str = MODEL, action: str = "load") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://{server.http}/v2/repository/models/{model}/{action}",
        method="POST",
        headers={ADMIN_KEY_HEADER: ADMIN_KEY},
        data=b"",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _still_serving(server: Server) -> None:
    """One watch of the entrypoint later: the server still runs, and nothing was called a dead stub."""
    time.sleep(entrypoint.WATCH_INTERVAL_S + 1)
    assert server.process.poll() is None, server.log_text()
    assert "died" not in server.log_text()


def test_versions_go_live_and_are_retired_on_the_running_server(tmp_path: Path) -> None:
    server = start(tmp_path, VERSIONED_CONFIG)
    url = f"http://{server.http}"
    model_dir = tmp_path / "repository" / MODEL
    try:
        (server_pid,) = processes.children(server.process.pid)
        _still_serving(server)
        # A new version: its folder, then a load through the restricted API.
        (model_dir / "2").mkdir()
        (model_dir / "2" / "model.py").write_text(ECHO_MODEL)
        assert http_status(f"{url}/v2/repository/models/{MODEL}/load", "POST", body=b"") == 403, "needs the key"
        assert _load(server)[0] == 200
        assert _infer(server, "2")[1]["model_version"] == "2"
        assert _infer(server)[1]["model_version"] == "2", "the latest version answers by default"
        assert _infer(server, "1")[1]["model_version"] == "1"
        # A version that fails to load: the load says so, the served versions keep serving, and the
        # server stays ready (strict readiness would report it not ready from now on).
        (model_dir / "3").mkdir()
        (model_dir / "3" / "model.py").write_text(BROKEN_MODEL)
        status, answer = _load(server)
        assert status == 400 and "version 3" in answer["error"], answer
        assert [_infer(server, version)[0] for version in ("1", "2")] == [200, 200]
        assert http_status(f"{url}/v2/health/ready") == 200
        assert health.check(url, "ready", 5.0, server_pid=server_pid, admin_key=ADMIN_KEY) == []
        # The rollback: the version folders renamed away (export retire), then a load.
        for version in ("3", "2"):
            (model_dir / version).rename(model_dir / f"retired_{version}_20261203T000000Z")
        assert _load(server)[0] == 200
        status, answer = _infer(server, "2")
        assert status != 200 and "version" in answer["error"], answer
        assert _infer(server)[1]["model_version"] == "1"
        assert http_status(f"{url}/v2/health/ready") == 200
        _still_serving(server)
        assert processes.dead_stubs(server_pid) == [], "Triton reaps the stubs it ends itself"
        # A model left with no version is not served: Triton's ready does not say so, the check does.
        assert _load(server, action="unload")[0] == 200
        deadline = time.monotonic() + 30
        while not (problems := health.check(url, "ready", 5.0, server_pid=server_pid, admin_key=ADMIN_KEY)):
            assert time.monotonic() < deadline, "the unloaded model was never reported"
            time.sleep(POLL_S)
        assert problems == [
            f"model '{MODEL}' has no ready version (version 1: unloaded; version 2: unloaded; "
            "version 3: Internal: RuntimeError: this version cannot load)"
        ]
        assert http_status(f"{url}/v2/health/ready") == 200
        assert health.check(url, "ready", 5.0, server_pid=server_pid) == [], "without the key: Triton's ready only"
        wrong = health.check(url, "ready", 5.0, server_pid=server_pid, admin_key="not-the-admin-key")
        assert len(wrong) == 1 and "repository index cannot be read" in wrong[0]
    finally:
        stop(server)


def test_a_model_that_fails_to_load_at_start_stops_the_server(tmp_path: Path) -> None:
    server = launch(tmp_path, model=BROKEN_MODEL)
    try:
        returncode = server.process.wait(timeout=START_TIMEOUT_S)
    finally:
        stop(server)
    assert returncode != 0
    assert "failed to load all models" in server.log_text()
