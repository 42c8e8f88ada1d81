"""The embedded CPU server: the pip tritonserver over a model repository, supervised.

The server runs in explicit model-control mode with every model loaded at start-up, so that a
model whose python stub died can be unloaded and loaded again on its own while the others keep
serving. Triton 2.51 does not restart a dead stub and keeps reporting the model (and the server)
ready; requests then fail with "Stub process ... is not healthy". The watchdog therefore watches
the stub processes themselves, plus the repository index and each model's readiness, and loads a
failed model again; if the whole server exits or stops answering it starts a new one on the same
ports.

Seen with tritonserver 2.51: an instance whose dead stub was sent a request never finishes
unloading, so a server that went through such a repair waits its whole exit timeout
(``stop_timeout``) when it is stopped.

Explicit mode opens the model-control API (load, unload, and loading a model from files sent in
the request), so that API is restricted with a random per-server key that only this supervisor
knows, unless the caller restricts ``model-repository`` with a key of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from serve import processes
from serve.control import STATE_READY, STATE_UNAVAILABLE, ControlClient, ModelState
from serve.distribution import BACKEND_NAME, TritonDistribution, allocator_of, server_environment
from serve.errors import (
    ArtifactsMissingError,
    ControlError,
    ModelLoadError,
    RepositoryError,
    ServeError,
    ServerStartError,
)
from serve.flags import ServerFlags, managed_clashes
from serve.options import GrpcTls, Restriction, covered, headers_for
from serve.ports import ensure_free
from serve.repository import export_commands, missing_artifacts, model_dirs

log = logging.getLogger("serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000
DEFAULT_METRICS_PORT = 8002
DEFAULT_CONFIG_NAME = "cpu"
DEFAULT_LOG_PATH = Path("logs") / "tritonserver.log"
# Loading every python model imports torch once per stub: minutes on a 2-core machine.
DEFAULT_READY_TIMEOUT_S = 300.0
# Also given to tritonserver as --exit-timeout-secs: how long in-flight requests may finish.
DEFAULT_STOP_TIMEOUT_S = 30.0
KILL_GRACE_S = 5.0
WATCHDOG_INTERVAL_S = 1.0
RELOAD_TIMEOUT_S = 300.0
READY_POLL_S = 0.25
CONTROL_PROTOCOL = "model-repository"
HEALTH_PROTOCOL = "health"
CONTROL_KEY_HEADER = "serve-control-key"
CONTROL_KEY_BYTES = 24
LOG_EXCERPT_LINES = 40
# A model that fails to load again this many times in a row gets a whole new server.
MAX_RELOAD_FAILURES = 3
# A server whose HTTP endpoint has not answered for this long is replaced.
UNRESPONSIVE_LIMIT_S = 30.0
# Waits between attempts to start a replacement server; after the last one the server has failed.
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# After a repair, the healthy stubs of the replaced instances of a model (its other instances)
# stay alive with their memory for as long as Triton fails to finish unloading the old version,
# which with a dead sibling is forever; they get this long to finish in-flight work, then end.
LEFTOVER_STUB_GRACE_S = 60.0
# States in which Triton is already busy with a model: not a failure to act on.
TRANSIENT_STATES = frozenset({"LOADING", "UNLOADING"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class Recovery:
    """One failure the watchdog saw and repaired.

    Attributes:
        model: the model loaded again, or None when the whole server was replaced.
        cause: what was seen.
        detected_at: ``time.monotonic()`` when it was seen.
        recovered_at: ``time.monotonic()`` when the model (or server) was ready again.
    """

    model: str | None
    cause: str
    detected_at: float
    recovered_at: float

    @property
    def seconds(self) -> float:
        """Time from detection to ready again."""
        return self.recovered_at - self.detected_at


class EmbeddedServer:
    """A supervised tritonserver (from nvidia-pytriton) serving one model repository.

    Use as a context manager or call :meth:`start` and :meth:`stop`::

        with EmbeddedServer("model_repository", grpc_port=free_port(), ...) as server:
            client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

    Args:
        repository: the model repository folder.
        grpc_port: gRPC port.
        http_port: HTTP port (the supervisor talks to the server through it).
        metrics_port: Prometheus metrics port.
        log_path: file the server's output goes to (with the supervisor's own notes); truncated
            at the first start, appended to by restarts. Default ``logs/tritonserver.log``.
        model_config_name: ``--model-config-name``: models read ``configs/<name>.pbtxt`` when it
            exists; None or empty reads ``config.pbtxt``.
        extra_args: more tritonserver flags, appended after the ones set here.
        env: environment variables for the server on top of this process's; a ``PYTHONPATH`` or
            ``LD_LIBRARY_PATH`` here is kept after the entries the server needs.
        watchdog: supervise models and the process, and repair failures.
        host: address every endpoint binds to; only loopback unless told otherwise.
        grpc_tls: TLS for the gRPC endpoint.
        grpc_restrictions: key-protected gRPC protocol groups (``--grpc-restricted-protocol``).
        http_restrictions: key-protected HTTP API groups (``--http-restricted-api``).
        stop_timeout: seconds in-flight requests get to finish at stop before the server is killed.
        watchdog_interval: seconds between two checks of the watchdog.
        python_path: extra import folders for model code, after the project root.
        auto_complete_config: let Triton complete partial model configurations. Off by default:
            completing a python model's configuration starts one more stub per load, which
            imports the model's code (torch, MTCNN) once more and about doubles load and
            recovery times; every configuration of this project is complete.
        leftover_stub_grace: seconds the surviving stubs of a repaired model's old instances get
            before the watchdog ends them (see :data:`LEFTOVER_STUB_GRACE_S`).
        response_cache_bytes: the size of Triton's local response cache, used by the preprocessing
            models; None (the default): no cache (see :data:`contract.RESPONSE_CACHE_BYTES`).
    """

    def __init__(
        self,
        repository: str | os.PathLike[str],
        grpc_port: int = DEFAULT_GRPC_PORT,
        http_port: int = DEFAULT_HTTP_PORT,
        metrics_port: int = DEFAULT_METRICS_PORT,
        log_path: str | os.PathLike[str] | None = None,
        model_config_name: str | None = DEFAULT_CONFIG_NAME,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        watchdog: bool = True,
        *,
        host: str = DEFAULT_HOST,
        grpc_tls: GrpcTls | None = None,
        grpc_restrictions: Sequence[Restriction] = (),
        http_restrictions: Sequence[Restriction] = (),
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        watchdog_interval: float = WATCHDOG_INTERVAL_S,
        python_path: Sequence[str | os.PathLike[str]] = (),
        auto_complete_config: bool = False,
        leftover_stub_grace: float = LEFTOVER_STUB_GRACE_S,
        response_cache_bytes: int | None = None,
    ) -> None:
        if stop_timeout < 0:
            raise ValueError(f"stop_timeout must be at least 0 seconds, got {stop_timeout}")
        if watchdog_interval <= 0:
            raise ValueError(f"watchdog_interval must be positive, got {watchdog_interval}")
        if grpc_tls is not None:
            grpc_tls.validate()
        clashes = managed_clashes(extra_args)
        if clashes:
            raise ValueError(f"extra_args may not set {', '.join(clashes)}: the server sets them from its own settings")
        self.repository_arg = Path(repository)
        self.repository = self.repository_arg.resolve()
        self.grpc_port = int(grpc_port)
        self.http_port = int(http_port)
        self.metrics_port = int(metrics_port)
        self.log_path = Path(log_path if log_path is not None else DEFAULT_LOG_PATH).resolve()
        self.model_config_name = model_config_name or None
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.watchdog = watchdog
        self.host = host
        self.grpc_tls = grpc_tls
        self.stop_timeout = float(stop_timeout)
        self.watchdog_interval = float(watchdog_interval)
        self.python_path = tuple(Path(entry) for entry in python_path)
        self.auto_complete_config = auto_complete_config
        self.leftover_stub_grace = float(leftover_stub_grace)
        if response_cache_bytes is not None and response_cache_bytes <= 0:
            raise ValueError(f"response_cache_bytes must be positive, got {response_cache_bytes}")
        self.response_cache_bytes = response_cache_bytes

        control_key = {CONTROL_KEY_HEADER: secrets.token_urlsafe(CONTROL_KEY_BYTES)}
        own = Restriction((CONTROL_PROTOCOL,), CONTROL_KEY_HEADER, control_key[CONTROL_KEY_HEADER])
        self.grpc_restrictions = tuple(grpc_restrictions) + (
            () if covered(tuple(grpc_restrictions), CONTROL_PROTOCOL) else (own,)
        )
        self.http_restrictions = tuple(http_restrictions) + (
            () if covered(tuple(http_restrictions), CONTROL_PROTOCOL) else (own,)
        )
        self._control = ControlClient(
            base_url=f"http://{self._connect_host}:{self.http_port}",
            health_headers=headers_for(self.http_restrictions, HEALTH_PROTOCOL),
            repository_headers=headers_for(self.http_restrictions, CONTROL_PROTOCOL),
        )

        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: BinaryIO | None = None
        self._log_start = 0
        self._distribution: TritonDistribution | None = None
        self._backend_dir: Path | None = None
        self._started_once = False
        self._ready_timeout = DEFAULT_READY_TIMEOUT_S
        self._models: tuple[str, ...] = ()
        self._stubs: dict[str, set[int]] = {}
        # Stub pid -> the version folder it serves, learnt while it runs.
        self._stub_folders: dict[int, Path] = {}
        # Shared-memory regions of every stub the current server process started.
        self._shm_regions: set[str] = set()
        self._recoveries: list[Recovery] = []
        self._reload_failures: dict[str, int] = {}
        # Stub pid -> (model, monotonic time after which it is ended).
        self._leftovers: dict[int, tuple[str, float]] = {}
        self._unresponsive_since: float | None = None
        self._stop_event = threading.Event()
        self._failed = threading.Event()
        self._failure = ""
        self._watchdog_thread: threading.Thread | None = None
        self._interrupted_pid: int | None = None

    # ----------------------------------------------------------------------------- addresses

    @property
    def _connect_host(self) -> str:
        """Where a local client connects: loopback when the server binds every address."""
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` takes it."""
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` takes it (no scheme)."""
        return f"{self._connect_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    # ----------------------------------------------------------------------------- state

    @property
    def pid(self) -> int | None:
        """Process id of the running tritonserver, None when it is not running."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def models(self) -> tuple[str, ...]:
        """Names of the models that were ready at the last (re)start."""
        return self._models

    @property
    def recoveries(self) -> list[Recovery]:
        """Failures the watchdog repaired, oldest first."""
        with self._lock:
            return list(self._recoveries)

    @property
    def failure(self) -> str:
        """Why the watchdog gave up on the server; empty while it has not."""
        return self._failure

    def stub_pids(self) -> dict[str, set[int]]:
        """The python stub processes the watchdog follows, by model."""
        with self._lock:
            return {model: set(pids) for model, pids in self._stubs.items()}

    def wait_until_failed(self, timeout: float | None = None) -> bool:
        """Blocks until the watchdog gives up on the server (True) or ``timeout`` passes (False)."""
        return self._failed.wait(timeout)

    def log_text(self) -> str:
        """Everything written to the log file since the first start."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # ----------------------------------------------------------------------------- life cycle

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> EmbeddedServer:
        """Starts the server and waits until it and every model are ready.

        Args:
            timeout: seconds to wait for readiness.

        Returns:
            This server, ready.

        Raises:
            ArtifactsMissingError: a model lacks its exported file (the message holds the command).
            ModelLoadError: a model failed to load (the server's message per model).
            ServerStartError: the server exited or was not ready within ``timeout``.
            PortInUseError: a port is taken.
            RepositoryError: the repository is not a folder or holds no model.
            TritonNotFoundError: tritonserver or its python backend is not installed.
        """
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                raise ServeError(f"the server is already running (pid {self._process.pid})")
            self._check_repository()
            ensure_free(self.host, {"gRPC": self.grpc_port, "HTTP": self.http_port, "metrics": self.metrics_port})
            self._distribution = TritonDistribution.locate()
            if self._backend_dir is None:
                self._backend_dir = self._distribution.build_backend_directory()
            self._stop_event.clear()
            self._failed.clear()
            self._failure = ""
            self._ready_timeout = timeout
            try:
                self._launch()
                self._await_ready(timeout)
            except BaseException:
                self._shutdown_process()
                self._release()
                raise
            atexit.register(self.stop)
            self._ensure_watchdog()
        return self

    def stop(self) -> None:
        """Stops the watchdog, then the server: SIGINT, wait, then kill. Safe to call twice."""
        self._stop_event.set()
        process = self._process
        if process is not None and process.poll() is None:
            # Signalled before taking the lock so that a reload in progress ends promptly.
            self._interrupt(process)
        thread = self._watchdog_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._shutdown_process()
            self._release()
            atexit.unregister(self.stop)

    def restart(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Stops the server process and starts a new one on the same ports, waiting for readiness.

        Raises:
            ServeError: as :meth:`start`; the server is left stopped.
        """
        with self._lock:
            if self._backend_dir is None:
                raise ServeError("the server was never started (or was stopped): call start()")
            self._ready_timeout = timeout
            self._shutdown_process()
            try:
                self._launch()
                self._await_ready(timeout)
            except BaseException:
                self._shutdown_process()
                raise
            # A watchdog that had given up starts over with the new process.
            self._failed.clear()
            self._failure = ""
            self._ensure_watchdog()

    def _ensure_watchdog(self) -> None:
        if self.watchdog and (self._watchdog_thread is None or not self._watchdog_thread.is_alive()):
            self._watchdog_thread = threading.Thread(target=self._watch, name="serve-watchdog", daemon=True)
            self._watchdog_thread.start()

    def __enter__(self) -> EmbeddedServer:
        if self.pid is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- internals

    def _check_repository(self) -> None:
        if not self.repository.is_dir():
            raise RepositoryError(f"model repository {self.repository_arg} is not a folder")
        if not model_dirs(self.repository):
            raise RepositoryError(f"model repository {self.repository_arg} holds no model folders")
        missing = missing_artifacts(self.repository, self.model_config_name)
        if missing:
            raise ArtifactsMissingError(
                [f"{item.model}: {item.path}" for item in missing],
                export_commands(self.repository_arg, missing),
            )

    def _flags(self) -> ServerFlags:
        assert self._backend_dir is not None and self._distribution is not None, "set by start()"
        return ServerFlags(
            repository=self.repository,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            host=self.host,
            backend_directory=self._backend_dir,
            model_control="explicit",
            # Keep running when a model fails, so its reason can be read from the repository index.
            exit_on_error=False,
            strict_readiness=True,
            exit_timeout_s=round(self.stop_timeout),
            model_config_name=self.model_config_name,
            auto_complete_config=self.auto_complete_config,
            pinned_memory_pool_bytes=0,
            # Asked for: the preprocessing models cache their answers (a repeat upload of the same
            # bytes; see contract.RESPONSE_CACHE_BYTES for why it is off by default).
            response_cache_bytes=self.response_cache_bytes,
            cache_directory=self._distribution.caches,
            grpc_tls=self.grpc_tls,
            grpc_restrictions=self.grpc_restrictions,
            http_restrictions=self.http_restrictions,
            extra_args=self.extra_args,
        )

    def _command(self) -> list[str]:
        assert self._distribution is not None, "set by start()"
        return self._flags().command(self._distribution.binary)

    def _printable(self, command: list[str]) -> str:
        """The command line with restriction keys' values hidden."""
        return self._flags().redacted(command)

    def _launch(self) -> None:
        assert self._distribution is not None, "set by start()"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not self._started_once:
            self.log_path.write_bytes(b"")
        self._close_log()
        # Append mode on both sides (O_APPEND): the server's output and these notes interleave
        # without overwriting each other.
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _close_log
        self._log_start = self.log_path.stat().st_size
        command = self._command()
        self._note(f"starting {self._printable(command)}")
        env = server_environment(self._distribution, self.env, self.python_path)
        self._note(f"memory allocator: {allocator_of(env)}")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group: a terminal's Ctrl-C reaches only the supervisor, which
            # forwards it, and a forced stop can reach the stubs too.
            start_new_session=True,
        )
        self._started_once = True
        self._interrupted_pid = None
        self._unresponsive_since = None

    def _await_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None, "set by _launch()"
        deadline = time.monotonic() + timeout
        pending: list[str] = ["(server not answering yet)"]
        while True:
            code = process.poll()
            if code is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {code} before it was ready; "
                    f"the end of its log {self.log_path}:\n{self._log_excerpt()}"
                )
            if self._stop_event.is_set():
                raise ServerStartError("stopped while waiting for the server to be ready")
            try:
                index = self._control.repository_index()
            except ControlError:
                index = None
            if index is not None:
                failed = {
                    entry.name: entry.reason or entry.state for entry in index if entry.state == STATE_UNAVAILABLE
                }
                if failed:
                    raise ModelLoadError(failed)
                pending = [entry.name for entry in index if entry.state != STATE_READY]
                if index and not pending:
                    pending = [entry.name for entry in index if not self._model_ready(entry.name)]
                if index and not pending:
                    self._models = tuple(entry.name for entry in index)
                    self._stubs = processes.python_stubs(process.pid)
                    self._remember_shm_regions()
                    self._note(f"ready: {len(self._models)} models, pid {process.pid}")
                    return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"tritonserver was not ready within {timeout:g} s (waiting for: {', '.join(pending)}); "
                    f"the end of its log {self.log_path}:\n{self._log_excerpt()}"
                )
            time.sleep(READY_POLL_S)

    def _model_ready(self, name: str) -> bool:
        try:
            return self._control.is_model_ready(name)
        except ControlError:
            return False

    def _log_excerpt(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_start)
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-LOG_EXCERPT_LINES:])

    def _interrupt(self, process: subprocess.Popen[bytes]) -> None:
        """Sends SIGINT once per process: Triton starts its graceful shutdown on the first."""
        if self._interrupted_pid == process.pid:
            return
        self._interrupted_pid = process.pid
        try:
            process.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass

    def _shutdown_process(self) -> None:
        """Ends the server process (SIGINT, wait, then kill its whole group); no-op when none."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._interrupt(process)
            try:
                process.wait(self.stop_timeout + KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                self._note(
                    f"tritonserver did not stop within {self.stop_timeout + KILL_GRACE_S:g} s of SIGINT; killing it",
                    logging.WARNING,
                )
                # The group was created for this server: it holds the server and its stubs only.
                # The leader is not reaped yet, so its id cannot belong to anything else.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        self._note(f"tritonserver (pid {process.pid}) ended with code {process.returncode}")
        # A server that crashed or was killed leaves its stubs behind for a moment (they exit when
        # they notice); end the ones this supervisor knows so that they free memory now.
        for pid in sorted({pid for pids in self._stubs.values() for pid in pids} | set(self._leftovers)):
            self._kill_stub(pid)
        removed = processes.remove_shm_regions(self._shm_regions)
        if removed:
            self._note(f"removed {len(removed)} shared-memory region(s) the ended server left in {processes.SHM_DIR}")
        self._shm_regions = set()
        self._process = None
        self._stubs = {}
        self._leftovers = {}

    def _remember_shm_regions(self) -> None:
        """Notes the stubs' shared-memory regions and makes them private.

        The uploaded videos pass through these regions, which the python backend creates readable
        by every local user (mode 0644, whatever the umask); they are narrowed to the server's
        user before the server is reported ready, so before any request can reach them.
        """
        regions = processes.shm_regions(pid for pids in self._stubs.values() for pid in pids)
        self._shm_regions |= regions
        processes.make_private(regions)

    def _kill_stub(self, pid: int) -> bool:
        """Kills a stub of this server's (checked by its backend folder); whether it did."""
        if self._backend_dir is None or not processes.is_stub_of(pid, self._backend_dir / BACKEND_NAME):
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def _release(self) -> None:
        """Removes the backend folder and closes the log (after the last process is gone)."""
        if self._backend_dir is not None:
            shutil.rmtree(self._backend_dir)
            self._backend_dir = None
        self._close_log()

    def _close_log(self) -> None:
        handle = self._log_handle
        self._log_handle = None
        if handle is not None:
            handle.close()

    def _note(self, message: str, level: int = logging.INFO) -> None:
        """Logs a supervisor event and writes it into the server log too."""
        log.log(level, "%s", message)
        handle = self._log_handle
        if handle is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"[serve {stamp}] {message}\n".encode())
            handle.flush()

    # ----------------------------------------------------------------------------- watchdog

    def _watch(self) -> None:
        try:
            while not self._stop_event.wait(self.watchdog_interval):
                with self._lock:
                    if self._stop_event.is_set() or self._failed.is_set():
                        return
                    self._check_once()
        except Exception as error:
            # Not swallowed: recorded as the server's failure, then re-raised for the thread's report.
            self._fail(f"watchdog stopped by an unexpected error: {error!r}")
            raise

    def _check_once(self) -> None:
        process = self._process
        if process is None:
            return
        code = process.poll()
        if code is not None:
            self._replace_server(f"tritonserver exited unexpectedly with code {code}")
            return
        self._end_leftovers()
        running = processes.python_stubs(process.pid)
        for pids in running.values():
            for pid in pids:
                if pid not in self._stub_folders:
                    folder = processes.stub_folder(pid)
                    if folder is not None:
                        self._stub_folders[pid] = folder
        dead: dict[str, list[int]] = {}
        for model, pids in list(self._stubs.items()):
            fresh = running.get(model, set()) - pids - set(self._leftovers)
            if fresh:
                # Loaded again through the model-control API (a new version, a reload): Triton
                # starts new instances, then ends the old ones of the same version folder once
                # their requests are done. The new stubs are the model's now; that is no failure.
                renewed = {self._stub_folders.get(pid) for pid in fresh}
                self._stubs[model] = fresh | {pid for pid in pids if self._stub_folders.get(pid) not in renewed}
                continue
            gone = sorted(pid for pid in pids if not processes.is_running(pid))
            # A stub whose version folder went away served a version retired on purpose.
            retired = {pid for pid in gone if pid in self._stub_folders and not self._stub_folders[pid].is_dir()}
            if retired:
                self._stubs[model] = pids - retired
                gone = [pid for pid in gone if pid not in retired]
            if gone:
                dead[model] = gone
        causes = {model: f"python stub process(es) {pids} of model '{model}' exited" for model, pids in dead.items()}
        try:
            index = self._control.repository_index()
        except ControlError as error:
            now = time.monotonic()
            self._unresponsive_since = self._unresponsive_since or now
            if now - self._unresponsive_since > UNRESPONSIVE_LIMIT_S:
                self._replace_server(f"the HTTP endpoint has not answered for {UNRESPONSIVE_LIMIT_S:g} s ({error})")
                return
            index = []
        else:
            self._unresponsive_since = None
        # One entry per version of a loaded model: a model is served while one version is ready (a
        # version retired through the API stays listed as UNAVAILABLE, unloaded on purpose).
        by_model: dict[str, list[ModelState]] = {}
        for entry in index:
            by_model.setdefault(entry.name, []).append(entry)
        for name, entries in by_model.items():
            states = {entry.state for entry in entries}
            if name not in self._models and STATE_READY in states:
                # A model first loaded after the start (the first temporal model of a length,
                # loaded by `export reload`): supervised from now on, like the others.
                self._models = (*self._models, name)
                self._stubs[name] = running.get(name, set())
                continue
            # Only the models served: a folder added later is not loaded by itself.
            if name not in self._models or name in causes or states & TRANSIENT_STATES:
                continue
            if STATE_READY not in states:
                entry = entries[-1]
                causes[name] = f"model '{name}' is {entry.state or 'not loaded'} ({entry.reason or 'no reason given'})"
            elif not self._model_ready(name):
                causes[name] = f"model '{name}' reports not ready"
        for model, cause in sorted(causes.items()):
            if self._stop_event.is_set():
                return
            self._reload(model, cause)

    def _end_leftovers(self) -> None:
        now = time.monotonic()
        for pid, (model, deadline) in list(self._leftovers.items()):
            if self._backend_dir is None or not processes.is_stub_of(pid, self._backend_dir / BACKEND_NAME):
                del self._leftovers[pid]
            elif now >= deadline:
                del self._leftovers[pid]
                if self._kill_stub(pid):
                    self._note(
                        f"watchdog: ended stub {pid} left over from the replaced instances of '{model}'",
                        logging.WARNING,
                    )

    def _reload(self, model: str, cause: str) -> None:
        process = self._process
        assert process is not None, "checked by _check_once()"
        detected = time.monotonic()
        self._note(f"watchdog: {cause}; loading '{model}' again", logging.WARNING)
        old = self._stubs.get(model, set())
        try:
            # A plain load of a model whose files did not change is a no-op for Triton, even when
            # its stub is dead: unloading first makes the load start new instances.
            self._control.unload_model(model)
            self._control.load_model(model, RELOAD_TIMEOUT_S)
        except ControlError as error:
            failures = self._reload_failures.get(model, 0) + 1
            self._reload_failures[model] = failures
            self._note(
                f"watchdog: loading '{model}' again failed ({failures}/{MAX_RELOAD_FAILURES}): {error}", logging.ERROR
            )
            if failures >= MAX_RELOAD_FAILURES and not self._stop_event.is_set():
                self._reload_failures.pop(model, None)
                self._replace_server(f"model '{model}' failed to load again {MAX_RELOAD_FAILURES} times")
            return
        self._reload_failures.pop(model, None)
        # Old instances may still be on their way out: keep only the new stubs, and give the
        # old ones that still run a deadline.
        self._stubs[model] = processes.python_stubs(process.pid).get(model, set()) - old
        self._remember_shm_regions()
        deadline = time.monotonic() + self.leftover_stub_grace
        for pid in old:
            if processes.is_running(pid):
                self._leftovers[pid] = (model, deadline)
        if not self._model_ready(model):
            self._note(f"watchdog: '{model}' loaded but does not report ready yet", logging.WARNING)
            return
        recovery = Recovery(model=model, cause=cause, detected_at=detected, recovered_at=time.monotonic())
        self._recoveries.append(recovery)
        self._note(f"watchdog: '{model}' is ready again, {recovery.seconds:.2f} s after the failure was seen")

    def _replace_server(self, cause: str) -> None:
        detected = time.monotonic()
        self._note(f"watchdog: {cause}; starting a new tritonserver", logging.ERROR)
        last_error = ""
        for delay in RESTART_BACKOFF_S:
            if self._stop_event.is_set():
                return
            self._shutdown_process()
            try:
                self._launch()
                self._await_ready(self._ready_timeout)
            except ServeError as error:
                last_error = str(error)
                self._note(
                    f"watchdog: the new tritonserver did not come up: {error}; next try in {delay:g} s", logging.ERROR
                )
                self._shutdown_process()
                if self._stop_event.wait(delay):
                    return
                continue
            recovery = Recovery(model=None, cause=cause, detected_at=detected, recovered_at=time.monotonic())
            self._recoveries.append(recovery)
            self._note(f"watchdog: a new tritonserver is ready, {recovery.seconds:.2f} s after the failure was seen")
            return
        self._fail(f"tritonserver could not be started again after {len(RESTART_BACKOFF_S)} tries: {last_error}")

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self._note(f"watchdog: giving up: {reason}", logging.CRITICAL)
        self._failed.set()
