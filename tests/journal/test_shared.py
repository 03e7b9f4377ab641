"""A journal several hosts share: host ids, leases across hosts, shared budgets, schema races, outages.

Most tests run on both backends (``journal``): SQLite must keep the same
semantics between processes that PostgreSQL gives between hosts.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flowxfer.journal import (
    SCHEMA_VERSION,
    ChunkState,
    FileState,
    InventoryRecord,
    Journal,
    JournalBatch,
    JournalError,
    JournalUnavailableError,
    LeaseHeld,
    LeaseLost,
    NewFile,
)
from flowxfer.journal._schema import MIGRATIONS, POSTGRES_MIGRATIONS, split_sql
from tests.journal.test_postgres_batch import chunks_fillfactor
from tests.support.postgres import PostgresCluster


def _holder(journal: Journal, key: str) -> str:
    held = journal.lease_holder(key)
    assert held is not None
    return held[1]


# --- host ids ---------------------------------------------------------------------


def test_every_record_says_which_host_wrote_it(journal: Journal) -> None:
    journal.host = "ingest-1"
    record, lease, _ = journal.begin_transfer("upload", "s", "u", {}, "k")
    assert record.host == "ingest-1"
    journal.add_files(record.id, [NewFile("/a", "a", 1)])
    batch = JournalBatch()
    batch.remember(InventoryRecord("s", "u", "up", "/a", "a", 1, 1, None, "d1"))
    journal.commit(batch)
    journal.host = "ingest-2"
    (file,) = journal.iter_files(record.id)
    journal.set_file(file.id, status=FileState.ACTIVE)
    journal.update_buckets("s", "u", lambda stored: {"api": {"tokens": 1}})
    hosts = {
        table: {row["host"] for row in journal._read(f"SELECT host FROM {table}")}
        for table in ("transfers", "files", "inventory", "buckets")
    }
    assert hosts == {
        "transfers": {"ingest-1"},
        "files": {"ingest-2"},
        "inventory": {"ingest-1"},
        "buckets": {"ingest-2"},
    }
    lease.release()


def test_the_host_id_comes_from_the_argument_the_environment_or_the_hostname(
    journal_location: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with Journal.open(journal_location) as journal:
        assert journal.host == socket.gethostname()
    monkeypatch.setenv("FLOWXFER_HOST_ID", "sequencer-7")
    with Journal.open(journal_location) as journal:
        assert journal.host == "sequencer-7"
    with Journal.open(journal_location, host_id="explicit") as journal:
        assert journal.host == "explicit"


# --- leases across hosts ------------------------------------------------------------


def test_another_host_s_lease_is_taken_over_only_after_its_ttl(journal: Journal) -> None:
    journal.host = "host-a"
    record, lease, _ = journal.begin_transfer("sync", "s", "u", {}, "run-1", stale_after=0.5)
    with Journal.open(journal.location, host_id="host-b") as other:
        # Same pid as ours on another host: pid liveness says nothing across hosts, the heartbeat does.
        with pytest.raises(LeaseHeld) as info:
            other.begin_transfer("sync", "s", "u", {}, "run-1")
        assert info.value.host == "host-a"
        lease.heartbeat()
        time.sleep(0.2)
        with pytest.raises(LeaseHeld):  # the heartbeat renewed it
            other.begin_transfer("sync", "s", "u", {}, "run-1")
        time.sleep(0.6)
        # a's TTL (0.5 s) has passed, though not b's own (60 s): the holder's TTL is the one that counts.
        taken, heir, resumed = other.begin_transfer("sync", "s", "u", {}, "run-1")
        assert resumed and taken.id == record.id and taken.host == "host-b"
        assert _holder(journal, heir.key) == "host-b"
        # The old holder's token no longer counts: its release leaves the heir's lease alone.
        lease.release()
        assert _holder(journal, heir.key) == "host-b"
        assert not journal.heartbeat_held(heir.key)


def test_a_lease_held_with_a_long_ttl_is_not_taken_by_a_host_with_a_short_one(journal: Journal) -> None:
    """a runs with --lease-ttl 600 (heartbeats minutes apart); b, with 0.3 s, must wait a's 600 s."""
    journal.host = "host-a"
    journal.acquire_lease("sync:/runs/r1", stale_after=600)
    with Journal.open(journal.location, host_id="host-b") as other:
        time.sleep(0.5)
        with pytest.raises(LeaseHeld) as info:
            other.acquire_lease("sync:/runs/r1", stale_after=0.3)
        assert info.value.host == "host-a"
        # b's lease stores b's TTL in turn: once it is silent for 0.3 s, a takes it back.
        other.acquire_lease("sync:/runs/r2", stale_after=0.3)
        time.sleep(0.5)
        journal.acquire_lease("sync:/runs/r2", stale_after=600)
        assert _holder(other, "sync:/runs/r2") == "host-a"


def _progress(file_id: int) -> JournalBatch:
    """A file's first chunk acknowledged and its bytes counted: what a host records as it uploads."""
    batch = JournalBatch()
    batch.file_state(file_id, FileState.ACTIVE)
    batch.chunk(file_id, 0, ChunkState.ACKED, "c0")
    batch.update_file(file_id, bytes_done=4)
    return batch


def test_a_host_that_lost_its_lease_commits_nothing_beside_the_new_holder(journal: Journal) -> None:
    """a was frozen past its TTL with progress unrecorded; b took over; a's fenced commit writes nothing."""
    journal.host = "host-a"
    record, lease, _ = journal.begin_transfer("upload", "s", "u", {}, "run-1", stale_after=0.3)
    journal.add_files(record.id, [NewFile("/run/a", "a", 8), NewFile("/run/b", "b", 8)])
    first, second = journal.iter_files(record.id)
    plan = JournalBatch()
    for file in (first, second):
        plan.plan_chunks(file.id, [(0, 4), (4, 4)])
    journal.commit(plan, fence=lease)
    pending = _progress(first.id)
    pending.chunk(second.id, 1, ChunkState.ACKED, "c1")  # rows b never touches: only a fence keeps them b's
    time.sleep(0.5)
    with Journal.open(journal.location, host_id="host-b") as other:
        _taken, heir, resumed = other.begin_transfer("upload", "s", "u", {}, "run-1")
        assert resumed
        other.commit(_progress(first.id), fence=heir)
        with pytest.raises(LeaseLost):
            journal.commit(pending, fence=lease)
        files = other._read("SELECT host, status, bytes_done FROM files ORDER BY id")
        assert [(f["host"], f["status"], f["bytes_done"]) for f in files] == [
            ("host-b", "active", 4),
            ("host-a", "planned", 0),  # added by a before the takeover, untouched since
        ]
        chunks = other._read("SELECT file_id, idx, state, checksum FROM chunks ORDER BY file_id, idx")
        assert [(c["file_id"], c["idx"], c["state"], c["checksum"]) for c in chunks] == [
            (first.id, 0, "acked", "c0"),
            (first.id, 1, "planned", None),
            (second.id, 0, "planned", None),
            (second.id, 1, "planned", None),
        ]
        # The heir's fence holds: its own commits go on.
        more = JournalBatch()
        more.chunk(first.id, 1, ChunkState.ACKED, "c1")
        other.commit(more, fence=heir)
        assert other.chunks(first.id)[1].state is ChunkState.ACKED


def test_a_dead_process_s_lease_on_the_same_host_is_free_at_once(journal: Journal) -> None:
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    assert child.pid is not None
    journal.host, journal.pid = "host-a", child.pid
    journal.begin_transfer("sync", "s", "u", {}, "run-1")
    with Journal.open(journal.location, host_id="host-b") as stranger:
        # Another host cannot see host-a's pids: to it, the lease is held until its TTL.
        with pytest.raises(LeaseHeld):
            stranger.begin_transfer("sync", "s", "u", {}, "run-1", stale_after=3600)
    with Journal.open(journal.location, host_id="host-a") as heir:
        _record, lease, resumed = heir.begin_transfer("sync", "s", "u", {}, "run-1", stale_after=3600)
        assert resumed and heir.lease_holder(lease.key) == (heir.pid, "host-a", pytest.approx(time.time(), abs=30))


def _at_once(journal: Journal, claim: Callable[[Journal, int], str], rounds: int = 1) -> list[list[str]]:
    """``claim(host, round)`` run by six hosts at the same moment, ``rounds`` times; per round, what
    each host got (``"held"``: LeaseHeld). Rounds widen the window a lost race needs to show."""
    hosts = [Journal.open(journal.location, host_id=f"host-{i}") for i in range(6)]
    barrier = threading.Barrier(len(hosts))
    outcomes: list[list[str]] = [[] for _ in range(rounds)]

    def start(host: Journal) -> None:
        for number in range(rounds):
            barrier.wait(30)
            try:
                outcomes[number].append(claim(host, number))
            except LeaseHeld:
                outcomes[number].append("held")

    try:
        threads = [threading.Thread(target=start, args=(host,)) for host in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for host in hosts:
            host.close()
    return outcomes


def test_hosts_starting_the_same_command_at_once_get_one_transfer(journal: Journal) -> None:
    outcomes = _at_once(journal, lambda host, n: host.begin_transfer("sync", "s", "u", {}, f"run-{n}")[0].id, 5)
    assert [claims.count("held") for claims in outcomes] == [5] * 5
    assert len(journal.list_transfers(include_finished=True)) == 5


def test_hosts_claiming_one_lease_at_once_one_gets_it(journal: Journal) -> None:
    outcomes = _at_once(journal, lambda host, n: host.acquire_lease(f"bulk:job-{n}").token, 10)
    assert [claims.count("held") for claims in outcomes] == [5] * 10


# --- shared budgets ------------------------------------------------------------------


def test_buckets_are_one_budget_across_hosts(journal: Journal) -> None:
    """Two hosts spending from one budget at once, many threads each: no spending is lost."""

    def spend(stored: dict[str, Any]) -> dict[str, Any]:
        tokens = stored.get("upload", {"tokens": 1000})["tokens"]
        time.sleep(0.001)  # widen the read-to-write window a lost update would need
        return {"upload": {"tokens": tokens - 1}}

    others = [Journal.open(journal.location, host_id=f"host-{i}") for i in range(2)]
    try:

        def spend_ten(host: Journal) -> None:
            for _ in range(10):
                host.update_buckets("s", "u", spend)

        threads = [threading.Thread(target=spend_ten, args=(host,)) for host in others for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for other in others:
            other.close()
    assert journal.update_buckets("s", "u", lambda stored: stored) == {"upload": {"tokens": 1000 - 80}}


# --- PostgreSQL: schema, migrations, outages ------------------------------------------------


def test_both_backends_reach_the_same_schema(tmp_path: Path, postgres_url: str) -> None:
    with Journal.open(tmp_path / "j.db") as lite, Journal.open(postgres_url) as pg:
        tables = [r["name"] for r in lite._read("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        assert {
            r["table_name"]
            for r in pg._read("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        } == {*tables, "schema_migrations"}
        for table in tables:
            assert lite._backend.columns(table) == pg._backend.columns(table), table
        assert pg._read("SELECT max(version) AS v FROM schema_migrations")[0]["v"] == SCHEMA_VERSION
        assert lite.check_integrity() == pg.check_integrity() == []


def test_a_schema_4_journal_s_leases_keep_the_ttl_every_host_used_then(tmp_path: Path, postgres_url: str) -> None:
    """Migration 5 on both backends: a lease written before TTLs were stored is judged by 60 s."""
    lease = "INSERT INTO leases (key, token, pid, host, since, heartbeat) VALUES ('sync:/r', 't', 1, 'old', ?, ?)"
    lite = sqlite3.connect(tmp_path / "old.db")
    for script in MIGRATIONS[:4]:
        lite.executescript(script)
    lite.execute(lease, (time.time() - 30, time.time() - 30))
    lite.execute("PRAGMA user_version=4")
    lite.commit()
    lite.close()
    with psycopg.connect(postgres_url, autocommit=True) as pg:
        pg.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
        for version, script in POSTGRES_MIGRATIONS[:2]:
            for statement in split_sql(script):
                pg.execute(statement)
            pg.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (version,))
        pg.execute(lease.replace("?", "%s"), (time.time() - 30, time.time() - 30))
    for location in (tmp_path / "old.db", postgres_url):
        with Journal.open(location, host_id="new") as journal:
            assert journal._read("SELECT ttl FROM leases") == [{"ttl": 60}]
            with pytest.raises(LeaseHeld):  # silent for 30 s: stale by a 10 s TTL, not by the stored 60 s
                journal.acquire_lease("sync:/r", stale_after=10)
            assert journal.check_integrity() == []


def _open_and_close(url: str, barrier: Any, errors: Any) -> None:
    barrier.wait(30)
    try:
        Journal.open(url).close()
    except Exception as exc:  # reported to the parent: a failed open is what this test looks for
        errors.put(repr(exc))


def test_hosts_starting_at_once_on_an_empty_database_create_the_schema_once(postgres_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_open_and_close, args=(postgres_url, barrier, errors)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    assert errors.empty()
    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _ in POSTGRES_MIGRATIONS]


def test_hosts_upgrading_a_schema_5_journal_at_once_run_migration_6_once(postgres_url: str) -> None:
    """Migration 6 (chunks' fillfactor) under the same race as the first start: applied once, by one host."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
        for version, script in POSTGRES_MIGRATIONS[:-1]:
            for statement in split_sql(script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (version,))
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_and_close, args=(postgres_url, barrier, errors)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 4
    assert errors.empty()
    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _ in POSTGRES_MIGRATIONS]
    assert chunks_fillfactor(postgres_url) == ["fillfactor=40"]


def test_a_postgresql_outage_is_unavailable_then_the_same_journal_works_again(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    journal = Journal.open(postgres_url, connect_timeout=1)
    try:
        record, lease, _ = journal.begin_transfer("upload", "s", "u", {}, "k")
        journal.add_files(record.id, [NewFile("/a", "a", 10)])
        postgres_cluster.stop()
        try:
            for call in (
                lambda: journal.list_transfers(),
                lambda: journal.add_files(record.id, [NewFile("/b", "b", 1)]),
                lambda: lease.heartbeat(),
                lambda: journal.update_buckets("s", "u", lambda stored: stored),
            ):
                started = time.monotonic()
                with pytest.raises(JournalUnavailableError, match="unreachable|unavailable"):
                    call()
                assert time.monotonic() - started < 10
        finally:
            postgres_cluster.start()
        # The pool finds its old connections dead and opens new ones: no reopening needed.
        assert [f.local_path for f in journal.iter_files(record.id)] == ["/a"]
        journal.add_files(record.id, [NewFile("/b", "b", 1)])
        lease.heartbeat()
        assert journal.summary(record.id).files_total == 2
    finally:
        journal.close()


def test_an_unreachable_server_at_open_is_unavailable(postgres_cluster: PostgresCluster) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres_cluster.port + 1 if postgres_cluster.port < 65535 else 1}/x"
    with pytest.raises(JournalUnavailableError, match="unreachable"):
        Journal.open(url, connect_timeout=1)


def test_a_database_that_refuses_the_login_is_a_usage_error_not_an_outage(postgres_cluster: PostgresCluster) -> None:
    """A missing database (or a refused password) will not pass by waiting: JournalError, in the server's words."""
    missing = postgres_cluster.url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(JournalError, match='refused us: .*database "no_such_database" does not exist') as caught:
        Journal.open(missing, connect_timeout=1)
    assert not isinstance(caught.value, JournalUnavailableError)


def test_a_refused_password_is_a_usage_error_at_once_and_never_shown(postgres_cluster: PostgresCluster) -> None:
    """One round trip, not the pool's timeout (which the old open waited out before asking why)."""
    postgres_cluster.start()
    role = postgres_cluster.add_password_role("pw_journal", "Zright-pw")
    wrong = f"postgresql://{role}:Zwrong-pw@127.0.0.1:{postgres_cluster.port}/{role}"
    began = time.monotonic()
    with pytest.raises(JournalError, match="refused us: .*password authentication failed") as caught:
        Journal.open(wrong, connect_timeout=30)
    assert time.monotonic() - began < 5
    assert not isinstance(caught.value, JournalUnavailableError)
    assert "Zwrong-pw" not in str(caught.value) and "***" in str(caught.value)
    right = wrong.replace("Zwrong-pw", "Zright-pw")
    Journal.open(right, connect_timeout=30).close()


# --- migrate_journal ----------------------------------------------------------------------


def _unfinished_sqlite_journal(path: Path) -> tuple[str, int]:
    """A journal with a transfer stopped half-way: one file done, one with half its chunks acked."""
    from flowxfer.journal import NewSample, SampleInventoryRecord, TransferState

    with Journal.open(path, host_id="old-host") as journal:
        record, lease, _ = journal.begin_transfer("upload", "s", "alice", {"paths": ["/run"]}, "cmd")
        journal.add_files(record.id, [NewFile("/run/a", "a", 100, 1), NewFile("/run/b", "b", 400, 2)])
        a, b = journal.iter_files(record.id)
        batch = JournalBatch()
        batch.plan_chunks(b.id, [(0, 100), (100, 100), (200, 100), (300, 100)])
        batch.file_state(b.id, FileState.ACTIVE, chunk_size=100, bytes_done=200, data_id="d-b")
        batch.chunk(b.id, 0, ChunkState.ACKED, "c0")
        batch.chunk(b.id, 1, ChunkState.ACKED, "c1")
        batch.file_state(a.id, FileState.DONE, data_id="d-a")
        batch.remember(InventoryRecord("s", "alice", "up", "/run/a", "a", 100, 1, "x", "d-a"))
        journal.commit(batch)
        journal.update_transfer_state(record.id, note="kept")
        journal.update_buckets("s", "alice", lambda stored: {"upload": {"tokens": 42.5}})
        journal.add_samples(record.id, [NewSample(1, "S1", {"sample_type": "RNA"})])
        journal.remember_sample(SampleInventoryRecord("s", "alice", "S0", "99", {}, ("d0",)))
        journal.finish_transfer(record.id, TransferState.INTERRUPTED)
        lease.release()
        return record.id, b.id


def _everything(journal: Journal, transfer_id: str) -> dict[str, Any]:
    files = list(journal.iter_files(transfer_id))
    return {
        "transfer": journal.get_transfer(transfer_id),
        "files": files,
        "chunks": {f.id: journal.chunks(f.id) for f in files},
        "inventory": journal.lookup_inventory("s", "alice", "up", [("/run/a", "a")]),
        "samples": journal.samples_of(transfer_id),
        "sample_inventory": list(journal.iter_sample_inventory("s", "alice")),
        "summary": journal.summary(transfer_id),
    }


def test_a_migrated_journal_reads_back_identically_and_resumes(tmp_path: Path, postgres_url: str) -> None:
    from flowxfer.journal import JournalError, migrate_journal

    transfer_id, half_done = _unfinished_sqlite_journal(tmp_path / "j.db")
    with Journal.open(tmp_path / "j.db") as source, Journal.open(postgres_url, host_id="new-host") as destination:
        counts = migrate_journal(source, destination, batch_size=1)  # batches of one: paging is exercised
        assert counts["transfers"] == 1 and counts["files"] == 2 and counts["chunks"] == 4
        assert _everything(destination, transfer_id) == _everything(source, transfer_id)
        assert destination.update_buckets("s", "alice", lambda stored: stored) == {"upload": {"tokens": 42.5}}
        with pytest.raises(JournalError, match="not empty"):
            migrate_journal(source, destination)
        # The same command on the new journal continues the old transfer where it stood.
        record, lease, resumed = destination.begin_transfer("upload", "s", "alice", {"paths": ["/run"]}, "cmd")
        assert resumed and record.id == transfer_id and record.host == "new-host"
        assert [c.state for c in destination.chunks(half_done)][:2] == [ChunkState.ACKED] * 2
        # New rows get ids after the copied ones.
        destination.add_files(transfer_id, [NewFile("/run/c", "c", 1)])
        assert max(f.id for f in destination.iter_files(transfer_id)) > half_done
        lease.release()


def test_a_lock_held_past_busy_timeout_is_busy_not_unavailable(postgres_url: str) -> None:
    from flowxfer.journal import JournalBusyError

    with Journal.open(postgres_url, busy_timeout=0.3) as journal, psycopg.connect(postgres_url) as stuck:
        # Another host inside update_buckets for the same budget, and stuck there.
        stuck.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("flowxfer:buckets:s\nu",))
        started = time.monotonic()
        with pytest.raises(JournalBusyError, match="busy"):
            journal.update_buckets("s", "u", lambda stored: stored)
        assert time.monotonic() - started < 5
        stuck.rollback()
        assert journal.update_buckets("s", "u", lambda stored: {"api": {"tokens": 1}}) == {"api": {"tokens": 1}}


def test_a_newer_or_foreign_postgresql_schema_is_refused(postgres_cluster: PostgresCluster) -> None:
    from flowxfer.journal import JournalCorruptError, JournalVersionError

    newer = postgres_cluster.new_database()
    Journal.open(newer).close()
    with psycopg.connect(newer) as conn:
        conn.execute("INSERT INTO schema_migrations (version, applied) VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(JournalVersionError, match="newer"):
        Journal.open(newer)
    foreign = postgres_cluster.new_database()
    with psycopg.connect(foreign) as conn:
        conn.execute("CREATE TABLE transfers (what text)")
    with pytest.raises(JournalCorruptError, match="not a flowxfer journal"):
        Journal.open(foreign)
