"""Synthetic PDQ hashes and fingerprint documents for the bank's tests (no video needed)."""

from __future__ import annotations

import json

import numpy as np


def random_hex(rng: np.random.Generator) -> str:
    """A random 256-bit PDQ hash as 64 hex digits."""
    return rng.bytes(32).hex()


def flipped(pdq_hex: str, bits: int, rng: np.random.Generator) -> str:
    """``pdq_hex`` with ``bits`` of its bits flipped, at distinct positions."""
    raw = bytearray(bytes.fromhex(pdq_hex))
    for bit in rng.choice(256, bits, replace=False):
        raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex()


def document(hashes: list[str], quality: int = 100, start: float = 0.0) -> str:
    """A fingerprint document of one hash per second at 25 fps, every frame of ``quality``."""
    features = [[h, quality, index * 25, start + index] for index, h in enumerate(hashes)]
    return json.dumps(
        {
            "format": 1,
            "seconds_per_hash": 1.0,
            "covered_seconds": float(len(hashes)),
            "frames_scanned": 0,
            "truncated": False,
            "features": features,
        }
    )
