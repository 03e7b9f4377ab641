from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from flowxfer.journal import (
    SCHEMA_VERSION,
    ChunkState,
    FileState,
    IllegalTransition,
    InventoryRecord,
    Journal,
    JournalBatch,
    JournalCorruptError,
    JournalError,
    JournalVersionError,
    LeaseHeld,
    NewFile,
    TransferState,
)


def _begin(journal: Journal, key: str = "k") -> str:
    record, _lease, _resumed = journal.begin_transfer("upload", "http://127.0.0.1:1", "alice", {"p": 1}, key)
    return record.id


# --- opening -------------------------------------------------------------------


def test_open_creates_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "j.db"
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    Journal.open(path).close()  # reopening an up-to-date journal changes nothing


def test_garbage_file_is_refused_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalCorruptError, match="not a usable flowxfer journal"):
        Journal.open(path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalCorruptError, match="not a flowxfer journal"):
        Journal.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(JournalVersionError, match="newer"):
        Journal.open(path)


def test_directory_as_journal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="directory"):
        Journal.open(tmp_path)


def test_truncated_journal_reports_damage(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    tid = _begin(j)
    j.add_files(tid, [NewFile(f"/f{i}", size=i) for i in range(3000)])
    j.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
    with pytest.raises(JournalError):
        j = Journal.open(path)
        try:
            list(j.iter_files(tid))
            assert j.check_integrity() == []
        finally:
            j.close()


# --- transfers and leases --------------------------------------------------------


def test_same_command_resumes_until_completed(journal: Journal) -> None:
    first, lease, resumed = journal.begin_transfer("upload", "s", "u", {"a": 1}, "key")
    assert not resumed
    lease.release()
    journal.finish_transfer(first.id, TransferState.INTERRUPTED)
    again, lease, resumed = journal.begin_transfer("upload", "s", "u", {"a": 1}, "key")
    assert resumed and again.id == first.id and again.status == "running"
    lease.release()
    journal.finish_transfer(first.id, TransferState.COMPLETED)
    fresh, lease, resumed = journal.begin_transfer("upload", "s", "u", {"a": 1}, "key")
    assert not resumed and fresh.id != first.id
    lease.release()


def test_lease_held_by_a_live_process_is_refused(journal: Journal, tmp_path: Path) -> None:
    tid = _begin(journal, "key")
    other = Journal.open(journal.location)
    other.pid = os.getppid()  # a live process that is not us
    try:
        with pytest.raises(LeaseHeld) as info:
            other.begin_transfer("upload", "s", "u", {}, "key")
        assert info.value.pid == os.getpid()
        assert "already running" in str(info.value)
        assert other.get_transfer(tid) is not None
    finally:
        other.close()


def test_lease_of_a_dead_process_is_taken_over(journal: Journal) -> None:
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    dead_pid = child.pid
    assert dead_pid is not None
    journal.pid = dead_pid
    _begin(journal, "key")
    heir = Journal.open(journal.location)
    try:
        record, lease, resumed = heir.begin_transfer("upload", "s", "u", {}, "key")
        assert resumed
        assert heir.lease_holder(lease.key)[0] == os.getpid()
    finally:
        heir.close()


def test_stale_heartbeat_lease_is_taken_over(journal: Journal) -> None:
    journal.host = "another-host"  # pid liveness cannot be checked across hosts
    journal.begin_transfer("upload", "s", "u", {}, "key", stale_after=0.3)  # the holder's TTL is what counts
    heir = Journal.open(journal.location)
    try:
        with pytest.raises(LeaseHeld):
            heir.begin_transfer("upload", "s", "u", {}, "key", stale_after=60)
        time.sleep(0.5)
        record, lease, resumed = heir.begin_transfer("upload", "s", "u", {}, "key", stale_after=60)
        assert resumed
    finally:
        heir.close()


def _race(path: str, barrier_path: str, result_path: str, other_result_path: str) -> None:
    while not os.path.exists(barrier_path):
        time.sleep(0.001)
    journal = Journal.open(path)
    try:
        record, _lease, _resumed = journal.begin_transfer("sync", "s", "u", {}, "same")
        outcome = {"won": record.id}
        # Hold the lease until the other one has tried (a fixed pause lost the race to a slow
        # spawn on a busy machine: the second process then found the lease free and won too).
        deadline = time.monotonic() + 30
        while not os.path.exists(other_result_path) and time.monotonic() < deadline:
            time.sleep(0.01)
    except LeaseHeld as exc:
        outcome = {"lost": exc.pid}
    Path(result_path).write_text(json.dumps(outcome))
    journal.close()


def test_two_processes_racing_for_one_transfer_one_wins(tmp_path: Path, journal_location: Path | str) -> None:
    path = journal_location
    Journal.open(path).close()
    barrier = tmp_path / "go"
    ctx = multiprocessing.get_context("spawn")
    results = [str(tmp_path / f"r{i}") for i in range(2)]
    procs = [ctx.Process(target=_race, args=(str(path), str(barrier), results[i], results[1 - i])) for i in range(2)]
    for p in procs:
        p.start()
    barrier.touch()
    for p in procs:
        p.join(30)
    outcomes = [json.loads((tmp_path / f"r{i}").read_text()) for i in range(2)]
    assert sorted(next(iter(o)) for o in outcomes) == ["lost", "won"]


# --- files, chunks, batches ---------------------------------------------------------


def test_add_files_is_idempotent_and_pages(journal: Journal) -> None:
    tid = _begin(journal)
    files = [NewFile(f"/data/f{i:05d}", f"f{i:05d}", size=i) for i in range(2500)]
    assert journal.add_files(tid, files, batch_size=700) == 2500
    assert journal.add_files(tid, files[:10] + [NewFile("/data/new")]) == 1
    seen = list(journal.iter_files(tid, page=333))
    assert len(seen) == 2501
    assert [f.local_path for f in seen[:3]] == ["/data/f00000", "/data/f00001", "/data/f00002"]
    page = journal.files_page(tid, [FileState.PLANNED], after_id=seen[-2].id, limit=10)
    assert [f.local_path for f in page] == ["/data/new"]


def test_batch_commits_plan_chunks_and_files_together(journal: Journal, tmp_path: Path) -> None:
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=10)])
    (file_row,) = journal.iter_files(tid)
    batch = JournalBatch()
    batch.plan_chunks(file_row.id, [(0, 4), (4, 4), (8, 2)])
    batch.file_state(file_row.id, FileState.ACTIVE, bytes_done=0)
    batch.chunk(file_row.id, 0, ChunkState.ACKED, "xxh3-128:" + "0" * 32)
    batch.chunk(file_row.id, 0, ChunkState.ACKED)
    batch.update_file(file_row.id, bytes_done=4)
    part = tmp_path / "x.part"
    with open(part, "wb") as handle:
        handle.write(b"data")
        batch.sync_before_commit(handle.fileno())
        journal.commit(batch)
    chunks = journal.chunks(file_row.id)
    assert [(c.offset, c.size, c.state) for c in chunks] == [
        (0, 4, ChunkState.ACKED),
        (4, 4, ChunkState.PLANNED),
        (8, 2, ChunkState.PLANNED),
    ]
    assert chunks[0].checksum == "xxh3-128:" + "0" * 32  # kept through the coalesced second event
    assert journal.get_file(file_row.id).bytes_done == 4
    assert journal.summary(tid).bytes_done == 4


def test_replanning_drops_events_of_the_old_plan(journal: Journal) -> None:
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=10)])
    (row,) = journal.iter_files(tid)
    batch = JournalBatch()
    batch.plan_chunks(row.id, [(0, 10)])
    batch.chunk(row.id, 0, ChunkState.ACKED)
    batch.plan_chunks(row.id, [(0, 5), (5, 5)])
    journal.commit(batch)
    assert [c.state for c in journal.chunks(row.id)] == [ChunkState.PLANNED, ChunkState.PLANNED]


def test_illegal_transitions_within_a_batch_are_refused_at_the_call() -> None:
    batch = JournalBatch()
    batch.chunk(1, 0, ChunkState.ACKED)
    batch.chunk(1, 0, ChunkState.VERIFIED)
    with pytest.raises(IllegalTransition):
        batch.chunk(1, 0, ChunkState.PLANNED)
    batch.file_state(1, FileState.DONE)
    with pytest.raises(IllegalTransition):
        batch.file_state(1, FileState.ACTIVE)
    with pytest.raises(ValueError, match="file_state"):
        batch.update_file(1, status="active")
    assert len(batch) == 3


def test_illegal_transitions_against_the_row_are_refused_at_commit(journal: Journal) -> None:
    """The first change of a batch is checked against the row's real state; nothing of the batch is written."""
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=8), NewFile("/b", "b", size=8)])
    a, b = journal.files_page(tid)
    done = JournalBatch()
    done.plan_chunks(a.id, [(0, 4), (4, 4)])
    done.chunk(a.id, 0, ChunkState.ACKED)
    done.chunk(a.id, 1, ChunkState.ACKED)
    done.file_state(a.id, FileState.DONE)
    done.verify_chunks(a.id)
    journal.commit(done)
    for illegal, message in (
        (lambda batch: batch.file_state(a.id, FileState.ACTIVE), "file cannot go from done to active"),
        (lambda batch: batch.chunk(a.id, 0, ChunkState.ACKED), "chunk cannot go from verified to acked"),
    ):
        batch = JournalBatch()
        batch.file_state(b.id, FileState.ACTIVE)
        illegal(batch)
        with pytest.raises(IllegalTransition, match=f"^{message}$"):
            journal.commit(batch)
        assert journal.get_file(b.id).status is FileState.PLANNED  # rolled back with the rest
    assert journal.get_file(a.id).status is FileState.DONE


def test_a_batch_that_fails_halfway_writes_nothing(journal: Journal) -> None:
    """A commit that raises after some of its statements were issued leaves every row as it was."""
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=8)])
    (a,) = journal.files_page(tid)
    plan = JournalBatch()
    plan.plan_chunks(a.id, [(0, 4), (4, 4)])
    journal.commit(plan)
    batch = JournalBatch()
    batch.chunk(a.id, 0, ChunkState.ACKED, "c0")
    batch.file_state(a.id, FileState.ACTIVE, bytes_done=4)
    batch.update_file(a.id, no_such_column=1)  # refused while the batch's writes are being issued
    with pytest.raises(ValueError, match="no_such_column"):
        journal.commit(batch)
    assert [(c.state, c.checksum) for c in journal.chunks(a.id)] == [(ChunkState.PLANNED, None)] * 2
    assert (journal.get_file(a.id).status, journal.get_file(a.id).bytes_done) == (FileState.PLANNED, 0)
    ok = JournalBatch()
    ok.chunk(a.id, 0, ChunkState.ACKED, "c0")
    journal.commit(ok)  # the journal (and its connection) still works
    assert journal.chunks(a.id)[0].state is ChunkState.ACKED


def test_a_batch_of_every_kind_of_write_commits_all_of_it(journal: Journal) -> None:
    """Files changing different columns, chunks of two files, a replan and a verify: one commit."""
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=8), NewFile("/b", "b", size=8)])
    a, b = journal.files_page(tid)
    plan = JournalBatch()
    plan.plan_chunks(a.id, [(0, 8)])
    plan.plan_chunks(b.id, [(0, 8)])
    journal.commit(plan)
    batch = JournalBatch()
    batch.chunk(a.id, 0, ChunkState.ACKED, "ca")
    batch.file_state(a.id, FileState.DONE, bytes_done=8)
    batch.verify_chunks(a.id)
    batch.chunk(b.id, 0, ChunkState.ACKED, "cb")
    batch.update_file(b.id, bytes_done=8, etag='x"y\\z')
    journal.commit(batch)
    assert [(c.state, c.checksum) for c in journal.chunks(a.id)] == [(ChunkState.VERIFIED, "ca")]
    assert [(c.state, c.checksum) for c in journal.chunks(b.id)] == [(ChunkState.ACKED, "cb")]
    a, b = journal.get_file(a.id), journal.get_file(b.id)
    assert (a.status, a.bytes_done, b.status, b.bytes_done, b.etag) == (
        FileState.DONE,
        8,
        FileState.PLANNED,
        8,
        'x"y\\z',
    )


def test_verify_chunks_and_summary(journal: Journal) -> None:
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a", "a", size=8), NewFile("/b", "b", size=5, status=FileState.SKIPPED)])
    a = journal.files_page(tid)[0]
    batch = JournalBatch()
    batch.plan_chunks(a.id, [(0, 4), (4, 4)])
    batch.chunk(a.id, 0, ChunkState.ACKED)
    batch.chunk(a.id, 1, ChunkState.ACKED)
    batch.file_state(a.id, FileState.DONE, bytes_done=8)
    batch.verify_chunks(a.id)
    journal.commit(batch)
    assert {c.state for c in journal.chunks(a.id)} == {ChunkState.VERIFIED}
    summary = journal.summary(tid)
    assert (summary.files_total, summary.files_finished, summary.bytes_done, summary.bytes_skipped) == (2, 2, 8, 5)


def test_reset_interrupted_files(journal: Journal) -> None:
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a"), NewFile("/b"), NewFile("/c", status=FileState.SKIPPED)])
    a, b, _ = journal.files_page(tid)
    journal.set_file(a.id, status="active")
    journal.set_file(b.id, status="failed", error="boom")
    assert journal.reset_interrupted_files(tid) == 2
    assert [f.status for f in journal.iter_files(tid)] == [FileState.PLANNED, FileState.PLANNED, FileState.SKIPPED]


def test_unknown_file_column_is_a_bug(journal: Journal) -> None:
    tid = _begin(journal)
    journal.add_files(tid, [NewFile("/a")])
    with pytest.raises(ValueError, match="unknown file columns"):
        journal.set_file(journal.files_page(tid)[0].id, colour="red")


# --- inventory and buckets -------------------------------------------------------


def test_inventory_lookup_in_bulk(journal: Journal) -> None:
    batch = JournalBatch()
    for i in range(1200):
        batch.remember(InventoryRecord("s", "alice", "up", f"/f{i}", f"f{i}", i, i * 10, None, f"id{i}"))
    batch.remember(InventoryRecord("s", "bob", "up", "/f1", "f1", 1, 10, None, "bob1"))
    journal.commit(batch)
    keys = [(f"/f{i}", f"f{i}") for i in range(0, 1300, 7)]
    found = journal.lookup_inventory("s", "alice", "up", keys)
    assert len(found) == len([i for i in range(0, 1300, 7) if i < 1200])
    assert found[("/f7", "f7")].data_id == "id7"
    assert journal.inventory_for_path("s", "bob", "up", "/f1")[0].data_id == "bob1"
    assert [r.local_path for r in journal.iter_inventory("s", "alice", "up", "/f11")][:3] == ["/f11", "/f110", "/f1100"]


def test_update_buckets_merges_inside_one_transaction(journal: Journal) -> None:
    def spend(amount: int):
        def merge(stored: dict) -> dict:
            tokens = stored.get("upload", {"tokens": 100})["tokens"]
            return {"upload": {"tokens": tokens - amount}}

        return merge

    journal.update_buckets("s", "alice", spend(10))
    other = Journal.open(journal.location)
    try:
        other.update_buckets("s", "alice", spend(5))
    finally:
        other.close()
    assert journal.update_buckets("s", "alice", spend(0)) == {"upload": {"tokens": 85}}
    assert journal.update_buckets("s", "bob", spend(0)) == {"upload": {"tokens": 100}}


_IMPORT_PROBE = """
import json, sys
from pathlib import Path
from flowxfer.journal import Journal
j = Journal.open(Path(sys.argv[1]))
j.list_transfers()
j.close()
print(json.dumps(sorted(m for m in ("sqlite_utils", "numpy", "pandas") if m in sys.modules)))
"""


def test_opening_and_reading_the_journal_imports_neither_sqlite_utils_nor_array_libraries(tmp_path: Path) -> None:
    # The journal opens on every command's critical path: sqlite-utils (and the numpy and pandas it
    # loads when installed) cost more start-up than a small transfer may take (issue 20).
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(tmp_path / "j.db")], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []
