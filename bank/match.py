"""Matching a video's fingerprint against the bank: the rule, an index that answers it, and a watcher.

The rule (vPDQ's, with PDQ's usual thresholds, :mod:`contract`):

- frames of either side with a PDQ quality below 50 take no part;
- a frame of the query matches a frame of an entry when their hashes are within Hamming distance 31;
- ``similarity``: the share of the query's frames that match some frame of the entry;
  ``entry_similarity``: the share of the entry's frames matched by some frame of the query;
- the video matches the entry when ``similarity`` is at least 80 %. The query side decides: a copy
  trimmed at the start or the end matches on its own frames (all of them are in the original) but
  not on the entry's (the entry has frames the copy lost). ``entry_similarity`` is reported, not
  required.

The index is multi-index hashing: each 256-bit hash is cut into 16 chunks of 16 bits, and two
hashes within distance 31 agree within one bit on at least one chunk (16 chunks that each differ
in 2 bits or more differ in 32 or more). So the candidates of a query hash are the rows whose
chunk ``c`` equals the query's chunk or one of its 16 one-bit neighbours, for some ``c``: 17 x 16
binary searches in sorted chunk columns, then an exact distance check on the few candidates. It
keeps the hashes as numpy arrays: about 140 bytes per frame (668 MiB for 5 million).

PDQ is not made for crops: cropping shifts every pixel of the 64 x 64 image PDQ is computed from,
so a copy cropped by more than a few percent at the borders is not found (measured figures in the
README). Nothing is done about it here; a crop-robust hash would be a second signal type.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from contract import MATCH_FOUND, MATCH_UNAVAILABLE, PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY, QUERY_MATCH_SHARE

from .store import Bank, BankError, BankUnavailable

CHUNKS = 16
CHUNK_BITS = 16
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
#: How often a server asks the bank whether it changed (its generation counter), at most.
POLL_S = 2.0


def hex_words(pdq_hex: str) -> np.ndarray:
    """A 64-digit hash as 4 big-endian uint64 words."""
    return np.frombuffer(bytes.fromhex(pdq_hex), dtype=">u8").astype(np.uint64)


def distances(words: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of ``words`` [n, 4] and one hash ``query`` [4]."""
    xored = np.ascontiguousarray(words ^ query)
    return _POPCOUNT[xored.view(np.uint8)].reshape(len(words), -1).sum(axis=1, dtype=np.int32)


def _chunks(words: np.ndarray) -> np.ndarray:
    """[16, n] uint16: chunk c holds bits 16c .. 16c + 15 (most significant first)."""
    columns = []
    for c in range(CHUNKS):
        shift = np.uint64((3 - c % 4) * CHUNK_BITS)
        columns.append(((words[:, c // 4] >> shift) & np.uint64(0xFFFF)).astype(np.uint16))
    return np.stack(columns) if columns else np.empty((CHUNKS, 0), np.uint16)


@dataclass(frozen=True)
class Usable:
    """A fingerprint's frames that take part in matching: their hashes [n, 4] and timestamps [n]."""

    words: np.ndarray
    times: np.ndarray

    @classmethod
    def of(cls, features) -> Usable:
        """Quality-filtered and deduplicated (the first frame of each exact hash), as threatexchange does."""
        seen: set[str] = set()
        kept = []
        for f in features:
            if int(f[1]) >= PDQ_MIN_QUALITY and f[0] not in seen:
                seen.add(f[0])
                kept.append((f[0], float(f[3])))
        if not kept:
            return cls(np.empty((0, 4), np.uint64), np.empty(0))
        return cls(np.stack([hex_words(h) for h, _ in kept]), np.array([t for _, t in kept]))


class BankIndex:
    """The usable frames of every entry in force, indexed for :meth:`match`."""

    def __init__(self, entries: list[tuple[int, str, str, list]]) -> None:
        """``entries``: (id, label, note, features as ``[pdq_hex, quality, frame, timestamp]`` rows)."""
        self.meta: list[tuple[int, str, str]] = []
        self.sizes: list[int] = []
        words, owners, times = [], [], []
        for position, (entry_id, label, note, features) in enumerate(entries):
            usable = Usable.of(features)
            self.meta.append((entry_id, label, note))
            self.sizes.append(len(usable.times))
            words.append(usable.words)
            times.append(usable.times)
            owners.append(np.full(len(usable.times), position, dtype=np.int32))
        self.words = np.concatenate(words) if words else np.empty((0, 4), np.uint64)
        self.times = np.concatenate(times) if times else np.empty(0)
        self.owners = np.concatenate(owners) if owners else np.empty(0, np.int32)
        chunks = _chunks(self.words)
        self.order = np.argsort(chunks, axis=1, kind="stable").astype(np.int32)
        self.sorted = np.take_along_axis(chunks, self.order.astype(np.int64), axis=1)
        self._flips = np.array([0, *(1 << bit for bit in range(CHUNK_BITS))], dtype=np.uint16)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def frames(self) -> int:
        return len(self.owners)

    def near(self, query: np.ndarray) -> np.ndarray:
        """Rows within :data:`contract.PDQ_MATCH_DISTANCE` of one hash [4]."""
        if not len(self.owners):
            return np.empty(0, np.int64)
        chunk = _chunks(query.reshape(1, 4))[:, 0]
        found = []
        for c in range(CHUNKS):
            probes = chunk[c] ^ self._flips
            low = np.searchsorted(self.sorted[c], probes, side="left")
            high = np.searchsorted(self.sorted[c], probes, side="right")
            for lo, hi in zip(low, high):
                if hi > lo:
                    found.append(self.order[c, lo:hi])
        if not found:
            return np.empty(0, np.int64)
        candidates = np.unique(np.concatenate(found))
        return candidates[distances(self.words[candidates], query) <= PDQ_MATCH_DISTANCE]

    def match(self, features) -> dict | None:
        """The best entry the fingerprint's features match by the rule above, or None."""
        query = Usable.of(features)
        if not len(query.times) or not len(self.owners):
            return None
        matched_query: dict[int, list[int]] = defaultdict(list)
        matched_entry: dict[int, set[int]] = defaultdict(set)
        for position, words in enumerate(query.words):
            rows = self.near(words)
            for owner in np.unique(self.owners[rows]):
                matched_query[int(owner)].append(position)
            for row in rows:
                matched_entry[int(self.owners[row])].add(int(row))
        best = None
        for owner, positions in matched_query.items():
            similarity = len(positions) / len(query.times)
            if similarity < QUERY_MATCH_SHARE:
                continue
            entry_rows = sorted(matched_entry[owner])
            entry_similarity = len(entry_rows) / self.sizes[owner]
            key = (similarity, entry_similarity, -self.meta[owner][0])
            if best is None or key > best[0]:
                entry_id, label, note = self.meta[owner]
                best = (
                    key,
                    {
                        "status": MATCH_FOUND,
                        "id": entry_id,
                        "label": label,
                        "note": note,
                        "similarity": round(similarity, 4),
                        "entry_similarity": round(entry_similarity, 4),
                        "query_span": [float(query.times[positions].min()), float(query.times[positions].max())],
                        "entry_span": [float(self.times[entry_rows].min()), float(self.times[entry_rows].max())],
                    },
                )
        return None if best is None else best[1]


def unavailable(reason: str) -> dict:
    """``known_match`` when the bank could not be asked: distinguishable from no match (null)."""
    return {"status": MATCH_UNAVAILABLE, "reason": reason}


class BankWatcher:
    """A server's view of the bank: the index of the entries in force, rebuilt when the bank changes.

    The bank's generation counter is read at most every :data:`POLL_S` seconds; a change anywhere
    (another server, the CLI, a page) reaches every server within that time. When the bank cannot be
    reached, :meth:`match` says so (``status: unavailable``) instead of answering from an index that
    may be stale, and scoring goes on.
    """

    def __init__(self, setting: str | None, poll_s: float = POLL_S) -> None:
        self.bank = Bank(setting)
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._index: BankIndex | None = None
        self._generation: int | None = None
        self._checked = 0.0
        self._error: str | None = None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.poll_s and (self._index is not None or self._error is not None):
            return
        self._checked = now
        try:
            generation = self.bank.generation()
            if generation != self._generation or self._index is None:
                entries = [
                    (entry.id, entry.label, entry.note, json.loads(entry.fingerprint)["features"])
                    for entry in self.bank.entries()
                ]
                self._index = BankIndex(entries)
                self._generation = generation
            self._error = None
        except (BankUnavailable, BankError) as exc:
            self._error = str(exc)

    def match(self, fingerprint_json: str | bytes) -> dict | None:
        """``known_match`` for one fingerprint document (see :mod:`preprocessing.fingerprint`)."""
        with self._lock:
            self._refresh()
            if self._error is not None:
                return unavailable(self._error)
            index = self._index
        if not fingerprint_json:
            return unavailable("the video has no fingerprint")
        try:
            features = json.loads(fingerprint_json)["features"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            return unavailable(f"the video's fingerprint cannot be read: {exc}")
        return index.match(features)
