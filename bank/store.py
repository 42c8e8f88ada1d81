"""The bank's database: SQLite (a file, nothing to start) or PostgreSQL (a URL), one schema, one API.

``DEEPFAKE_BANK`` names it: a path to a SQLite file, or a ``postgresql://`` URL; unset, the SQLite
file :func:`default_location`. The server, the CLI and the page all read it (a ``--bank`` option
may override it).

Tables:

- ``bank_entries``: one row per video added (its fingerprint as JSON, its label, a note, the sha256
  of its bytes when known, who added it and when); a removal marks the row (who, when, why) and
  keeps it, so the history stays whole;
- ``bank_changes``: every add and removal with who, when and why;
- ``bank_generation``: one counter, raised in the same transaction as every change, which running
  servers poll (:class:`BankWatcher` in :mod:`bank.match`) to reload their index.

A duplicate (the same fingerprint, or the same bytes, among the entries in force) is refused by a
unique index in the database itself, so two pages adding the same video at once cannot both
succeed. Every change is one transaction: nothing is half-written.

The page's case history (:mod:`bank.cases`) keeps its tables in the same database, through the same
:class:`Database`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from contract import BANK_ENV

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Seconds to wait for a connection (and for SQLite's lock) before saying the bank is unavailable.
CONNECT_TIMEOUT_S = 5
LABELS = ("fake", "real", "other")
#: The PostgreSQL advisory lock held while tables are created (any constant of this project's own).
SCHEMA_LOCK = 0x64666B62  # "dfkb"


class BankError(Exception):
    """A change the bank refuses (duplicate, unknown entry, bad input); nothing was changed."""


class BankUnavailable(BankError):
    """The database cannot be reached or used; nothing was changed."""


@dataclass(frozen=True)
class Entry:
    id: int
    label: str
    note: str
    content_sha256: str | None
    fingerprint: str
    created_at: str
    created_by: str
    removed_at: str | None = None
    removed_by: str | None = None
    removed_why: str | None = None

    def as_dict(self, with_fingerprint: bool = False) -> dict:
        data = {
            "id": self.id,
            "label": self.label,
            "note": self.note,
            "content_sha256": self.content_sha256,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "removed_at": self.removed_at,
            "removed_by": self.removed_by,
            "removed_why": self.removed_why,
            "features": len(json.loads(self.fingerprint).get("features", [])),
        }
        if with_fingerprint:
            data["fingerprint"] = json.loads(self.fingerprint)
        return data


def default_location() -> Path:
    """The SQLite file used when ``DEEPFAKE_BANK`` is unset: ``$XDG_DATA_HOME/deepfake/bank.sqlite3``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deepfake" / "bank.sqlite3"


def bank_setting(override: str | None = None) -> str:
    """The bank to use: ``override`` (``--bank``), else ``$DEEPFAKE_BANK``, else the default file."""
    return override or os.environ.get(BANK_ENV) or str(default_location())


def shown(setting: str) -> str:
    """The setting without a password, for messages."""
    if setting.startswith(POSTGRES_SCHEMES) and "@" in setting:
        scheme, rest = setting.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else setting
    return setting


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fingerprint_sha256(fingerprint_json: str) -> str:
    """The identity of a fingerprint: sha256 of its features (hash, quality, frame, time) alone."""
    features = json.loads(fingerprint_json)["features"]
    return hashlib.sha256(json.dumps(features, separators=(",", ":")).encode()).hexdigest()


_SCHEMA = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS bank_entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            label TEXT NOT NULL, note TEXT NOT NULL, content_sha256 TEXT, fingerprint TEXT NOT NULL,
            fingerprint_sha256 TEXT NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL,
            removed_at TEXT, removed_by TEXT, removed_why TEXT)""",
        """CREATE TABLE IF NOT EXISTS bank_changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id INTEGER NOT NULL, action TEXT NOT NULL,
            at TEXT NOT NULL, by TEXT NOT NULL, why TEXT NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS bank_generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS bank_entries (
            id BIGSERIAL PRIMARY KEY,
            label TEXT NOT NULL, note TEXT NOT NULL, content_sha256 TEXT, fingerprint TEXT NOT NULL,
            fingerprint_sha256 TEXT NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL,
            removed_at TEXT, removed_by TEXT, removed_why TEXT)""",
        """CREATE TABLE IF NOT EXISTS bank_changes (
            id BIGSERIAL PRIMARY KEY, entry_id BIGINT NOT NULL, action TEXT NOT NULL,
            at TEXT NOT NULL, by TEXT NOT NULL, why TEXT NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS bank_generation (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL)",
    ],
}
_COMMON = [
    # The same video in force only once (by its fingerprint, and by its bytes when known).
    "CREATE UNIQUE INDEX IF NOT EXISTS bank_entries_fingerprint ON bank_entries (fingerprint_sha256) "
    "WHERE removed_at IS NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS bank_entries_content ON bank_entries (content_sha256) "
    "WHERE removed_at IS NULL AND content_sha256 IS NOT NULL",
]
_COLUMNS = "id, label, note, content_sha256, fingerprint, created_at, created_by, removed_at, removed_by, removed_why"


class Database:
    """A connection factory for one setting, with the placeholder style of its driver."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.postgres = setting.startswith(POSTGRES_SCHEMES)
        self.kind = "postgresql" if self.postgres else "sqlite"
        self.mark = "%s" if self.postgres else "?"
        # The schemas (tuples of statements) this object has created: each is created once, and
        # again after a failure (a database that came back may be a new, empty one).
        self._created: set[tuple[str, ...]] = set()

    def sql(self, text: str) -> str:
        return text.replace("?", self.mark)

    def errors(self) -> tuple[type[Exception], type[Exception]]:
        """(any error of the driver, its constraint violation)."""
        if self.postgres:
            try:
                import psycopg
            except ImportError as exc:
                raise BankUnavailable(
                    f"a PostgreSQL bank needs psycopg: pip install 'psycopg[binary]' ({exc})"
                ) from None
            return psycopg.Error, psycopg.errors.IntegrityError
        return sqlite3.Error, sqlite3.IntegrityError

    def connect(self):
        failure, _ = self.errors()
        try:
            if self.postgres:
                import psycopg

                return psycopg.connect(self.setting, connect_timeout=CONNECT_TIMEOUT_S)
            path = Path(self.setting)
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=CONNECT_TIMEOUT_S, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA busy_timeout={CONNECT_TIMEOUT_S * 1000}")
            return connection
        except (failure, OSError) as exc:
            raise BankUnavailable(f"the bank {shown(self.setting)} cannot be reached: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator:
        """A cursor inside one transaction: committed when the block ends, rolled back on any error."""
        connection = self.connect()
        try:
            cursor = connection.cursor()
            if not self.postgres:
                cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                if self.postgres:
                    connection.rollback()
                else:
                    cursor.execute("ROLLBACK")
                raise
            if self.postgres:
                connection.commit()
            else:
                cursor.execute("COMMIT")
        finally:
            connection.close()

    def run(
        self,
        work: Callable,
        *,
        schema: tuple[str, ...] = (),
        what: str = "the bank",
        refused: str | None = None,
    ):
        """Runs ``work(cursor)`` in one transaction, creating ``schema`` first (``CREATE ... IF NOT
        EXISTS`` statements); database errors become :class:`BankUnavailable` (named ``what``) or
        :class:`BankError` (a constraint: ``refused``, then the database's words), nothing half-written.
        """
        failure, constraint = self.errors()
        try:
            with self.transaction() as cursor:
                if schema not in self._created:
                    if self.postgres:
                        # Two processes creating the same tables at once can collide in PostgreSQL's
                        # catalog: one at a time (SQLite's BEGIN IMMEDIATE serialises already).
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    for statement in schema:
                        cursor.execute(statement)
                result = work(cursor)
            self._created.add(schema)
            return result
        except BankError:
            raise
        except constraint as exc:
            # Two writers at once: the database's unique index refused the second.
            raise BankError(f"{refused or f'refused by {what}'}: {exc}") from None
        except failure as exc:
            self._created.discard(schema)
            raise BankUnavailable(f"{what} {shown(self.setting)} failed: {exc}") from None


def bank_schema(db: Database) -> tuple[str, ...]:
    """The statements that create the bank's tables in ``db`` (idempotent)."""
    return (
        *_SCHEMA[db.kind],
        *_COMMON,
        db.sql("INSERT INTO bank_generation (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"),
    )


class Bank:
    """The bank behind one setting (see the module docstring)."""

    def __init__(self, setting: str | None = None) -> None:
        self.db = Database(bank_setting(setting))

    @property
    def setting(self) -> str:
        return self.db.setting

    def _run(self, work):
        """Runs ``work(cursor)`` in one transaction, creating the schema first; database errors become
        :class:`BankUnavailable` or :class:`BankError` (a constraint), nothing half-written."""
        return self.db.run(
            work,
            schema=bank_schema(self.db),
            what="the bank",
            refused="refused by the bank (the same video was added at the same time?)",
        )

    def _bump(self, cursor) -> None:
        cursor.execute("UPDATE bank_generation SET value = value + 1 WHERE id = 1")

    def _record(self, cursor, entry_id: int, action: str, by: str, why: str) -> None:
        cursor.execute(
            self.db.sql("INSERT INTO bank_changes (entry_id, action, at, by, why) VALUES (?, ?, ?, ?, ?)"),
            (entry_id, action, now_utc(), by, why),
        )

    def add(
        self,
        fingerprint_json: str,
        *,
        label: str,
        note: str,
        by: str,
        why: str = "",
        content_sha256: str | None = None,
    ) -> Entry:
        """Adds a video's fingerprint.

        Raises:
            BankError: a bad label, an empty fingerprint, or the same video already in force (its id named).
        """
        self.check_add(fingerprint_json, label=label, by=by)
        return self._run(
            lambda cursor: self.add_in(
                cursor, fingerprint_json, label=label, note=note, by=by, why=why, content_sha256=content_sha256
            )
        )

    def check_add(self, fingerprint_json: str, *, label: str, by: str) -> None:
        """What :meth:`add` refuses before it asks the database.

        Raises:
            BankError: a bad label, nobody named, a fingerprint without features.
        """
        if label not in LABELS:
            raise BankError(f"label {label!r}: expected one of {', '.join(LABELS)}")
        if not by:
            raise BankError("who adds it must be named")
        fingerprint_sha256(fingerprint_json)
        if not json.loads(fingerprint_json)["features"]:
            raise BankError("the fingerprint has no feature")

    def add_in(
        self,
        cursor,
        fingerprint_json: str,
        *,
        label: str,
        note: str,
        by: str,
        why: str = "",
        content_sha256: str | None = None,
    ) -> Entry:
        """:meth:`add` inside a transaction of the same database that the caller runs (its
        ``cursor``, the bank's schema created): the entry is written with the caller's other changes,
        or not at all. Call :meth:`check_add` first.

        Raises:
            BankError: the same video already in force (its id named).
        """
        digest = fingerprint_sha256(fingerprint_json)
        cursor.execute(
            self.db.sql(
                "SELECT id FROM bank_entries WHERE removed_at IS NULL AND "
                "(fingerprint_sha256 = ? OR (content_sha256 IS NOT NULL AND content_sha256 = ?))"
            ),
            (digest, content_sha256),
        )
        existing = cursor.fetchone()
        if existing is not None:
            raise BankError(f"this video is already in the bank as entry {existing[0]}")
        at = now_utc()
        cursor.execute(
            self.db.sql(
                "INSERT INTO bank_entries (label, note, content_sha256, fingerprint, fingerprint_sha256, "
                "created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
            ),
            (label, note, content_sha256, fingerprint_json, digest, at, by),
        )
        (entry_id,) = cursor.fetchone()
        self._record(cursor, entry_id, "add", by, why or note)
        self._bump(cursor)
        return Entry(int(entry_id), label, note, content_sha256, fingerprint_json, at, by)

    def remove(self, entry_id: int, *, by: str, why: str) -> Entry:
        """Takes an entry out of force, keeping it and the reason.

        Raises:
            BankError: no entry of that id in force, or no reason given.
        """
        if not why:
            raise BankError("a removal needs a reason (--why)")

        def work(cursor):
            cursor.execute(
                self.db.sql(f"SELECT {_COLUMNS} FROM bank_entries WHERE id = ? AND removed_at IS NULL"), (entry_id,)
            )
            row = cursor.fetchone()
            if row is None:
                raise BankError(f"no entry {entry_id} in the bank (or it was removed already)")
            at = now_utc()
            cursor.execute(
                self.db.sql("UPDATE bank_entries SET removed_at = ?, removed_by = ?, removed_why = ? WHERE id = ?"),
                (at, by, why, entry_id),
            )
            self._record(cursor, entry_id, "remove", by, why)
            self._bump(cursor)
            return Entry(*row[:7], at, by, why)

        return self._run(work)

    def entries(self, include_removed: bool = False) -> list[Entry]:
        where = "" if include_removed else " WHERE removed_at IS NULL"

        def work(cursor):
            cursor.execute(f"SELECT {_COLUMNS} FROM bank_entries{where} ORDER BY id")
            return [Entry(*row) for row in cursor.fetchall()]

        return self._run(work)

    def changes(self) -> list[dict]:
        def work(cursor):
            cursor.execute("SELECT id, entry_id, action, at, by, why FROM bank_changes ORDER BY id")
            return [dict(zip(("id", "entry_id", "action", "at", "by", "why"), row)) for row in cursor.fetchall()]

        return self._run(work)

    def generation(self) -> int:
        """The change counter (raised by every change): a cheap "has the bank changed?"."""

        def work(cursor):
            cursor.execute("SELECT value FROM bank_generation WHERE id = 1")
            return int(cursor.fetchone()[0])

        return self._run(work)
