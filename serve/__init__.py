"""The embedded CPU server: the pip-installed tritonserver 2.51 over ``model_repository/``.

``python -m serve`` runs it from a shell; :class:`EmbeddedServer` runs it from Python (tests,
benchmarks).
"""

from serve.distribution import TritonDistribution
from serve.errors import (
    ArtifactsMissingError,
    ControlError,
    ModelLoadError,
    PortInUseError,
    RepositoryError,
    ServeError,
    ServerStartError,
    SetupError,
    TritonNotFoundError,
)
from serve.options import GrpcTls, Restriction
from serve.ports import free_port, free_ports
from serve.server import (
    DEFAULT_CONFIG_NAME,
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_LOG_PATH,
    DEFAULT_METRICS_PORT,
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    EmbeddedServer,
    Recovery,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_LOG_PATH",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_READY_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "ArtifactsMissingError",
    "ControlError",
    "EmbeddedServer",
    "GrpcTls",
    "ModelLoadError",
    "PortInUseError",
    "Recovery",
    "RepositoryError",
    "Restriction",
    "ServeError",
    "ServerStartError",
    "SetupError",
    "TritonDistribution",
    "TritonNotFoundError",
    "free_port",
    "free_ports",
]
