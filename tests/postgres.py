"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started in a folder of its own.

``postgres_server`` (session) starts one server for the whole session and stops it at the end;
``postgres_url`` is its URL, ``postgresql://deepfake@127.0.0.1:<port>/deepfake``. Both are
registered in ``tests/conftest.py``, so that any test module can ask for them::

    def test_bank_in_postgres(postgres_url: str) -> None:
        with psycopg.connect(postgres_url) as connection: ...

    def test_the_database_comes_back(postgres_server: PostgresServer) -> None:
        url = postgres_server.new_database()      # an empty database of this test's own
        postgres_server.stop()                    # the database goes away (connections are refused)...
        postgres_server.start()                   # ...and comes back on the same port, data kept

A test that stops the shared server starts it again before it ends (``try``/``finally``), so that
the next test finds it running. :class:`PostgresServer` used as a context manager gives a test a
server of its own.

PostgreSQL refuses to run as root: as root (CI), the server runs as the ``postgres`` user the
Debian package creates (``runuser -u postgres --``), in a temporary folder that user owns; as
any other user it runs as that user. It listens on 127.0.0.1 only, on a free port, with trust
authentication, and starts in about a second (``initdb`` once, then ``pg_ctl start``).

The binaries are a required dependency, like tritonserver and chromium: ``make install``
installs the ``postgresql`` package (``apt-dev`` in ``pyproject.toml``), so a missing server is a
broken install and fails the test, never a reason to skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from serve.ports import free_port

#: Where Debian and Ubuntu put each major version's server binaries (``initdb``, ``pg_ctl``).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The user the server runs as when the tests run as root (created by Debian's postgresql-common).
SYSTEM_USER = "postgres"
#: The database role and the default database of the URL.
ROLE = "deepfake"
DATABASE = "deepfake"
HOST = "127.0.0.1"
INSTALL_HINT = "`make install` installs it (apt-dev in pyproject.toml; as root: apt-get install -y postgresql)"
COMMAND_TIMEOUT_S = 60
START_TIMEOUT_S = 30
LOG_TAIL_CHARS = 4000
# A first start whose port was taken meanwhile (the server log says so) tries another free port.
PORT_ATTEMPTS = 3
PORT_TAKEN = "Address already in use"
# Environment variables libpq and the client programs read: none may point them elsewhere.
LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS")
# The test server's settings: no fsync (a clean stop still writes everything; only a machine crash
# could lose data, which a test never survives anyway), few connections, no unix socket elsewhere.
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=50")


class PostgresError(RuntimeError):
    """The server could not be found, set up, started or stopped; the message says why."""


def find_binaries() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``createdb``: the newest Debian version, else PATH.

    Raises:
        PostgresError: PostgreSQL is not installed.
    """
    versions = sorted(
        (folder for folder in DEBIAN_ROOT.glob("*/bin") if folder.parent.name.isdigit()),
        key=lambda folder: int(folder.parent.name),
        reverse=True,
    )
    for folder in versions:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return folder
    initdb = shutil.which("initdb")
    if initdb and all(shutil.which(name, path=str(Path(initdb).parent)) for name in ("pg_ctl", "createdb")):
        return Path(initdb).parent
    raise PostgresError(
        f"PostgreSQL is not installed (no {DEBIAN_ROOT}/<version>/bin/initdb, none on PATH): {INSTALL_HINT}"
    )


def _run_as_prefix() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs the server's programs, and the user to own its folder (None: this user)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and there is no '{SYSTEM_USER}' user to run PostgreSQL as "
            f"(the postgresql package creates it): {INSTALL_HINT}"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresError("running as root, and `runuser` (util-linux) is missing: cannot run PostgreSQL as postgres")
    return [runuser, "-u", SYSTEM_USER, "--"], user


def _clean_environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in LIBPQ_VARIABLES}
    environment["LC_ALL"] = "C"
    return environment


class PostgresServer:
    """One PostgreSQL server in a temporary folder, on a free port of 127.0.0.1.

    ``start()`` creates the cluster the first time (``initdb``) and the database ``deepfake``;
    ``stop()`` stops the server (``pg_ctl stop -m fast``) and keeps its data; ``start()`` again
    brings the same data back on the same port; ``close()`` stops it and removes the folder.
    """

    def __init__(self, binaries: Path | None = None) -> None:
        self.binaries = binaries or find_binaries()
        self._prefix, self._owner = _run_as_prefix()
        self.port = free_port(HOST)
        self.folder: Path | None = None
        self._initialised = False
        self._has_database = False
        self._databases = 0

    # --- where it is ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://deepfake@127.0.0.1:<port>/deepfake``: the default database."""
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{ROLE}@{HOST}:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self._require_folder() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_folder() / "server.log"

    @property
    def running(self) -> bool:
        """Whether the server answers ``pg_ctl status`` (its postmaster is alive)."""
        if not self._initialised:
            return False
        completed = self._server_command("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return completed.returncode == 0

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no server log)"

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the server (creating its cluster and database the first time); returns when it accepts connections."""
        if not self._initialised:
            self._initialise()
        if self.running:
            return
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._pg_ctl_start()
                break
            except PostgresError:
                # Another process took the free port between its choice and the first start: choose
                # again (never on a restart, whose URL must stay the same).
                if self._has_database or attempt + 1 == PORT_ATTEMPTS or PORT_TAKEN not in self.log_tail():
                    raise
                self.port = free_port(HOST)
        if not self._has_database:
            self._client_command("createdb", DATABASE)
            self._has_database = True

    def stop(self) -> None:
        """Stops the server (fast: open connections are closed, the data is kept); returns when it is down."""
        if self.running:
            self._server_command("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stops the server (immediately when a fast stop fails) and removes its folder."""
        if self.folder is None:
            return
        try:
            self.stop()
        except PostgresError:
            self._server_command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            self._initialised = False
            self._has_database = False

    def new_database(self, name: str | None = None) -> str:
        """Creates an empty database (a fresh name unless given) and returns its URL."""
        self._databases += 1
        name = name or f"{DATABASE}_{self._databases}"
        self._client_command("createdb", name)
        return self.url_for(name)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- inside --------------------------------------------------------------------------------

    def _require_folder(self) -> Path:
        if self.folder is None:
            raise PostgresError("the server has no folder: start() it first")
        return self.folder

    def _pg_ctl_start(self) -> None:
        options = f"-p {self.port} -h {HOST} -k {self._require_folder()} " + " ".join(
            f"-c {setting}" for setting in SERVER_SETTINGS
        )
        self._server_command(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )

    def _initialise(self) -> None:
        # Not under pytest's tmp_path: its parents are private to this user (0700), and the
        # postgres user must reach the folder. /tmp is open to everyone; the folder is then its own.
        self.folder = Path(tempfile.mkdtemp(prefix="deepfake-postgres-"))
        if self._owner is not None:
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)
        self._server_command(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            ROLE,
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )
        self._initialised = True

    def _server_command(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs one of the server's programs as the user that owns the data."""
        return self._run([*self._prefix, str(self.binaries / program), *args], check=check)

    def _client_command(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs a client program (createdb) over TCP, as the role of the URL."""
        return self._run(
            [str(self.binaries / program), "-h", HOST, "-p", str(self.port), "-U", ROLE, *args], check=True
        )

    def _run(self, command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        try:
            completed = subprocess.run(
                command,
                cwd=self.folder or tempfile.gettempdir(),
                env=_clean_environment(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PostgresError(f"{' '.join(command)} could not run: {error}") from error
        if check and completed.returncode != 0:
            raise PostgresError(
                f"{' '.join(command)} exited with {completed.returncode}\n"
                f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}\nserver log:\n{self._safe_log_tail()}"
            )
        return completed

    def _safe_log_tail(self) -> str:
        return self.log_tail() if self.folder is not None else "(no server folder)"


def _started_server() -> tuple[PostgresServer | None, str]:
    """A started server, or None and why not (failed outside the ``except``, so that the report is the reason alone)."""
    try:
        server = PostgresServer()
    except PostgresError as error:
        return None, str(error)
    try:
        server.start()
    except PostgresError as error:
        server.close()
        return None, f"it did not start: {error}"
    return server, ""


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (``.url``, ``.stop()``, ``.start()``, ``.new_database()``)."""
    server, problem = _started_server()
    if server is None:
        # A required dependency: a missing or broken PostgreSQL is a broken install, never a reason to skip.
        pytest.fail(f"PostgreSQL for the tests: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://deepfake@127.0.0.1:<port>/deepfake``: the session's server's default database."""
    return postgres_server.url
