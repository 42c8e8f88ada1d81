"""The bank in the hash-sharing format ``threatexchange`` reads and writes: vPDQ signals, one per line.

``threatexchange``'s local-file exchange reads a text file with one signal per line, written as
``<signal type> <signal>``; a vPDQ signal (type ``vpdq``) is a JSON list of strings, one per hashed
frame, ``"<pdq hex>,<quality>,<timestamp>"`` (the timestamp with 3 significant digits, as
``threatexchange`` writes it). Frame numbers are not part of the format: an imported signal gets
them in order. Blank lines and lines starting with ``#`` are skipped; any other line that is not a
vPDQ signal makes the whole file refused (nothing is imported), naming the line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from contract import FINGERPRINT_FORMAT, SECONDS_PER_HASH

SIGNAL_TYPE = "vpdq"
#: ``threatexchange`` writes timestamps with this many significant digits.
TIMESTAMP_DIGITS = 3
HEX_DIGITS = 64


class ExchangeError(ValueError):
    """A file that is not in the exchange format; the message names the line."""


@dataclass(frozen=True)
class Signal:
    """One video's vPDQ signal, as a bank fingerprint document."""

    fingerprint_json: str
    note: str = ""


def _feature(text: str, where: str) -> list:
    parts = text.split(",") if isinstance(text, str) else []
    if len(parts) != 3:
        raise ExchangeError(f"{where}: a vPDQ feature is 'pdq_hex,quality,timestamp', got {text!r}")
    pdq_hex, quality, timestamp = parts
    try:
        int(pdq_hex, 16)
        value = int(quality)
        seconds = float(timestamp)
    except ValueError:
        raise ExchangeError(f"{where}: a vPDQ feature is 'pdq_hex,quality,timestamp', got {text!r}") from None
    if len(pdq_hex) != HEX_DIGITS or not 0 <= value <= 100 or seconds < 0:
        raise ExchangeError(f"{where}: feature {text!r} is out of range (64 hex digits, quality 0-100, time >= 0)")
    return [pdq_hex.lower(), value, seconds]


def parse_signal(signal: str, where: str) -> Signal:
    """A ``vpdq`` signal string (the JSON list) as a bank fingerprint."""
    try:
        items = json.loads(signal)
    except json.JSONDecodeError as exc:
        raise ExchangeError(f"{where}: the vPDQ signal is not JSON ({exc})") from None
    if not isinstance(items, list) or not items:
        raise ExchangeError(f"{where}: a vPDQ signal is a non-empty JSON list of features")
    features = [_feature(item, where) for item in items]
    document = {
        "format": FINGERPRINT_FORMAT,
        "seconds_per_hash": SECONDS_PER_HASH,
        "covered_seconds": max(f[2] for f in features),
        "frames_scanned": 0,
        "truncated": False,
        "features": [[h, q, index, t] for index, (h, q, t) in enumerate(features)],
    }
    return Signal(json.dumps(document, separators=(",", ":")))


def read_signals(path: Path) -> list[Signal]:
    """Every vPDQ signal of a file; refuses the whole file at its first malformed line.

    Raises:
        ExchangeError: a line that is not a vPDQ signal, or an unreadable file.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExchangeError(f"{path}: cannot be read ({exc})") from None
    signals = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        kind, _, signal = text.partition(" ")
        where = f"{path}:{number}"
        if kind != SIGNAL_TYPE:
            raise ExchangeError(f"{where}: signal type {kind!r}: this bank holds {SIGNAL_TYPE!r} signals only")
        signals.append(parse_signal(signal.strip(), where))
    if not signals:
        raise ExchangeError(f"{path}: no {SIGNAL_TYPE} signal in the file")
    return signals


def signal_of(fingerprint_json: str) -> str:
    """A bank fingerprint as a ``vpdq`` signal string."""
    features = json.loads(fingerprint_json)["features"]
    return json.dumps([f"{h},{q},{float(t):.{TIMESTAMP_DIGITS}}" for h, q, _, t in features])


def write_signals(entries, target: str, out: TextIO = sys.stdout) -> int:
    """Writes the entries' fingerprints as exchange lines to ``target`` (``-``: ``out``); returns how many."""
    lines = [f"{SIGNAL_TYPE} {signal_of(entry.fingerprint)}\n" for entry in entries]
    if target == "-":
        out.writelines(lines)
    else:
        Path(target).write_text("".join(lines), encoding="utf-8")
    return len(lines)
