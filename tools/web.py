"""`make web`: the embedded tritonserver and the web page, in the foreground until Ctrl-C.

Starts ``python -m serve``'s server on the repository, waits until every model is ready, then
serves the page (``python -m client web``) against it and prints the page's URL. Ctrl-C stops the
page first, then the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from client.web.server import serve  # noqa: E402
from client.web.settings import DEFAULT_HOST, DEFAULT_PORT, WebSettings, read_token  # noqa: E402
from serve import EmbeddedServer, ServeError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address the page binds to (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the page (default: %(default)s)")
    parser.add_argument("--log", type=Path, default=PROJECT_ROOT / "logs" / "tritonserver.log", help="server log")
    args = parser.parse_args(argv)
    try:
        settings = WebSettings(token=read_token(None))
    except ValueError as error:
        parser.error(str(error))

    server = EmbeddedServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log,
    )
    print(
        f"starting tritonserver on {args.model_repository} (log: {args.log}); loading the models takes a while ...",
        flush=True,
    )
    try:
        server.start()
    except ServeError as error:
        print(f"the server did not start: {error}", file=sys.stderr)
        return 1
    try:
        connection = dataclasses.replace(settings.connection, url=server.grpc_url)
        return serve(dataclasses.replace(settings, connection=connection), args.host, args.port)
    finally:
        server.stop()
        print("server stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
