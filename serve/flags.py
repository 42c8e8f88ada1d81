"""tritonserver's command line, built in one place for the embedded server and the container.

``python -m serve`` (:class:`serve.server.EmbeddedServer`) and the container's entrypoint
(``deploy/entrypoint.py``) describe the server they want as a :class:`ServerFlags` and get the
same flags for the same wishes. The module needs the standard library only (the container's
Python runs it before anything else).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serve.options import GrpcTls, Restriction

#: Model-control modes this project runs: ``none`` loads the repository once (the container);
#: ``explicit`` loads every model at start and lets the supervisor load one again (embedded).
MODEL_CONTROL_MODES = ("none", "explicit")
ENDPOINTS = ("http", "grpc", "metrics")
REDACTED = "<hidden>"

#: Flags a :class:`ServerFlags` may set; extra arguments may not set again those it does set.
MANAGED_FLAGS = frozenset(
    {
        "--model-repository",
        "--model-store",
        "--backend-directory",
        "--model-control-mode",
        "--load-model",
        "--repository-poll-secs",
        "--exit-on-error",
        "--strict-readiness",
        "--exit-timeout-secs",
        "--model-config-name",
        "--disable-auto-complete-config",
        "--pinned-memory-pool-byte-size",
        "--cache-config",
        "--cache-directory",
        "--allow-sagemaker",
        "--allow-vertex-ai",
        *(f"--allow-{endpoint}" for endpoint in ENDPOINTS),
        *(f"--{endpoint}-port" for endpoint in ENDPOINTS),
        *(f"--{endpoint}-address" for endpoint in ENDPOINTS),
        "--grpc-restricted-protocol",
        "--http-restricted-api",
        "--grpc-use-ssl",
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert",
        "--grpc-server-key",
        "--grpc-root-cert",
    }
)


def managed_clashes(args: Iterable[str], managed: Iterable[str] = MANAGED_FLAGS) -> list[str]:
    """The flags of ``managed`` that ``args`` would set again, sorted."""
    return sorted({arg.split("=", 1)[0] for arg in args} & set(managed))


@dataclass(frozen=True)
class ServerFlags:
    """What a tritonserver is started with.

    Attributes:
        repository: the model repository.
        http_port, grpc_port, metrics_port: the endpoints' ports.
        host: the address every endpoint binds; None keeps Triton's default (every address).
        model_control: ``none`` or ``explicit`` (then every model is loaded at start).
        exit_on_error: stop the server when a model fails to load.
        strict_readiness: ``/v2/health/ready`` only once every model is ready.
        exit_timeout_s: how long a stopping server waits for in-flight requests.
        model_config_name: ``--model-config-name`` (``configs/<name>.pbtxt``); None reads ``config.pbtxt``.
        backend_directory: ``--backend-directory``; None keeps Triton's (``/opt/tritonserver/backends``).
        auto_complete_config: let Triton complete partial configs (it starts a stub per python model to ask).
        pinned_memory_pool_bytes: ``--pinned-memory-pool-byte-size``; None keeps Triton's 256 MiB.
        response_cache_bytes: the local response cache's size (``--cache-config local,size=``); None: no cache.
        cache_directory: ``--cache-directory`` (where the cache implementations are); None keeps Triton's.
        grpc_tls: TLS of the gRPC endpoint.
        grpc_restrictions: key-protected gRPC protocol groups.
        http_restrictions: key-protected HTTP API groups.
        extra_args: more flags, after these; none may set a managed flag.
    """

    repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str | None = None
    model_control: str = "none"
    exit_on_error: bool = True
    strict_readiness: bool = True
    exit_timeout_s: int = 30
    model_config_name: str | None = None
    backend_directory: Path | None = None
    auto_complete_config: bool = True
    pinned_memory_pool_bytes: int | None = None
    response_cache_bytes: int | None = None
    cache_directory: Path | None = None
    grpc_tls: GrpcTls | None = None
    grpc_restrictions: tuple[Restriction, ...] = ()
    http_restrictions: tuple[Restriction, ...] = ()
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.model_control not in MODEL_CONTROL_MODES:
            raise ValueError(f"model control {self.model_control!r}: expected one of {', '.join(MODEL_CONTROL_MODES)}")
        ports = {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}
        for label, port in ports.items():
            if not 0 < port < 65536:
                raise ValueError(f"the {label} port must be between 1 and 65535, got {port}")
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        if self.response_cache_bytes is not None and self.response_cache_bytes <= 0:
            raise ValueError(
                f"the response cache size must be a positive number of bytes, got {self.response_cache_bytes}"
            )
        if self.exit_timeout_s < 0:
            raise ValueError(f"the exit timeout must be at least 0 seconds, got {self.exit_timeout_s}")
        clashes = managed_clashes(self.extra_args, self.own_flags())
        if clashes:
            raise ValueError(
                f"extra arguments may not set {', '.join(clashes)}: they are set from the server's settings"
            )

    def own_flags(self) -> frozenset[str]:
        """The names of the flags this object sets (the extra arguments left out)."""
        return frozenset(part.split("=", 1)[0] for part in self._own_command())

    def command(self, binary: str | Path) -> list[str]:
        """The whole command line, ``binary`` first."""
        return [str(binary), *self._own_command(), *self.extra_args]

    def _own_command(self) -> list[str]:
        command = [f"--model-repository={self.repository}"]
        if self.backend_directory is not None:
            command.append(f"--backend-directory={self.backend_directory}")
        command.append(f"--model-control-mode={self.model_control}")
        if self.model_control == "explicit":
            command.append("--load-model=*")
        command += [
            f"--exit-on-error={_flag(self.exit_on_error)}",
            f"--strict-readiness={_flag(self.strict_readiness)}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
        ]
        if self.pinned_memory_pool_bytes is not None:
            command.append(f"--pinned-memory-pool-byte-size={self.pinned_memory_pool_bytes}")
        if self.response_cache_bytes is not None:
            command.append(f"--cache-config=local,size={self.response_cache_bytes}")
            if self.cache_directory is not None:
                command.append(f"--cache-directory={self.cache_directory}")
        ports = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        for endpoint in ENDPOINTS:
            command.append(f"--allow-{endpoint}=true")
            if self.host is not None:
                command.append(f"--{endpoint}-address={self.host}")
            command.append(f"--{endpoint}-port={ports[endpoint]}")
        if self.model_config_name:
            command.append(f"--model-config-name={self.model_config_name}")
        if not self.auto_complete_config:
            command.append("--disable-auto-complete-config")
        if self.grpc_tls is not None:
            command += self.grpc_tls.server_args()
        command += [f"--grpc-restricted-protocol={item.as_flag_value()}" for item in self.grpc_restrictions]
        command += [f"--http-restricted-api={item.as_flag_value()}" for item in self.http_restrictions]
        return command

    def redacted(self, command: list[str]) -> str:
        """``command`` as a shell line with every restriction's key value hidden."""
        values = {item.value for item in (*self.grpc_restrictions, *self.http_restrictions)}
        hidden = []
        for part in command:
            for value in values:
                part = part.replace(f"={value}", f"={REDACTED}")
            hidden.append(part)
        return shlex.join(hidden)


def _flag(value: bool) -> str:
    return "true" if value else "false"
