"""``python -m client health``: server liveness and readiness, and each model's."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from contract import SERVED_LENGTHS, Exit

from ..api import DeepfakeClient
from ..errors import ClientError
from .args import connection_from_args, positive_int


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    health = commands.add_parser(
        "health",
        parents=[connection],
        help="server and model readiness",
        description="Show server liveness, readiness and each model's readiness. "
        "Exit 0 only when the server and every model are ready.",
    )
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument(
        "--frames",
        type=positive_int,
        nargs="+",
        default=list(SERVED_LENGTHS),
        metavar="N",
        help="sequence lengths whose models are checked by name when the server restricts "
        "its repository index (default: %(default)s)",
    )


def format_health(report: dict) -> list[str]:
    """Human-readable lines of a health report."""
    yes_no = {True: "yes", False: "no"}
    lines = [f"server {report['url']}: live {yes_no[report['live']]}, ready {yes_no[report['ready']]}"]
    if report["error"] is not None:
        lines.append(f"  unreachable: {report['error']}")
    elif report["models_from"] == "names":
        lines.append("  (repository index restricted: models checked by name)")
    for name in sorted(report["models"]):
        model = report["models"][name]
        states = ", ".join(
            f"v{version} {state}" if version else state or "UNKNOWN"
            for version, state in sorted(model["versions"].items())
        )
        line = f"  {name:<24} {'ready' if model['ready'] else 'NOT READY':<10} {states}"
        if model["reason"]:
            line += f" ({model['reason']})"
        lines.append(line.rstrip())
    if report["error"] is None and not report["models"]:
        lines.append("  no models found")
    return lines


def all_ready(report: dict) -> bool:
    """True when the server is live and ready and every model is ready."""
    return (
        report["live"]
        and report["ready"]
        and bool(report["models"])
        and all(model["ready"] for model in report["models"].values())
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        client = DeepfakeClient(connection_from_args(args))
    except ValueError as error:
        parser.error(str(error))
    try:
        with client:
            report = client.health(args.frames)
    except ClientError as error:
        print(f"error: {error.status}: {error.message}", file=err)
        return Exit.FAILED
    if args.json:
        print(json.dumps(report), file=out)
    else:
        print("\n".join(format_health(report)), file=out)
    return Exit.OK if all_ready(report) else Exit.FAILED
