"""Which classifier version answered: shared by classify_<N> and the stream model, testable without a server."""

from __future__ import annotations

import json
from pathlib import Path

from contract import EXPORT_METADATA_FILE


class VersionError(Exception):
    """A request's version cannot be served; ``invalid`` when the client asked for it (INVALID_ARGUMENT)."""

    def __init__(self, message: str, invalid: bool) -> None:
        super().__init__(message)
        self.invalid = invalid


def checkpoint_sha256(version_dir: Path) -> str:
    """The ``sha256`` of the checkpoint a version folder was exported from, from its ``export.json``.

    Raises:
        VersionError: the file is missing, unreadable or names no sha256.
    """
    path = version_dir / EXPORT_METADATA_FILE
    try:
        sha = json.loads(path.read_text(encoding="utf-8")).get("sha256")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise VersionError(f"{path} cannot be read ({exc}): export this version again", invalid=False) from exc
    if not isinstance(sha, str) or not sha:
        raise VersionError(f"{path} names no checkpoint sha256: export this version again", invalid=False)
    return sha
