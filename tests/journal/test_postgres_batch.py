"""What makes a batch cheap on PostgreSQL: its statement's plan is cached, its chunks' rows are updated in place.

Both are properties of the server's work, not of the rows written (the journal suite checks those
on both backends): a plan made again on every commit, or a chunk's update that moves its row to
another page, writes the same rows, only slower.
"""

from __future__ import annotations

import psycopg
import pytest

from flowxfer.journal import ChunkState, Journal, JournalBatch, JournalUnavailableError, NewFile
from flowxfer.journal._schema import POSTGRES_MIGRATIONS, split_sql
from flowxfer.journal._states import IllegalTransition
from tests.support.postgres import PostgresCluster

CHUNKS = 400


def _planned_file(journal: Journal, chunks: int = CHUNKS) -> int:
    record, _, _ = journal.begin_transfer("upload", "http://s", "u", {}, "k")
    journal.add_files(record.id, [NewFile(local_path="/f", remote_name="f", size=chunks)])
    (file,) = list(journal.iter_files(record.id))
    plan = JournalBatch()
    plan.plan_chunks(file.id, [(index, 1) for index in range(chunks)])
    journal.commit(plan)
    return file.id


def _ack(journal: Journal, file_id: int, indexes: range) -> None:
    batch = JournalBatch()
    for index in indexes:
        batch.chunk(file_id, index, ChunkState.ACKED, f"{index:032x}")
    batch.update_file(file_id, bytes_done=indexes.stop)
    journal.commit(batch)


def _blocks(journal: Journal) -> dict[int, int]:
    """Each chunk's page: ``ctid`` is ``(page, slot)``; an update that leaves its page changes it."""
    rows = journal._read("SELECT idx, CAST((CAST(CAST(ctid AS TEXT) AS POINT))[0] AS BIGINT) AS page FROM chunks")
    return {row["idx"]: row["page"] for row in rows}


def chunks_fillfactor(url: str) -> list[str] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'chunks'").fetchone()
    assert row is not None
    return row[0]


def test_one_chunk_batches_are_planned_once_not_on_every_commit(postgres_url: str) -> None:
    """PostgreSQL caches the batch statement's generic plan (custom plans only for its first runs).

    Before, a custom plan of a one-chunk batch looked cheaper than the generic one, so every
    commit was planned again: two thirds of the server's time for it.
    """
    with Journal.open(postgres_url, max_connections=1) as journal:
        file_id = _planned_file(journal)
        for index in range(30):
            _ack(journal, file_id, range(index, index + 1))
        plans = journal._read(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'WITH w0 AS (UPDATE chunks%'"
        )
        assert len(plans) == 1, plans
        assert plans[0]["custom_plans"] <= 5 and plans[0]["generic_plans"] >= 20, plans[0]
        assert journal._read("SELECT count(*) AS n FROM chunks WHERE state = 'acked'") == [{"n": 30}]


def test_a_generic_plan_still_refuses_an_illegal_change_and_writes_nothing(postgres_url: str) -> None:
    """The refusal is in the cached plan too: it fails the commit from the row's state, not at planning."""
    with Journal.open(postgres_url, max_connections=1) as journal:
        file_id = _planned_file(journal)
        for index in range(12):  # past the custom plans: the next commits run the generic one
            _ack(journal, file_id, range(index, index + 1))
        verify = JournalBatch()
        verify.verify_chunks(file_id)
        journal.commit(verify)  # chunks 0-11 verified: acked may not follow
        batch = JournalBatch()
        batch.chunk(file_id, 3, ChunkState.ACKED, "f" * 32)
        batch.update_file(file_id, bytes_done=999)
        with pytest.raises(IllegalTransition, match="chunk cannot go from verified to acked"):
            journal.commit(batch)
        assert journal._read("SELECT state, checksum FROM chunks WHERE idx = 3") == [
            {"state": "verified", "checksum": f"{3:032x}"}
        ]
        assert journal._read("SELECT bytes_done FROM files WHERE id = ?", (file_id,)) == [{"bytes_done": 12}]


def test_a_chunk_s_acknowledgement_keeps_its_row_on_its_page(postgres_url: str) -> None:
    """Migration 6 leaves room in chunks' pages: an update is a HOT one, with no new index entry."""
    with Journal.open(postgres_url) as journal:
        file_id = _planned_file(journal)
        before = _blocks(journal)
        assert len(set(before.values())) > 1  # several pages: the rows' neighbours are real
        for first in range(0, CHUNKS, 128):
            _ack(journal, file_id, range(first, min(first + 128, CHUNKS)))
        assert journal._read("SELECT count(*) AS n FROM chunks WHERE state = 'acked'") == [{"n": CHUNKS}]
        assert _blocks(journal) == before
    assert chunks_fillfactor(postgres_url) == ["fillfactor=40"]


def test_a_schema_5_journal_gets_room_for_its_new_chunks(postgres_url: str) -> None:
    """Upgrade: migration 6 runs on a journal at version 5; its chunks and their plans stay as they were."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
        for version, script in POSTGRES_MIGRATIONS:
            if version <= 5:
                for statement in split_sql(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (version,))
        conn.execute(
            "INSERT INTO transfers (id, kind, status, server, params, params_key, created, updated) "
            "VALUES ('t', 'upload', 'active', 's', '{}', 'k', 0, 0)"
        )
        conn.execute(
            "INSERT INTO files (id, transfer_id, local_path, status, updated) VALUES (1, 't', '/f', 'active', 0)"
        )
        conn.execute("INSERT INTO chunks VALUES (1, 0, 0, 1, NULL, 'planned'), (1, 1, 1, 1, NULL, 'planned')")
    assert chunks_fillfactor(postgres_url) is None
    with Journal.open(postgres_url) as journal:
        assert journal.check_integrity() == []
        _ack(journal, 1, range(0, 2))
        assert journal._read("SELECT idx, state FROM chunks ORDER BY idx") == [
            {"idx": 0, "state": "acked"},
            {"idx": 1, "state": "acked"},
        ]
        assert journal._read("SELECT version FROM schema_migrations ORDER BY version") == [
            {"version": version} for version in (3, 4, 5, 6)
        ]
    assert chunks_fillfactor(postgres_url) == ["fillfactor=40"]


def test_a_batch_s_shape_is_prepared_from_its_second_commit_on(postgres_url: str) -> None:
    """A shape that comes once (a file's plan, its end) costs no round trip to prepare it; one that recurs is.

    Sent through libpq by the journal itself: an unnamed statement the first time, in the round
    trip that runs it; then prepared under a name of its own, its plan cached by the server.
    """
    with Journal.open(postgres_url, max_connections=1) as journal:
        file_id = _planned_file(journal)

        def prepared() -> list[dict[str, object]]:
            return journal._read(
                "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH w0 AS (UPDATE chunks%'"
            )

        _ack(journal, file_id, range(0, 1))
        assert prepared() == []
        _ack(journal, file_id, range(1, 2))
        assert prepared() == [{"name": "flowxfer_0"}]
        _ack(journal, file_id, range(2, 3))
        assert prepared() == [{"name": "flowxfer_0"}]
        assert journal._read("SELECT idx FROM chunks WHERE state = 'acked' ORDER BY idx") == [
            {"idx": 0},
            {"idx": 1},
            {"idx": 2},
        ]


def test_batches_ride_out_a_restart_on_the_connection_kept_for_them(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """The connection kept for batches dies with the server: the batch the outage met is unavailable, the next lands."""
    with Journal.open(postgres_url, connect_timeout=1) as journal:
        file_id = _planned_file(journal)
        _ack(journal, file_id, range(0, 2))
        _ack(journal, file_id, range(2, 4))  # the kept connection has its statement prepared
        postgres_cluster.stop()
        try:
            with pytest.raises(JournalUnavailableError):
                _ack(journal, file_id, range(4, 6))
        finally:
            postgres_cluster.start()
        _ack(journal, file_id, range(4, 6))
        _ack(journal, file_id, range(6, 8))
        assert journal._read("SELECT count(*) AS n FROM chunks WHERE state = 'acked'") == [{"n": 8}]
        assert journal._read("SELECT bytes_done FROM files WHERE id = ?", (file_id,)) == [{"bytes_done": 8}]
