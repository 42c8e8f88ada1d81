"""Throw-away TLS material for gRPC: a CA, a server certificate and a client certificate.

Made with the ``openssl`` command-line tool (present on Debian and in the serving image), for
tests and local trials of TLS and mutual TLS; production certificates come from the operator's
own CA. Private keys are written with mode 0600.

Usage::

    python tools/certs.py --out certs/                  # CA, server (localhost, 127.0.0.1), client
    python -m serve --grpc-ssl --grpc-server-cert certs/server.pem --grpc-server-key certs/server.key \\
        --grpc-root-cert certs/ca.pem --grpc-mutual-auth
    python -m client health --url localhost:8001 --ssl --root-cert certs/ca.pem \\
        --client-cert certs/client.pem --client-key certs/client.key
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Names the server certificate is valid for, unless told otherwise.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Validity of every certificate, in days: these are for tests and trials only.
DEFAULT_DAYS = 2
CURVE = "prime256v1"
PRIVATE_MODE = 0o600
OPENSSL_TIMEOUT_S = 60


class CertificateError(RuntimeError):
    """openssl is missing or refused a step (the message holds its output)."""


@dataclass(frozen=True)
class CertificateSet:
    """Paths of the PEM files :func:`generate` wrote.

    Attributes:
        ca_cert: the CA certificate (the client's ``--root-cert``, the server's ``--grpc-root-cert``).
        ca_key: the CA's private key.
        server_cert: certificate of the server, signed by the CA.
        server_key: the server's private key.
        client_cert: certificate of a client (mutual TLS), signed by the CA.
        client_key: the client's private key.
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertificateError("the openssl command is not installed (Debian package 'openssl')")
    completed = subprocess.run([binary, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, check=False)
    if completed.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed with code {completed.returncode}: {completed.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-out", str(path))
    os.chmod(path, PRIVATE_MODE)


def _subject_alt_names(hosts: Sequence[str]) -> str:
    names = []
    for host in hosts:
        is_ip = host.replace(".", "").isdigit() or ":" in host
        names.append(f"IP:{host}" if is_ip else f"DNS:{host}")
    return ",".join(names)


def _signed(
    out: Path, name: str, common_name: str, usage: str, ca_cert: Path, ca_key: Path, days: int, alt_names: str = ""
) -> tuple[Path, Path]:
    key, request, cert, extensions = (
        out / f"{name}.key",
        out / f"{name}.csr",
        out / f"{name}.pem",
        out / f"{name}.ext",
    )
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(request))
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if alt_names:
        lines.append(f"subjectAltName={alt_names}")
    extensions.write_text("\n".join(lines) + "\n")
    try:
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")),
            "-days",
            str(days),
            "-sha256",
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        )
    finally:
        request.unlink(missing_ok=True)
        extensions.unlink(missing_ok=True)
    return cert, key


def generate(
    out: str | os.PathLike[str], hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS
) -> CertificateSet:
    """Writes a CA, a server certificate for ``hosts`` and a client certificate into ``out``.

    Args:
        out: folder for the files (created when missing).
        hosts: DNS names and IP addresses the server certificate is valid for.
        days: validity of every certificate.

    Returns:
        The paths written.

    Raises:
        CertificateError: openssl is missing or failed.
        ValueError: no host, or ``days`` below 1.
    """
    if not hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    _new_key(ca_key)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(ca_key),
        "-subj",
        "/CN=deepfake-serving test CA",
        "-days",
        str(days),
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        str(ca_cert),
    )
    server_cert, server_key = _signed(
        folder, "server", hosts[0], "serverAuth", ca_cert, ca_key, days, _subject_alt_names(hosts)
    )
    client_cert, client_key = _signed(
        folder, "client", "deepfake-serving test client", "clientAuth", ca_cert, ca_key, days
    )
    return CertificateSet(ca_cert, ca_key, server_cert, server_key, client_cert, client_key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for ca.pem, server.pem/.key, client.pem/.key")
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help=f"name or address the server certificate is valid for (repeatable; default {', '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    args = parser.parse_args(argv)
    try:
        made = generate(args.out, tuple(args.hosts or DEFAULT_HOSTS), args.days)
    except (CertificateError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for label, path in vars(made).items():
        print(f"{label:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
