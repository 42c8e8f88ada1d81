"""One real tritonserver for the whole integration session, over the project's model repository.

``triton_server`` starts the embedded server (``serve.EmbeddedServer``) on free ports, waits until
every model is ready, and stops it at the end of the session (SIGINT, then kill). When a test
fails, the part of every server log written during that test is added to the failure report.
Its bank of confirmed fakes (``DEEPFAKE_BANK``) is a SQLite file of the session's own
(``triton_server.env["DEEPFAKE_BANK"]``), which a test gives the page and the CLI to share it.

The classifier ONNX files are build artifacts: when some are missing the fixture builds them
first with the project's exporter (demo checkpoints with random weights, exported and verified).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract import BANK_ENV, ONNX_FILE, Kind
from serve import EmbeddedServer, ServeError, TritonDistribution, TritonNotFoundError, free_ports
from serve.distribution import PROJECT_ROOT
from tests.integration.training_fixtures import trained_runs  # noqa: F401 (a session fixture: pytest finds it here)

CLASSIFIER_PREFIX = Kind.CLASSIFIER.prefix

REPOSITORY = PROJECT_ROOT / "model_repository"
# Python models import torch and MTCNN once per stub; on 2 cores loading them all takes a while.
START_TIMEOUT_S = 600.0
# In-flight requests get this long to finish at a restart or at the end of the session.
STOP_TIMEOUT_S = 20.0
EXPORT_TIMEOUT_S = 1800
LOG_SECTION_CHARS = 30_000
LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


def _missing_classifiers(repository: Path) -> list[Path]:
    return [
        folder / "1" / ONNX_FILE
        for folder in sorted(repository.glob(f"{CLASSIFIER_PREFIX}*"))
        if folder.is_dir() and not (folder / "1" / ONNX_FILE).is_file()
    ]


def _run_export(*args: str) -> None:
    command = [sys.executable, "-m", "export", *args]
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        pytest.fail(
            f"building the classifiers failed: {' '.join(command)} exited with {completed.returncode}\n"
            f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}",
            pytrace=False,
        )


def _ensure_classifiers(repository: Path, scratch: Path) -> None:
    """Exports the missing ``resnext_lstm_<N>/1/model.onnx`` from demo checkpoints."""
    missing = _missing_classifiers(repository)
    if not missing:
        return
    frames = [folder.parent.parent.name.removeprefix(CLASSIFIER_PREFIX) for folder in missing]
    checkpoints = scratch / "checkpoints"
    _run_export("demo-checkpoints", "--out", str(checkpoints), "--frames", *frames)
    _run_export("onnx", "--checkpoints", str(checkpoints), "--repository", str(repository), "--frames", *frames)
    still_missing = _missing_classifiers(repository)
    if still_missing:
        pytest.fail(
            f"the exporter ran but these files are still missing: {', '.join(map(str, still_missing))}", pytrace=False
        )


@pytest.fixture(scope="session")
def classifier_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model_repository/`` with every ``resnext_lstm_<N>/1/model.onnx`` built."""
    _ensure_classifiers(REPOSITORY, tmp_path_factory.mktemp("classifiers"))
    return REPOSITORY


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The real tritonserver over ``model_repository/``, ready, for the whole session.

    Exposes ``grpc_url`` and ``http_url`` (``host:port``), ``metrics_url`` (full URL) and
    ``restart()``.
    """
    try:
        TritonDistribution.locate()
    except TritonNotFoundError as error:
        # A required dependency: a missing server is a broken install, never a reason to skip.
        pytest.fail(f"tritonserver is not installed: {error}", pytrace=False)
    scratch = tmp_path_factory.mktemp("triton_server")
    _ensure_classifiers(REPOSITORY, scratch)
    grpc_port, http_port, metrics_port = free_ports(3)
    server = EmbeddedServer(
        REPOSITORY,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=scratch / "tritonserver.log",
        stop_timeout=STOP_TIMEOUT_S,
        # The bank every answer is matched against: the session's own, never the user's default file.
        env={BANK_ENV: str(scratch / "bank.sqlite3")},
    )
    try:
        server.start(timeout=START_TIMEOUT_S)
    except ServeError as error:
        pytest.fail(
            f"the session's tritonserver did not start: {error}\n\nits log:\n{server.log_text()[-LOG_SECTION_CHARS:]}",
            pytrace=False,
        )
    try:
        yield server
    finally:
        server.stop()


def _servers(item: pytest.Item) -> list[EmbeddedServer]:
    funcargs = getattr(item, "funcargs", {})
    return [value for value in funcargs.values() if isinstance(value, EmbeddedServer)]


def _log_size(server: EmbeddedServer) -> int:
    try:
        return server.log_path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Adds each server's log (the part written during the test) to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    servers = _servers(item)
    if call.when == "setup":
        item.stash[LOG_OFFSETS] = {id(server): _log_size(server) for server in servers}
    if not report.failed:
        return
    offsets = item.stash.get(LOG_OFFSETS, {})
    for server in servers:
        try:
            text = server.log_path.read_bytes()[offsets.get(id(server), 0) :].decode("utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        if len(text) > LOG_SECTION_CHARS:
            text = "...\n" + text[-LOG_SECTION_CHARS:]
        report.sections.append((f"tritonserver log {server.log_path}", text or "(nothing written during this test)"))
