"""The one set of argument helpers of every command: value checkers, shared options, the connection.

Each checker is an argparse ``type``: it returns the value or raises ``ArgumentTypeError`` with a
message that names what was expected. The connection options (``--url``, ``--timeout``, TLS,
``--header``) are one parent parser, turned into one :class:`client.Connection` by
:func:`connection_from_args`.
"""

from __future__ import annotations

import argparse
import math

from contract import DEFAULT_FRAMES

from ..batch import DEFAULT_RETRIES, backoff_delays
from ..connection import DEFAULT_URL, Connection
from ..versions import check_version

DEFAULT_CONCURRENCY = 1
#: The TLS file options and their names in the parsed arguments: each needs --ssl.
TLS_FILES = {"--root-cert": "root_cert", "--client-cert": "client_cert", "--client-key": "client_key"}


def int_at_least(minimum: int, wording: str):
    """An argparse type accepting integers >= ``minimum``; ``wording`` names them in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def int_between(low: int, high: int):
    """An argparse type accepting integers from ``low`` to ``high``."""
    wording = f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got '{text}'") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
        return value

    return parse


#: A TCP port (the embedded server's ``--grpc-port``, ``--http-port``, ``--metrics-port``).
port_number = int_between(1, 65535)


def positive_seconds(text: str) -> float:
    """A positive, finite number (``--timeout``; also ``web --max-upload-mib``, whose message says seconds too)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not value > 0 or value == math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def positive_number(text: str) -> float:
    """A positive, finite number (``train``'s learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not value > 0.0 or value == math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """A finite number of at least 0 (``train --weight-decay``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'") from None
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def unit_interval(noun: str, *, inclusive: bool):
    """An argparse type accepting numbers from 0 to 1 (``inclusive``) or strictly between; ``noun`` names them."""
    bounds = "between 0 and 1" if inclusive else "strictly between 0 and 1"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {noun} between 0 and 1, got '{text}'") from None
        if not (0.0 <= value <= 1.0 if inclusive else 0.0 < value < 1.0):
            raise argparse.ArgumentTypeError(f"expected a {noun} {bounds}, got {text}")
        return value

    return parse


#: A number strictly between 0 and 1 (``evaluate --val-fraction``).
fraction = unit_interval("fraction", inclusive=False)
#: A score from 0 to 1 (``evaluate --threshold``).
probability = unit_interval("score", inclusive=True)


def header(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as ``(key, value)`` (the value may hold ``=``)."""
    key, equals, value = text.partition("=")
    if not equals or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{key}{equals}...'")
    return key, value


def connection_parent() -> argparse.ArgumentParser:
    """The connection options every command takes, as a parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--url", default=DEFAULT_URL, help="gRPC address host:port (default: %(default)s)")
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="S",
        help="deadline of each request in seconds (default: none)",
    )
    group.add_argument("--ssl", action="store_true", help="connect with TLS")
    group.add_argument("--root-cert", metavar="F", help="PEM file of the CA certificates (TLS)")
    group.add_argument("--client-cert", metavar="F", help="PEM file of the client certificate (mutual TLS)")
    group.add_argument("--client-key", metavar="F", help="PEM file of the client key (mutual TLS)")
    group.add_argument(
        "--header",
        dest="headers",
        type=header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata sent with every call (repeatable), e.g. the key of a restricted "
        "protocol: triton-grpc-protocol-<key>=<value>",
    )
    return parent


def check_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses TLS files without ``--ssl`` and a client certificate without its key, naming the flags."""
    # Commands without a connection (calibration) have none of these.
    given = [flag for flag, name in TLS_FILES.items() if getattr(args, name, None) is not None]
    if given and not args.ssl:
        parser.error(f"{', '.join(given)} need --ssl")
    if (getattr(args, "client_cert", None) is None) != (getattr(args, "client_key", None) is None):
        parser.error("--client-cert and --client-key must be given together")


def connection_from_args(args: argparse.Namespace, default_timeout_s: float | None = None) -> Connection:
    """The :class:`client.Connection` of the connection options (after :func:`check_tls`).

    Args:
        default_timeout_s: the deadline when ``--timeout`` is not given.

    Raises:
        ValueError: an unusable option, e.g. a missing certificate file or a bad header name (the
            command hands the message to ``parser.error``).
    """
    return Connection(
        args.url,
        ssl=args.ssl,
        root_certificates=args.root_cert,
        private_key=args.client_key,
        certificate_chain=args.client_cert,
        timeout_s=default_timeout_s if args.timeout is None else args.timeout,
        headers=args.headers,
    )


def flag_name(choice: str) -> str:
    """How the command line spells a choice: ``all_faces`` -> ``--all-faces``."""
    return "--" + choice.replace("_", "-")


def add_frames_option(parser: argparse.ArgumentParser, wording: str = "sequence length N of the served model") -> None:
    """``--frames N``, one positive length, :data:`contract.DEFAULT_FRAMES` by default."""
    parser.add_argument(
        "--frames", type=positive_int, default=DEFAULT_FRAMES, metavar="N", help=f"{wording} (default: %(default)s)"
    )


def model_version(text: str) -> int:
    """A classifier version: a positive integer (``--model-version``), checked as the Python API checks it."""
    try:
        return check_version(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a classifier version (a positive integer, e.g. 1 for the published model), got '{text}'"
        ) from None


def add_model_version_option(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--model-version V`` (``several``: ``V [V ...]``): the classifier version(s) to ask for, default the latest."""
    if several:
        parser.add_argument(
            "--model-version",
            dest="model_versions",
            type=model_version,
            nargs="+",
            default=None,
            metavar="V",
            help="the classifier version(s) to score with (default: the latest served); two or more score "
            "the set once per version, side by side, and write a report comparing them",
        )
        return
    parser.add_argument(
        "--model-version",
        type=model_version,
        default=None,
        metavar="V",
        help="the classifier version to score with (default: the latest the server serves; "
        "`health` lists the versions served)",
    )


def add_retries_option(parser: argparse.ArgumentParser) -> None:
    """``--retries R``: retries of a retryable request, with the backoff they wait."""
    delays = ", ".join(f"{d:g}" for d in backoff_delays(DEFAULT_RETRIES))
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        default=DEFAULT_RETRIES,
        metavar="R",
        help="retries of a request that failed with UNAVAILABLE or DEADLINE_EXCEEDED, "
        f"with exponential backoff (default: %(default)s, waiting up to {delays} s)",
    )


def add_concurrency_option(parser: argparse.ArgumentParser) -> None:
    """``--concurrency K``: requests in flight at once."""
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="K",
        help="requests in flight at once (default: %(default)s)",
    )
