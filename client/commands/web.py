"""``python -m client web``: the web page and its JSON API against this Triton (FastAPI, the web extra).

The page's settings (:mod:`client.web.settings`) import no web framework, so its defaults are
stated in the help from there; the server module is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from contract import MAX_UPLOAD_BYTES, MIB, Exit

from ..web.settings import (
    DEFAULT_HOST,
    DEFAULT_LENGTHS,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_PORT,
    DEFAULT_TRITON_TIMEOUT_S,
    WebSettings,
    lengths_or_default,
    read_token,
)
from .args import connection_from_args, non_negative_int, positive_int, positive_seconds


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    web = commands.add_parser(
        "web",
        parents=[connection],
        help="serve the web page (upload a video, see the verdict) against this Triton",
        description="Serve the web page and its JSON API, talking to Triton at --url over gRPC. "
        "Needs the web extra: pip install '.[web]'. Binds to 127.0.0.1 unless --host says "
        "otherwise; set DEEPFAKE_WEB_TOKEN (or --token-file) before opening it to a network.",
    )
    web.add_argument("--host", default=None, help=f"address to bind (default: {DEFAULT_HOST})")
    web.add_argument(
        "--port",
        type=non_negative_int,
        default=None,
        help=f"port of the page (default: {DEFAULT_PORT}; 0: any free port)",
    )
    web.add_argument(
        "--frames",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help="sequence lengths offered when the server has them ready "
        f"(default: {' '.join(map(str, DEFAULT_LENGTHS))})",
    )
    web.add_argument(
        "--max-upload-mib",
        type=positive_seconds,
        default=None,
        metavar="MIB",
        help=f"largest upload accepted, in MiB (default: {MAX_UPLOAD_BYTES // MIB}, the server's max_bytes)",
    )
    web.add_argument(
        "--token-file",
        metavar="F",
        help="file holding the access token callers must send as 'Authorization: Bearer <token>' "
        "(default: the DEEPFAKE_WEB_TOKEN environment variable; none: no access control)",
    )
    web.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"uploads held in memory at once; more get 503 (default: {DEFAULT_MAX_CONCURRENT})",
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from ..web.server import serve
    except ImportError as error:
        print(f"error: the web page needs the web extra ({error}); install it with pip install '.[web]'", file=err)
        return Exit.USAGE
    try:
        settings = WebSettings(
            connection=connection_from_args(args, default_timeout_s=DEFAULT_TRITON_TIMEOUT_S),
            lengths=lengths_or_default(args.frames),
            max_upload_bytes=MAX_UPLOAD_BYTES if args.max_upload_mib is None else int(args.max_upload_mib * MIB),
            max_concurrent=DEFAULT_MAX_CONCURRENT if args.max_concurrent is None else args.max_concurrent,
            token=read_token(args.token_file),
        )
    except ValueError as error:
        parser.error(str(error))
    host = DEFAULT_HOST if args.host is None else args.host
    port = DEFAULT_PORT if args.port is None else args.port
    return serve(settings, host, port, out, err)
