"""The page and its API on uvicorn, in the foreground until Ctrl-C (``python -m client web`` runs it)."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from typing import TextIO

import uvicorn

from contract import Exit

from .app import create_app
from .settings import DEFAULT_HOST, DEFAULT_PORT, WebSettings

#: Connections handled at once; more are answered 503 by uvicorn.
MAX_CONNECTIONS = 64
KEEP_ALIVE_S = 5
GRACEFUL_SHUTDOWN_S = 10
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

# Each request handles buffers of megabytes (the upload, the gRPC message, the answer's tensors,
# PNGs and JSON). With glibc's defaults its malloc keeps such blocks in its heaps once the dynamic
# mmap threshold has grown, spread over one arena per thread, and the web process's resident
# memory crept up from upload to upload with no Python object left behind. Blocks over 128 KiB
# served by mmap and given back at once, heaps trimmed above 128 KiB and two arenas at most keep it
# flat (figures in benchmarks/results/web.md; jemalloc returning pages at once was as flat but
# slower per request).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 128 * 1024), (M_TRIM_THRESHOLD, 128 * 1024), (M_ARENA_MAX, 2))
# The same settings given in the environment (or another allocator preloaded) win.
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD")


def tune_malloc(environ=os.environ) -> bool:
    """Applies ``MALLOC_SETTINGS`` with glibc's ``mallopt``; False where it does not apply."""
    if any(name in environ for name in MALLOC_ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(socket.SOMAXCONN)
    sock.set_inheritable(True)
    return sock


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/"


def serve(
    settings: WebSettings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Serves the page until Ctrl-C or SIGTERM; prints its URL on ``out`` once it listens."""
    try:
        sock = listen(host, port)
    except OSError as error:
        print(f"error: cannot listen on {host}:{port}: {error.strerror or error}", file=err)
        return Exit.FAILED
    bound_port = sock.getsockname()[1]
    # Before the app's threads (gRPC, the PNG encoder) make arenas of their own.
    tune_malloc()
    config = uvicorn.Config(
        create_app(settings),
        log_level="info",
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        # The access log names method, path and status: never a file name or its bytes.
        access_log=True,
    )
    server = uvicorn.Server(config)
    print(
        f"web page on {page_url(host, bound_port)} (Triton at {settings.triton_url}); Ctrl-C stops it",
        file=out,
        flush=True,
    )
    if host in WILDCARD_HOSTS and settings.token is None:
        print(
            "note: listening on every address without an access token; set DEEPFAKE_WEB_TOKEN or put an "
            "authenticating proxy in front",
            file=err,
            flush=True,
        )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return Exit.OK
