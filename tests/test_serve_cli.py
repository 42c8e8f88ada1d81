"""``serve`` without a running server: command line, repository checks, environment, ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from contract import RESPONSE_CACHE_BYTES, Exit
from serve import (
    ArtifactsMissingError,
    EmbeddedServer,
    PortInUseError,
    RepositoryError,
    Restriction,
    ServeError,
    SetupError,
    TritonDistribution,
    free_port,
    free_ports,
    processes,
)
from serve.__main__ import build_parser
from serve.distribution import (
    ALLOCATOR_VARIABLE,
    BACKEND_LIBRARY,
    BACKEND_NAME,
    BACKEND_UTILS,
    JEMALLOC_CONF,
    PROJECT_ROOT,
    STUB_NAME,
    allocator_of,
    find_jemalloc,
    python_version_tag,
    server_environment,
)
from serve.flags import ServerFlags
from serve.options import GrpcTls
from serve.ports import ensure_free
from serve.repository import export_commands, missing_artifacts

CLI_TIMEOUT_S = 60
# Flags the serving contract names; --help must document each of them.
CONTRACT_FLAGS = (
    "--model-repository",
    "--grpc-port",
    "--http-port",
    "--metrics-port",
    "--host",
    "--log-file",
    "--model-config-name",
    "--ready-timeout",
    "--grpc-ssl",
    "--grpc-server-cert",
    "--grpc-server-key",
    "--grpc-root-cert",
    "--grpc-mutual-auth",
    "--grpc-restricted-protocol",
)
PYTHON_CONFIG = 'backend: "python"\nmax_batch_size: 8\n'
ONNX_CONFIG = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
PLAN_CONFIG = 'platform: "tensorrt_plan"\nmax_batch_size: 8\n'
PYTHON_WITH_ONNX_PARAMETER = PYTHON_CONFIG + 'parameters { key: "onnx_file" value: { string_value: "weights.onnx" } }\n'


def run_serve(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def make_model(
    repository: Path, name: str, config: str, config_name: str | None = None, files: tuple[str, ...] = ()
) -> Path:
    folder = repository / name
    version = folder / "1"
    version.mkdir(parents=True)
    target = folder / "configs" / f"{config_name}.pbtxt" if config_name else folder / "config.pbtxt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(config)
    for file in files:
        (version / file).write_bytes(b"")
    return folder


# ------------------------------------------------------------------------------------ command line


def test_help_documents_every_flag():
    completed = run_serve("--help", cwd=PROJECT_ROOT)

    assert completed.returncode == 0, completed.stderr
    help_text = completed.stdout
    parser_flags = {
        option for action in build_parser()._actions for option in action.option_strings if option.startswith("--")
    }
    assert set(CONTRACT_FLAGS) <= parser_flags
    for flag in sorted(parser_flags):
        assert re.search(rf"^\s+(-\w, )?{re.escape(flag)}\b", help_text, re.MULTILINE), f"{flag} has no help entry"
    for action in build_parser()._actions:
        assert action.help and action.help.strip(), f"{action.option_strings} has an empty help text"
    assert "(default: 127.0.0.1)" in help_text
    assert "(default: 8001)" in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grpc-port", "70000"], "expected an integer from 1 to 65535, got 70000"),
        (["--ready-timeout", "0"], "positive number of seconds"),
        (["--grpc-restricted-protocol", "inference"], "must look like <protocol>"),
        (["--grpc-restricted-protocol", "everything:k=v"], "unknown protocol"),
        (["--http-restricted-api", "health:Bad Key=v"], "lowercase header name"),
        (["--grpc-ssl"], "needs both --grpc-server-cert and --grpc-server-key"),
        (["--grpc-server-cert", "cert.pem"], "only apply with --grpc-ssl"),
        (["--grpc-ssl", "--grpc-server-cert", "absent.pem", "--grpc-server-key", "absent.key"], "does not exist"),
        (["--triton-arg=--model-control-mode=poll"], "--triton-arg may not set --model-control-mode"),
    ],
)
def test_bad_command_lines_are_refused_with_the_reason(args, message, tmp_path):
    completed = run_serve(*args, cwd=tmp_path)

    assert completed.returncode == Exit.USAGE
    assert message in completed.stderr


def test_mutual_tls_needs_a_root_certificate(tmp_path):
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("PEM")

    completed = run_serve(
        "--grpc-mutual-auth", "--grpc-server-cert", "cert.pem", "--grpc-server-key", "key.pem", cwd=tmp_path
    )

    assert completed.returncode == Exit.USAGE
    assert "--grpc-root-cert" in completed.stderr


def test_tls_flags_become_tritonserver_flags(tmp_path):
    paths = {}
    for name in ("cert.pem", "key.pem", "ca.pem"):
        paths[name] = tmp_path / name
        paths[name].write_text("PEM")
    tls = GrpcTls(paths["cert.pem"], paths["key.pem"], paths["ca.pem"], mutual=True)

    tls.validate()
    assert tls.server_args() == [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={paths['cert.pem']}",
        f"--grpc-server-key={paths['key.pem']}",
        f"--grpc-root-cert={paths['ca.pem']}",
        "--grpc-use-ssl-mutual=true",
    ]


def test_restriction_round_trips_to_the_tritonserver_flag():
    restriction = Restriction.parse("inference,health:api-key=s3cret=x")

    assert restriction.protocols == ("inference", "health")
    assert restriction.key == "api-key"
    assert restriction.value == "s3cret=x"
    assert restriction.as_flag_value() == "inference,health:api-key=s3cret=x"
    with pytest.raises(ValueError, match="value after '=' is empty"):
        Restriction.parse("health:k=")


def test_model_control_api_is_always_restricted(tmp_path):
    own = EmbeddedServer(tmp_path, grpc_port=1, http_port=2, metrics_port=3)
    assert [item.protocols for item in own.grpc_restrictions] == [("model-repository",)]
    assert [item.protocols for item in own.http_restrictions] == [("model-repository",)]
    assert own.grpc_restrictions[0].value == own.http_restrictions[0].value
    assert len(own.grpc_restrictions[0].value) >= 24
    assert own.grpc_restrictions[0].value != EmbeddedServer(tmp_path).grpc_restrictions[0].value

    theirs = Restriction.parse("model-repository,statistics:admin=secret")
    given = EmbeddedServer(tmp_path, grpc_restrictions=[theirs], http_restrictions=[theirs])
    assert given.grpc_restrictions == (theirs,)
    assert given.http_restrictions == (theirs,)


def test_embedded_flags_come_from_the_shared_builder(tmp_path):
    """The embedded server's command is the ServerFlags one, with its own choices (explicit control)."""
    server = EmbeddedServer(
        tmp_path,
        grpc_port=8101,
        http_port=8100,
        metrics_port=8102,
        model_config_name="cpu",
        extra_args=["--log-verbose=1"],
    )
    server._backend_dir = tmp_path / "backends"
    server._distribution = TritonDistribution.locate()
    flags = server._flags()
    assert isinstance(flags, ServerFlags)
    command = flags.command("tritonserver")
    # The local response cache only when asked for.
    assert not any(part.startswith("--cache-config") for part in command)
    server.response_cache_bytes = RESPONSE_CACHE_BYTES
    cached = server._flags().command("tritonserver")
    assert f"--cache-config=local,size={RESPONSE_CACHE_BYTES}" in cached
    assert f"--cache-directory={server._distribution.caches}" in cached
    for flag in (
        "--model-control-mode=explicit",
        "--load-model=*",
        "--exit-on-error=false",
        "--strict-readiness=true",
        "--pinned-memory-pool-byte-size=0",
        "--disable-auto-complete-config",
        "--model-config-name=cpu",
        "--grpc-address=127.0.0.1",
        "--http-port=8100",
        "--grpc-port=8101",
        "--metrics-port=8102",
        f"--backend-directory={tmp_path / 'backends'}",
        "--allow-sagemaker=false",
    ):
        assert flag in command
    assert command[-1] == "--log-verbose=1"
    key = server.grpc_restrictions[0].value
    assert (
        key in " ".join(command)
        and key not in flags.redacted(command)
        and "serve-control-key=<hidden>" in flags.redacted(command)
    )
    with pytest.raises(ValueError, match="may not set --grpc-port"):
        EmbeddedServer(tmp_path, extra_args=["--grpc-port=1"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_control": "poll"}, "model control 'poll'"),
        ({"grpc_port": 8000}, "ports must differ"),
        ({"metrics_port": 0}, "metrics port must be between 1 and 65535"),
        ({"exit_timeout_s": -1}, "at least 0 seconds"),
        ({"host": "127.0.0.1", "extra_args": ("--http-address=0.0.0.0",)}, "may not set --http-address"),
        ({"extra_args": ("--model-repository=/elsewhere",)}, "may not set --model-repository"),
    ],
)
def test_server_flags_refuse_what_tritonserver_would_misread(tmp_path, changes, message):
    settings = {"repository": tmp_path, "http_port": 8000, "grpc_port": 8001, "metrics_port": 8002, **changes}
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerFlags(**settings)


def test_urls_use_loopback_when_binding_every_address(tmp_path):
    server = EmbeddedServer(tmp_path, grpc_port=9001, http_port=9000, metrics_port=9002, host="0.0.0.0")

    assert server.grpc_url == "127.0.0.1:9001"
    assert server.http_url == "127.0.0.1:9000"
    assert server.metrics_url == "http://127.0.0.1:9002/metrics"


# ------------------------------------------------------------------------------------ repository


def test_classifier_without_onnx_refuses_to_start_with_the_export_command(tmp_path):
    repository = tmp_path / "model_repository"
    make_model(repository, "resnext_lstm_10", PYTHON_CONFIG, config_name="cpu")
    make_model(repository, "preprocess_10", PYTHON_CONFIG, config_name="cpu")
    grpc_port, http_port, metrics_port = free_ports(3)

    started = time.monotonic()
    completed = run_serve(
        "--model-repository", "model_repository",
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        cwd=tmp_path,
    )  # fmt: skip

    assert completed.returncode == Exit.USAGE
    assert completed.stdout == ""
    assert "python -m export onnx --checkpoints <checkpoint-dir> --repository model_repository" in completed.stderr
    assert "resnext_lstm_10: " in completed.stderr and "model.onnx" in completed.stderr
    assert "preprocess_10" not in completed.stderr
    assert time.monotonic() - started < CLI_TIMEOUT_S
    assert not (tmp_path / "logs").exists(), "no server should have been started"


def test_start_raises_artifacts_missing_before_anything_runs(tmp_path):
    make_model(tmp_path, "resnext_lstm_30", PYTHON_CONFIG, config_name="cpu", files=("export.json",))

    with pytest.raises(ArtifactsMissingError) as raised:
        EmbeddedServer(tmp_path, grpc_port=free_port(), log_path=tmp_path / "log.txt").start()

    assert raised.value.missing == (f"resnext_lstm_30: {tmp_path / 'resnext_lstm_30' / '1' / 'model.onnx'}",)
    assert not (tmp_path / "log.txt").exists()


@pytest.mark.parametrize(
    ("name", "config", "config_name", "files", "expected"),
    [
        ("resnext_lstm_10", PYTHON_CONFIG, "cpu", (), ["model.onnx"]),
        ("resnext_lstm_10", PYTHON_CONFIG, "cpu", ("model.onnx",), []),
        ("classifier", ONNX_CONFIG, None, (), ["model.onnx"]),
        ("classifier", 'backend: "onnxruntime"\ndefault_model_filename: "net.onnx"\n', None, (), ["net.onnx"]),
        ("classifier", PLAN_CONFIG, "tensorrt", (), ["model.plan"]),
        ("classifier", PYTHON_WITH_ONNX_PARAMETER, "cpu", (), ["weights.onnx"]),
        ("exported", PYTHON_CONFIG, None, ("export.json",), ["model.onnx"]),
        ("preprocess_10", PYTHON_CONFIG, "cpu", (), []),
        ("broken_config", "this is { not a config", None, (), []),
    ],
)
def test_missing_artifact_rule(tmp_path, name, config, config_name, files, expected):
    make_model(tmp_path, name, config, config_name=config_name, files=files)

    missing = missing_artifacts(tmp_path, config_name)

    assert [item.path.name for item in missing] == expected
    assert all(item.model == name and item.path.parent == tmp_path / name / "1" for item in missing)


def test_model_config_name_picks_the_config_that_is_checked(tmp_path):
    folder = make_model(tmp_path, "classifier", PYTHON_CONFIG, config_name="cpu")
    (folder / "config.pbtxt").write_text(PLAN_CONFIG)

    assert missing_artifacts(tmp_path, "cpu") == []
    assert [item.path.name for item in missing_artifacts(tmp_path, None)] == ["model.plan"]
    assert [item.path.name for item in missing_artifacts(tmp_path, "gpu")] == ["model.plan"]


def test_every_version_folder_is_checked(tmp_path):
    folder = make_model(tmp_path, "resnext_lstm_20", PYTHON_CONFIG, config_name="cpu", files=("model.onnx",))
    (folder / "2").mkdir()

    missing = missing_artifacts(tmp_path, "cpu")

    assert [item.path for item in missing] == [folder / "2" / "model.onnx"]


def test_export_commands_name_the_repository_as_given(tmp_path):
    make_model(tmp_path, "resnext_lstm_10", PYTHON_CONFIG)
    make_model(tmp_path, "plan", PLAN_CONFIG)

    commands = export_commands(Path("some/repo"), missing_artifacts(tmp_path, None))

    assert commands[0] == "python -m export onnx --checkpoints <checkpoint-dir> --repository some/repo"
    assert any(command.startswith("python -m export tensorrt --repository some/repo") for command in commands)


def test_empty_or_absent_repository_is_refused(tmp_path):
    with pytest.raises(RepositoryError, match="holds no model folders"):
        EmbeddedServer(tmp_path).start()
    with pytest.raises(RepositoryError, match="is not a folder"):
        EmbeddedServer(tmp_path / "absent").start()


# ------------------------------------------------------------------------------------ environment


def test_backend_directory_holds_backend_and_stub_for_this_python(tmp_path):
    distribution = TritonDistribution.locate()
    root = distribution.build_backend_directory(tmp_path)

    backend = root / BACKEND_NAME
    assert sorted(path.name for path in backend.iterdir()) == sorted([BACKEND_LIBRARY, BACKEND_UTILS, STUB_NAME])
    assert (backend / STUB_NAME).read_bytes() == distribution.stub.read_bytes()
    assert distribution.stub.parent.name == python_version_tag()
    assert os.access(backend / STUB_NAME, os.X_OK)
    assert tmp_path not in distribution.binary.parents


def test_server_environment_finds_libpython_site_packages_and_project(tmp_path):
    distribution = TritonDistribution.locate()
    env = server_environment(distribution, {"PYTHONPATH": "/extra/first", "LD_LIBRARY_PATH": "/extra/lib"}, [tmp_path])

    library_path = env["LD_LIBRARY_PATH"].split(os.pathsep)
    python_path = env["PYTHONPATH"].split(os.pathsep)
    assert library_path[0] == sysconfig.get_config_var("LIBDIR")
    assert any((Path(folder) / f"libpython{python_version_tag()}.so.1.0").exists() for folder in library_path)
    assert all(str(folder) in library_path for folder in distribution.library_dirs)
    assert library_path[-1] == "/extra/lib"
    assert python_path[:2] == [str(PROJECT_ROOT), str(tmp_path)]
    assert sysconfig.get_path("purelib") in python_path
    assert python_path[-1] == "/extra/first"


def test_server_environment_preloads_jemalloc_unless_told_not_to(monkeypatch):
    distribution = TritonDistribution.locate()
    monkeypatch.delenv(ALLOCATOR_VARIABLE, raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/already/there.so")
    env = server_environment(distribution)
    jemalloc = find_jemalloc()
    if jemalloc is None:
        assert env["LD_PRELOAD"] == "/already/there.so"
        assert "MALLOC_CONF" not in env
        assert "not installed" in allocator_of(env)
    else:
        assert env["LD_PRELOAD"].split(os.pathsep) == [str(jemalloc), "/already/there.so"]
        assert env["MALLOC_CONF"] == JEMALLOC_CONF
        assert allocator_of(env) == f"jemalloc ({jemalloc}, MALLOC_CONF={JEMALLOC_CONF})"
        own = server_environment(distribution, {"MALLOC_CONF": "narenas:2"})
        assert own["MALLOC_CONF"] == "narenas:2"

    system = server_environment(distribution, {ALLOCATOR_VARIABLE: "system"})
    assert system["LD_PRELOAD"] == "/already/there.so"
    assert "DEEPFAKE_ALLOCATOR=system" in allocator_of(system)
    with pytest.raises(ServeError, match="DEEPFAKE_ALLOCATOR must be one of jemalloc, system, got 'tcmalloc'"):
        server_environment(distribution, {ALLOCATOR_VARIABLE: "tcmalloc"})


# ------------------------------------------------------------------------------------ ports, processes


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)

    assert len(set(ports)) == 5
    ensure_free("127.0.0.1", {str(port): port for port in ports})


def test_taken_port_and_duplicate_port_are_reported():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"the HTTP port {port} on 127.0.0.1 is not available"):
            ensure_free("127.0.0.1", {"gRPC": free_port(), "HTTP": port})
    with pytest.raises(PortInUseError, match="both 8000"):
        ensure_free("127.0.0.1", {"gRPC": 8000, "HTTP": 8000})
    with pytest.raises(SetupError, match=re.escape("'no-such-host.invalid' to bind is not a known address")):
        ensure_free("no-such-host.invalid", {"gRPC": free_port()})


def test_process_helpers_see_children_and_zombies():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert processes.is_running(child.pid)
        assert child.pid in processes.children(os.getpid())
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while processes.is_running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Killed but not reaped yet: a zombie, which counts as exited.
        assert (Path("/proc") / str(child.pid)).exists()
        assert not processes.is_running(child.pid)
        assert child.pid not in processes.children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert not processes.is_running(child.pid)
