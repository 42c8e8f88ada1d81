"""``python -m client health``: server liveness and readiness, each model's, and the classifier versions served."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from contract import SERVED_LENGTHS, Exit

from ..api import DeepfakeClient
from ..codec import demo_warning
from ..errors import ClientError
from ..versions import describe_versions, format_calibration, format_lineage, short_sha256
from .args import connection_from_args, positive_int

#: The key of the health report that lists the classifier versions model_info names.
VERSIONS_KEY = "classifier_versions"


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    health = commands.add_parser(
        "health",
        parents=[connection],
        help="server and model readiness",
        description="Show server liveness, readiness, each model's readiness and the classifier versions "
        "served per length (from model_info: version, checkpoint, sha256, demo, lineage, which is latest, the "
        "operating point of each score). "
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
    lines += format_versions(report.get(VERSIONS_KEY))
    return lines


def format_versions(described: dict | None) -> list[str]:
    """Human-readable lines of the classifier versions (:func:`client.versions.describe_versions`)."""
    if described is None:
        return []
    rows = [row for lengths in described.values() for versions in lengths.values() for row in versions]
    if not rows:
        return ["classifier versions: model_info lists none"]
    lines = ["classifier versions (model_info):"]
    for row in rows:
        flags = [
            flag
            for flag, shown in (("latest", row["latest"]), ("demo", row["demo"]), ("NOT LOADED", not row["ready"]))
            if shown
        ]
        lines.append(
            f"  {row['model']:<24} v{row['version']:<3} sha256 {short_sha256(row['sha256'])}  {row['checkpoint']}"
            + (f"  ({', '.join(flags)})" if flags else "")
        )
        if row["lineage"] is not None:
            lines.append(f"      {format_lineage(row['lineage'])}")
        for score, point in row["calibrations"].items():
            if isinstance(point, dict):
                lines.append(f"      {format_calibration(score, point)}")
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
            info = _model_info(client) if report["error"] is None else None
    except ClientError as error:
        print(f"error: {error.status}: {error.message}", file=err)
        return Exit.FAILED
    report[VERSIONS_KEY] = None if info is None else describe_versions(info)
    warning = None if info is None else demo_warning(info)
    if args.json:
        print(json.dumps(report), file=out)
    else:
        print("\n".join(format_health(report)), file=out)
        if warning is not None:
            print(warning, file=err)
    return Exit.OK if all_ready(report) else Exit.FAILED


def _model_info(client: DeepfakeClient) -> dict | None:
    """model_info's document; None where the server has none or will not say (health reports the models anyway)."""
    try:
        return client.model_info()
    except ClientError:
        return None
