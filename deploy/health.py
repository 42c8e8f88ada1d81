"""Health check of the Triton container that also catches a dead python-backend stub.

Triton 2.51 (NGC 24.10) does not restart a python-backend stub that dies, and neither
``/v2/health/live`` nor ``/v2/health/ready`` (even with ``--strict-readiness=true``) nor the
model's own ready endpoint notices: they keep answering 200 while every request to that model
fails with "Stub process ... is not healthy". The dead stub stays behind as a zombie child of
tritonserver (the server never reaps it), so this check looks for such zombies in ``/proc``
besides asking the server itself, with the /proc reader the embedded server's watchdog uses
(``serve/processes.py``: a zombie or a process being torn down counts as dead).

Usage (inside the container; stdlib only, runs on the image's Python 3.10 and the stand-in's 3.11)::

    python3 -m deploy.health --check ready   # compose healthcheck: serving and no dead stub
    python3 -m deploy.health --check live    # Kubernetes liveness: answering and no dead stub

Exit status 0 when healthy, 1 when not (the reason on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from contract import Exit
from serve import processes

HTTP_OK = 200
DEFAULT_HTTP_PORT = 8000
DEFAULT_TIMEOUT_S = 4.0
HEALTH_PATHS = {"live": "/v2/health/live", "ready": "/v2/health/ready"}


def probe(url: str, timeout_s: float) -> str | None:
    """GETs ``url``; returns None on HTTP 200, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} did not answer: {exc}"
    if status != HTTP_OK:
        return f"{url} answered HTTP {status}"
    return None


def check(
    base_url: str,
    kind: str,
    timeout_s: float,
    server_pid: int | None = None,
    proc_root: Path = Path("/proc"),
) -> list[str]:
    """All the reasons the server is unhealthy (empty when healthy).

    ``server_pid`` limits the stub check to one server's children; inside the container there
    is only one server, so the command line leaves it out.
    """
    problems = []
    dead = processes.dead_stubs(server_pid, proc_root)
    if dead:
        pids = ", ".join(str(stub.pid) for stub in dead)
        problems.append(
            f"python-backend stub process(es) {pids} died: their models fail every request "
            "and Triton 2.51 does not restart them; restart the server"
        )
    failure = probe(base_url.rstrip("/") + HEALTH_PATHS[kind], timeout_s)
    if failure:
        problems.append(failure)
    return problems


def build_parser() -> argparse.ArgumentParser:
    port = os.environ.get("TRITON_HTTP_PORT", str(DEFAULT_HTTP_PORT))
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.health",
        description="Exit 0 when Triton answers and no python-backend stub has died, else 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", default=f"http://127.0.0.1:{port}", help="Triton's HTTP address")
    parser.add_argument(
        "--check",
        choices=sorted(HEALTH_PATHS),
        default="ready",
        help="live: the server answers; ready: every model is loaded (--strict-readiness)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="HTTP timeout in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = check(args.url, args.check, args.timeout)
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if problems:
        return Exit.FAILED
    print(f"healthy: {args.url}{HEALTH_PATHS[args.check]} answered 200 and no python stub has died")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
