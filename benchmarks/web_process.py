"""The web page as its own process, for its benchmark and its tests: ``python -m client web``.

The process runs under an audit hook (``sys.addaudithook``) that records every file it opens for
writing and every temporary file or folder it makes, so a test can check that an upload never
touches the disk.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
URL_LINE = re.compile(r"web page on (http://\S+/)")
AUDIT_ENV = "WEB_AUDIT_LOG"

# Runs `python -m client ...` with the hook installed before anything else is imported.
AUDITED_CLIENT = textwrap.dedent(
    """
    import os, runpy, sys

    log_fd = os.open(os.environ["WEB_AUDIT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC | getattr(os, "O_TMPFILE", 0)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & writing
            ):
                os.write(log_fd, f"open {path!r} mode={mode!r} flags={flags}\\n".encode())
        elif event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
            os.write(log_fd, f"{event} {args!r}\\n".encode())

    sys.addaudithook(hook)
    sys.argv = ["client", *sys.argv[1:]]
    runpy.run_module("client", run_name="__main__", alter_sys=True)
    """
)


class WebProcess:
    """``python -m client web --url TRITON --port 0 ARGS`` in a child process.

    Attributes:
        url: the page's base URL (``http://127.0.0.1:<port>/``) once started.
        audit_log: where the audit hook writes.
    """

    def __init__(
        self, triton_url: str, scratch: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.triton_url = triton_url
        self.args = list(args)
        self.scratch = scratch
        self.audit_log = scratch / "audit.log"
        self.log_path = scratch / "web.log"
        self.env = dict(env or {})
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> WebProcess:
        self.scratch.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", AUDIT_ENV: str(self.audit_log), **self.env}
        command = [sys.executable, "-c", AUDITED_CLIENT, "web", "--url", self.triton_url, "--port", "0", *self.args]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode("utf-8", errors="replace")
            if not line:
                break
            match = URL_LINE.search(line)
            if match:
                self.url = match[1]
                self._wait_listening(deadline)
                return self
        self.stop()
        raise RuntimeError(f"the web page did not start; its log:\n{self.log_text()}")

    def _wait_listening(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "static/app.css", timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the web page printed its URL but does not answer; its log:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def audit_lines(self) -> list[str]:
        return self.audit_log.read_text().splitlines() if self.audit_log.exists() else []

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_kib(self) -> int:
        """Resident memory of the web process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        self.process = None
