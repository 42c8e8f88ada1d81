"""Entrypoint of the GPU container: tritonserver with locked-down flags, watched for dead stubs.

The server command is built here, from the environment, so that docker-compose, Kubernetes and
a plain ``docker run`` start exactly the same server; the flags come from the builder the
embedded server uses too (``serve/flags.py``), and dead stubs are found by its /proc reader
(``serve/processes.py``):

- ``--model-control-mode=explicit --load-model=*``: every model of the repository is loaded at
  start, and a new classifier version goes live on the running server through Triton's
  model-control API (``python -m export onnx --checkpoint FILE --version V --url ...``, rollback
  ``python -m export retire ... --url ...``). Loading a model is code execution for python-backend
  models (its ``model.py`` runs in the server's stubs), so that API is restricted: only callers
  holding the admin key can load or unload anything.
- ``--exit-on-error=true``: a model that fails to load at start stops the server (the container
  exits, and its restart policy or the kubelet shows it); a load through the API that fails is
  answered with the error and leaves the versions already served serving.
- ``--strict-readiness=false``: with explicit model control, strict readiness reports the server
  not ready while any version of any model is loading or unloading, and for good once a version
  failed to load, although every other version serves (measured on Triton 2.51: the 3-5 s
  unload of a retired version, the whole load of a new one, which takes minutes on a GPU that
  builds TensorRT engines). The endpoints only answer once every model loaded at start, so
  ``/v2/health/ready`` still means "started with every model"; that each model keeps a ready
  version afterwards is checked by ``deploy/health.py --check ready``.
- ``--cache-config=local,size=...`` when ``TRITON_RESPONSE_CACHE_BYTES`` is set (default 0: off; see
  :data:`contract.RESPONSE_CACHE_BYTES` for why): Triton's local response cache, used by the
  preprocessing models only (their configs enable it), so that a repeat upload of the same bytes is
  not decoded again; ``TRITON_CACHE_DIRECTORY`` says where the cache implementations are, by
  default Triton's ``/opt/tritonserver/caches``.
- SageMaker and Vertex AI endpoints off; HTTP and gRPC APIs other than health, metadata and
  inference (gRPC also model-config, which perf_analyzer and tritonclient tools read) are
  restricted to callers that send the admin key read from a secret file, in the header
  :data:`contract.ADMIN_KEY_HEADER` (over gRPC ``triton-grpc-protocol-`` and that name). HTTP
  inference is restricted too: clients score over gRPC, HTTP serves probes and administration.

Triton 2.51 does not restart a python-backend stub that dies, and its health endpoints keep
answering 200 (see ``deploy/health.py``). This entrypoint therefore stays as the parent of
tritonserver, looks for dead stubs every few seconds, and stops the server when one appears, so
that the container exits and its restart policy (compose) or the kubelet restarts it. A stub that
ends because a load replaced it or its version was retired is no failure (:class:`StubWatch`).
SIGTERM/SIGINT are passed on to tritonserver, which finishes in-flight requests first.

Environment (defaults in brackets):

``MODEL_REPOSITORY`` [/models], ``TRITON_MODEL_CONFIG`` [default] (``default`` = each model's
config.pbtxt, ``tensorrt`` or ``cpu`` = ``configs/<name>.pbtxt``), ``TRITON_ADMIN_KEY_FILE``
[/run/secrets/triton_admin_key], ``TRITON_HTTP_PORT`` [8000], ``TRITON_GRPC_PORT`` [8001],
``TRITON_METRICS_PORT`` [8002], ``TRITON_BIND_ADDRESS`` [every address: the container's own
network; a host-networked container sets 127.0.0.1], ``TRITON_EXIT_TIMEOUT_S`` [30] (how long a stopping server
waits for in-flight requests; keep the orchestrator's grace period above it),
``TRITONSERVER`` [/opt/tritonserver/bin/tritonserver],
``TRITON_EXTRA_ARGS`` (more tritonserver flags, e.g. ``--log-verbose=1``; the flags above
cannot be overridden through it).

``python3 -m deploy.entrypoint --print-command`` prints the command (key redacted) and exits.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contract import ADMIN_KEY_FILE_DEFAULT, ADMIN_KEY_FILE_ENV, ADMIN_KEY_HEADER, RESPONSE_CACHE_BYTES, Exit
from serve import processes
from serve.flags import REDACTED, ServerFlags
from serve.options import Restriction

log = logging.getLogger("deploy.entrypoint")

DEFAULT_REPOSITORY = "/models"
#: The environment variable naming the admin key's secret file, and its default.
# The secret file holding the admin key, and the variable naming another (contract).
DEFAULT_ADMIN_KEY_FILE = ADMIN_KEY_FILE_DEFAULT
DEFAULT_TRITONSERVER = "/opt/tritonserver/bin/tritonserver"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# "default" means no --model-config-name: Triton reads each model's config.pbtxt.
MODEL_CONFIGS = ("default", "tensorrt", "cpu")

# Kept open: health (probes), metadata and inference (clients). gRPC model-config stays open
# for perf_analyzer and tritonclient, which cannot send the admin header over gRPC.
GRPC_RESTRICTED = ("model-repository", "shared-memory", "statistics", "trace", "logging")
HTTP_RESTRICTED = ("inference", "model-config", "model-repository", "shared-memory", "statistics", "trace", "logging")
# Hex or URL-safe base64 of at least 16 characters; it goes into a flag split on ',' ':' '='.
ADMIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,512}")
# Stands for the key while the settings are checked, before the secret file is read.
ADMIN_KEY_PLACEHOLDER = "0" * 16

# Triton's own default, stated so that stop_grace_period / terminationGracePeriodSeconds can
# be set above it.
DEFAULT_EXIT_TIMEOUT_S = 30
# After SIGTERM, how long past Triton's exit timeout to wait before SIGKILL.
KILL_GRACE_S = 10
WATCH_INTERVAL_S = 5.0

SIGNAL_EXIT_BASE = 128


class SettingsError(Exception):
    """The environment does not describe a server this entrypoint can start."""


@dataclass(frozen=True)
class Settings:
    """Everything the server command is built from."""

    tritonserver: str
    repository: Path
    model_config: str
    admin_key_file: Path
    ports: Mapping[str, int]
    bind_address: str | None
    exit_timeout_s: int
    extra_args: tuple[str, ...]
    response_cache_bytes: int | None = None
    cache_directory: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        model_config = environ.get("TRITON_MODEL_CONFIG", "default")
        if model_config not in MODEL_CONFIGS:
            raise SettingsError(f"TRITON_MODEL_CONFIG={model_config!r}: expected one of {', '.join(MODEL_CONFIGS)}")
        ports = {
            name: _port(environ, f"TRITON_{name.upper()}_PORT", default) for name, default in DEFAULT_PORTS.items()
        }
        if len(set(ports.values())) != len(ports):
            raise SettingsError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        settings = cls(
            tritonserver=environ.get("TRITONSERVER", DEFAULT_TRITONSERVER),
            repository=Path(environ.get("MODEL_REPOSITORY", DEFAULT_REPOSITORY)),
            model_config=model_config,
            admin_key_file=Path(environ.get(ADMIN_KEY_FILE_ENV, DEFAULT_ADMIN_KEY_FILE)),
            ports=ports,
            bind_address=_address(environ.get("TRITON_BIND_ADDRESS", "")),
            exit_timeout_s=_positive_int(environ, "TRITON_EXIT_TIMEOUT_S", DEFAULT_EXIT_TIMEOUT_S),
            extra_args=_extra_args(environ.get("TRITON_EXTRA_ARGS", "")),
            response_cache_bytes=_cache_bytes(environ),
            cache_directory=Path(environ["TRITON_CACHE_DIRECTORY"]) if environ.get("TRITON_CACHE_DIRECTORY") else None,
        )
        # Refuses TRITON_EXTRA_ARGS that would set a flag the entrypoint sets.
        settings.flags(ADMIN_KEY_PLACEHOLDER)
        return settings

    def flags(self, admin_key: str) -> ServerFlags:
        """The server this container runs, in the terms the embedded server uses too (serve.flags)."""
        try:
            return ServerFlags(
                repository=self.repository,
                http_port=self.ports["http"],
                grpc_port=self.ports["grpc"],
                metrics_port=self.ports["metrics"],
                host=self.bind_address,
                model_control="explicit",
                exit_on_error=True,
                strict_readiness=False,
                exit_timeout_s=self.exit_timeout_s,
                model_config_name=None if self.model_config == "default" else self.model_config,
                grpc_restrictions=(Restriction(GRPC_RESTRICTED, ADMIN_KEY_HEADER, admin_key),),
                http_restrictions=(Restriction(HTTP_RESTRICTED, ADMIN_KEY_HEADER, admin_key),),
                response_cache_bytes=self.response_cache_bytes,
                cache_directory=self.cache_directory,
                extra_args=self.extra_args,
            )
        except ValueError as exc:
            raise SettingsError(str(exc).replace("extra arguments", "TRITON_EXTRA_ARGS", 1)) from None


def _cache_bytes(environ: Mapping[str, str]) -> int | None:
    text = environ.get("TRITON_RESPONSE_CACHE_BYTES", "0")
    if not text.isdigit():
        raise SettingsError(
            f"TRITON_RESPONSE_CACHE_BYTES={text!r}: expected a size in bytes, e.g. {RESPONSE_CACHE_BYTES} (0: no cache)"
        )
    return int(text) or None


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, str(default))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"{name}={text!r}: expected a TCP port number (1-65535)")
    return int(text)


def _address(text: str) -> str | None:
    if not text:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise SettingsError(f"TRITON_BIND_ADDRESS={text!r}: expected an IP address such as 127.0.0.1") from None
    return text


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, str(default))
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{name}={text!r}: expected a whole number of seconds, at least 1")
    return int(text)


def _extra_args(text: str) -> tuple[str, ...]:
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise SettingsError(f"TRITON_EXTRA_ARGS cannot be split into words: {exc}") from None
    return args


def read_admin_key(path: Path) -> str:
    """The restricted-API key from its secret file, checked."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        raise SettingsError(
            f"admin key file {path} not found: mount the secret (compose: secrets/triton_admin_key, "
            "Kubernetes: Secret deepfake-triton-admin) or point TRITON_ADMIN_KEY_FILE at it"
        ) from None
    except OSError as exc:
        raise SettingsError(f"admin key file {path} cannot be read: {exc.strerror}") from None
    if not ADMIN_KEY_PATTERN.fullmatch(key):
        raise SettingsError(
            f"admin key in {path} must be 16-512 characters of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 32`)"
        )
    return key


def server_flags(settings: Settings, admin_key: str) -> ServerFlags:
    """The server's settings, checked against the files they name."""
    if not settings.repository.is_dir():
        raise SettingsError(f"model repository {settings.repository} is not a directory (MODEL_REPOSITORY)")
    return settings.flags(admin_key)


def build_command(settings: Settings, admin_key: str) -> list[str]:
    """The tritonserver command line."""
    return server_flags(settings, admin_key).command(settings.tritonserver)


def redacted(command: list[str], admin_key: str) -> str:
    """The command as a shell line, the admin key hidden."""
    return shlex.join(part.replace(admin_key, REDACTED) for part in command)


def _exit_status(returncode: int) -> int:
    # Popen reports death by signal N as -N; shells and orchestrators expect 128 + N.
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class _Sighting:
    """A stub as first seen running: the version folder it serves and the check that saw it."""

    folder: Path | None
    check: int


class StubWatch:
    """Tells the python-backend stubs of one tritonserver that died from those that ended on purpose.

    Each stub's version folder (``<repository>/<model>/<version>``) is read from its command line
    while it runs; a zombie's command line is empty. A stub that exited is no failure when:

    - a stub of the same version folder, first seen after it, runs: a load through the
      model-control API replaced it (Triton starts the new instances, then ends the old ones once
      their requests are done);
    - its version folder no longer exists: the version was retired (``export retire`` renames the
      folder, then reloads).

    Triton reaps the stubs it ends itself at once (it waits for each right after telling it to
    finish), so such a stub is a zombie for an instant only; these rules keep that instant from
    stopping the server. A stub that dies on its own stays a zombie until the server exits, and
    another instance of the same version running beside it excuses nothing.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._seen: dict[int, _Sighting] = {}
        self._ended: set[int] = set()
        self._checks = 0

    def model(self, pid: int) -> str:
        """The model a stub served, as far as it was seen."""
        sighting = self._seen.get(pid)
        return sighting.folder.parent.name if sighting and sighting.folder else "unknown model"

    def _replaced(self, sighting: _Sighting, running: list[int]) -> bool:
        return any(
            self._seen[pid].folder == sighting.folder and self._seen[pid].check > sighting.check for pid in running
        )

    def dead(self) -> list[int]:
        """Looks at the server's stubs once; returns the pids of those that died (the rules above excuse the others)."""
        self._checks += 1
        stubs = processes.stubs(parent=self.server_pid)
        running = [stub.pid for stub in stubs if not stub.dead]
        for pid in running:
            if pid not in self._seen:
                self._seen[pid] = _Sighting(processes.stub_folder(pid), self._checks)
        dead = []
        for stub in stubs:
            if not stub.dead or stub.pid in self._ended:
                continue
            sighting = self._seen.get(stub.pid)
            if sighting is not None and sighting.folder is not None:
                if not sighting.folder.is_dir():
                    log.info("stub %d of %s ended: its version was retired", stub.pid, sighting.folder)
                    self._ended.add(stub.pid)
                    continue
                if self._replaced(sighting, running):
                    log.info("stub %d of %s ended: a reload replaced it", stub.pid, sighting.folder)
                    self._ended.add(stub.pid)
                    continue
            dead.append(stub.pid)
        # Forget the processes that are gone for good (reaped), so that a reused pid starts afresh.
        present = {stub.pid for stub in stubs}
        for pid in [pid for pid in self._seen if pid not in present]:
            del self._seen[pid]
            self._ended.discard(pid)
        return dead


def supervise(command: list[str], exit_timeout_s: int, watch_interval_s: float = WATCH_INTERVAL_S) -> int:
    """Runs tritonserver until it exits, stopping it when one of its python stubs dies.

    Args:
        command: the tritonserver command line.
        exit_timeout_s: the server's ``--exit-timeout-secs``; a server still running that long
            (plus a grace period) after SIGTERM is killed.
        watch_interval_s: how often to look for dead stubs.

    Returns:
        The server's exit status (128 + N when killed by signal N), or ``Exit.STUB_DIED``.
    """
    server = subprocess.Popen(command)
    stopping = False

    def pass_on(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        server.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    watch = StubWatch(server.pid)
    while True:
        try:
            return _exit_status(server.wait(timeout=watch_interval_s))
        except subprocess.TimeoutExpired:
            pass
        if stopping:
            continue
        dead = watch.dead()
        if dead:
            names = ", ".join(f"{watch.model(pid)} (pid {pid})" for pid in dead)
            log.error(
                "python-backend stub of %s died; Triton does not restart it and would keep failing "
                "that model's requests: stopping the server so that the container is restarted",
                names,
            )
            stopping = True
            server.terminate()
            try:
                server.wait(timeout=exit_timeout_s + KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                log.error("tritonserver did not stop within %d s: killing it", exit_timeout_s + KILL_GRACE_S)
                server.kill()
                server.wait()
            return Exit.STUB_DIED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.entrypoint",
        description="Start tritonserver with the deployment's flags and restart-worthy failure detection.",
    )
    parser.add_argument("--print-command", action="store_true", help="print the server command (key redacted) and exit")
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ(os.environ if environ is None else environ)
        admin_key = read_admin_key(settings.admin_key_file)
        command = build_command(settings, admin_key)
    except SettingsError as exc:
        log.error("error: %s", exc)
        return Exit.USAGE
    if args.print_command:
        print(redacted(command, admin_key))
        return 0
    log.info("starting %s", redacted(command, admin_key))
    return supervise(command, settings.exit_timeout_s)


if __name__ == "__main__":
    sys.exit(main())
