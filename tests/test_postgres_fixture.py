"""The session's real PostgreSQL server (tests/postgres.py): it answers, goes away, comes back with its data.

The bank of confirmed fakes and the case history may live in PostgreSQL; their tests run against
this server, so it must be a real one that a test can stop and start again like a database that
restarts under a running service.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.postgres import PostgresServer


def test_the_server_answers_a_query(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://deepfake@127.0.0.1:")
    with psycopg.connect(postgres_url, connect_timeout=10) as connection:
        (version,) = connection.execute("SHOW server_version_num").fetchone()
        (database,) = connection.execute("SELECT current_database()").fetchone()
    assert int(version) >= 140000
    assert database == "deepfake"


def test_new_databases_are_empty_and_separate(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.new_database(), postgres_server.new_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as connection:
        connection.execute("CREATE TABLE only_here (id integer)")
    with psycopg.connect(second) as connection:
        (tables,) = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == 0


def test_the_database_goes_away_and_comes_back_with_its_data(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE fakes (sha256 text PRIMARY KEY, label text)")
        connection.execute("INSERT INTO fakes VALUES (%s, %s)", ("ab" * 32, "confirmed"))
    held = psycopg.connect(url, autocommit=True)
    try:
        postgres_server.stop()
        assert not postgres_server.running
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
    finally:
        held.close()
        postgres_server.start()
    assert postgres_server.running
    assert postgres_server.url.endswith(f":{postgres_server.port}/deepfake")
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT sha256, label FROM fakes").fetchall()
    assert rows == [("ab" * 32, "confirmed")]


def test_a_server_of_its_own_is_removed_on_exit() -> None:
    with PostgresServer() as server:
        folder = server.folder
        with psycopg.connect(server.url) as connection:
            (answer,) = connection.execute("SELECT 40 + 2").fetchone()
        assert answer == 42
        assert folder is not None and (folder / "data" / "PG_VERSION").is_file()
    assert not folder.exists()
