"""The server's python-backend stub processes, read from ``/proc`` (Linux).

The one reader of ``/proc`` in the project: the embedded server's watchdog, the container's
entrypoint and its health check (``deploy/``) all ask it, with one rule for a dead process: a
zombie or a process being torn down (:data:`DEAD_STATES`) has exited. Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serve.distribution import STUB_NAME

PROC = Path("/proc")
#: ``/proc/<pid>/stat`` holds at most 15 characters of the executable's name; a zombie keeps it
#: (its command line is empty).
COMM_LENGTH = 15
STUB_COMM = STUB_NAME[:COMM_LENGTH]
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


@dataclass(frozen=True)
class ProcessStatus:
    """One process as ``/proc/<pid>/stat`` shows it.

    Attributes:
        pid: its id.
        parent_pid: its parent's id.
        state: the one-letter state (``R``, ``S``, ``Z``, ...).
        name: the executable's name, cut to :data:`COMM_LENGTH` characters.
    """

    pid: int
    parent_pid: int
    state: str
    name: str

    @property
    def dead(self) -> bool:
        """Exited (a zombie, or being torn down)."""
        return self.state in DEAD_STATES

    @property
    def is_stub(self) -> bool:
        return self.name == STUB_COMM


def status(pid: int, proc_root: Path = PROC) -> ProcessStatus | None:
    """What ``/proc/<pid>/stat`` says, or None when the process is gone (or not ours to read)."""
    try:
        text = (proc_root / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    opening, closing = text.index("("), text.rindex(")")
    fields = text[closing + 2 :].split()
    return ProcessStatus(
        pid=pid, parent_pid=int(fields[PPID_FIELD]), state=fields[STATE_FIELD], name=text[opening + 1 : closing]
    )


def all_processes(proc_root: Path = PROC) -> list[ProcessStatus]:
    """Every process visible in ``proc_root``, alive or dead, by pid."""
    found = []
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            process = status(int(entry), proc_root)
            if process is not None:
                found.append(process)
    return sorted(found, key=lambda process: process.pid)


def is_running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie counts as exited)."""
    process = status(pid)
    return process is not None and not process.dead


def children(parent: int) -> list[int]:
    """Running direct children of a process."""
    return [process.pid for process in all_processes() if process.parent_pid == parent and not process.dead]


def stubs(parent: int | None = None, proc_root: Path = PROC) -> list[ProcessStatus]:
    """Python-backend stub processes, alive or dead, optionally only the children of ``parent``."""
    return [
        process
        for process in all_processes(proc_root)
        if process.is_stub and (parent is None or process.parent_pid == parent)
    ]


def dead_stubs(parent: int | None = None, proc_root: Path = PROC) -> list[ProcessStatus]:
    """Stubs that exited and were not reaped (Triton 2.51 never reaps them), optionally of one server."""
    return [process for process in stubs(parent, proc_root) if process.dead]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def stub_model(pid: int) -> str | None:
    """The model a live stub serves, from its first argument ``<repository>/<model>/<version>/model.py``.

    None once it has exited: a zombie's command line is empty, so learn it while the stub lives.
    """
    argv = _cmdline(pid)
    if len(argv) < 2 or Path(argv[0]).name != STUB_NAME:
        return None
    return Path(argv[1]).parent.parent.name


def stub_folder(pid: int) -> Path | None:
    """The version folder a live stub serves (``<repository>/<model>/<version>``); None once it has exited."""
    argv = _cmdline(pid)
    if len(argv) < 2 or Path(argv[0]).name != STUB_NAME:
        return None
    return Path(argv[1]).parent


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
    found: dict[str, set[int]] = {}
    for pid in children(server_pid):
        model = stub_model(pid)
        if model is not None:
            found.setdefault(model, set()).add(pid)
    return found


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
