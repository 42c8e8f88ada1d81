"""``deepfake reviewers add|list|disable`` and ``deepfake cases list|export|purge``: the page's case history.

Both live in the bank's database (``DEEPFAKE_BANK``; ``--bank`` overrides it; see :mod:`bank.cases`).

- ``reviewers add NAME`` prints a new random token once (only its sha256 is stored): the reviewer
  sends it as ``Authorization: Bearer <token>`` (or enters it on the page), and every case action
  is recorded under NAME. ``disable`` stops a token at once; the name stays in the history.
- ``cases export FILE --media DIR`` writes the reviewed videos as a labelled CSV
  (``path,label,group,source``, what ``deepfake evaluate`` and ``deepfake-train`` read), each path
  ``DIR/<sha256 of the bytes><suffix>``: the page keeps no upload, so the team keeps its media named
  by hash; ``--from FOLDER`` copies the videos of FOLDER whose bytes are in the export there.
- ``cases purge`` deletes the cases (and their reviews) recorded more than
  ``$DEEPFAKE_CASE_RETENTION_DAYS`` days ago (default 365; ``--days``).

Exit 0 when done, 1 when the database cannot be reached, 2 when the change is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import TextIO

from bank.cases import (
    DEFAULT_RETENTION_DAYS,
    RETENTION_ENV,
    CaseHistory,
    retention_days,
    write_csv,
)
from bank.store import BankError, BankUnavailable, shown
from calibration.cli import default_user
from contract import BANK_ENV, Exit

from ..evaluate.layouts import MEDIA_SUFFIXES
from .args import positive_int

HASH_CHUNK_BYTES = 1 << 20
DEFAULT_MEDIA = "media"


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    reviewers = commands.add_parser(
        "reviewers",
        help="the web page's reviewers: add (prints a token once), list, disable",
        description=f"Manage the web page's reviewers in the bank's database (${BANK_ENV}; --bank overrides it). "
        "Each reviewer has a token of their own (only its sha256 is stored); the page records every case "
        "decision under the name of the token that sent it. The shared DEEPFAKE_WEB_TOKEN opens scoring only.",
    )
    actions = reviewers.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a reviewer and print their new token (shown this once)")
    add.add_argument("name", metavar="NAME", help="letters, digits and . _ @ - (up to 64)")
    listing = actions.add_parser("list", help="list the reviewers (never their tokens)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    disable = actions.add_parser("disable", help="disable a reviewer: their token opens nothing from now on")
    disable.add_argument("name", metavar="NAME")
    for action in (add, listing, disable):
        _common(action)
        action.add_argument("--by", metavar="WHO", help="who acts (default: $DEEPFAKE_USER or the login)")

    cases = commands.add_parser(
        "cases",
        help="the web page's case history: list, export the reviewed videos as a labelled CSV, purge old cases",
        description=f"The web page's case history in the bank's database (${BANK_ENV}; --bank overrides it). "
        f"Cases are kept {DEFAULT_RETENTION_DAYS} days unless ${RETENTION_ENV} says otherwise; "
        "`cases purge` deletes older ones.",
    )
    actions = cases.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the latest cases (or those of one content sha256) with their reviews")
    listing.add_argument("--sha256", metavar="HEX", help="only the cases of these bytes")
    listing.add_argument("--limit", type=positive_int, default=50, help="most cases listed (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    export = actions.add_parser(
        "export",
        help="write the reviewed videos as a labelled CSV (path,label,group,source) for evaluate and deepfake-train",
    )
    export.add_argument("file", metavar="FILE", help="the CSV to write ('-': standard output)")
    export.add_argument(
        "--media",
        metavar="DIR",
        help=f"the folder of the videos, each named <sha256><suffix> (default: {DEFAULT_MEDIA}/ beside FILE); "
        "the CSV names it relative to its own folder",
    )
    export.add_argument(
        "--from",
        dest="source",
        metavar="FOLDER",
        help="copy the videos of FOLDER (searched recursively) whose bytes are in the export into --media, "
        "named by hash",
    )
    purge = actions.add_parser("purge", help="delete the cases older than the retention time, with their reviews")
    purge.add_argument(
        "--days",
        type=positive_int,
        default=None,
        help=f"keep this many days (default: ${RETENTION_ENV}, else {DEFAULT_RETENTION_DAYS})",
    )
    for action in (listing, export, purge):
        _common(action)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", metavar="BANK", help=f"the database (default: ${BANK_ENV}, else a file of yours)")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    history = CaseHistory(args.bank)
    try:
        if args.command == "reviewers":
            _reviewers(history, args, args.by or default_user(), out, err)
        else:
            _cases(history, args, out, err)
    except BankUnavailable as error:
        print(f"error: {error}", file=err)
        return Exit.FAILED
    except (BankError, ValueError) as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    except OSError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    return Exit.OK


def _reviewers(history: CaseHistory, args: argparse.Namespace, by: str, out: TextIO, err: TextIO) -> None:
    if args.action == "add":
        reviewer, token = history.add_reviewer(args.name, by=by)
        print(token, file=out)
        print(
            f"added the reviewer {reviewer.name} to {shown(history.setting)}; the line above is their token, "
            "shown this once (only its sha256 is kept): give it to them",
            file=err,
        )
    elif args.action == "list":
        for reviewer in history.reviewers():
            if args.json:
                print(json.dumps(reviewer.as_dict()), file=out)
            else:
                state = "active" if reviewer.active else f"DISABLED {reviewer.disabled_at} by {reviewer.disabled_by}"
                print(f"{reviewer.name:<24} added {reviewer.created_at} by {reviewer.created_by}  {state}", file=out)
    else:
        reviewer = history.disable_reviewer(args.name, by=by)
        print(f"disabled the reviewer {reviewer.name}: their token opens nothing from now on", file=out)


def _cases(history: CaseHistory, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    if args.action == "list":
        for case in history.find(args.sha256, limit=args.limit):
            if args.json:
                print(json.dumps(case.as_dict()), file=out)
                continue
            reviews = "; ".join(f"{r.reviewer}: {r.decision}" for r in case.reviews) or "not reviewed"
            print(
                f"{case.id:>6}  {case.created_at}  {case.content_sha256[:12]}  {case.file_name}  "
                f"{case.decision} {case.prob_fake:.4f}  {reviews}",
                file=out,
            )
    elif args.action == "export":
        _export(history, args, out, err)
    else:
        days = args.days or retention_days()
        deleted = history.purge(days)
        print(
            f"deleted {deleted} case{'' if deleted == 1 else 's'} recorded more than {days} days ago "
            f"(with their reviews) from {shown(history.setting)}",
            file=out,
        )


def _export(history: CaseHistory, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    target = None if args.file == "-" else Path(args.file)
    if target is None:
        media_dir = Path(args.media or DEFAULT_MEDIA)
        prefix = media_dir.as_posix()
    else:
        media_dir = Path(args.media) if args.media else target.parent / DEFAULT_MEDIA
        # The CSV's paths are relative to its own folder, as the csv layout reads them.
        prefix = Path(os.path.relpath(media_dir.resolve(), target.resolve().parent)).as_posix()
    rows, unsure = history.export_rows(prefix, MEDIA_SUFFIXES)
    text = write_csv(rows)
    if target is None:
        out.write(text)
    else:
        target.write_text(text, encoding="utf-8")
    note = err if target is None else out
    print(
        f"exported {len(rows)} reviewed video{'' if len(rows) == 1 else 's'}"
        + (f" ({unsure} left out: unsure)" if unsure else "")
        + ("" if target is None else f" to {target}"),
        file=note,
    )
    names = {row.content_sha256: PurePosixPath(row.path).name for row in rows}
    if args.source:
        _collect(Path(args.source), media_dir, names, note)
    missing = [name for name in names.values() if not (media_dir / name).is_file()]
    if missing:
        print(
            f"{len(missing)} of them not in {media_dir} (the team keeps its media named by sha256; --from FOLDER "
            f"copies them there), e.g. {missing[0]}",
            file=note,
        )


def _collect(source: Path, media_dir: Path, wanted: dict[str, str], note: TextIO) -> None:
    """Copies the files of ``source`` whose sha256 is in ``wanted`` to ``media_dir``, named by hash."""
    if not source.is_dir():
        raise OSError(f"--from {source}: not a folder")
    media_dir.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in MEDIA_SUFFIXES:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        name = wanted.get(digest.hexdigest())
        if name is None:
            continue
        destination = media_dir / name
        if not destination.is_file():
            shutil.copyfile(path, destination)
            copied += 1
    print(f"copied {copied} video{'' if copied == 1 else 's'} from {source} into {media_dir}", file=note)
