"""``deepfake bank add|list|remove|import|export``: the bank of confirmed fakes.

The bank is the database ``DEEPFAKE_BANK`` names (``--bank`` overrides it; see :mod:`bank.store`).
A video is fingerprinted by the server (its preprocessing step returns ``FINGERPRINT``), so this
client needs no hashing library; ``--hash FILE`` adds a fingerprint computed elsewhere (one vPDQ
signal in the exchange format, :mod:`bank.exchange`). Every change names who made it (``--by``,
``$DEEPFAKE_USER`` or the login) and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TextIO

from bank.exchange import ExchangeError, read_signals, write_signals
from bank.store import LABELS, Bank, BankError, BankUnavailable, shown
from calibration.cli import default_user
from contract import BANK_ENV, Exit

from ..api import DeepfakeClient
from ..errors import ClientError
from .args import connection_from_args, positive_int


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "bank",
        help="the bank of confirmed fakes: add, list, remove, import, export",
        description=f"Manage the bank of confirmed fakes (${BANK_ENV}: a SQLite file or a postgresql:// URL; "
        "--bank overrides it). Every scored video is matched against it by the server. Exit 0 when done, "
        "1 when the bank or the server cannot be reached, 2 when the change is refused (nothing is changed).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[connection], help="add a video (fingerprinted by the server)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", metavar="FILE", help="the video, fingerprinted by the server at --url")
    source.add_argument("--hash", metavar="FILE", help="a vPDQ signal file instead of a video (exchange format)")
    add.add_argument("--label", choices=LABELS, default="fake", help="what it is (default: %(default)s)")
    add.add_argument("--note", default="", help="what reviewers should know (shown with every match)")
    add.add_argument("--why", default="", help="why it is added (kept in the history; default: the note)")
    add.add_argument(
        "--frames",
        type=positive_int,
        metavar="N",
        help="the preprocessing model that fingerprints it, preprocess_<N> (default: the shortest length served; "
        "the fingerprint is the same for every N)",
    )
    listing = actions.add_parser("list", help="list the entries")
    listing.add_argument("--all", action="store_true", help="also the removed entries")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--history", action="store_true", help="list the changes (who, when, why) instead")
    remove = actions.add_parser("remove", help="take an entry out of the bank (it is kept, marked removed)")
    remove.add_argument("id", type=positive_int, metavar="ID")
    remove.add_argument("--why", required=True, help="why (kept in the history)")
    imported = actions.add_parser("import", help="add the vPDQ signals of an exchange file")
    imported.add_argument("file", metavar="FILE")
    imported.add_argument("--label", choices=LABELS, default="fake")
    imported.add_argument("--why", default="", help="why they are added (default: the file's name)")
    exported = actions.add_parser("export", help="write the entries in force as vPDQ signals (exchange format)")
    exported.add_argument("file", metavar="FILE", help="where to write ('-': standard output)")
    for action in (add, listing, remove, imported, exported):
        action.add_argument("--bank", metavar="BANK", help=f"the bank (default: ${BANK_ENV}, else a file of yours)")
        action.add_argument("--by", metavar="WHO", help="who acts (default: $DEEPFAKE_USER or the login)")


def _fingerprint_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """(fingerprint JSON, sha256 of the bytes or None) of ``add``'s source."""
    if args.hash:
        signals = read_signals(Path(args.hash))
        if len(signals) != 1:
            raise ExchangeError(f"{args.hash} holds {len(signals)} signals: --hash adds one (use import for more)")
        return signals[0].fingerprint_json, None
    data = Path(args.file).read_bytes()
    with DeepfakeClient(connection_from_args(args)) as client:
        fingerprint = client.fingerprint(data, args.frames)
    return fingerprint, hashlib.sha256(data).hexdigest()


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    bank = Bank(args.bank)
    by = args.by or default_user()
    try:
        if args.action == "add":
            fingerprint, content = _fingerprint_of(args)
            entry = bank.add(
                fingerprint, label=args.label, note=args.note, by=by, why=args.why or args.note, content_sha256=content
            )
            print(f"added entry {entry.id} ({entry.label}) to {shown(bank.setting)}", file=out)
        elif args.action == "list":
            rows = bank.changes() if args.history else [e.as_dict() for e in bank.entries(args.all)]
            for row in rows:
                print(json.dumps(row) if args.json else _line(row, args.history), file=out)
        elif args.action == "remove":
            entry = bank.remove(args.id, by=by, why=args.why)
            print(f"removed entry {entry.id} from {shown(bank.setting)}", file=out)
        elif args.action == "import":
            added = 0
            for signal in read_signals(Path(args.file)):
                try:
                    bank.add(
                        signal.fingerprint_json,
                        label=args.label,
                        note=signal.note,
                        by=by,
                        why=args.why or f"imported from {Path(args.file).name}",
                    )
                    added += 1
                except BankUnavailable:
                    raise
                except BankError as error:
                    print(f"skipped: {error}", file=err)
            print(f"imported {added} entr{'y' if added == 1 else 'ies'} into {shown(bank.setting)}", file=out)
        else:
            count = write_signals(bank.entries(), args.file, out)
            print(f"exported {count} entries", file=err if args.file == "-" else out)
    except BankUnavailable as error:
        print(f"error: {error}", file=err)
        return Exit.FAILED
    except (BankError, ExchangeError) as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    except ClientError as error:
        print(f"error: the server could not fingerprint {args.file}: {error.status}: {error.message}", file=err)
        return Exit.USAGE if error.status == "INVALID_ARGUMENT" else Exit.FAILED
    except OSError as error:
        print(f"error: {error}", file=err)
        return Exit.USAGE
    return Exit.OK


def _line(row: dict, history: bool) -> str:
    if history:
        return f"{row['at']}  {row['by']}  {row['action']} entry {row['entry_id']}: {row['why']}"
    removed = f"  REMOVED {row['removed_at']} by {row['removed_by']}: {row['removed_why']}" if row["removed_at"] else ""
    return (
        f"{row['id']:>6}  {row['label']:<5}  {row['features']:>3} frames  added {row['created_at']} by "
        f"{row['created_by']}  {row['note']}{removed}"
    )
