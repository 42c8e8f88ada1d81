"""Settings of the web page, checked once at start-up; no web framework imported here."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contract import DEFAULT_FRAMES, MAX_UPLOAD_BYTES

from ..codec import check_frames
from ..connection import Connection

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Lengths offered when ready: the project's defaults and the published ones.
DEFAULT_LENGTHS = (10, 20, 30, 40, 60, 80, 100)
#: Uploads held in memory at once (each up to the limit); more are answered 503 at once.
DEFAULT_MAX_CONCURRENT = 4
#: Deadline of one gRPC call to Triton; a 1080p clip takes about a second on 2 CPU cores.
DEFAULT_TRITON_TIMEOUT_S = 300.0
#: Longest a client may take to send its upload before it is answered 408.
DEFAULT_UPLOAD_TIMEOUT_S = 300.0
TOKEN_ENV = "DEEPFAKE_WEB_TOKEN"


def default_connection() -> Connection:
    """Triton at the client's default address, each call bounded by :data:`DEFAULT_TRITON_TIMEOUT_S`."""
    return Connection(timeout_s=DEFAULT_TRITON_TIMEOUT_S)


@dataclass(frozen=True)
class WebSettings:
    """What one web process serves and where it sends the work.

    Attributes:
        connection: Triton's gRPC address, TLS and metadata; its ``timeout_s`` bounds every gRPC call.
        lengths: sequence lengths offered when ``deepfake_<N>`` is ready.
        default_frames: the length preselected on the page (when served).
        max_upload_bytes: largest upload accepted; bigger ones get 413 before they are read (by
            default the preprocessing models' own limit, so that the page refuses at once what the
            server would refuse after the whole upload).
        max_concurrent: uploads in memory at once.
        upload_timeout_s: time allowed to receive one request body.
        token: access token callers must send as ``Authorization: Bearer``; None: open.
    """

    connection: Connection = field(default_factory=default_connection)
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    default_frames: int = DEFAULT_FRAMES
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S
    token: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.connection, Connection):
            raise TypeError(f"connection must be a client.Connection, got {self.connection!r}")
        if self.connection.timeout_s is None:
            raise ValueError("the connection needs a timeout_s: the page bounds every gRPC call to Triton")
        if not self.lengths:
            raise ValueError("at least one sequence length is needed")
        object.__setattr__(self, "lengths", tuple(sorted({check_frames(n) for n in self.lengths})))
        check_frames(self.default_frames)
        for name in ("max_upload_bytes", "max_concurrent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.upload_timeout_s > 0:
            raise ValueError(f"upload_timeout_s must be positive, got {self.upload_timeout_s!r}")
        if self.token is not None and not self.token.strip():
            raise ValueError("the access token is empty")

    @property
    def triton_url(self) -> str:
        return self.connection.url

    @property
    def triton_timeout_s(self) -> float | None:
        return self.connection.timeout_s


def read_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The access token from ``token_file`` (stripped), else ``$DEEPFAKE_WEB_TOKEN``, else None."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as error:
            raise ValueError(f"cannot read the token file '{token_file}': {error.strerror or error}") from None
        if not token:
            raise ValueError(f"the token file '{token_file}' is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    return token or None


def lengths_or_default(lengths: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(lengths) if lengths else DEFAULT_LENGTHS
