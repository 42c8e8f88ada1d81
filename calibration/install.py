"""Putting a calibration beside the model version it was fitted for, and going back. Standard library only.

A calibration is installed as ``<repository>/<classifier>/<V>/calibration_<score>.json``: it travels
with the version (a retired version takes its calibration along; a version re-exported from
another checkpoint refuses it). Each install and rollback:

- is refused unless the calibration was fitted for that classifier, score and checkpoint (the
  version's ``export.json``);
- writes the file atomically (a temporary file renamed over the old one, so the server never
  reads half a file);
- keeps every installed file in ``<V>/calibrations/<sha256>.json`` and appends one line to
  ``<V>/calibration_history.jsonl`` (when, who, what, the file's sha256 and the one it replaced).

:func:`rollback` replays that history as a stack: each install pushes, each rollback pops, and the
calibration before the current one (or none: uncalibrated) is put back.

A running server applies the new file on its next request (``classify_<N>`` checks the file's
modification time per batch), so no reload is needed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from contract import (
    CALIBRATION_ARCHIVE_DIR,
    CALIBRATION_HISTORY_FILE,
    Score,
    calibration_file,
)
from triton_models.versions import VersionError, checkpoint_sha256

from .point import Calibration, CalibrationError, load


class InstallError(Exception):
    """An install or rollback that cannot be done; nothing was changed."""


@dataclass(frozen=True)
class Installed:
    """What an install or rollback left in force."""

    path: Path
    sha256: str | None
    previous_sha256: str | None


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def version_folder(repository: Path, model: str, version: int) -> Path:
    folder = Path(repository) / model / str(version)
    if not folder.is_dir():
        raise InstallError(f"{folder} does not exist: {model} has no version {version} in {repository}")
    return folder


def check_against_version(calibration: Calibration, folder: Path, version: int) -> None:
    """Refuses a calibration fitted for another checkpoint than the one ``folder`` was exported from."""
    try:
        served = checkpoint_sha256(folder)
    except VersionError as error:
        raise InstallError(str(error)) from None
    try:
        calibration.check_for(calibration.score, calibration.model, served, version)
    except CalibrationError as error:
        raise InstallError(f"refused: {error}") from None


def install(source: Path, repository: Path, *, by: str, version: int | None = None, at: str | None = None) -> Installed:
    """Installs the calibration file ``source`` into ``repository``.

    Args:
        version: the classifier version to install it for (default: the one it was scored with;
            needed for a calibration fitted where the model was trained, which names none).

    Raises:
        InstallError: not a calibration, no such version, fitted for another checkpoint or version.
    """
    try:
        calibration = load(source)
    except CalibrationError as error:
        raise InstallError(str(error)) from None
    if version is None:
        version = calibration.version
    if version is None:
        raise InstallError(
            f"{source} names no model version (it was fitted where the model was trained): give --version"
        )
    if calibration.version is not None and calibration.version != version:
        raise InstallError(
            f"refused: {source} was fitted on the answers of {calibration.model} version {calibration.version}, "
            f"not version {version}"
        )
    folder = version_folder(repository, calibration.model, version)
    check_against_version(calibration, folder, version)
    raw = Path(source).read_bytes()
    return _put(folder, calibration.score, raw, calibration.sha256, by=by, action="install", at=at, source=source)


def history(repository: Path, model: str, version: int) -> list[dict]:
    """The version folder's install and rollback records, oldest first."""
    path = version_folder(repository, model, version) / CALIBRATION_HISTORY_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise InstallError(f"{path}:{number}: not JSON ({error})") from None
    return records


def in_force(records: list[dict], score: Score) -> list[str]:
    """The stack of installed sha256s of ``score`` after replaying ``records`` (the last one is in force)."""
    stack: list[str] = []
    for record in records:
        if record.get("score") != score.value:
            continue
        if record.get("action") == "install":
            stack.append(record["sha256"])
        elif record.get("action") == "rollback" and stack:
            stack.pop()
    return stack


def rollback(repository: Path, model: str, version: int, score: Score, *, by: str, at: str | None = None) -> Installed:
    """Puts back the calibration installed before the current one (none: the version is uncalibrated).

    Raises:
        InstallError: nothing was installed for that score, or the previous file is gone from the archive.
    """
    folder = version_folder(repository, model, version)
    stack = in_force(history(repository, model, version), score)
    if not stack:
        raise InstallError(f"{model} version {version} has no {score.value} calibration installed to roll back")
    current = stack.pop()
    target = folder / calibration_file(score)
    if not stack:
        if target.exists():
            target.unlink()
        _record(folder, score, "rollback", by=by, at=at, sha256=None, previous=current, source=None)
        return Installed(target, None, current)
    previous = stack[-1]
    archived = folder / CALIBRATION_ARCHIVE_DIR / f"{previous}.json"
    try:
        raw = archived.read_bytes()
    except OSError as error:
        raise InstallError(f"cannot roll back: {archived}: {error.strerror or error}") from None
    _write_atomic(target, raw)
    _record(folder, score, "rollback", by=by, at=at, sha256=previous, previous=current, source=None)
    return Installed(target, previous, current)


def _put(folder: Path, score: Score, raw: bytes, sha: str, *, by: str, action: str, at, source) -> Installed:
    target = folder / calibration_file(score)
    stack = in_force(history(folder.parent.parent, folder.parent.name, int(folder.name)), score)
    previous = stack[-1] if stack else None
    archive = folder / CALIBRATION_ARCHIVE_DIR
    archive.mkdir(exist_ok=True)
    _write_atomic(archive / f"{sha}.json", raw)
    _write_atomic(target, raw)
    _record(folder, score, action, by=by, at=at, sha256=sha, previous=previous, source=source)
    return Installed(target, sha, previous)


def _record(folder: Path, score: Score, action: str, *, by, at, sha256, previous, source) -> None:
    line = {
        "at": at or now_utc(),
        "by": by,
        "action": action,
        "score": score.value,
        "sha256": sha256,
        "previous_sha256": previous,
        "source": None if source is None else os.fspath(source),
    }
    with open(folder / CALIBRATION_HISTORY_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def _write_atomic(path: Path, raw: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(raw)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
