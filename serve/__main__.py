"""Command line: ``python -m serve``, the embedded CPU Triton server in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from client.commands.args import port_number, positive_seconds
from contract import ADMIN_KEY_ENV, ADMIN_KEY_HEADER, ADMIN_KEY_PATTERN, RESPONSE_CACHE_BYTES, Exit, program_name
from serve.errors import ServeError, SetupError
from serve.flags import managed_clashes
from serve.options import RESTRICTABLE, GrpcTls, Restriction, covered
from serve.server import (
    CONTROL_PROTOCOL,
    DEFAULT_CONFIG_NAME,
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_LOG_PATH,
    DEFAULT_METRICS_PORT,
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    EmbeddedServer,
)

DEFAULT_REPOSITORY = Path("model_repository")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TLS_FILE_FLAGS = ("grpc_server_cert", "grpc_server_key", "grpc_root_cert")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not for switches and empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class StopRequested(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM, wherever it is, to stop the server."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _with_admin_key(restrictions: list[Restriction]) -> list[Restriction]:
    """The caller's restrictions, plus the model-control API restricted to $DEEPFAKE_ADMIN_KEY when it is
    set and the caller did not restrict that API themselves."""
    key = os.environ.get(ADMIN_KEY_ENV, "")
    if not key or covered(tuple(restrictions), CONTROL_PROTOCOL):
        return restrictions
    if not re.fullmatch(ADMIN_KEY_PATTERN, key):
        raise SystemExit(
            f"${ADMIN_KEY_ENV} cannot be used as a key: use 16 to 512 letters, digits, '-' or '_' "
            "(e.g. openssl rand -hex 16)"
        )
    return [*restrictions, Restriction((CONTROL_PROTOCOL,), ADMIN_KEY_HEADER, key)]


def _restriction(text: str) -> Restriction:
    try:
        return Restriction.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m serve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=program_name("serve"),
        description=(
            "Run the embedded CPU Triton server (tritonserver 2.51 from nvidia-pytriton) on a model "
            "repository, wait until every model is ready, and keep it serving: a model whose python "
            "stub dies is loaded again, a server that exits is started again. Ctrl-C or SIGTERM stops it."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        metavar="DIR",
        help="Triton model repository folder",
    )
    parser.add_argument("--grpc-port", type=port_number, default=DEFAULT_GRPC_PORT, help="gRPC port")
    parser.add_argument("--http-port", type=port_number, default=DEFAULT_HTTP_PORT, help="HTTP port")
    parser.add_argument(
        "--metrics-port", type=port_number, default=DEFAULT_METRICS_PORT, help="Prometheus metrics port"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address all endpoints bind to; 0.0.0.0 opens them to the network (then use --grpc-ssl and restrictions)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=DEFAULT_LOG_PATH,
        metavar="PATH",
        help="file the server log (and the watchdog's notes) go to",
    )
    parser.add_argument(
        "--model-config-name",
        default=DEFAULT_CONFIG_NAME,
        help="models read configs/<name>.pbtxt when it exists, else config.pbtxt; '' reads config.pbtxt",
    )
    parser.add_argument(
        "--ready-timeout",
        type=positive_seconds,
        default=DEFAULT_READY_TIMEOUT_S,
        help="seconds to wait for the server and every model to be ready",
    )
    parser.add_argument(
        "--stop-timeout",
        type=positive_seconds,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds in-flight requests get to finish after Ctrl-C/SIGTERM before the server is killed",
    )
    parser.add_argument(
        "--no-watchdog", action="store_true", help="do not reload failed models or restart a dead server"
    )
    parser.add_argument(
        "--auto-complete-config",
        action="store_true",
        help=(
            "let Triton complete partial model configs "
            "(one more stub start per python model load: slower loads and recoveries)"
        ),
    )

    parser.add_argument(
        "--response-cache",
        action="store_true",
        help=f"Triton's local response cache ({RESPONSE_CACHE_BYTES >> 20} MiB) for the preprocessing models: a repeat "
        "upload of the same bytes is not decoded again. Off by default: Triton 2.51 keeps an error answer of a "
        "cached model as an empty one, so a failure that is not the bytes' fault (a stub killed mid-request) "
        "would be repeated for those bytes until evicted",
    )
    tls = parser.add_argument_group("gRPC TLS")
    tls.add_argument(
        "--grpc-ssl", action="store_true", help="serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key)"
    )
    tls.add_argument("--grpc-server-cert", type=Path, help="PEM server certificate")
    tls.add_argument("--grpc-server-key", type=Path, help="PEM server private key")
    tls.add_argument("--grpc-root-cert", type=Path, help="PEM root certificate that client certificates must chain to")
    tls.add_argument(
        "--grpc-mutual-auth",
        action="store_true",
        help="require client certificates (mutual TLS; implies --grpc-ssl, needs --grpc-root-cert)",
    )

    restricted = parser.add_argument_group(
        "restricted APIs",
        f"PROTOCOLS is a comma-separated list of: {', '.join(RESTRICTABLE)}. Callers of a restricted group "
        "must send VALUE in the HTTP header KEY, or in the gRPC metadata key triton-grpc-protocol-KEY (Triton "
        "adds that prefix). The model-control API (model-repository) is always restricted: to the key in "
        f"${ADMIN_KEY_ENV} (header {ADMIN_KEY_HEADER}; what `deepfake-export reload|retire --url` send, to load "
        "new model versions without a restart) when it is set, else to a random key known only to the watchdog, "
        "unless you restrict it yourself.",
    )
    restricted.add_argument(
        "--grpc-restricted-protocol",
        type=_restriction,
        action="append",
        default=[],
        metavar="PROTOCOLS:KEY=VALUE",
        help="restrict gRPC protocol groups to callers sending triton-grpc-protocol-KEY: VALUE (repeatable)",
    )
    restricted.add_argument(
        "--http-restricted-api",
        type=_restriction,
        action="append",
        default=[],
        metavar="PROTOCOLS:KEY=VALUE",
        help="restrict HTTP API groups to callers sending KEY: VALUE (repeatable)",
    )
    parser.add_argument(
        "--triton-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra tritonserver flag, passed as given (repeatable), e.g. --triton-arg=--log-verbose=1",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print the ready report, warnings and errors only (no progress notes)"
    )
    return parser


def _tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GrpcTls | None:
    enabled = args.grpc_ssl or args.grpc_mutual_auth
    if not enabled:
        given = [f"--{name.replace('_', '-')}" for name in TLS_FILE_FLAGS if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with --grpc-ssl")
        return None
    if args.grpc_server_cert is None or args.grpc_server_key is None:
        parser.error("--grpc-ssl needs both --grpc-server-cert and --grpc-server-key")
    tls = GrpcTls(args.grpc_server_cert, args.grpc_server_key, args.grpc_root_cert, mutual=args.grpc_mutual_auth)
    try:
        tls.validate()
    except ValueError as error:
        parser.error(str(error))
    return tls


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Later signals are ignored: the first one already started an orderly stop.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise StopRequested(signum)


def _report(server: EmbeddedServer) -> None:
    for name in server.models:
        print(f"ready    {name}")
    scheme = "grpcs" if server.grpc_tls is not None else "grpc"
    print(f"gRPC     {scheme}://{server.grpc_url}")
    print(f"HTTP     http://{server.http_url}")
    print(f"metrics  {server.metrics_url}")
    print(f"log      {server.log_path}")
    print("Ctrl-C stops the server.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until a stop signal; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tls = _tls(parser, args)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    clashes = managed_clashes(args.triton_arg)
    if clashes:
        parser.error(f"--triton-arg may not set {', '.join(clashes)}: use this command's own options")
    server = EmbeddedServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file,
        model_config_name=args.model_config_name,
        extra_args=args.triton_arg,
        watchdog=not args.no_watchdog,
        host=args.host,
        grpc_tls=tls,
        grpc_restrictions=_with_admin_key(args.grpc_restricted_protocol),
        http_restrictions=_with_admin_key(args.http_restricted_api),
        stop_timeout=args.stop_timeout,
        auto_complete_config=args.auto_complete_config,
        response_cache_bytes=RESPONSE_CACHE_BYTES if args.response_cache else None,
    )
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _raise_stop)
    try:
        server.start(timeout=args.ready_timeout)
        _report(server)
        if server.wait_until_failed():
            print(f"error: {server.failure}", file=sys.stderr)
            return Exit.FAILED
        return Exit.OK
    except StopRequested as request:
        logging.getLogger("serve").info("%s received: stopping", request)
        return Exit.OK
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return Exit.USAGE
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return Exit.FAILED
    finally:
        # A stop is bounded (--stop-timeout, then kill): further signals must not cut it short.
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
