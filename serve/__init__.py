"""The embedded CPU server: the pip-installed tritonserver 2.51 over ``model_repository/``.

``python -m serve`` runs it from a shell; :class:`EmbeddedServer` runs it from Python (tests,
benchmarks). The names below are imported on first use, so that the container's entrypoint and
health check, which use ``serve.flags`` and ``serve.processes`` (standard library only), do not
load the server's client libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "TritonDistribution": "serve.distribution",
    "ArtifactsMissingError": "serve.errors",
    "ControlError": "serve.errors",
    "ModelLoadError": "serve.errors",
    "PortInUseError": "serve.errors",
    "RepositoryError": "serve.errors",
    "ServeError": "serve.errors",
    "ServerStartError": "serve.errors",
    "SetupError": "serve.errors",
    "TritonNotFoundError": "serve.errors",
    "ServerFlags": "serve.flags",
    "GrpcTls": "serve.options",
    "Restriction": "serve.options",
    "free_port": "serve.ports",
    "free_ports": "serve.ports",
    "DEFAULT_CONFIG_NAME": "serve.server",
    "DEFAULT_GRPC_PORT": "serve.server",
    "DEFAULT_HOST": "serve.server",
    "DEFAULT_HTTP_PORT": "serve.server",
    "DEFAULT_LOG_PATH": "serve.server",
    "DEFAULT_METRICS_PORT": "serve.server",
    "DEFAULT_READY_TIMEOUT_S": "serve.server",
    "DEFAULT_STOP_TIMEOUT_S": "serve.server",
    "EmbeddedServer": "serve.server",
    "Recovery": "serve.server",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
