"""Files written whole or not at all, canonical JSON and content hashes.

Every file a run writes goes through :func:`write_atomic`: a temporary file in the same folder,
flushed and synced, then ``os.replace``. A run killed at any moment leaves either the previous
file or the new one, never half of one, which is what lets ``--resume`` trust what it finds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

JSON_INDENT = 2
#: mkstemp makes files only their owner reads; the files of a run get the usual mode (umask applied).
FILE_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = FILE_MODE & ~_umask()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same text for the same value, to hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes ``path`` through ``write(handle)`` into a temporary file, then moves it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _MODE)
        os.replace(temporary, path)
    except BaseException:
        # Whatever stopped the write (an error, Ctrl-C), the half-written file must not stay.
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=JSON_INDENT) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def torch_save_atomic(path: Path, value: Any) -> None:
    """``torch.save`` of plain tensors, numbers, strings, lists and dicts (loadable with ``weights_only=True``)."""
    write_atomic(path, lambda handle: torch.save(value, handle))


def torch_load(path: Path) -> Any:
    """Loads what :func:`torch_save_atomic` wrote, never unpickling anything but tensors and plain values."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
