"""Security options of the server: gRPC TLS and restricted (key-protected) APIs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Protocol groups Triton can restrict, identical for --grpc-restricted-protocol and
# --http-restricted-api.
RESTRICTABLE = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
# gRPC metadata keys are lowercase ASCII; HTTP header names are case-insensitive.
HEADER_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Restriction:
    """APIs callable only with a header ``key: value`` (Triton's restricted-protocol setting).

    Attributes:
        protocols: the restricted protocol groups, from :data:`RESTRICTABLE`.
        key: the HTTP header a caller must send; over gRPC Triton expects the metadata key
            ``triton-grpc-protocol-<key>``.
        value: the value it must carry.
    """

    protocols: tuple[str, ...]
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Restriction:
        """Parses ``<protocol>[,<protocol>...]:<key>=<value>``.

        Raises:
            ValueError: the text does not have that form, names an unknown protocol, or the key
                is not a lowercase header name.
        """
        protocols_text, colon, setting = text.partition(":")
        key, equals, value = setting.partition("=")
        if not colon or not equals:
            raise ValueError(f"restriction {text!r} must look like <protocol>[,<protocol>...]:<key>=<value>")
        protocols = tuple(item.strip() for item in protocols_text.split(","))
        unknown = [item for item in protocols if item not in RESTRICTABLE]
        if unknown or not protocols_text.strip():
            raise ValueError(
                f"restriction {text!r}: unknown protocol(s) {unknown or ['']}; choose from {', '.join(RESTRICTABLE)}"
            )
        if not HEADER_KEY.match(key):
            raise ValueError(
                f"restriction {text!r}: key {key!r} must be a lowercase header name (letters, digits, '-', '_', '.')"
            )
        if not value:
            raise ValueError(f"restriction {text!r}: the value after '=' is empty")
        return cls(protocols=protocols, key=key, value=value)

    def as_flag_value(self) -> str:
        """The value Triton's flag takes."""
        return f"{','.join(self.protocols)}:{self.key}={self.value}"


def headers_for(restrictions: tuple[Restriction, ...], protocol: str) -> dict[str, str]:
    """Headers that satisfy every restriction covering ``protocol``."""
    return {item.key: item.value for item in restrictions if protocol in item.protocols}


def covered(restrictions: tuple[Restriction, ...], protocol: str) -> bool:
    """Whether some restriction already covers ``protocol``."""
    return any(protocol in item.protocols for item in restrictions)


@dataclass(frozen=True)
class GrpcTls:
    """TLS of the gRPC endpoint.

    Attributes:
        server_cert: PEM server certificate.
        server_key: PEM server private key.
        root_cert: PEM root certificate that client certificates must chain to (mutual TLS).
        mutual: require a client certificate.
    """

    server_cert: Path
    server_key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def validate(self) -> None:
        """Checks that the files exist and mutual TLS has a root certificate.

        Raises:
            ValueError: naming the missing file or setting.
        """
        if self.mutual and self.root_cert is None:
            raise ValueError("mutual TLS needs the root certificate that signs client certificates (--grpc-root-cert)")
        for label, path in (
            ("server certificate", self.server_cert),
            ("server key", self.server_key),
            ("root certificate", self.root_cert),
        ):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"gRPC TLS {label} {path} does not exist")

    def server_args(self) -> list[str]:
        """The tritonserver flags for this setting."""
        args = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={Path(self.server_cert).resolve()}",
            f"--grpc-server-key={Path(self.server_key).resolve()}",
        ]
        if self.root_cert is not None:
            args.append(f"--grpc-root-cert={Path(self.root_cert).resolve()}")
        if self.mutual:
            args.append("--grpc-use-ssl-mutual=true")
        return args
