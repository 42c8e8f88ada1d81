"""How the client reaches Triton: one frozen settings object for every caller.

The sync and asyncio clients, the live-stream session, the web page and the command line all
describe their gRPC connection as a :class:`Connection`, checked once when it is made, and get
tritonclient's keyword arguments and per-call metadata from it. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

DEFAULT_URL = "localhost:8001"

# The server accepts messages up to INT32_MAX bytes; tritonclient uses the same limit by default,
# but only when no channel arguments are given, so the limits are restated here next to the
# reconnect settings.
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
# gRPC's own reconnect backoff grows to two minutes; a restarted server should be found within
# seconds so that retried requests reach it.
INITIAL_RECONNECT_BACKOFF_MS = 500
MAX_RECONNECT_BACKOFF_MS = 5_000
# tritonclient's keepalive defaults, restated because channel arguments replace them as a whole.
KEEPALIVE_TIME_MS = 2**31 - 1
KEEPALIVE_TIMEOUT_MS = 20_000
# gRPC metadata keys are lowercase ASCII.
METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Connection:
    """A gRPC connection to Triton, checked when it is made.

    Attributes:
        url: gRPC address ``host:port`` of the Triton server.
        ssl: use a TLS channel.
        root_certificates: PEM file of the CA certificates (TLS only).
        private_key: PEM file of the client key for mutual TLS.
        certificate_chain: PEM file of the client certificate for mutual TLS.
        timeout_s: deadline of every call in seconds; ``None`` waits forever.
        headers: gRPC metadata sent with every call, e.g. the key of a restricted protocol:
            ``{"triton-grpc-protocol-<key>": value}``; a mapping or ``(key, value)`` pairs (the
            last of a repeated key wins), kept as sorted pairs.

    Raises:
        ValueError: a malformed setting or an unreadable certificate file (the message says which).
    """

    url: str = DEFAULT_URL
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    timeout_s: float | None = None
    headers: Headers | None = ()

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ValueError(f"url must be 'host:port', got {self.url!r}")
        if "://" in self.url:
            raise ValueError(f"url must be 'host:port' without a scheme, got '{self.url}'")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("a client key and a client certificate must be given together")
        if not self.ssl and any(path is not None for path in self._pem_files()):
            raise ValueError("certificate files are only used with ssl=True")
        for path, label in zip(self._pem_files(), ("root certificate", "client key", "client certificate")):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{label} file '{path}' does not exist")
        object.__setattr__(self, "headers", _checked_headers(self.headers))

    @classmethod
    def of(cls, url: str | Connection = DEFAULT_URL, **settings) -> Connection:
        """``url`` itself when it is a Connection, else a Connection of ``url`` and ``settings``.

        Raises:
            TypeError: settings given beside a Connection, or a setting that does not exist.
        """
        if isinstance(url, Connection):
            if settings:
                raise TypeError(f"give {', '.join(sorted(settings))} in the Connection, not beside it")
            return url
        return cls(url, **settings)

    def client_options(self) -> dict:
        """The keyword arguments of tritonclient's ``InferenceServerClient`` after the URL (sync and asyncio alike)."""
        return {
            "ssl": self.ssl,
            "root_certificates": _path_or_none(self.root_certificates),
            "private_key": _path_or_none(self.private_key),
            "certificate_chain": _path_or_none(self.certificate_chain),
            "channel_args": self.channel_args(),
        }

    @staticmethod
    def channel_args() -> list[tuple[str, int]]:
        """The gRPC channel arguments: message limits, keepalive and a short reconnect backoff."""
        return [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]

    @property
    def metadata(self) -> dict[str, str] | None:
        """The ``headers`` argument of each tritonclient call (None when there are none)."""
        return dict(self.headers) or None

    def _pem_files(self) -> tuple[str | None, str | None, str | None]:
        return self.root_certificates, self.private_key, self.certificate_chain


class ConnectedClient:
    """What the sync and asyncio clients share: a :class:`Connection` and the channel it opens.

    Subclasses name their tritonclient flavour's ``InferenceServerClient`` in ``CHANNEL``.
    """

    CHANNEL: ClassVar[type]

    def __init__(self, url: str | Connection = DEFAULT_URL, **settings) -> None:
        self.connection = Connection.of(url, **settings)
        self._client = self.CHANNEL(self.connection.url, **self.connection.client_options())

    @property
    def url(self) -> str:
        return self.connection.url

    @property
    def timeout_s(self) -> float | None:
        return self.connection.timeout_s


def _path_or_none(path) -> str | None:
    return None if path is None else os.fspath(path)


def _checked_headers(headers: Headers | None) -> tuple[tuple[str, str], ...]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    checked: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            raise ValueError(f"header name {key!r} must be lowercase letters, digits, '-', '_' or '.'")
        if not isinstance(value, str) or not value:
            raise ValueError(f"header {key!r} needs a non-empty string value")
        checked[key] = value
    return tuple(sorted(checked.items()))
