"""A Docker engine of the project's own: private socket and pid file, a data root that lasts.

    python tools/docker_engine.py start   # start it unless it runs; prints its DOCKER_HOST
    python tools/docker_engine.py stop    # stop it (layers and images stay in the data root)
    python tools/docker_engine.py host    # DOCKER_HOST to use: $DOCKER_HOST, the machine's own
                                          # engine when it answers, else this one (started)

The engine runs Debian's ``dockerd`` as root with folders of its own, so it never clashes with an
engine the machine may run: socket and pid file in ``/run/deepfake-docker``, images and layers in
``/var/lib/deepfake-docker`` (``DEEPFAKE_DOCKER_ROOT``), which survives runs so that a code change
rebuilds in seconds. It has no bridge and touches no firewall rules
(``--bridge=none --iptables=false --ip6tables=false``): containers and builds use the host's
network, and every connection stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The contract (standard library only) from the checkout, when this file runs as a script.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from contract import Exit  # noqa: E402

DATA_ROOT = Path(os.environ.get("DEEPFAKE_DOCKER_ROOT", "/var/lib/deepfake-docker"))
# Unix socket paths hold at most 107 bytes, and containerd puts its sockets under the exec root.
RUN_DIR = Path(os.environ.get("DEEPFAKE_DOCKER_RUN", "/run/deepfake-docker"))
MACHINE_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 10.0
POLL_S = 0.25
LOG_TAIL_CHARS = 4000


class EngineUnavailable(RuntimeError):
    """No Docker engine can be started on this machine (the reason says why)."""


@dataclass(frozen=True)
class Engine:
    """The project's dockerd."""

    data_root: Path = DATA_ROOT
    run_dir: Path = RUN_DIR

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "dockerd.log"

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value that reaches this engine."""
        return f"unix://{self.socket}"

    def pid(self) -> int | None:
        """The running dockerd's pid, or None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def answers(self) -> bool:
        return answers(self.host)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Starts the engine unless it already answers; returns whether this call started it.

        Raises:
            EngineUnavailable: not root, no dockerd, or the engine did not come up (its log says why).
        """
        if self.answers():
            return False
        if os.geteuid() != 0:
            raise EngineUnavailable(
                "starting dockerd needs root (run as root, or set DOCKER_HOST to an engine you may use)"
            )
        dockerd = shutil.which("dockerd")
        if dockerd is None or shutil.which("docker") is None:
            raise EngineUnavailable("dockerd or the docker client is not installed (Debian: apt-get install docker.io)")
        stale = self.pid()
        if stale is not None:
            raise EngineUnavailable(
                f"dockerd {stale} holds {self.pidfile} but does not answer on {self.socket}; stop it first"
            )
        for folder in (self.data_root, self.run_dir, self.exec_root):
            folder.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        command = [
            dockerd,
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            "--storage-driver=overlay2",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if process.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited with code {process.returncode}; the end of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                process.terminate()
                raise EngineUnavailable(
                    f"dockerd did not answer within {timeout_s:g} s; the end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(POLL_S)
        return True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stops the engine (SIGTERM, then SIGKILL); returns whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(POLL_S)
        return True

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except FileNotFoundError:
            return "(no log)"


def answers(docker_host: str) -> bool:
    """Whether a Docker engine answers at ``docker_host``."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        completed = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": docker_host},
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return completed.returncode == 0


def docker_host(engine: Engine | None = None) -> str:
    """``$DOCKER_HOST`` when set, the machine's engine when it answers, else the project's (started)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    machine = f"unix://{MACHINE_SOCKET}"
    if MACHINE_SOCKET.exists() and answers(machine):
        return machine
    engine = engine or Engine()
    engine.start()
    return engine.host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/docker_engine.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "host"))
    args = parser.parse_args(argv)
    engine = Engine()
    try:
        if args.action == "start":
            started = engine.start()
            print(engine.host)
            print(
                f"docker_engine: {'started' if started else 'already running'}: data root {engine.data_root}",
                file=sys.stderr,
            )
        elif args.action == "stop":
            print(f"docker_engine: {'stopped' if engine.stop() else 'not running'}", file=sys.stderr)
        else:
            print(docker_host(engine))
    except EngineUnavailable as error:
        print(f"docker_engine: error: {error}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
