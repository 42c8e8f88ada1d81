"""Choosing and checking TCP ports."""

from __future__ import annotations

import contextlib
import socket

from serve.errors import PortInUseError, SetupError

LOOPBACK = "127.0.0.1"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # The same option servers set, so a port whose last connections linger in TIME_WAIT counts as free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that nothing listens on right now (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        # Every socket stays bound until all are chosen, so the OS cannot hand out one twice.
        sockets = [stack.enter_context(_bind(host, 0)) for _ in range(count)]
        return [sock.getsockname()[1] for sock in sockets]


def free_port(host: str = LOOPBACK) -> int:
    """A port that nothing listens on right now."""
    return free_ports(1, host)[0]


def ensure_free(host: str, ports: dict[str, int]) -> None:
    """Checks that each port can be bound on ``host``.

    Args:
        host: the address the server will bind.
        ports: label (``"gRPC"``) -> port.

    Raises:
        SetupError: the host is not an address.
        PortInUseError: naming the first port that is taken, or ports given twice.
    """
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as error:
        raise SetupError(f"the host {host!r} to bind is not a known address ({error.strerror})") from error
    seen: dict[int, str] = {}
    for label, port in ports.items():
        if port in seen:
            raise PortInUseError(f"the {label} and {seen[port]} ports are both {port}; give each its own port")
        seen[port] = label
        try:
            _bind(host, port).close()
        except OSError as error:
            raise PortInUseError(
                f"the {label} port {port} on {host} is not available ({error.strerror}); choose another port"
            ) from error
