"""The bank of confirmed fakes without a Triton server: the store on SQLite and on a real PostgreSQL
(the same tests for both), the exchange format, the matching rule and its index, and fingerprints
of generated clips."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from bank.exchange import ExchangeError, read_signals, signal_of, write_signals
from bank.match import BankIndex, BankWatcher, distances, hex_words
from bank.store import Bank, BankError, BankUnavailable, fingerprint_sha256
from contract import MATCH_UNAVAILABLE, PDQ_MATCH_DISTANCE, QUERY_MATCH_SHARE
from tests import pdq_data

RNG = np.random.default_rng(5)


def random_hex() -> str:
    return pdq_data.random_hex(RNG)


def flipped(pdq_hex: str, bits: int) -> str:
    return pdq_data.flipped(pdq_hex, bits, RNG)


document = pdq_data.document


@pytest.fixture(params=["sqlite", "postgresql"])
def setting(request, tmp_path) -> str:
    """A fresh bank on each database (PostgreSQL: a new database of the session's real server)."""
    if request.param == "sqlite":
        return str(tmp_path / "bank.sqlite3")
    return request.getfixturevalue("postgres_server").new_database()


def test_entries_are_added_listed_and_removed_with_who_when_and_why(setting) -> None:
    bank = Bank(setting)
    first = bank.add(document([random_hex(), random_hex()]), label="fake", note="viral clip", by="alice")
    second = bank.add(document([random_hex()]), label="fake", note="", by="bob", why="reported twice")
    assert [e.id for e in bank.entries()] == [first.id, second.id]
    before = bank.generation()
    removed = bank.remove(first.id, by="carol", why="a parody, not a fake")
    assert bank.generation() == before + 1
    assert [e.id for e in bank.entries()] == [second.id]
    kept = {e.id: e for e in bank.entries(include_removed=True)}
    assert kept[first.id].removed_by == "carol" and kept[first.id].removed_why == "a parody, not a fake"
    assert removed.removed_at is not None
    history = [(c["entry_id"], c["action"], c["by"], c["why"]) for c in bank.changes()]
    assert history == [
        (first.id, "add", "alice", "viral clip"),
        (second.id, "add", "bob", "reported twice"),
        (first.id, "remove", "carol", "a parody, not a fake"),
    ]


def test_bad_changes_are_refused_and_change_nothing(setting) -> None:
    bank = Bank(setting)
    fingerprint = document([random_hex()])
    entry = bank.add(fingerprint, label="fake", note="", by="alice", content_sha256="ab" * 32)
    with pytest.raises(BankError, match=f"already in the bank as entry {entry.id}"):
        bank.add(fingerprint, label="fake", note="", by="bob")
    with pytest.raises(BankError, match=f"already in the bank as entry {entry.id}"):
        bank.add(document([random_hex()]), label="fake", note="", by="bob", content_sha256="ab" * 32)
    with pytest.raises(BankError, match="no entry 99"):
        bank.remove(99, by="bob", why="typo")
    with pytest.raises(BankError, match="needs a reason"):
        bank.remove(entry.id, by="bob", why="")
    with pytest.raises(BankError, match="label"):
        bank.add(document([random_hex()]), label="maybe", note="", by="bob")
    assert [e.id for e in bank.entries()] == [entry.id] and len(bank.changes()) == 1
    # Removed, the same video may be added again.
    bank.remove(entry.id, by="bob", why="wrong clip")
    assert bank.add(fingerprint, label="fake", note="", by="bob").id != entry.id


def test_two_writers_adding_the_same_video_at_once_leave_one_entry(setting) -> None:
    fingerprint = document([random_hex()])
    outcomes: list[str] = []

    def add(who: str) -> None:
        try:
            Bank(setting).add(fingerprint, label="fake", note="", by=who)
            outcomes.append("added")
        except BankError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=add, args=(f"page{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("added") == 1, outcomes
    assert len(Bank(setting).entries()) == 1 and len(Bank(setting).changes()) == 1


def test_an_unreachable_bank_says_so(tmp_path) -> None:
    with pytest.raises(BankUnavailable, match="cannot be reached"):
        Bank("postgresql://nobody@127.0.0.1:1/none").entries()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(BankUnavailable):
        Bank(str(blocked / "bank.sqlite3")).entries()
    watcher = BankWatcher("postgresql://nobody@127.0.0.1:1/none")
    assert watcher.match(document([random_hex()]))["status"] == MATCH_UNAVAILABLE


def test_a_bank_that_goes_away_and_comes_back(postgres_server) -> None:
    url = postgres_server.new_database()
    bank = Bank(url)
    entry = bank.add(document([random_hex()]), label="fake", note="", by="alice")
    watcher = BankWatcher(url, poll_s=0)
    assert watcher.match(Bank(url).entries()[-1].fingerprint)["id"] == entry.id
    postgres_server.stop()
    try:
        with pytest.raises(BankUnavailable):
            bank.add(document([random_hex()]), label="fake", note="", by="alice")
        assert watcher.match(document([random_hex()]))["status"] == MATCH_UNAVAILABLE
    finally:
        postgres_server.start()
    assert any(e.id == entry.id for e in bank.entries())
    assert watcher.match(next(e for e in bank.entries() if e.id == entry.id).fingerprint)["id"] == entry.id


def test_the_rule_is_distance_31_quality_50_and_the_querys_share() -> None:
    original = [random_hex() for _ in range(10)]
    index = BankIndex([(1, "fake", "the one", json.loads(document(original))["features"])])
    near = [flipped(h, PDQ_MATCH_DISTANCE) for h in original]
    assert index.match(json.loads(document(near))["features"])["similarity"] == 1.0
    far = [flipped(h, PDQ_MATCH_DISTANCE + 1) for h in original]
    assert index.match(json.loads(document(far))["features"]) is None
    # A copy trimmed to its first 3 seconds: all of its frames match, 3 of the entry's 10.
    trimmed = index.match(json.loads(document(original[:3]))["features"])
    assert trimmed["similarity"] == 1.0 and trimmed["entry_similarity"] == 0.3 and trimmed["query_span"] == [0, 2]
    # Below 80 % of the query's frames: no match.
    mixed = original[:7] + [random_hex() for _ in range(3)]
    assert index.match(json.loads(document(mixed))["features"]) is None
    assert QUERY_MATCH_SHARE == 0.8
    mostly = original[:8] + [random_hex() for _ in range(2)]
    assert index.match(json.loads(document(mostly))["features"])["similarity"] == 0.8
    # Frames below quality 50 take no part.
    assert index.match(json.loads(document(original, quality=49))["features"]) is None


def test_the_index_finds_what_brute_force_finds() -> None:
    hashes = [random_hex() for _ in range(3000)]
    entries = [(i, "fake", "", [[h, 100, 0, 0.0]]) for i, h in enumerate(hashes)]
    index = BankIndex(entries)
    words = np.stack([hex_words(h) for h in hashes])
    for trial in range(50):
        query = flipped(hashes[trial], int(RNG.integers(0, 40)))
        brute = set(np.flatnonzero(distances(words, hex_words(query)) <= PDQ_MATCH_DISTANCE))
        assert set(index.near(hex_words(query)).tolist()) == brute


def test_the_exchange_format_round_trips_and_refuses_a_malformed_file(tmp_path) -> None:
    fingerprint = document([random_hex(), random_hex()])
    signal = signal_of(fingerprint)
    assert json.loads(signal)[0].count(",") == 2
    path = tmp_path / "signals.txt"
    entries = [type("E", (), {"fingerprint": fingerprint})()]
    assert write_signals(entries, str(path)) == 1
    assert path.read_text().startswith("vpdq [")
    (read,) = read_signals(path)
    assert [f[0] for f in json.loads(read.fingerprint_json)["features"]] == [
        f[0] for f in json.loads(fingerprint)["features"]
    ]
    for bad, message in (
        ("pdq " + signal, "signal type 'pdq'"),
        ("vpdq [", "not JSON"),
        ('vpdq ["abc,100,0"]', "out of range"),
        ('vpdq ["' + "0" * 64 + ',100"]', "pdq_hex,quality,timestamp"),
    ):
        path.write_text(f"vpdq {signal}\n{bad}\n")
        with pytest.raises(ExchangeError, match=message) as raised:
            read_signals(path)
        assert ":2:" in str(raised.value)


def test_fingerprints_identify_their_features() -> None:
    first = document([random_hex()])
    assert fingerprint_sha256(first) == fingerprint_sha256(json.dumps(json.loads(first)))
    assert fingerprint_sha256(first) != fingerprint_sha256(document([random_hex()]))
