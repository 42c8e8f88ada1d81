"""The server's python-backend stub processes, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from serve.distribution import STUB_NAME

PROC = Path("/proc")
#: Where POSIX shared memory lives on Linux.
SHM_DIR = Path("/dev/shm")
#: Name prefix of the shared-memory region the python backend gives each stub (its second
#: argument); request and response tensors, uploaded videos included, pass through it.
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
PRIVATE_MODE = 0o600
# Process states of a process that has exited (zombie) or is being torn down.
DEAD_STATES = frozenset({"Z", "X", "x"})
# In /proc/<pid>/stat the fields after the command name start with the state, then the ppid.
STATE_FIELD = 0
PPID_FIELD = 1


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None when the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return text[text.rindex(")") + 2 :].split()


def is_running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie counts as exited)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[STATE_FIELD] not in DEAD_STATES


def children(parent: int) -> list[int]:
    """Running direct children of a process."""
    found = []
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[PPID_FIELD]) == parent and fields[STATE_FIELD] not in DEAD_STATES:
            found.append(int(entry))
    return sorted(found)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def is_stub_of(pid: int, backend_dir: Path) -> bool:
    """Whether a running process is a python-backend stub started from ``backend_dir``.

    Each server gets a backend folder of its own, and the stub is given that folder as an
    argument, so this tells a server's stubs from any other process that reuses the id.
    """
    argv = _cmdline(pid)
    return bool(argv) and Path(argv[0]).name == STUB_NAME and str(backend_dir) in argv[1:] and is_running(pid)


def python_stubs(server_pid: int) -> dict[str, set[int]]:
    """Running stub processes of a tritonserver, by model name.

    The stub's first argument is ``<repository>/<model>/<version>/model.py``; the model name is
    the folder two levels up.
    """
    stubs: dict[str, set[int]] = {}
    for pid in children(server_pid):
        argv = _cmdline(pid)
        if len(argv) > 1 and Path(argv[0]).name == STUB_NAME:
            model = Path(argv[1]).parent.parent.name
            stubs.setdefault(model, set()).add(pid)
    return stubs


def _is_region(name: str) -> bool:
    """Whether a name is a python-backend region's (and no path that could reach elsewhere)."""
    return name.startswith(SHM_REGION_PREFIX) and "/" not in name


def shm_regions(pids: Iterable[int]) -> set[str]:
    """Names of the shared-memory regions of these stub processes (read from their arguments)."""
    regions = set()
    for pid in pids:
        argv = _cmdline(pid)
        if len(argv) > 2 and _is_region(argv[2]):
            regions.add(argv[2])
    return regions


def make_private(names: Iterable[str], shm_dir: Path = SHM_DIR) -> None:
    """Restricts existing regions to their owner (mode 0600); regions already gone are skipped."""
    for name in names:
        if not _is_region(name):
            continue
        try:
            os.chmod(shm_dir / name, PRIVATE_MODE)
        except FileNotFoundError:
            continue


def remove_shm_regions(names: Iterable[str], shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlinks the regions that still exist; returns the names removed.

    Only for regions whose server has ended: a server killed or crashed never unlinks them, and
    each holds memory (as large as the largest request its stub saw) until the machine restarts.
    """
    removed = []
    for name in sorted(names):
        if not _is_region(name):
            continue
        try:
            (shm_dir / name).unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed
