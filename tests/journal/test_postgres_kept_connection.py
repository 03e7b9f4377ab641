"""The connection a PostgreSQL journal keeps for its batches: faults on it, and threads sharing it.

A batch goes on a connection the backend keeps out of its pool, its statement sent through libpq
directly (journal/_postgres.py). Each test here is a fault that connection must survive without a
batch lost, written twice or sent on a connection another thread is using.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from flowxfer.journal import Journal, JournalUnavailableError
from tests.journal.test_postgres_batch import _ack, _planned_file


def _terminate_writer(url: str) -> int:
    """Cut every session of ``url``'s database but this admin one (the journal's kept one among them)."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _alarm_once_waiting(url: str) -> threading.Thread:
    """A thread that sends this process SIGALRM once a session of ``url``'s database waits on a lock.

    The main thread is then inside the journal's wait for that statement's answer: where its
    signal handler runs.
    """
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall():
                    break
                time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGALRM)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def _ack_interrupted(
    postgres_url: str,
    journal: Journal,
    file_id: int,
    chunks: range,
    interrupt: Callable[[int, Any], None],
    raised: type[BaseException],
) -> None:
    """Acknowledge ``chunks``; ``interrupt`` runs (SIGALRM) once the batch waits on a lock and raises ``raised``."""
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        watcher = _alarm_once_waiting(postgres_url)
        with pytest.raises(raised):
            _ack(journal, file_id, chunks)
        watcher.join(10)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _acked(journal: Journal) -> int:
    return int(journal._read("SELECT count(*) AS n FROM chunks WHERE state = 'acked'")[0]["n"])


def test_a_kept_connection_cut_while_idle_costs_no_batch(postgres_url: str) -> None:
    """Idle past ``_TRUSTED_FOR``, the kept connection is checked before a batch, as a pooled one is."""
    with Journal.open(postgres_url, connect_timeout=2) as journal:
        file_id = _planned_file(journal)
        _ack(journal, file_id, range(0, 2))
        _ack(journal, file_id, range(2, 4))
        assert _terminate_writer(postgres_url) >= 1
        time.sleep(2.2)  # idle past _TRUSTED_FOR: checked before it is used again
        _ack(journal, file_id, range(4, 6))
        assert _acked(journal) == 6


def test_a_batch_cut_while_it_waits_writes_nothing(postgres_url: str) -> None:
    """Its session cut mid-statement, a batch is unavailable (waited out and retried whole), not half-written."""
    with Journal.open(postgres_url, connect_timeout=2) as journal:
        file_id = _planned_file(journal)
        _ack(journal, file_id, range(0, 2))
        _ack(journal, file_id, range(2, 4))
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT * FROM chunks WHERE idx = 4 FOR UPDATE")
            failed: list[BaseException] = []

            def commit() -> None:
                try:
                    _ack(journal, file_id, range(4, 6))
                except BaseException as exc:
                    failed.append(exc)

            thread = threading.Thread(target=commit)
            thread.start()
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                deadline = time.monotonic() + 10
                while True:
                    rows = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchall()
                    if rows or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                assert rows
                admin.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
            thread.join(10)
            holder.rollback()
        assert len(failed) == 1 and isinstance(failed[0], JournalUnavailableError), failed
        assert _acked(journal) == 4
        _ack(journal, file_id, range(4, 6))
        assert _acked(journal) == 6


def test_threads_committing_at_once_each_land(postgres_url: str) -> None:
    """Worker threads commit at once: one has the kept connection, the others go through the pool."""
    with Journal.open(postgres_url, connect_timeout=5, max_connections=3) as journal:
        file_id = _planned_file(journal, 800)
        errors: list[BaseException] = []

        def work(first: int) -> None:
            try:
                for start in range(first, first + 200, 2):
                    _ack(journal, file_id, range(start, start + 2))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(first,)) for first in range(0, 800, 200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert _acked(journal) == 800


def test_a_prepare_interrupted_after_the_server_made_it_does_not_spoil_its_name(postgres_url: str) -> None:
    """Ctrl-C while the journal prepares a batch's statement, after the server made it: the next batch lands.

    psycopg's own wait, interrupted, cancels the statement and reads its answer before it raises;
    a statement already made stays made under its name. A name the connection already used must
    not be asked for again (the server would refuse it: it exists), or every batch of that shape on
    that connection would fail from then on.
    """
    with Journal.open(postgres_url, connect_timeout=5) as journal:
        file_id = _planned_file(journal)
        _ack(journal, file_id, range(0, 2))  # seen once: the next one of this shape is prepared
        with psycopg.connect(postgres_url) as holder:
            holder.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")  # the PREPARE waits for it

            def interrupt(signum: int, frame: object) -> None:
                holder.commit()  # the PREPARE goes through...
                time.sleep(0.5)  # ...and is made before the interrupt
                raise KeyboardInterrupt

            _ack_interrupted(postgres_url, journal, file_id, range(2, 4), interrupt, KeyboardInterrupt)
        _ack(journal, file_id, range(4, 6))
        _ack(journal, file_id, range(6, 8))
        assert journal._read("SELECT idx FROM chunks WHERE state = 'acked' AND idx >= 4 ORDER BY idx") == [
            {"idx": index} for index in range(4, 8)
        ]


class _Raised(Exception):
    """Raised by a signal handler while a batch waits for its answer (psycopg only cancels on Ctrl-C)."""


def test_a_kept_connection_left_mid_statement_is_given_back_to_its_pool(postgres_url: str) -> None:
    """Left waiting for its answer, the kept connection is closed, and its pool told so: no slot is lost.

    A pool of two connections that still counted the closed one would have one for the next kept
    connection and none for anything else: the next read would wait out the pool's timeout and
    find the journal "unreachable".
    """
    with Journal.open(postgres_url, connect_timeout=2, max_connections=2) as journal:
        file_id = _planned_file(journal)
        _ack(journal, file_id, range(0, 2))
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT * FROM chunks WHERE idx = 2 FOR UPDATE")  # the next batch waits for it

            def interrupt(signum: int, frame: object) -> None:
                raise _Raised

            _ack_interrupted(postgres_url, journal, file_id, range(2, 4), interrupt, _Raised)
            with psycopg.connect(postgres_url, autocommit=True) as admin:  # the abandoned statement's session
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            holder.rollback()
        _ack(journal, file_id, range(4, 6))
        rows = journal._read("SELECT idx FROM chunks WHERE state = 'acked' ORDER BY idx")
        assert [row["idx"] for row in rows] == [0, 1, 4, 5]
