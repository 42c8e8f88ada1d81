"""The embedded server against the real tritonserver binary, on a tiny repository made here.

The repository holds ``add_one`` (a python-backend model, ``configs/cpu.pbtxt``) and
``plus_two`` (an ensemble that runs ``add_one`` twice), so these tests do not depend on the
project's models: start-up, binding, the restricted model-control API, the watchdog (a killed
stub, a killed server), restart, a broken model, and the command line's signals.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serve import EmbeddedServer, GrpcTls, ModelLoadError, Recovery, Restriction, free_ports
from serve.distribution import PROJECT_ROOT, STUB_NAME

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 120.0
# Stopping a server whose dead stub was sent a request waits the whole exit timeout: keep it short.
STOP_TIMEOUT_S = 5.0
# The contract: service is restored well under a minute.
RECOVERY_BOUND_S = 30.0
LEFTOVER_GRACE_S = 2.0
POLL_S = 0.1
CLI_READY_LINE = "Ctrl-C stops the server."
CLI_EXIT_BOUND_S = STOP_TIMEOUT_S + 30.0
LOOPBACK = "127.0.0.1"
TCP_LISTEN = "0A"
MISSING_MODULE = "no_such_module_for_this_test"

ADD_ONE_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
"""
# While the file SLOW_FINALIZE exists in the model's folder, finalize() outlasts the leftover grace,
# as a model releasing a large GPU allocation can: an old instance that survives its sibling's death
# then stays until the watchdog ends it.
SLOW_FINALIZE = "slow_finalize"
ADD_ONE_MODEL = f"""
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.slow_flag = os.path.join(args["model_repository"], "{SLOW_FINALIZE}")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses

    def finalize(self):
        if os.path.exists(self.slow_flag):
            time.sleep(60)
"""
PLUS_TWO_CONFIG = """
name: "plus_two"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "add_one" model_version: -1 input_map { key: "X" value: "X" } output_map { key: "Y" value: "MID" } },
    { model_name: "add_one" model_version: -1 input_map { key: "X" value: "MID" } output_map { key: "Y" value: "Y" } }
  ]
}
"""
BROKEN_MODEL = f"""
import {MISSING_MODULE}


class TritonPythonModel:
    pass
"""


def write_tiny_repository(root: Path, *, ensemble: bool = True, broken: bool = False) -> Path:
    """A repository with ``add_one`` (and ``plus_two``; and ``broken`` whose model.py fails)."""
    models = {"add_one": ADD_ONE_MODEL} | ({"broken": BROKEN_MODEL} if broken else {})
    for name, code in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "configs").mkdir()
        (root / name / "configs" / "cpu.pbtxt").write_text(ADD_ONE_CONFIG)
        (root / name / "1" / "model.py").write_text(code)
    if ensemble:
        (root / "plus_two" / "1").mkdir(parents=True)
        (root / "plus_two" / "config.pbtxt").write_text(PLUS_TWO_CONFIG)
    return root


def new_server(repository: Path, log_path: Path) -> EmbeddedServer:
    grpc_port, http_port, metrics_port = free_ports(3)
    return EmbeddedServer(
        repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=log_path,
        stop_timeout=STOP_TIMEOUT_S,
        leftover_stub_grace=LEFTOVER_GRACE_S,
    )


def infer(url: str, model: str, values: list[float]) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("X", [1, len(values)], "FP32")
        tensor.set_data_from_numpy(np.array([values], dtype=np.float32))
        return client.infer(model, [tensor]).as_numpy("Y")


def seconds_until_served(url: str, model: str, since: float) -> float:
    """Polls ``model`` until a request succeeds; seconds from ``since``, or fails past the bound."""
    last_error = ""
    while time.monotonic() - since < RECOVERY_BOUND_S:
        try:
            np.testing.assert_array_equal(infer(url, model, [1.0, 2.0]), [[3.0, 4.0]])
            return time.monotonic() - since
        except InferenceServerException as error:
            last_error = str(error)
        time.sleep(POLL_S)
    pytest.fail(f"'{model}' was not served again within {RECOVERY_BOUND_S} s; last error: {last_error}")


def recovery_after(server: EmbeddedServer, count_before: int) -> Recovery:
    """The first recovery the watchdog records after ``count_before`` of them; fails past the bound."""
    deadline = time.monotonic() + RECOVERY_BOUND_S
    while time.monotonic() < deadline:
        recoveries = server.recoveries
        if len(recoveries) > count_before:
            return recoveries[count_before]
        time.sleep(POLL_S)
    pytest.fail(f"the watchdog recorded no recovery within {RECOVERY_BOUND_S} s; log:\n{server.log_text()[-2000:]}")


def stub_processes(server_pid: int) -> dict[int, str]:
    """The running python stub children of a tritonserver (pid -> model.py path), as ``ps`` sees them."""
    listing = subprocess.run(
        ["ps", "-ww", "-o", "pid=,stat=,args=", "--ppid", str(server_pid)], capture_output=True, text=True, check=False
    ).stdout
    stubs = {}
    for line in listing.splitlines():
        pid, state, *argv = line.split()
        # A zombie (a stub that died and is not reaped yet) is no longer running.
        if not state.startswith("Z") and len(argv) > 1 and Path(argv[0]).name == STUB_NAME:
            stubs[int(pid)] = argv[1]
    return stubs


def listening_addresses(port: int) -> list[str]:
    """Addresses with a listening TCP socket on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address_hex, port_hex = fields[1].split(":")
            if fields[3] != TCP_LISTEN or int(port_hex, 16) != port:
                continue
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address_hex[i : i + 8])[::-1] for i in range(0, len(address_hex), 8))
            address = ipaddress.ip_address(socket.inet_ntop(family, raw))
            # gRPC listens through an IPv6 socket: 127.0.0.1 shows as ::ffff:127.0.0.1.
            mapped = getattr(address, "ipv4_mapped", None)
            found.append(str(mapped or address))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("tiny")
    server = new_server(write_tiny_repository(root / "repository"), root / "tritonserver.log")
    server.start(timeout=START_TIMEOUT_S)
    try:
        yield server
    finally:
        server.stop()


def test_starts_and_reports_every_model_ready(tiny_server):
    assert tiny_server.models == ("add_one", "plus_two")
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert all(client.is_model_ready(name) for name in tiny_server.models)
    np.testing.assert_array_equal(infer(tiny_server.grpc_url, "plus_two", [1.0, 2.0]), [[3.0, 4.0]])
    assert re.search(r"ready: 2 models, pid \d+", tiny_server.log_text())
    assert "--model-config-name=cpu" in tiny_server.log_text()
    assert "--pinned-memory-pool-byte-size=0" in tiny_server.log_text()


def test_binds_to_loopback_only_by_default(tiny_server):
    for port in (tiny_server.grpc_port, tiny_server.http_port, tiny_server.metrics_port):
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on port {port}"
        assert set(addresses) == {LOOPBACK}, f"port {port} listens on {addresses}"


def test_model_control_api_refuses_callers_without_the_key(tiny_server):
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("add_one")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
    http = httpclient.InferenceServerClient(tiny_server.http_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            http.unload_model("add_one")
    finally:
        http.close()
    np.testing.assert_array_equal(infer(tiny_server.grpc_url, "add_one", [0.0]), [[1.0]])
    assert "<hidden>" in tiny_server.log_text()
    assert tiny_server.http_restrictions[0].value not in tiny_server.log_text()


def test_watchdog_loads_a_model_again_after_its_stub_is_killed(tiny_server, capsys, request):
    server_pid = tiny_server.pid
    stubs = sorted(
        pid for pid, path in stub_processes(server_pid).items() if Path(path).parent.parent.name == "add_one"
    )
    assert len(stubs) == 2, "add_one has two instances"
    victim, sibling = stubs
    recoveries_before = len(tiny_server.recoveries)
    slow_flag = tiny_server.repository / "add_one" / SLOW_FINALIZE
    slow_flag.touch()
    request.addfinalizer(lambda: slow_flag.unlink(missing_ok=True))

    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    # The surviving instance may answer at once, before the watchdog has seen the death: wait for
    # the recovery itself, then for the ensemble to be served again.
    recovery = recovery_after(tiny_server, recoveries_before)
    seconds = seconds_until_served(tiny_server.grpc_url, "plus_two", killed_at)

    assert tiny_server.pid == server_pid, "the model, not the server, should have been restarted"
    new_stubs = stub_processes(server_pid)
    assert victim not in new_stubs and any(Path(path).parent.parent.name == "add_one" for path in new_stubs.values())
    replacements = {pid for pid, path in new_stubs.items() if "/add_one/" in path} - {sibling}
    assert len(replacements) == 2
    assert tiny_server.stub_pids()["add_one"] == replacements
    assert recovery.model == "add_one" and str(victim) in recovery.cause
    assert "loading 'add_one' again" in tiny_server.log_text()
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        assert client.is_model_ready("add_one") and client.is_model_ready("plus_two")
    # The old instance that did not die is still finalizing; its stub is ended after the grace.
    deadline = time.monotonic() + LEFTOVER_GRACE_S + RECOVERY_BOUND_S
    while alive(sibling) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not alive(sibling), "the surviving stub of the replaced instances was left running"
    assert f"ended stub {sibling} left over from the replaced instances of 'add_one'" in tiny_server.log_text()
    np.testing.assert_array_equal(infer(tiny_server.grpc_url, "plus_two", [1.0, 2.0]), [[3.0, 4.0]])
    with capsys.disabled():
        print(
            f"\n[serve] killed python stub: served again after {seconds:.2f} s "
            f"(watchdog: {recovery.seconds:.2f} s to reload)"
        )
    assert seconds < RECOVERY_BOUND_S


def test_watchdog_starts_a_new_server_when_tritonserver_dies(tiny_server, capsys):
    old_pid = tiny_server.pid
    old_stubs = set(stub_processes(old_pid))

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    seconds = seconds_until_served(tiny_server.grpc_url, "plus_two", killed_at)

    assert tiny_server.pid not in (None, old_pid)
    assert tiny_server.recoveries[-1].model is None
    assert "tritonserver exited unexpectedly" in tiny_server.log_text()
    deadline = time.monotonic() + RECOVERY_BOUND_S
    while any(alive(pid) for pid in old_stubs) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not any(alive(pid) for pid in old_stubs), "the dead server's stubs were left running"
    with capsys.disabled():
        print(f"\n[serve] killed tritonserver: served again after {seconds:.2f} s")


def test_restart_serves_again_on_the_same_ports(tiny_server):
    old_pid = tiny_server.pid
    urls = (tiny_server.grpc_url, tiny_server.http_url, tiny_server.metrics_url)

    tiny_server.restart(timeout=START_TIMEOUT_S)

    assert tiny_server.pid not in (None, old_pid)
    assert not alive(old_pid)
    assert (tiny_server.grpc_url, tiny_server.http_url, tiny_server.metrics_url) == urls
    np.testing.assert_array_equal(infer(tiny_server.grpc_url, "plus_two", [5.0]), [[7.0]])


def test_broken_model_stops_the_start_with_the_servers_message(tmp_path):
    server = new_server(
        write_tiny_repository(tmp_path / "repository", ensemble=False, broken=True), tmp_path / "log.txt"
    )

    with pytest.raises(ModelLoadError) as raised:
        server.start(timeout=START_TIMEOUT_S)

    assert set(raised.value.reasons) == {"broken"}
    assert f"No module named '{MISSING_MODULE}'" in raised.value.reasons["broken"]
    assert server.pid is None
    assert listening_addresses(server.grpc_port) == [] and listening_addresses(server.http_port) == []


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}


def cli_command(repository: Path, log_path: Path) -> list[str]:
    grpc_port, http_port, metrics_port = free_ports(3)
    return [
        sys.executable, "-m", "serve",
        "--model-repository", str(repository),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--log-file", str(log_path),
        "--stop-timeout", str(STOP_TIMEOUT_S),
    ]  # fmt: skip


def test_cli_exits_nonzero_with_the_servers_message_for_a_broken_model(tmp_path):
    repository = write_tiny_repository(tmp_path / "repository", ensemble=False, broken=True)

    completed = subprocess.run(
        cli_command(repository, tmp_path / "log.txt"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 1
    assert "failed to load 1 model(s)" in completed.stderr
    assert f"broken: Internal: ModuleNotFoundError: No module named '{MISSING_MODULE}'" in completed.stderr
    assert "ready    " not in completed.stdout


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_stops_cleanly_on_a_signal(tmp_path, stop_signal):
    repository = write_tiny_repository(tmp_path / "repository", ensemble=False)
    log_path = tmp_path / "log.txt"
    command = cli_command(repository, log_path)
    cli = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in cli.stdout], daemon=True).start()
    try:
        printed = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while CLI_READY_LINE not in printed:
            printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.1)).rstrip("\n"))
        assert printed[0] == "ready    add_one"
        assert any(line.startswith("gRPC     grpc://127.0.0.1:") for line in printed)
        server_pid = int(re.search(r"ready: 1 models, pid (\d+)", log_path.read_text())[1])
        backend_dir = Path(re.search(r"--backend-directory=(\S+)", log_path.read_text())[1])
        assert alive(server_pid) and backend_dir.is_dir()

        stopped_at = time.monotonic()
        cli.send_signal(stop_signal)
        code = cli.wait(timeout=CLI_EXIT_BOUND_S)
        seconds = time.monotonic() - stopped_at
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()

    assert code == 0, cli.stderr.read()
    assert not alive(server_pid)
    assert "ended with code 0" in log_path.read_text(), "tritonserver should have shut down gracefully"
    assert not backend_dir.exists()
    grpc_port = int(command[command.index("--grpc-port") + 1])
    assert listening_addresses(grpc_port) == []
    assert seconds < CLI_EXIT_BOUND_S


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    paths = {
        name: folder / name for name in ("ca.key", "ca.pem", "server.key", "server.pem", "client.key", "client.pem")
    }
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=serve test CA")
    for role, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{role}.ext").write_text(extensions + "\n")
        openssl("req", *key, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", f"/CN={role}")
        openssl(
            "x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{role}.pem", "-days", "1", "-extfile", f"{role}.ext",
        )  # fmt: skip
    return paths


def test_grpc_mutual_tls_and_a_restricted_protocol(tmp_path):
    certs = make_certificates(tmp_path)
    grpc_port, http_port, metrics_port = free_ports(3)
    server = EmbeddedServer(
        write_tiny_repository(tmp_path / "repository", ensemble=False),
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=tmp_path / "log.txt",
        stop_timeout=STOP_TIMEOUT_S,
        grpc_tls=GrpcTls(certs["server.pem"], certs["server.key"], certs["ca.pem"], mutual=True),
        grpc_restrictions=[Restriction.parse("inference:api-key=let-me-in")],
    )
    tensor = grpcclient.InferInput("X", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[41.0]], dtype=np.float32))
    # tritonclient reads the certificates from these paths.
    ca, key, cert = (str(certs[name]) for name in ("ca.pem", "client.key", "client.pem"))
    with server:
        with grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=ca, private_key=key, certificate_chain=cert
        ) as client:
            # Triton prefixes the key of a gRPC restriction: callers send triton-grpc-protocol-<key>.
            result = client.infer("add_one", [tensor], headers={"triton-grpc-protocol-api-key": "let-me-in"})
            np.testing.assert_array_equal(result.as_numpy("Y"), [[42.0]])
            with pytest.raises(InferenceServerException, match="restricted"):
                client.infer("add_one", [tensor])
            with pytest.raises(InferenceServerException, match="restricted"):
                client.infer("add_one", [tensor], headers={"triton-grpc-protocol-api-key": "wrong"})
        with grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=ca) as no_certificate:
            with pytest.raises(InferenceServerException):
                no_certificate.is_server_live(client_timeout=5)
        with grpcclient.InferenceServerClient(server.grpc_url) as plaintext:
            with pytest.raises(InferenceServerException):
                plaintext.is_server_live(client_timeout=5)
        assert "--grpc-use-ssl-mutual=true" in server.log_text()
        assert "let-me-in" not in server.log_text()
