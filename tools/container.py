"""The container on this machine: build the image, run the CPU deployment with compose, stop it.

    python tools/container.py image   # stand-in base where NGC's is absent, then deepfake-triton:local
    python tools/container.py up      # CPU export into MODEL_REPOSITORY, compose up triton-cpu, wait healthy
    python tools/container.py down    # compose down: containers, volumes, and an engine `up` started

``make image``, ``make container-up`` and ``make container-down`` run these (and so do the
container tests). The Docker engine is ``$DOCKER_HOST`` when set, the machine's own when it
answers, else the project's (``tools/docker_engine.py``), started on demand.

Environment of ``up`` (defaults in brackets): ``MODEL_REPOSITORY`` [model_repository],
``FRAMES`` ["10 20 30"]: the lengths exported (every model folder of the repository is served,
so it must hold these lengths only), ``CHECKPOINTS`` [checkpoints; random-weight demo ones when it
holds none], ``TRITON_HTTP_PORT`` / ``TRITON_GRPC_PORT`` / ``TRITON_METRICS_PORT``
[8100 / 8101 / 8102], ``MONITORING`` [no; yes also starts Prometheus], ``READY_TIMEOUT_S`` [900],
``COMPOSE_PROJECT_NAME`` [deepfake], ``TRITON_ADMIN_KEY_SECRET`` [deploy/secrets/triton_admin_key,
created when missing].
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The contract (standard library only) from the checkout: this tool runs on the machine's own Python.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from docker_engine import Engine, EngineUnavailable, docker_host

from contract import DEFAULT_VERSION, Exit, Kind, classifier_file, model_name

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("DEEPFAKE_IMAGE", "deepfake-triton:local")
BASE_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
ROOTFS_IMAGE = "deepfake-debian:bookworm"
STANDIN_LABEL = "deepfake.standin"
#: The stand-in's revision (its Dockerfile's label): an older stand-in is built again, e.g. revision 2
#: links Triton's response cache implementations into /opt/tritonserver/caches as NGC's image has them.
STANDIN_REVISION_LABEL = "deepfake.standin.revision"
STANDIN_REVISION = "2"
STANDIN_SCRIPT = ROOT / "tools" / "standin" / "build.sh"
# The compose file, and the CPU override that makes the host's network the project's default one.
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml")
DEFAULT_PROJECT = "deepfake"
DEFAULT_PORTS = {
    "TRITON_HTTP_PORT": "8100",
    "TRITON_GRPC_PORT": "8101",
    "TRITON_METRICS_PORT": "8102",
    "WEB_PORT": "8180",
}
#: The web page's image, built from web.Dockerfile.
WEB_IMAGE = "deepfake-web:local"
DEFAULT_READY_TIMEOUT_S = 900.0
# The CPU deployment checks itself more often than the GPU default (15 s): a check costs one
# python3 start, and `up` returns as soon as compose reports healthy.
CPU_HEALTH_INTERVAL = "5s"
CPU_HEALTH_START_PERIOD = "10m"
SECRET_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o644
ADMIN_KEY_BYTES = 32
POLL_S = 2.0
LOG_TAIL_LINES = 80
# Marks an engine that `up` started, so that `down` stops it again (and no other).
ENGINE_MARK = "started-by-container-up"


class ContainerError(RuntimeError):
    """A step of the container workflow failed (the message says which and why)."""


def _run(
    command: Sequence[str], env: Mapping[str, str], check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(list(command), env=dict(env), cwd=ROOT, text=True, capture_output=capture, check=False)
    if check and completed.returncode != 0:
        detail = f"\n{completed.stdout}{completed.stderr}" if capture else ""
        raise ContainerError(f"`{' '.join(command)}` exited with {completed.returncode}{detail}")
    return completed


def docker_env() -> dict[str, str]:
    """This process's environment with DOCKER_HOST set to a running engine."""
    try:
        host = docker_host()
    except EngineUnavailable as error:
        raise ContainerError(f"no Docker engine: {error}") from None
    return {**os.environ, "DOCKER_HOST": host}


def image_label(env: Mapping[str, str], image: str, label: str) -> str | None:
    """A label of a local image; None when the image is absent."""
    completed = _run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{label}" }}}}', image],
        env,
        check=False,
        capture=True,
    )
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def build_image(env: Mapping[str, str]) -> float:
    """Builds the base stand-in when needed, then the image; returns the image build's seconds."""
    if image_label(env, BASE_IMAGE, STANDIN_LABEL) is None:
        print(f"container: {BASE_IMAGE} is absent: building the local stand-in", flush=True)
        _run(["bash", str(STANDIN_SCRIPT)], env)
    elif (
        image_label(env, BASE_IMAGE, STANDIN_LABEL) == "true"
        and image_label(env, BASE_IMAGE, STANDIN_REVISION_LABEL) != STANDIN_REVISION
    ):
        print(f"container: the local stand-in is older than revision {STANDIN_REVISION}: building it again", flush=True)
        _run(["bash", str(STANDIN_SCRIPT)], {**env, "STANDIN_FORCE": "yes"})
    standin = image_label(env, BASE_IMAGE, STANDIN_LABEL) == "true"
    command = ["docker", "build", "--network", "host", "--tag", IMAGE]
    if standin:
        # The stand-in has no libnvinfer, so TensorRT's bindings cannot be installed over it.
        command += ["--build-arg", "INSTALL_TENSORRT=no"]
    command.append(".")
    started = time.monotonic()
    _run(command, {**env, "DOCKER_BUILDKIT": "0"})
    seconds = time.monotonic() - started
    if env.get("DOCKER_HOST") == Engine().host:
        # Each dependency change leaves the previous image (7 GB over the stand-in) untagged; the
        # project's own engine holds nothing else, so they go.
        _run(["docker", "image", "prune", "--force"], env, capture=True)
    kind = "the local stand-in (CPU only)" if standin else "NVIDIA's image"
    print(f"container: built {IMAGE} over {kind} in {seconds:.1f} s", flush=True)
    return seconds


def build_web_image(env: Mapping[str, str]) -> float:
    """Builds the web page's image (``web.Dockerfile``, over the same base); returns its seconds."""
    started = time.monotonic()
    _run(
        ["docker", "build", "--network", "host", "--file", "web.Dockerfile", "--tag", WEB_IMAGE, "."],
        {**env, "DOCKER_BUILDKIT": "0"},
    )
    seconds = time.monotonic() - started
    print(f"container: built {WEB_IMAGE} in {seconds:.1f} s", flush=True)
    return seconds


def ensure_admin_key(path: Path) -> None:
    """Creates the admin-key secret (a private folder, a file the container user can read)."""
    if path.is_file() and path.stat().st_size > 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(SECRET_DIR_MODE)
    path.write_text(secrets.token_hex(ADMIN_KEY_BYTES) + "\n")
    path.chmod(SECRET_FILE_MODE)
    print(f"container: created the admin key {path}", flush=True)


def compose_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment docker-compose runs with: absolute paths, ports, health timing."""
    result = dict(env)
    result.setdefault("COMPOSE_PROJECT_NAME", DEFAULT_PROJECT)
    for name, default in DEFAULT_PORTS.items():
        result.setdefault(name, default)
    result["MODEL_REPOSITORY"] = str((ROOT / result.get("MODEL_REPOSITORY", "model_repository")).resolve())
    result["CHECKPOINTS"] = str((ROOT / result.get("CHECKPOINTS", "checkpoints")).resolve())
    result["TRITON_ADMIN_KEY_SECRET"] = str(
        (ROOT / result.get("TRITON_ADMIN_KEY_SECRET", "deploy/secrets/triton_admin_key")).resolve()
    )
    result.setdefault("FRAMES", "10 20 30")
    result.setdefault("TRITON_HEALTH_INTERVAL", CPU_HEALTH_INTERVAL)
    result.setdefault("TRITON_HEALTH_START_PERIOD", CPU_HEALTH_START_PERIOD)
    # The monitoring image builds FROM the Debian root filesystem the stand-in script imported.
    result.setdefault("PROMETHEUS_BASE_IMAGE", ROOTFS_IMAGE)
    # The grafana secret is named by the file even when Grafana is not started.
    grafana = Path(result.get("GRAFANA_ADMIN_PASSWORD_SECRET", ROOT / "deploy/secrets/grafana_admin_password"))
    result["GRAFANA_ADMIN_PASSWORD_SECRET"] = str(grafana.resolve())
    return result


def compose(
    env: Mapping[str, str], *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise ContainerError("docker-compose is not installed (Debian: apt-get install docker-compose)")
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    return _run([binary, "--project-directory", str(ROOT), *files, *args], env, check=check, capture=capture)


def missing_classifiers(repository: Path, frames: Sequence[str]) -> list[str]:
    return [n for n in frames if not classifier_file(repository, int(n)).is_file()]


def export(env: Mapping[str, str]) -> None:
    """Runs the compose export-cpu service for the lengths whose ONNX file is missing."""
    repository = Path(env["MODEL_REPOSITORY"])
    frames = env["FRAMES"].split()
    missing = missing_classifiers(repository, frames)
    if not missing:
        print(f"container: {repository} holds the classifiers of {' '.join(frames)}", flush=True)
        return
    checkpoints = Path(env["CHECKPOINTS"])
    checkpoints.mkdir(parents=True, exist_ok=True)
    has_checkpoints = any(checkpoints.glob("model_*_acc_*_frames_*.pt"))
    run_env = {
        **env,
        "FRAMES": " ".join(missing),
        "DEMO_CHECKPOINTS": "no" if has_checkpoints else "yes",
        "DEPLOY_UID": str(repository.stat().st_uid),
        "DEPLOY_GID": str(repository.stat().st_gid),
    }
    started = time.monotonic()
    compose(run_env, "--profile", "build", "run", "--rm", "export-cpu")
    print(f"container: exported {' '.join(missing)} in {time.monotonic() - started:.1f} s", flush=True)
    still = missing_classifiers(repository, missing)
    if still:
        raise ContainerError(
            f"the export ran but {model_name(Kind.CLASSIFIER, int(still[0]))}/{DEFAULT_VERSION}/model.onnx "
            f"is still missing in {repository}"
        )


def container_id(env: Mapping[str, str], service: str) -> str:
    completed = compose(env, "--profile", "cpu", "--profile", "monitoring", "ps", "-q", service, capture=True)
    return completed.stdout.strip()


def wait_healthy(env: Mapping[str, str], service: str, timeout_s: float) -> float:
    """Waits until compose's healthcheck says healthy; returns the seconds it took."""
    started = time.monotonic()
    container = container_id(env, service)
    if not container:
        raise ContainerError(f"compose started no {service} container")
    while True:
        completed = _run(
            ["docker", "inspect", "--format", "{{json .State}}", container], env, check=False, capture=True
        )
        if completed.returncode != 0:
            raise ContainerError(f"the {service} container {container} is gone: {completed.stderr.strip()}")
        state = json.loads(completed.stdout)
        health = (state.get("Health") or {}).get("Status", "none")
        if health == "healthy":
            return time.monotonic() - started
        if not state.get("Running") and not state.get("Restarting"):
            raise ContainerError(
                f"the {service} container stopped (exit code {state.get('ExitCode')}):\n{logs(env, service)}"
            )
        if time.monotonic() - started > timeout_s:
            raise ContainerError(
                f"{service} was not healthy within {timeout_s:g} s (health: {health}):\n{logs(env, service)}"
            )
        time.sleep(POLL_S)


def logs(env: Mapping[str, str], service: str) -> str:
    completed = compose(
        env,
        "--profile",
        "cpu",
        "--profile",
        "monitoring",
        "logs",
        "--no-color",
        f"--tail={LOG_TAIL_LINES}",
        service,
        check=False,
        capture=True,
    )
    return completed.stdout + completed.stderr


def up(env: Mapping[str, str]) -> None:
    run_env = compose_env(env)
    ensure_admin_key(Path(run_env["TRITON_ADMIN_KEY_SECRET"]))
    grafana = Path(run_env["GRAFANA_ADMIN_PASSWORD_SECRET"])
    if not grafana.is_file():
        ensure_admin_key(grafana)
    export(run_env)
    services = ["triton-cpu"]
    profiles = ["--profile", "cpu"]
    web = run_env.get("WEB", "yes") != "no"
    if web:
        build_web_image(run_env)
        services.append("web-cpu")
    if run_env.get("MONITORING", "no") == "yes":
        services.append("prometheus")
        profiles += ["--profile", "monitoring"]
        compose(run_env, *profiles, "build", "prometheus")
    started = time.monotonic()
    compose(run_env, *profiles, "up", "-d", *services)
    timeout_s = float(run_env.get("READY_TIMEOUT_S", DEFAULT_READY_TIMEOUT_S))
    wait_healthy(run_env, "triton-cpu", timeout_s)
    if web:
        # Healthy once the page answers and Triton behind it is ready.
        wait_healthy(run_env, "web-cpu", timeout_s)
        print(f"container: web-cpu healthy: http://127.0.0.1:{run_env['WEB_PORT']}/", flush=True)
    print(
        f"container: triton-cpu healthy {time.monotonic() - started:.1f} s after `up`: "
        f"gRPC 127.0.0.1:{run_env['TRITON_GRPC_PORT']}, HTTP 127.0.0.1:{run_env['TRITON_HTTP_PORT']}, "
        f"metrics 127.0.0.1:{run_env['TRITON_METRICS_PORT']} (DOCKER_HOST={run_env['DOCKER_HOST']})",
        flush=True,
    )


def down(env: Mapping[str, str]) -> None:
    run_env = compose_env(env)
    compose(
        run_env,
        "--profile",
        "cpu",
        "--profile",
        "monitoring",
        "--profile",
        "build",
        "down",
        "--volumes",
        "--remove-orphans",
    )
    engine = Engine()
    mark = engine.run_dir / ENGINE_MARK
    if run_env["DOCKER_HOST"] == engine.host and mark.exists():
        mark.unlink()
        engine.stop()
        print("container: stopped the Docker engine that container-up started", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/container.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("image", "up", "down"))
    args = parser.parse_args(argv)
    engine = Engine()
    was_running = engine.answers()
    try:
        env = docker_env()
        if args.action == "up" and not was_running and env["DOCKER_HOST"] == engine.host:
            (engine.run_dir / ENGINE_MARK).touch()
        if args.action == "image":
            build_image(env)
        elif args.action == "up":
            up(env)
        else:
            down(env)
    except ContainerError as error:
        print(f"container: error: {error}", file=sys.stderr)
        return Exit.FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
