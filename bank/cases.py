"""The page's case history: every scored upload, its reviews by named reviewers, and who they are.

It lives in the bank's database (``DEEPFAKE_BANK``: a SQLite file or a PostgreSQL URL, see
:mod:`bank.store`), through the same :class:`bank.store.Database`, so that confirming a case's
video into the bank is one transaction with the review that confirms it. Tables:

- ``cases``: one row per scored upload: the sha256 of the uploaded bytes, the file's name, when,
  which reviewer uploaded it (null: the shared page token or an open page), the model, its version
  and checkpoint, frames, ``prob_fake``, the server's decision, the answer's ``known_match`` (JSON)
  and the video's vPDQ fingerprint (JSON, with its PDQ hashes again in ``pdq_hashes`` for a plain
  search). The video itself is never kept: the page holds uploads in memory only.
- ``case_reviews``: a reviewer's decision on a case (``fake``, ``real`` or ``unsure``) with a note
  and the time; a confirmation into the bank is a ``fake`` review naming the bank entry it made.
- ``reviewers``: a name, the sha256 of the reviewer's token (the token itself is shown once, when
  it is made, and never stored), when it was made and by whom, and when it was disabled.

Every write is one transaction (nothing half-written); a database that cannot be reached raises
:class:`bank.store.BankUnavailable`, and the next call tries again. Retention: cases (with their
reviews) older than ``DEEPFAKE_CASE_RETENTION_DAYS`` days (default 365) are deleted by
:meth:`CaseHistory.purge` (``deepfake cases purge``); reviewers and bank entries are kept.

Standard library and numpy (and psycopg for PostgreSQL), like the rest of :mod:`bank`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .match import BankIndex, Usable
from .store import Bank, BankError, Database, Entry, bank_schema, bank_setting, now_utc

#: How long cases are kept, in days (``deepfake cases purge`` deletes older ones).
RETENTION_ENV = "DEEPFAKE_CASE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 365
#: What a reviewer may decide of a case.
DECISIONS = ("fake", "real", "unsure")
#: The decisions an export writes (an unsure one leaves its video out).
EXPORTED = {"fake": "fake", "real": "real"}
#: A confirmed fake's group in an export (a reviewed one is in its label's group, ``fake`` or ``real``).
CONFIRMED_GROUP = "bank"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
PDQ_PATTERN = re.compile(r"[0-9a-f]{64}")
TOKEN_PREFIX = "dfr_"
MAX_NOTE_CHARS = 2000
MAX_FILE_NAME_CHARS = 255
#: Most cases one listing returns.
MAX_LISTED = 500
#: A media prefix in an export: a relative folder, plain characters (nothing a spreadsheet runs).
MEDIA_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}")

_SCHEMA = {
    "sqlite": (
        """CREATE TABLE IF NOT EXISTS cases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            content_sha256 TEXT NOT NULL, file_name TEXT NOT NULL, created_at TEXT NOT NULL, uploaded_by TEXT,
            model TEXT NOT NULL, model_version INTEGER, checkpoint_sha256 TEXT, frames INTEGER NOT NULL,
            prob_fake REAL, decision TEXT, known_match TEXT, fingerprint TEXT, pdq_hashes TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS case_reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT, case_id INTEGER NOT NULL REFERENCES cases (id),
            reviewer TEXT NOT NULL, decision TEXT NOT NULL, note TEXT NOT NULL, at TEXT NOT NULL,
            bank_entry_id INTEGER)""",
    ),
    "postgresql": (
        """CREATE TABLE IF NOT EXISTS cases (
            id BIGSERIAL PRIMARY KEY,
            content_sha256 TEXT NOT NULL, file_name TEXT NOT NULL, created_at TEXT NOT NULL, uploaded_by TEXT,
            model TEXT NOT NULL, model_version BIGINT, checkpoint_sha256 TEXT, frames INTEGER NOT NULL,
            prob_fake DOUBLE PRECISION, decision TEXT, known_match TEXT, fingerprint TEXT, pdq_hashes TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS case_reviews (
            id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL REFERENCES cases (id),
            reviewer TEXT NOT NULL, decision TEXT NOT NULL, note TEXT NOT NULL, at TEXT NOT NULL,
            bank_entry_id BIGINT)""",
    ),
}
_COMMON = (
    """CREATE TABLE IF NOT EXISTS reviewers (
        name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
        created_by TEXT NOT NULL, disabled_at TEXT, disabled_by TEXT)""",
    "CREATE INDEX IF NOT EXISTS cases_content ON cases (content_sha256)",
    "CREATE INDEX IF NOT EXISTS cases_created ON cases (created_at)",
    "CREATE INDEX IF NOT EXISTS case_reviews_case ON case_reviews (case_id)",
)


class CaseNotFound(BankError):
    """No case of that id (never recorded, or deleted after its retention time); nothing was changed."""


class NoFingerprint(BankError):
    """The case has no fingerprint (the server that scored it gave none): it cannot go into the bank."""


_CASE_COLUMNS = (
    "id, content_sha256, file_name, created_at, uploaded_by, model, model_version, checkpoint_sha256, frames, "
    "prob_fake, decision, known_match, fingerprint"
)
_REVIEW_COLUMNS = "id, case_id, reviewer, decision, note, at, bank_entry_id"
_REVIEWER_COLUMNS = "name, created_at, created_by, disabled_at, disabled_by"


def retention_days(environ: Mapping[str, str] = os.environ) -> int:
    """Days a case is kept: ``$DEEPFAKE_CASE_RETENTION_DAYS``, else :data:`DEFAULT_RETENTION_DAYS`.

    Raises:
        ValueError: not a whole number of days of at least 1.
    """
    text = environ.get(RETENTION_ENV, "").strip()
    if not text:
        return DEFAULT_RETENTION_DAYS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{RETENTION_ENV} must be a whole number of days, at least 1; got '{text}'")
    return int(text)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BankError(
            f"reviewer name {name!r}: 1 to 64 letters, digits and . _ @ - (starting with a letter or digit)"
        )
    return name


def check_sha256(text: str) -> str:
    value = (text or "").strip().lower()
    if not SHA256_PATTERN.fullmatch(value):
        raise BankError(f"a content sha256 is 64 hexadecimal digits, got '{(text or '')[:80]}'")
    return value


def check_note(note: str | None) -> str:
    note = (note or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise BankError(f"the note is longer than {MAX_NOTE_CHARS} characters")
    return note


def check_media_prefix(prefix: str) -> str:
    prefix = (prefix or "").strip().rstrip("/")
    if not MEDIA_PREFIX_PATTERN.fullmatch(prefix):
        raise BankError(f"media folder '{prefix[:80]}': a relative folder of letters, digits and _ . / -")
    return prefix


def pdq_hashes(fingerprint_json: str | None) -> str:
    """The fingerprint's PDQ hashes, space-separated (empty without a fingerprint)."""
    if not fingerprint_json:
        return ""
    return " ".join(str(feature[0]) for feature in json.loads(fingerprint_json).get("features", []))


@dataclass(frozen=True)
class Reviewer:
    name: str
    created_at: str
    created_by: str
    disabled_at: str | None = None
    disabled_by: str | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "disabled_at": self.disabled_at,
            "disabled_by": self.disabled_by,
        }


@dataclass(frozen=True)
class Review:
    id: int
    case_id: int
    reviewer: str
    decision: str
    note: str
    at: str
    bank_entry_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "case_id": self.case_id,
            "reviewer": self.reviewer,
            "decision": self.decision,
            "note": self.note,
            "at": self.at,
            "bank_entry_id": self.bank_entry_id,
        }


@dataclass(frozen=True)
class Case:
    id: int
    content_sha256: str
    file_name: str
    created_at: str
    uploaded_by: str | None
    model: str
    model_version: int | None
    checkpoint_sha256: str | None
    frames: int
    prob_fake: float | None
    decision: str | None
    known_match: dict | None
    fingerprint: str | None
    reviews: tuple[Review, ...] = field(default=())

    @property
    def confirmed_entry(self) -> int | None:
        """The bank entry this case's video was confirmed as (the latest confirmation), or None."""
        for review in reversed(self.reviews):
            if review.bank_entry_id is not None:
                return review.bank_entry_id
        return None

    def as_dict(self, with_fingerprint: bool = False) -> dict:
        data = {
            "id": self.id,
            "content_sha256": self.content_sha256,
            "file_name": self.file_name,
            "created_at": self.created_at,
            "uploaded_by": self.uploaded_by,
            "model": self.model,
            "model_version": self.model_version,
            "checkpoint_sha256": self.checkpoint_sha256,
            "frames": self.frames,
            "prob_fake": self.prob_fake,
            "decision": self.decision,
            "known_match": self.known_match,
            "features": len(json.loads(self.fingerprint).get("features", [])) if self.fingerprint else 0,
            "reviews": [review.as_dict() for review in self.reviews],
            "confirmed_entry": self.confirmed_entry,
        }
        if with_fingerprint:
            data["fingerprint"] = json.loads(self.fingerprint) if self.fingerprint else None
        return data


@dataclass(frozen=True)
class ExportRow:
    """One labelled video of an export: where the team keeps it (named by its hash) and its label."""

    path: str
    label: str
    group: str
    source: str
    content_sha256: str
    reviewer: str
    at: str


def _case(row, reviews: Iterable[Review] = ()) -> Case:
    (case_id, content, name, at, by, model, version, checkpoint, frames, prob, decision, known, fingerprint) = row
    return Case(
        int(case_id),
        content,
        name,
        at,
        by,
        model,
        None if version is None else int(version),
        checkpoint,
        int(frames),
        None if prob is None else float(prob),
        decision,
        None if known is None else json.loads(known),
        fingerprint,
        tuple(reviews),
    )


def _review(row) -> Review:
    review_id, case_id, reviewer, decision, note, at, entry = row
    return Review(int(review_id), int(case_id), reviewer, decision, note, at, None if entry is None else int(entry))


class CaseHistory:
    """The case history and the reviewers in the bank's database (see the module docstring)."""

    def __init__(self, setting: str | None = None) -> None:
        self.db = Database(bank_setting(setting))
        self.bank = Bank(self.db.setting)
        # The bank's tables too: a confirmation writes into both in one transaction.
        self._schema = (*bank_schema(self.db), *_SCHEMA[self.db.kind], *_COMMON)

    @property
    def setting(self) -> str:
        return self.db.setting

    def _run(self, work):
        return self.db.run(work, schema=self._schema, what="the case history")

    # ------------------------------------------------------------------------- reviewers

    def add_reviewer(self, name: str, *, by: str) -> tuple[Reviewer, str]:
        """Makes a reviewer and a new random token; only the token's sha256 is stored.

        Returns:
            (the reviewer, the token: shown once, it cannot be read back).

        Raises:
            BankError: a bad name, or a reviewer of that name already (disabled ones included).
        """
        check_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def work(cursor):
            cursor.execute(self.db.sql("SELECT disabled_at FROM reviewers WHERE name = ?"), (name,))
            existing = cursor.fetchone()
            if existing is not None:
                state = f" (disabled {existing[0]})" if existing[0] else ""
                raise BankError(f"there is a reviewer named {name} already{state}")
            at = now_utc()
            cursor.execute(
                self.db.sql("INSERT INTO reviewers (name, token_sha256, created_at, created_by) VALUES (?, ?, ?, ?)"),
                (name, token_sha256(token), at, by),
            )
            return Reviewer(name, at, by)

        return self._run(work), token

    def reviewers(self) -> list[Reviewer]:
        def work(cursor):
            cursor.execute(f"SELECT {_REVIEWER_COLUMNS} FROM reviewers ORDER BY name")
            return [Reviewer(*row) for row in cursor.fetchall()]

        return self._run(work)

    def disable_reviewer(self, name: str, *, by: str) -> Reviewer:
        """Disables a reviewer: the token opens nothing from now on; the name stays in the history.

        Raises:
            BankError: no reviewer of that name, or disabled already.
        """

        def work(cursor):
            cursor.execute(self.db.sql(f"SELECT {_REVIEWER_COLUMNS} FROM reviewers WHERE name = ?"), (name,))
            row = cursor.fetchone()
            if row is None:
                raise BankError(f"no reviewer named {name}")
            if row[3] is not None:
                raise BankError(f"the reviewer {name} was disabled already ({row[3]})")
            at = now_utc()
            cursor.execute(
                self.db.sql("UPDATE reviewers SET disabled_at = ?, disabled_by = ? WHERE name = ?"), (at, by, name)
            )
            return Reviewer(*row[:3], at, by)

        return self._run(work)

    def reviewer_for_token(self, token: str) -> Reviewer | None:
        """The reviewer whose token this is (disabled ones too: see :attr:`Reviewer.active`), or None."""
        digest = token_sha256(token)

        def work(cursor):
            cursor.execute(self.db.sql(f"SELECT {_REVIEWER_COLUMNS} FROM reviewers WHERE token_sha256 = ?"), (digest,))
            row = cursor.fetchone()
            return None if row is None else Reviewer(*row)

        return self._run(work)

    # ------------------------------------------------------------------------- cases

    def record(
        self,
        *,
        content_sha256: str,
        file_name: str,
        uploaded_by: str | None,
        model: str,
        model_version: int | None,
        checkpoint_sha256: str | None,
        frames: int,
        prob_fake: float | None,
        decision: str | None,
        known_match: dict | None,
        fingerprint: str | None,
    ) -> Case:
        """Records one scored upload as a case."""
        content_sha256 = check_sha256(content_sha256)
        file_name = (file_name or "upload")[:MAX_FILE_NAME_CHARS]
        hashes = pdq_hashes(fingerprint)
        known = json.dumps(known_match, separators=(",", ":"))
        values = (
            content_sha256,
            file_name,
            now_utc(),
            uploaded_by,
            model,
            model_version,
            checkpoint_sha256,
            int(frames),
            prob_fake,
            decision,
            known,
            fingerprint,
            hashes,
        )

        def work(cursor):
            cursor.execute(
                self.db.sql(
                    "INSERT INTO cases (content_sha256, file_name, created_at, uploaded_by, model, model_version, "
                    "checkpoint_sha256, frames, prob_fake, decision, known_match, fingerprint, pdq_hashes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                values,
            )
            (case_id,) = cursor.fetchone()
            return Case(int(case_id), *values[:8], prob_fake, decision, known_match, fingerprint)

        return self._run(work)

    def _reviews_of(self, cursor, ids: list[int]) -> dict[int, list[Review]]:
        found: dict[int, list[Review]] = {case_id: [] for case_id in ids}
        if not ids:
            return found
        marks = ", ".join([self.db.mark] * len(ids))
        cursor.execute(f"SELECT {_REVIEW_COLUMNS} FROM case_reviews WHERE case_id IN ({marks}) ORDER BY id", ids)
        for row in cursor.fetchall():
            review = _review(row)
            found[review.case_id].append(review)
        return found

    def _cases(self, cursor, where: str, parameters: tuple, limit: int) -> list[Case]:
        cursor.execute(
            self.db.sql(f"SELECT {_CASE_COLUMNS} FROM cases{where} ORDER BY id DESC LIMIT ?"),
            (*parameters, max(1, min(int(limit), MAX_LISTED))),
        )
        rows = cursor.fetchall()
        reviews = self._reviews_of(cursor, [int(row[0]) for row in rows])
        return [_case(row, reviews[int(row[0])]) for row in rows]

    def get(self, case_id: int) -> Case:
        """One case with its reviews.

        Raises:
            BankError: no such case (or it was purged).
        """

        def work(cursor):
            found = self._cases(cursor, " WHERE id = ?", (int(case_id),), 1)
            if not found:
                raise CaseNotFound(f"no case {case_id} (never recorded, or deleted after its retention time)")
            return found[0]

        return self._run(work)

    def find(self, content_sha256: str | None = None, *, pdq: str | None = None, limit: int = 50) -> list[Case]:
        """Cases, newest first: of these bytes (``content_sha256``), holding this exact PDQ hash
        (``pdq``), or the latest ones."""
        where, parameters = "", ()
        if content_sha256:
            where, parameters = " WHERE content_sha256 = ?", (check_sha256(content_sha256),)
        elif pdq:
            value = pdq.strip().lower()
            if not PDQ_PATTERN.fullmatch(value):
                raise BankError(f"a PDQ hash is 64 hexadecimal digits, got '{pdq[:80]}'")
            where, parameters = " WHERE pdq_hashes LIKE ?", (f"%{value}%",)
        return self._run(lambda cursor: self._cases(cursor, where, parameters, limit))

    def similar(self, fingerprint_json: str, *, exclude: int | None = None, limit: int = 50) -> list[tuple[Case, dict]]:
        """Cases whose fingerprint the given one matches by the bank's rule (:mod:`bank.match`),
        best first: (the case, ``similarity``, ``entry_similarity``, ``query_span``, ``entry_span``).

        Every case's fingerprint goes into one :class:`bank.match.BankIndex`, which finds the
        candidates; each candidate is then judged by the bank's own rule against the query alone.
        """
        features = json.loads(fingerprint_json)["features"]

        def load(cursor):
            cursor.execute("SELECT id, fingerprint FROM cases WHERE fingerprint IS NOT NULL ORDER BY id")
            return cursor.fetchall()

        stored = [
            (int(case_id), "case", "", json.loads(text)["features"])
            for case_id, text in self._run(load)
            if int(case_id) != exclude
        ]
        index = BankIndex(stored)
        candidates: set[int] = set()
        for words in Usable.of(features).words:
            candidates.update(int(index.owners[row]) for row in index.near(words))
        found = []
        for position in sorted(candidates):
            answer = BankIndex([stored[position]]).match(features)
            if answer is not None:
                found.append((stored[position][0], answer))
        found.sort(key=lambda item: (-item[1]["similarity"], -item[1]["entry_similarity"], -item[0]))
        found = found[: max(1, min(int(limit), MAX_LISTED))]
        cases = {case.id: case for case in self._by_ids([case_id for case_id, _ in found])}
        keys = ("similarity", "entry_similarity", "query_span", "entry_span")
        return [(cases[case_id], {key: answer[key] for key in keys}) for case_id, answer in found if case_id in cases]

    def _by_ids(self, ids: list[int]) -> list[Case]:
        if not ids:
            return []

        def work(cursor):
            marks = ", ".join([self.db.mark] * len(ids))
            return self._cases(cursor, f" WHERE id IN ({marks})", tuple(ids), len(ids))

        return self._run(work)

    # ------------------------------------------------------------------------- reviews

    def review(self, case_id: int, *, reviewer: str, decision: str, note: str = "") -> Review:
        """Records a reviewer's decision on a case.

        Raises:
            BankError: no such case, a decision not in :data:`DECISIONS`, a note too long.
        """
        if decision not in DECISIONS:
            raise BankError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
        note = check_note(note)
        check_name(reviewer)
        return self._run(lambda cursor: self._add_review(cursor, int(case_id), reviewer, decision, note, None))

    def _add_review(self, cursor, case_id, reviewer, decision, note, entry_id) -> Review:
        cursor.execute(self.db.sql("SELECT id FROM cases WHERE id = ?"), (case_id,))
        if cursor.fetchone() is None:
            raise CaseNotFound(f"no case {case_id} (never recorded, or deleted after its retention time)")
        at = now_utc()
        cursor.execute(
            self.db.sql(
                "INSERT INTO case_reviews (case_id, reviewer, decision, note, at, bank_entry_id) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
            ),
            (case_id, reviewer, decision, note, at, entry_id),
        )
        (review_id,) = cursor.fetchone()
        return Review(int(review_id), case_id, reviewer, decision, note, at, entry_id)

    def confirm(self, case_id: int, *, reviewer: str, note: str = "", why: str = "") -> tuple[Entry, Review]:
        """Confirms a case's video as a fake into the bank, in one transaction: the bank entry (the
        case's fingerprint, label ``fake``, ``by`` the reviewer) and the ``fake`` review naming it.

        Raises:
            BankError: no such case, no fingerprint on it, or the video in the bank already (the entry named).
        """
        note, why = check_note(note), check_note(why)
        check_name(reviewer)

        def work(cursor):
            cursor.execute(
                self.db.sql("SELECT fingerprint, content_sha256, file_name FROM cases WHERE id = ?"), (int(case_id),)
            )
            row = cursor.fetchone()
            if row is None:
                raise CaseNotFound(f"no case {case_id} (never recorded, or deleted after its retention time)")
            fingerprint, content, name = row
            if not fingerprint or not json.loads(fingerprint).get("features"):
                raise NoFingerprint(f"case {case_id} has no fingerprint: the server that scored it gave none")
            entry_note = note or f"confirmed fake: case {case_id} ({name})"
            self.bank.check_add(fingerprint, label="fake", by=reviewer)
            entry = self.bank.add_in(
                cursor,
                fingerprint,
                label="fake",
                note=entry_note,
                by=reviewer,
                why=why or f"case {case_id} confirmed as fake by {reviewer} on the page",
                content_sha256=content,
            )
            return entry, self._add_review(cursor, int(case_id), reviewer, "fake", entry_note, entry.id)

        return self._run(work)

    # ------------------------------------------------------------------------- export and retention

    def export_rows(self, media: str = "media", suffixes: Iterable[str] = ()) -> tuple[list[ExportRow], int]:
        """The reviewed videos as labelled rows: per content sha256, the latest review decides
        (an ``unsure`` one leaves the video out); ``path`` is ``<media>/<sha256><suffix>``, the
        suffix the case's file name had when it is one of ``suffixes``.

        Returns:
            (the rows in order of content sha256, how many reviewed videos were left out as unsure).
        """
        media = check_media_prefix(media)
        allowed = {suffix.lower() for suffix in suffixes}

        def work(cursor):
            cursor.execute(
                "SELECT c.content_sha256, c.file_name, c.known_match, r.reviewer, r.decision, r.at, r.bank_entry_id "
                "FROM case_reviews r JOIN cases c ON c.id = r.case_id ORDER BY r.id"
            )
            return cursor.fetchall()

        latest: dict[str, tuple] = {}
        ties: dict[str, set[str]] = {}
        for content, name, known, reviewer, decision, at, entry_id in self._run(work):
            latest[content] = (name, reviewer, decision, at, entry_id)
            keys = ties.setdefault(content, set())
            matched = json.loads(known) if known else None
            if isinstance(matched, dict) and matched.get("status") == "match":
                keys.add(f"bank{matched['id']}")
            if entry_id is not None:
                keys.add(f"bank{entry_id}")
        rows, unsure = [], 0
        for content in sorted(latest):
            name, reviewer, decision, at, entry_id = latest[content]
            if decision not in EXPORTED:
                unsure += 1
                continue
            suffix = os.path.splitext(name)[1].lower()
            suffix = suffix if suffix in allowed else ""
            source = "+".join([content, *sorted(ties[content])])
            group = CONFIRMED_GROUP if entry_id is not None else EXPORTED[decision]
            rows.append(
                ExportRow(f"{media}/{content}{suffix}", EXPORTED[decision], group, source, content, reviewer, at)
            )
        return rows, unsure

    def purge(self, days: int, now: datetime | None = None) -> int:
        """Deletes the cases recorded more than ``days`` days ago, with their reviews.

        Returns:
            how many cases were deleted.
        """
        if days < 1:
            raise BankError("a retention time is at least one day")
        cutoff = ((now or datetime.now(timezone.utc)) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        def work(cursor):
            cursor.execute(
                self.db.sql("DELETE FROM case_reviews WHERE case_id IN (SELECT id FROM cases WHERE created_at < ?)"),
                (cutoff,),
            )
            cursor.execute(self.db.sql("DELETE FROM cases WHERE created_at < ?"), (cutoff,))
            return cursor.rowcount

        return self._run(work)


def write_csv(rows: Iterable[ExportRow]) -> str:
    """The rows as ``path,label,group,source`` (with that header), the layout ``deepfake evaluate``
    and ``deepfake-train`` read (:mod:`client.evaluate.layouts`)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "label", "group", "source"))
    for row in rows:
        writer.writerow((row.path, row.label, row.group, row.source))
    return text.getvalue()
