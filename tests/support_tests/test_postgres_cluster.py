"""The throwaway PostgreSQL cluster the journal tests use (tests/support/postgres.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import PostgresCluster, PostgresUnavailable


def test_a_cluster_restarts_on_its_port_keeps_its_databases_and_leaves_nothing() -> None:
    with PostgresCluster() as cluster:
        first, second = cluster.new_database(), cluster.new_database()
        assert first != second and first.startswith(f"postgresql://postgres@127.0.0.1:{cluster.port}/")
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        cluster.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(first, connect_timeout=2)
        cluster.start()
        with psycopg.connect(first) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        with psycopg.connect(second) as conn:  # a fresh database has none of the other's tables
            assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)
        root = cluster.root
    assert not root.exists()


def test_missing_binaries_are_a_clear_error(tmp_path: Path) -> None:
    cluster = PostgresCluster(binaries=tmp_path / "no-such-bin")
    with pytest.raises(PostgresUnavailable, match="initdb"):
        cluster.__enter__()
    assert not cluster.root.exists()
