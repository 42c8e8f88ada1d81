"""Suite-wide settings: everything under tests/integration talks to a real tritonserver.

The session's real PostgreSQL server (``postgres_server``, ``postgres_url``: tests/postgres.py) is
registered here, so that any test module, unit or integration, can ask for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import postgres_server, postgres_url  # noqa: F401 (session fixtures: pytest finds them here)

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
