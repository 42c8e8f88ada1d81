"""The page's case history (bank/cases.py) on SQLite and on a real PostgreSQL: the same tests for both.

Reviewers and their tokens, cases and their reviews, a confirmation into the bank in one transaction,
searches by content hash and by fingerprint (the bank's rule), the labelled CSV export, retention,
two writers at once, and a database that goes away and comes back.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bank.cases import (
    DEFAULT_RETENTION_DAYS,
    CaseHistory,
    CaseNotFound,
    NoFingerprint,
    retention_days,
    token_sha256,
    write_csv,
)
from bank.match import BankIndex
from bank.store import Bank, BankError, BankUnavailable
from client.evaluate.layouts import MEDIA_SUFFIXES, read_layout
from tests import pdq_data

RNG = np.random.default_rng(11)
CONTENT = "content"


def random_hex() -> str:
    return pdq_data.random_hex(RNG)


def flipped(pdq_hex: str, bits: int) -> str:
    return pdq_data.flipped(pdq_hex, bits, RNG)


def fingerprint(hashes: list[str], start: float = 0.0) -> str:
    return pdq_data.document(hashes, start=start)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """A fresh database on each engine (PostgreSQL: an empty database of the session's real server)."""
    if request.param == "sqlite":
        return str(tmp_path / "bank.sqlite3")
    return request.getfixturevalue("postgres_server").new_database()


def record(history: CaseHistory, content: str, fingerprint_json: str | None, **fields):
    values = {
        "content_sha256": sha(content),
        "file_name": f"{content}.mp4",
        "uploaded_by": None,
        "model": "deepfake_20",
        "model_version": 1,
        "checkpoint_sha256": "ab" * 32,
        "frames": 20,
        "prob_fake": 0.25,
        "decision": "REAL",
        "known_match": None,
        "fingerprint": fingerprint_json,
    }
    values.update(fields)
    return history.record(**values)


# ----------------------------------------------------------------------------- reviewers


def test_a_reviewer_gets_a_token_of_their_own_and_only_its_sha256_is_kept(database) -> None:
    history = CaseHistory(database)

    _, alice_token = history.add_reviewer("alice", by="admin")
    _, bob_token = history.add_reviewer("bob", by="admin")

    assert alice_token != bob_token and len(alice_token) > 40
    assert history.reviewer_for_token(alice_token).name == "alice"
    assert history.reviewer_for_token(bob_token).name == "bob"
    assert history.reviewer_for_token(alice_token + "x") is None
    assert [r.name for r in history.reviewers()] == ["alice", "bob"]
    # Nothing in the database holds the token itself.
    rows = history._run(lambda cursor: (cursor.execute("SELECT * FROM reviewers"), cursor.fetchall())[1])
    stored = json.dumps([list(row) for row in rows])
    assert alice_token not in stored and token_sha256(alice_token) in stored


def test_a_reviewer_name_is_taken_once_and_checked(database) -> None:
    history = CaseHistory(database)
    history.add_reviewer("alice", by="admin")

    with pytest.raises(BankError, match="there is a reviewer named alice already"):
        history.add_reviewer("alice", by="admin")
    for bad in ("", "two words", "-dash", "x" * 65, "semi;colon"):
        with pytest.raises(BankError, match="reviewer name"):
            history.add_reviewer(bad, by="admin")


def test_a_disabled_reviewers_token_names_them_as_disabled(database) -> None:
    history = CaseHistory(database)
    _, token = history.add_reviewer("alice", by="admin")

    disabled = history.disable_reviewer("alice", by="carol")

    assert disabled.disabled_by == "carol" and not disabled.active
    assert history.reviewer_for_token(token).active is False
    with pytest.raises(BankError, match="disabled already"):
        history.disable_reviewer("alice", by="carol")
    with pytest.raises(BankError, match="no reviewer named nobody"):
        history.disable_reviewer("nobody", by="carol")
    with pytest.raises(BankError, match=r"already \(disabled"):
        history.add_reviewer("alice", by="admin")


# ----------------------------------------------------------------------------- cases and reviews


def test_a_case_keeps_the_answer_and_its_reviews(database) -> None:
    history = CaseHistory(database)
    known = {"status": "match", "id": 4, "label": "fake", "note": "n", "similarity": 1.0}
    case = record(history, "a", fingerprint([random_hex(), random_hex()]), uploaded_by="alice", known_match=known)

    first = history.review(case.id, reviewer="alice", decision="unsure", note="  looks odd  ")
    second = history.review(case.id, reviewer="bob", decision="fake")
    found = history.get(case.id)

    assert found.content_sha256 == sha("a") and found.file_name == "a.mp4" and found.uploaded_by == "alice"
    assert (found.model, found.model_version, found.frames, found.prob_fake, found.decision) == (
        "deepfake_20",
        1,
        20,
        0.25,
        "REAL",
    )
    assert found.known_match == known
    assert [(r.reviewer, r.decision, r.note) for r in found.reviews] == [
        ("alice", "unsure", "looks odd"),
        ("bob", "fake", ""),
    ]
    assert (first.id, second.id) == tuple(r.id for r in found.reviews)
    assert found.as_dict()["features"] == 2 and found.confirmed_entry is None


def test_reviews_are_checked(database) -> None:
    history = CaseHistory(database)
    case = record(history, "a", fingerprint([random_hex()]))

    with pytest.raises(BankError, match="decision 'maybe'"):
        history.review(case.id, reviewer="alice", decision="maybe")
    with pytest.raises(BankError, match="longer than"):
        history.review(case.id, reviewer="alice", decision="fake", note="x" * 2001)
    with pytest.raises(CaseNotFound, match="no case 999"):
        history.review(999, reviewer="alice", decision="fake")
    with pytest.raises(CaseNotFound):
        history.get(999)
    assert history.get(case.id).reviews == ()


def test_cases_are_found_by_content_by_pdq_hash_and_newest_first(database) -> None:
    history = CaseHistory(database)
    shared = random_hex()
    first = record(history, "a", fingerprint([shared, random_hex()]))
    second = record(history, "b", fingerprint([random_hex()]))
    again = record(history, "a", fingerprint([shared]))
    blank = record(history, "c", None)

    assert [c.id for c in history.find(sha("a"))] == [again.id, first.id]
    assert [c.id for c in history.find(sha("a").upper())] == [again.id, first.id]
    assert [c.id for c in history.find(pdq=shared)] == [again.id, first.id]
    assert [c.id for c in history.find()] == [blank.id, again.id, second.id, first.id]
    assert [c.id for c in history.find(limit=2)] == [blank.id, again.id]
    assert history.find(sha("nothing")) == []
    with pytest.raises(BankError, match="64 hexadecimal digits"):
        history.find("abc")


def test_similar_cases_follow_the_banks_rule(database) -> None:
    history = CaseHistory(database)
    original = [random_hex() for _ in range(10)]
    source = record(history, "original", fingerprint(original))
    # A re-encoded copy trimmed by 2 s: its frames are the original's within a few bits.
    copy = record(history, "copy", fingerprint([flipped(h, 6) for h in original[2:]], start=0.0))
    # Half of its frames are the original's: under the rule's 80 %.
    half = record(history, "half", fingerprint([*original[:3], *(random_hex() for _ in range(7))]))
    other = record(history, "other", fingerprint([random_hex() for _ in range(10)]))
    record(history, "none", None)

    from_source = history.similar(source.fingerprint, exclude=source.id)
    from_copy = history.similar(copy.fingerprint)

    assert [case.id for case, _ in from_source] == [copy.id]
    # The copy's frames are all in the original: from the copy's side both it and the original match.
    assert [case.id for case, _ in from_copy] == [copy.id, source.id]
    match = from_copy[1][1]
    assert match["similarity"] == 1.0 and match["entry_similarity"] == 0.8
    assert match["query_span"] == [0.0, 7.0] and match["entry_span"] == [2.0, 9.0]
    assert other.id not in {case.id for case, _ in from_source} and half.id not in {c.id for c, _ in from_source}
    # The same answer as the bank's own index gives for one entry.
    alone = BankIndex([(source.id, "case", "", json.loads(source.fingerprint)["features"])])
    assert alone.match(json.loads(copy.fingerprint)["features"])["similarity"] == 1.0


# ----------------------------------------------------------------------------- into the bank


def test_a_confirmation_adds_the_bank_entry_and_the_review_together(database) -> None:
    history = CaseHistory(database)
    case = record(history, "a", fingerprint([random_hex(), random_hex()]))

    entry, review = history.confirm(case.id, reviewer="alice", note="the viral clip", why="seen twice")
    bank = Bank(database)

    assert [e.id for e in bank.entries()] == [entry.id]
    kept = bank.entries()[0]
    assert (kept.label, kept.note, kept.created_by) == ("fake", "the viral clip", "alice")
    assert kept.content_sha256 == sha("a")
    assert kept.fingerprint == case.fingerprint
    assert bank.changes()[-1]["why"] == "seen twice"
    assert (review.decision, review.reviewer, review.bank_entry_id) == ("fake", "alice", entry.id)
    assert history.get(case.id).confirmed_entry == entry.id
    # A second confirmation of the same video (or of another case of the same bytes) is refused.
    again = record(history, "a", case.fingerprint)
    with pytest.raises(BankError, match=f"already in the bank as entry {entry.id}"):
        history.confirm(again.id, reviewer="bob")
    assert len(bank.entries()) == 1 and history.get(again.id).reviews == ()


def test_a_confirmation_names_a_default_note_and_reason(database) -> None:
    history = CaseHistory(database)
    case = record(history, "clip", fingerprint([random_hex()]))

    entry, _ = history.confirm(case.id, reviewer="alice")

    assert entry.note == f"confirmed fake: case {case.id} (clip.mp4)"
    assert Bank(database).changes()[-1]["why"] == f"case {case.id} confirmed as fake by alice on the page"


def test_a_case_without_a_fingerprint_cannot_be_confirmed(database) -> None:
    history = CaseHistory(database)
    case = record(history, "a", None)

    with pytest.raises(NoFingerprint, match="has no fingerprint"):
        history.confirm(case.id, reviewer="alice")
    with pytest.raises(CaseNotFound):
        history.confirm(12345, reviewer="alice")
    assert Bank(database).entries() == []


def test_a_failure_in_the_middle_of_a_confirmation_writes_nothing(database, monkeypatch) -> None:
    history = CaseHistory(database)
    case = record(history, "a", fingerprint([random_hex()]))

    def broken(*args, **kwargs):
        raise RuntimeError("the disk filled up between the two writes")

    # The bank entry is written first, then the review fails: the whole transaction is rolled back.
    monkeypatch.setattr(history, "_add_review", broken)
    with pytest.raises(RuntimeError):
        history.confirm(case.id, reviewer="alice")
    monkeypatch.undo()

    bank = Bank(database)
    assert bank.entries(include_removed=True) == [] and bank.changes() == []
    assert history.get(case.id).reviews == ()
    entry, _ = history.confirm(case.id, reviewer="alice")
    assert [e.id for e in bank.entries()] == [entry.id]


# ----------------------------------------------------------------------------- two writers at once


def test_two_pages_confirming_the_same_case_at_once_make_one_entry(database) -> None:
    case = record(CaseHistory(database), "a", fingerprint([random_hex(), random_hex()]))
    CaseHistory(database).reviewers()  # the schema exists before the race
    barrier = threading.Barrier(4)
    outcomes: list[object] = []

    def confirm(name: str) -> None:
        history = CaseHistory(database)  # each page its own object and connections
        barrier.wait()
        try:
            outcomes.append(history.confirm(case.id, reviewer=name)[0].id)
        except BankError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=confirm, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    entries = Bank(database).entries()
    assert len(entries) == 1
    assert [o for o in outcomes if isinstance(o, int)] == [entries[0].id]
    assert all("already in the bank" in str(o) or "refused" in str(o) for o in outcomes if not isinstance(o, int))
    assert [r.bank_entry_id for r in CaseHistory(database).get(case.id).reviews] == [entries[0].id]


def test_two_pages_recording_and_reviewing_at_once_lose_nothing(database) -> None:
    CaseHistory(database).reviewers()
    base = record(CaseHistory(database), "base", fingerprint([random_hex()]))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def page(name: str) -> None:
        history = CaseHistory(database)
        barrier.wait()
        try:
            for index in range(10):
                record(history, f"{name}{index}", fingerprint([random_hex()]), uploaded_by=name)
                history.review(base.id, reviewer=name, decision="fake" if index % 2 else "real", note=str(index))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=page, args=(name,)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    history = CaseHistory(database)
    assert len(history.find(limit=100)) == 21
    reviews = history.get(base.id).reviews
    assert sorted((r.reviewer, r.note) for r in reviews) == sorted(
        (name, str(index)) for name in ("alice", "bob") for index in range(10)
    )


# ----------------------------------------------------------------------------- export and retention


def test_the_export_is_a_labelled_csv_the_csv_layout_reads(database, tmp_path) -> None:
    history = CaseHistory(database)
    fake = record(history, "fake", fingerprint([random_hex()]), file_name="Viral Clip.MOV")
    real = record(history, "real", fingerprint([random_hex()]), file_name="interview.mp4")
    changed = record(history, "changed", fingerprint([random_hex()]))
    unsure = record(history, "unsure", fingerprint([random_hex()]), file_name="odd.webm")
    matched = record(
        history, "copy", fingerprint([random_hex()]), known_match={"status": "match", "id": 77, "label": "fake"}
    )
    history.confirm(fake.id, reviewer="alice")
    history.review(real.id, reviewer="bob", decision="real")
    history.review(changed.id, reviewer="alice", decision="fake")
    history.review(changed.id, reviewer="bob", decision="real")  # the latest decides
    history.review(unsure.id, reviewer="bob", decision="unsure")
    history.review(matched.id, reviewer="bob", decision="fake")
    record(history, "never", fingerprint([random_hex()]))  # not reviewed: not exported

    rows, left_out = history.export_rows("media", MEDIA_SUFFIXES)
    path = tmp_path / "set" / "cases.csv"
    path.parent.mkdir()
    path.write_text(write_csv(rows))
    videos = {v.path: v for v in read_layout(path)}

    assert left_out == 1
    media = path.parent / "media"
    assert set(videos) == {
        str(media / f"{sha('fake')}.mov"),
        str(media / f"{sha('real')}.mp4"),
        str(media / f"{sha('changed')}.mp4"),
        str(media / f"{sha('copy')}.mp4"),
    }
    assert videos[str(media / f"{sha('fake')}.mov")].truth == 1
    assert videos[str(media / f"{sha('fake')}.mov")].group == "bank"
    assert videos[str(media / f"{sha('real')}.mp4")].truth == 0
    assert videos[str(media / f"{sha('changed')}.mp4")].truth == 0
    # Copies the bank ties together share a source key: a train/test split keeps them on one side.
    entry_id = history.get(fake.id).confirmed_entry
    assert videos[str(media / f"{sha('fake')}.mov")].source == f"{sha('fake')}+bank{entry_id}"
    assert videos[str(media / f"{sha('copy')}.mp4")].source == f"{sha('copy')}+bank77"
    assert path.read_text().splitlines()[0] == "path,label,group,source"
    with pytest.raises(BankError, match="media folder"):
        history.export_rows("=cmd|' /C calc'!A0")


def test_cases_past_the_retention_time_are_deleted_with_their_reviews(database) -> None:
    history = CaseHistory(database)
    _, token = history.add_reviewer("alice", by="admin")
    old = record(history, "old", fingerprint([random_hex()]))
    history.confirm(old.id, reviewer="alice")
    newer = record(history, "newer", fingerprint([random_hex()]))
    history.review(newer.id, reviewer="alice", decision="real")

    assert history.purge(30) == 0
    deleted = history.purge(30, now=datetime.now(timezone.utc) + timedelta(days=31))

    assert deleted == 2 and history.find() == []
    count = history._run(lambda cursor: (cursor.execute("SELECT COUNT(*) FROM case_reviews"), cursor.fetchone())[1])
    assert count[0] == 0
    # Reviewers and the bank keep their own history.
    assert history.reviewer_for_token(token).name == "alice" and len(Bank(database).entries()) == 1
    with pytest.raises(BankError, match="at least one day"):
        history.purge(0)


def test_the_retention_time_is_a_setting() -> None:
    assert retention_days({}) == DEFAULT_RETENTION_DAYS == 365
    assert retention_days({"DEEPFAKE_CASE_RETENTION_DAYS": " 90 "}) == 90
    for bad in ("0", "-3", "a year", "1.5"):
        with pytest.raises(ValueError, match="DEEPFAKE_CASE_RETENTION_DAYS must be a whole number"):
            retention_days({"DEEPFAKE_CASE_RETENTION_DAYS": bad})


# ----------------------------------------------------------------------------- the database goes away


def test_a_sqlite_database_that_goes_away_is_unavailable_then_works_again(tmp_path) -> None:
    folder = tmp_path / "shared-volume"
    history = CaseHistory(str(folder / "bank.sqlite3"))
    case = record(history, "a", fingerprint([random_hex()]))
    moved = tmp_path / "unmounted"

    folder.rename(moved)
    folder.write_text("the volume is gone: a file stands where the folder was")
    try:
        with pytest.raises(BankUnavailable, match=r"cannot be reached|failed"):
            history.review(case.id, reviewer="alice", decision="fake")
        with pytest.raises(BankUnavailable):
            history.confirm(case.id, reviewer="alice")
    finally:
        folder.unlink()
        moved.rename(folder)

    history.review(case.id, reviewer="alice", decision="fake")
    assert [r.decision for r in history.get(case.id).reviews] == ["fake"] and Bank(history.setting).entries() == []


def test_a_postgresql_server_that_goes_away_is_unavailable_then_works_again(postgres_server) -> None:
    url = postgres_server.new_database()
    history = CaseHistory(url)
    _, token = history.add_reviewer("alice", by="admin")
    case = record(history, "a", fingerprint([random_hex()]))

    postgres_server.stop()
    try:
        with pytest.raises(BankUnavailable, match="cannot be reached") as refused:
            history.confirm(case.id, reviewer="alice")
        with pytest.raises(BankUnavailable):
            history.reviewer_for_token(token)
    finally:
        postgres_server.start()

    assert "127.0.0.1" in str(refused.value)
    entry, _ = history.confirm(case.id, reviewer="alice")
    assert history.get(case.id).confirmed_entry == entry.id
    assert history.reviewer_for_token(token).name == "alice"


def test_a_sqlite_file_removed_under_a_running_page_is_made_again(tmp_path) -> None:
    path = tmp_path / "bank.sqlite3"
    history = CaseHistory(str(path))
    record(history, "a", fingerprint([random_hex()]))

    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"bank.sqlite3{suffix}").unlink(missing_ok=True)

    # The first call after the loss reports it; the tables are made again on the next.
    try:
        history.find()
    except BankUnavailable as error:
        assert "no such table" in str(error)
    assert history.find() == []
    assert record(history, "b", None).id >= 1


# ----------------------------------------------------------------------------- the commands


def test_the_reviewers_and_cases_commands(tmp_path, capsys) -> None:
    from client.cli import main

    bank = str(tmp_path / "bank.sqlite3")
    assert main(["reviewers", "add", "alice", "--bank", bank, "--by", "admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["reviewers", "add", "alice", "--bank", bank]) == 2
    assert "there is a reviewer named alice already" in capsys.readouterr().err
    assert main(["reviewers", "disable", "alice", "--bank", bank, "--by", "carol"]) == 0
    capsys.readouterr()
    assert main(["reviewers", "list", "--json", "--bank", bank]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["name"], listed["created_by"], listed["disabled_by"]) == ("alice", "admin", "carol")
    assert token not in json.dumps(listed)

    history = CaseHistory(bank)
    case = record(history, "a", fingerprint([random_hex()]))
    history.review(case.id, reviewer="bob", decision="fake")
    assert main(["cases", "list", "--bank", bank]) == 0
    assert "bob: fake" in capsys.readouterr().out
    assert main(["cases", "list", "--json", "--sha256", sha("a"), "--bank", bank]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == case.id
    assert main(["cases", "purge", "--bank", bank]) == 0
    assert "deleted 0 cases recorded more than 365 days ago" in capsys.readouterr().out
    assert main(["cases", "export", "-", "--bank", bank]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines() == ["path,label,group,source", f"media/{sha('a')}.mp4,fake,fake,{sha('a')}"]
    assert "exported 1 reviewed video" in printed.err
    # A database that cannot be reached: exit 1, in words.
    unreachable = str(tmp_path / "a-file" / "bank.sqlite3")
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["reviewers", "list", "--bank", unreachable]) == 1
    assert "cannot be reached" in capsys.readouterr().err
