"""gRPC TLS, mutual TLS, a key-restricted protocol group and the preprocessing limits, end to end.

Certificates (a CA, a server and a client certificate) are made at test time by
``tools/certs.py``. One server is started with the command line a user types
(``python -m serve --grpc-mutual-auth ...``) over a small repository: the real N=10 classifier and
ensemble (links to the project's folders) and a copy of ``preprocess_10`` with tight limits in its
``parameters``, plus ``preprocess_10_no_time`` whose decode time limit nothing can meet. The
client's own command line (``python -m client score --ssl --root-cert ... --client-cert ...``)
scores through it. A second, tiny server checks plain TLS (server authentication only).
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serve import EmbeddedServer, GrpcTls, free_ports
from serve.distribution import PROJECT_ROOT
from tests import corpus, media
from tools import certs as certificates

pytestmark = pytest.mark.integration

REPOSITORY = PROJECT_ROOT / "model_repository"
FRAMES = 10
MODEL = f"deepfake_{FRAMES}"
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 10.0
CLI_READY_LINE = "Ctrl-C stops the server."
CLI_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
REFUSED_TIMEOUT_S = 10.0
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
# Restricted protocol group: inference needs this key (Triton prefixes gRPC metadata keys).
API_KEY_NAME = "api-key"
API_KEY_HEADER = f"triton-grpc-protocol-{API_KEY_NAME}"
API_KEY = "correct-horse-battery-staple"

# Tight limits for the copied preprocessing model, each with an input just past it.
LIMITS = {"max_bytes": 1_000_000, "max_pixels": 640 * 480, "max_frames_scanned": 40}
NO_TIME_MODEL = f"preprocess_{FRAMES}_no_time"
NO_TIME_LIMIT_S = 1e-6


def _with_parameters(config: str, name: str, extra: dict[str, str]) -> str:
    """A preprocessing config renamed, with one instance and ``extra`` parameters appended."""
    config = re.sub(r'^name: "[^"]+"', f'name: "{name}"', config, count=1, flags=re.MULTILINE)
    config = re.sub(r"count: \d+", "count: 1", config, count=1)
    for key in extra:
        config = re.sub(rf'^parameters {{ key: "{key}" .*\n', "", config, flags=re.MULTILINE)
    lines = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n' for key, value in extra.items()
    )
    return config + lines


def write_repository(root: Path) -> Path:
    """N=10 classifier and ensemble linked from the project; preprocessing copies with tight limits."""
    root.mkdir(parents=True)
    for name in (f"resnext_lstm_{FRAMES}", f"classify_{FRAMES}", MODEL):
        (root / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    source = REPOSITORY / f"preprocess_{FRAMES}"
    config = (source / "configs" / "cpu.pbtxt").read_text()
    variants = {
        f"preprocess_{FRAMES}": {key: str(value) for key, value in LIMITS.items()},
        NO_TIME_MODEL: {"decode_timeout_s": str(NO_TIME_LIMIT_S)},
    }
    for name, extra in variants.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "configs").mkdir()
        shutil.copy(source / "1" / "model.py", root / name / "1" / "model.py")
        (root / name / "configs" / "cpu.pbtxt").write_text(_with_parameters(config, name, extra))
    return root


@dataclass
class CliServer:
    """A ``python -m serve`` process and where to reach it."""

    process: subprocess.Popen
    grpc_url: str
    log_path: Path
    printed: list[str]


def start_cli_server(command: list[str], log_path: Path) -> CliServer:
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while CLI_READY_LINE not in printed:
        if process.poll() is not None and lines.empty():
            pytest.fail(f"python -m serve exited with {process.returncode}:\n" + "\n".join(printed), pytrace=False)
        try:
            printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.1)).rstrip("\n"))
        except queue.Empty:
            process.kill()
            pytest.fail(
                f"python -m serve was not ready within {START_TIMEOUT_S:g} s:\n" + "\n".join(printed), pytrace=False
            )
    grpc_line = next(line for line in printed if line.startswith("gRPC "))
    return CliServer(process, grpc_line.split("://", 1)[1], log_path, printed)


def stop_cli_server(server: CliServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S + 60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> certificates.CertificateSet:
    if shutil.which("openssl") is None:
        pytest.fail(
            "the openssl command is missing: it is a required test tool (Debian package 'openssl')", pytrace=False
        )
    return certificates.generate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> certificates.CertificateSet:
    """Certificates from a CA the server does not trust."""
    return certificates.generate(tmp_path_factory.mktemp("other_certs"))


@pytest.fixture(scope="module")
def mtls_server(certs, tmp_path_factory) -> Iterator[CliServer]:
    scratch = tmp_path_factory.mktemp("mtls")
    repository = write_repository(scratch / "repository")
    grpc_port, http_port, metrics_port = free_ports(3)
    log_path = scratch / "tritonserver.log"
    command = [
        sys.executable, "-m", "serve",
        "--model-repository", str(repository),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--log-file", str(log_path), "--stop-timeout", str(STOP_TIMEOUT_S), "--ready-timeout", str(START_TIMEOUT_S),
        "--grpc-mutual-auth", "--grpc-server-cert", str(certs.server_cert), "--grpc-server-key", str(certs.server_key),
        "--grpc-root-cert", str(certs.ca_cert),
        "--grpc-restricted-protocol", f"inference:{API_KEY_NAME}={API_KEY}",
    ]  # fmt: skip
    server = start_cli_server(command, log_path)
    try:
        yield server
    finally:
        stop_cli_server(server)


def mtls_client(server: CliServer, certs: certificates.CertificateSet) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(
        server.grpc_url,
        ssl=True,
        root_certificates=str(certs.ca_cert),
        private_key=str(certs.client_key),
        certificate_chain=str(certs.client_cert),
    )


def video_input(data: bytes) -> grpcclient.InferInput:
    array = np.frombuffer(data, dtype=np.uint8)[None, :]
    tensor = grpcclient.InferInput("VIDEO", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_client_cli_scores_over_mutual_tls_with_the_key(mtls_server, certs, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(media.face_clip(frames=FRAMES + 2, seed=21))
    tls = (
        "--url",
        mtls_server.grpc_url,
        "--ssl",
        "--root-cert",
        str(certs.ca_cert),
        "--client-cert",
        str(certs.client_cert),
        "--client-key",
        str(certs.client_key),
    )
    completed = run_client(
        "score", str(video), "--frames", str(FRAMES), "--json", *tls, "--header", f"{API_KEY_HEADER}={API_KEY}"
    )
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout)
    assert record["error"] is None and 0.0 <= record["prob_fake"] <= 1.0 and record["frames_decoded"] == FRAMES
    assert any(line.startswith("gRPC     grpcs://") for line in mtls_server.printed)

    # The same command without the key is refused by the restricted inference group, clearly.
    refused = run_client("score", str(video), "--frames", str(FRAMES), "--json", *tls, "--retries", "0")
    assert refused.returncode == 1
    assert "restricted" in (refused.stdout + refused.stderr).lower()


def test_api_scores_over_mutual_tls_and_refuses_without_the_key(mtls_server, certs):
    video = media.face_clip(frames=FRAMES, seed=22)
    with mtls_client(mtls_server, certs) as client:
        assert client.is_server_ready(client_timeout=REFUSED_TIMEOUT_S)
        result = client.infer(
            MODEL, [video_input(video)], headers={API_KEY_HEADER: API_KEY}, client_timeout=REQUEST_TIMEOUT_S
        )
        assert result.as_numpy("PROB_FAKE").shape == (1, 1)
        for headers in (None, {API_KEY_HEADER: "wrong"}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.infer(MODEL, [video_input(video)], headers=headers, client_timeout=REFUSED_TIMEOUT_S)


@pytest.mark.parametrize(
    "who", ["no_client_certificate", "untrusted_client_certificate", "plaintext", "untrusted_server"]
)
def test_connections_without_the_right_certificates_are_refused(mtls_server, certs, other_ca, who):
    kwargs = {
        "no_client_certificate": {"ssl": True, "root_certificates": str(certs.ca_cert)},
        "untrusted_client_certificate": {
            "ssl": True,
            "root_certificates": str(certs.ca_cert),
            "private_key": str(other_ca.client_key),
            "certificate_chain": str(other_ca.client_cert),
        },
        "plaintext": {},
        # The client trusts another CA only: it must not accept this server.
        "untrusted_server": {
            "ssl": True,
            "root_certificates": str(other_ca.ca_cert),
            "private_key": str(certs.client_key),
            "certificate_chain": str(certs.client_cert),
        },
    }[who]
    with grpcclient.InferenceServerClient(mtls_server.grpc_url, **kwargs) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.is_server_live(client_timeout=REFUSED_TIMEOUT_S)
    assert caught.value.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"), caught.value


def test_client_cli_names_the_connection_failure_without_a_client_certificate(mtls_server, certs, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(media.face_clip(frames=4))
    completed = run_client(
        "score",
        str(video),
        "--frames",
        str(FRAMES),
        "--json",
        "--url",
        mtls_server.grpc_url,
        "--ssl",
        "--root-cert",
        str(certs.ca_cert),
        "--retries",
        "0",
        "--timeout",
        str(REFUSED_TIMEOUT_S),
    )
    assert completed.returncode == 1
    assert "UNAVAILABLE" in completed.stdout + completed.stderr


def _limit_inputs() -> dict[str, tuple[bytes, str]]:
    """An input just past each limit, and the value the message must name."""
    oversized = media.face_clip(frames=2, size=(800, 608))
    clip = media.face_clip(frames=FRAMES + 2, seed=23)
    junk = corpus.junk_packets_first(clip, LIMITS["max_frames_scanned"] + 10)
    payload = clip + bytes(LIMITS["max_bytes"])
    return {
        "max_bytes": (payload, f"{len(payload)} > {LIMITS['max_bytes']}"),
        "max_pixels": (oversized, f"{800 * 608} > {LIMITS['max_pixels']} (frame of 800x608)"),
        "max_frames_scanned": (junk, f"{LIMITS['max_frames_scanned'] + 1} > {LIMITS['max_frames_scanned']}"),
    }


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_each_limit_in_the_model_parameters_refuses_naming_the_value_seen(mtls_server, certs, limit):
    data, value = _limit_inputs()[limit]
    with mtls_client(mtls_server, certs) as client:
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            client.infer(
                MODEL, [video_input(data)], headers={API_KEY_HEADER: API_KEY}, client_timeout=REQUEST_TIMEOUT_S
            )
        seconds = time.monotonic() - started
        # Under the limits a normal clip still scores.
        ok = client.infer(
            MODEL,
            [video_input(media.face_clip(frames=FRAMES))],
            headers={API_KEY_HEADER: API_KEY},
            client_timeout=REQUEST_TIMEOUT_S,
        )
    assert caught.value.status() == INVALID_ARGUMENT
    message = caught.value.message()
    assert f"in ensemble '{MODEL}'" in message and f"input exceeds {limit}: {value}" in message, message
    assert seconds < REFUSED_TIMEOUT_S, f"refusing took {seconds:.1f} s"
    assert ok.as_numpy("PROB_FAKE").shape == (1, 1)


def test_decode_time_limit_refuses_naming_the_time_spent(mtls_server, certs):
    with mtls_client(mtls_server, certs) as client, pytest.raises(InferenceServerException) as caught:
        client.infer(
            NO_TIME_MODEL,
            [video_input(media.face_clip(frames=FRAMES))],
            outputs=[grpcclient.InferRequestedOutput("FACES")],
            headers={API_KEY_HEADER: API_KEY},
            client_timeout=REQUEST_TIMEOUT_S,
        )
    assert caught.value.status() == INVALID_ARGUMENT
    assert re.search(
        r"input exceeds decode_timeout_s: [0-9.e-]+ > 1e-06 \(seconds spent decoding\)", caught.value.message()
    ), caught.value.message()


def test_plain_tls_serves_the_client_that_trusts_the_ca(certs, other_ca, tmp_path):
    """Server authentication only, through the embedded server's API and the client's health command."""
    repository = write_echo_repository(tmp_path / "repository")
    grpc_port, http_port, metrics_port = free_ports(3)
    server = EmbeddedServer(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=tmp_path / "tritonserver.log",
        stop_timeout=STOP_TIMEOUT_S,
        grpc_tls=GrpcTls(certs.server_cert, certs.server_key),
    )
    with server:
        report = run_client(
            "health",
            "--json",
            "--url",
            server.grpc_url,
            "--ssl",
            "--root-cert",
            str(certs.ca_cert),
            "--timeout",
            str(REFUSED_TIMEOUT_S),
        )
        health = json.loads(report.stdout)
        assert health["live"] and health["ready"] and health["error"] is None, report.stdout + report.stderr
        with grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(certs.ca_cert)
        ) as client:
            tensor = grpcclient.InferInput("X", [1, 3], "UINT8")
            tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.uint8))
            np.testing.assert_array_equal(client.infer("echo", [tensor]).as_numpy("Y"), [[1, 2, 3]])
        for kwargs in ({}, {"ssl": True, "root_certificates": str(other_ca.ca_cert)}):
            with grpcclient.InferenceServerClient(server.grpc_url, **kwargs) as refused:
                with pytest.raises(InferenceServerException):
                    refused.is_server_live(client_timeout=REFUSED_TIMEOUT_S)
        untrusted = run_client(
            "health",
            "--json",
            "--url",
            server.grpc_url,
            "--ssl",
            "--root-cert",
            str(other_ca.ca_cert),
            "--timeout",
            str(REFUSED_TIMEOUT_S),
        )
        assert untrusted.returncode == 1
        assert json.loads(untrusted.stdout)["live"] is False
    assert "--grpc-use-ssl=true" in server.log_text()
    assert "--grpc-use-ssl-mutual" not in server.log_text()


ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_UINT8 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
ECHO_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def write_echo_repository(root: Path) -> Path:
    """A repository holding only ``echo`` (Y = X, UINT8), the cheapest model a server can load."""
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (root / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    return root
