"""Health check of the Triton container that also catches a dead python-backend stub.

Triton 2.51 (NGC 24.10) does not restart a python-backend stub that dies, and neither
``/v2/health/live`` nor ``/v2/health/ready`` (even with ``--strict-readiness=true``) nor the
model's own ready endpoint notices: they keep answering 200 while every request to that model
fails with "Stub process ... is not healthy". The dead stub stays behind as a zombie child of
tritonserver (the server never reaps it), so this check looks for such zombies in ``/proc``
besides asking the server itself, with the /proc reader the embedded server's watchdog uses
(``serve/processes.py``: a zombie or a process being torn down counts as dead).

The server runs with explicit model control and without strict readiness (``deploy/entrypoint.py``
says why), so ``/v2/health/ready`` means "started with every model loaded". ``--check ready``
therefore also reads the repository index (a restricted call: the admin key comes from the secret
file ``TRITON_ADMIN_KEY_FILE``) and reports every model with no ready version left, e.g. one
unloaded through the API. A model with a version loading or unloading beside the ones it serves,
or a version that failed to load beside ready ones, is still served.

Usage (inside the container; stdlib only, runs on the image's Python 3.10 and the stand-in's 3.11)::

    python3 -m deploy.health --check ready   # compose healthcheck, Kubernetes readiness: every model served
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

from contract import ADMIN_KEY_HEADER, Exit
from deploy.entrypoint import ADMIN_KEY_FILE_ENV, DEFAULT_ADMIN_KEY_FILE, SettingsError, read_admin_key
from serve import processes
from serve.control import STATE_UNAVAILABLE, ControlClient, ModelState
from serve.errors import ControlError

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


def unserved_models(base_url: str, admin_key: str, timeout_s: float) -> list[str]:
    """The models of the repository index with no version left to serve, each with Triton's reason.

    A model is unserved when every version the index lists is UNAVAILABLE: none ready, none
    loading or unloading (models the server never tried to load are listed without a state).

    Raises:
        ControlError: the index cannot be read (no answer, or the key is refused).
    """
    control = ControlClient(base_url.rstrip("/"), repository_headers={ADMIN_KEY_HEADER: admin_key})
    versions: dict[str, list[ModelState]] = {}
    for entry in control.repository_index(timeout_s):
        versions.setdefault(entry.name, []).append(entry)
    return [
        f"model '{name}' has no ready version ({'; '.join(_why(entry) for entry in entries)})"
        for name, entries in sorted(versions.items())
        if all(entry.state == STATE_UNAVAILABLE for entry in entries)
    ]


def _why(entry: ModelState) -> str:
    """One version's reason, its first line (Triton appends a Python traceback to load failures)."""
    reason = entry.reason.strip().splitlines()[0] if entry.reason.strip() else "no reason given"
    return f"version {entry.version}: {reason}" if entry.version else reason


def check(
    base_url: str,
    kind: str,
    timeout_s: float,
    server_pid: int | None = None,
    proc_root: Path = Path("/proc"),
    admin_key: str | None = None,
) -> list[str]:
    """All the reasons the server is unhealthy (empty when healthy).

    ``server_pid`` limits the stub check to one server's children; inside the container there
    is only one server, so the command line leaves it out. With ``admin_key``, ``ready`` also
    needs every model to have a ready version (:func:`unserved_models`).
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
    elif kind == "ready" and admin_key is not None:
        try:
            problems.extend(unserved_models(base_url, admin_key, timeout_s))
        except ControlError as exc:
            problems.append(f"the repository index cannot be read: {exc}")
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
        help="live: the server answers; ready: it started with every model and each still has a ready version",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="HTTP timeout in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    admin_key = None
    problems = []
    if args.check == "ready":
        try:
            admin_key = read_admin_key(Path(os.environ.get(ADMIN_KEY_FILE_ENV, DEFAULT_ADMIN_KEY_FILE)))
        except SettingsError as exc:
            problems.append(f"the models cannot be checked: {exc}")
    problems += check(args.url, args.check, args.timeout, admin_key=admin_key)
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if problems:
        return Exit.FAILED
    served = ", every model has a ready version" if args.check == "ready" else ""
    print(f"healthy: {args.url}{HEALTH_PATHS[args.check]} answered 200{served} and no python stub has died")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
