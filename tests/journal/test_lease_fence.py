"""Every write a lease holder makes for its transfer is fenced by the lease (issue 21).

Two :class:`Journal` objects on one journal are two hosts, a and b. a begins
a transfer with a short TTL and writes through ``a.fenced(lease)``, as a run
does; it goes silent past the TTL (frozen, cut off) and b takes the transfer
over. Each of a's writes then refuses whole, with :class:`LeaseLost`: the
journal's rows are exactly as b left them. The same write while a's lease is
live does change the rows (so a refusal is the fence's, not a no-op's).
Against both backends: an SQLite journal is shared by processes of one host,
which take over each other's leases the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowxfer.journal import (
    ChunkState,
    FileState,
    Journal,
    JournalBatch,
    Lease,
    LeaseLost,
    NewFile,
    NewSample,
    PackMember,
    PackRecord,
    SampleInventoryRecord,
    SampleState,
    TransferState,
)
from flowxfer.journal._backend import TABLES

SERVER = "http://flow.test"
#: a's TTL: short, so that a goes stale within the test.
TTL = 0.3


@dataclass
class Fleet:
    """Host a (holding ``lease`` on ``transfer_id``, writing through ``fenced``) and host b beside it."""

    a: Journal
    b: Journal
    lease: Lease
    fenced: Journal
    transfer_id: str
    files: dict[str, int]

    def take_over(self) -> Lease:
        """a goes silent past its TTL; b resumes the transfer (as ``flowxfer resume`` on b would)."""
        time.sleep(TTL + 0.2)
        return self.b.reopen_transfer(self.transfer_id, what="flowxfer resume", stale_after=60.0)[1]

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows, sorted: what a refused write must leave exactly as it was."""
        return {
            table: sorted((tuple(row.values()) for row in self.b._read(f"SELECT * FROM {table}")), key=repr)
            for table in (*TABLES, "leases")
        }


@pytest.fixture
def fleet(journal_location: Path | str) -> Iterator[Fleet]:
    a = Journal.open(journal_location, host_id="a")
    b = Journal.open(journal_location, host_id="b")
    try:
        record, lease, _ = a.begin_transfer("upload", SERVER, "alice", {"x": 1}, "params", stale_after=TTL)
        a.add_files(record.id, [NewFile("run/x", "x", 10), NewFile("run/y", "y", 20)])
        files = {f.local_path: f.id for f in a.iter_files(record.id)}
        a.set_file(files["run/x"], status=FileState.ACTIVE.value)
        chunks = JournalBatch()
        chunks.plan_chunks(files["run/x"], [(0, 5), (5, 5)])
        a.commit(chunks)
        a.add_samples(record.id, [NewSample(0, "S1", {"organism": "human"})])
        yield Fleet(a, b, lease, a.fenced(lease), record.id, files)
    finally:
        a.close()
        b.close()


def _pack(name: str) -> PackRecord:
    return PackRecord(SERVER, "alice", f"run/{name}.tar", f"{name}.tar", f"m-{name}", f"d-{name}", 10, None, 2)


def _acked(fleet: Fleet) -> JournalBatch:
    batch = JournalBatch()
    batch.chunk(fleet.files["run/x"], 0, ChunkState.ACKED, "c0")
    return batch


def _chunk_acked(fleet: Fleet) -> None:
    fleet.fenced.commit(_acked(fleet))


#: Each write a run makes for its transfer, through the fenced journal (``fleet.fenced``).
WRITES: dict[str, Callable[[Fleet], object]] = {
    "set_file status": lambda f: f.fenced.set_file(f.files["run/x"], status=FileState.DONE.value, bytes_done=10),
    "set_file fields": lambda f: f.fenced.set_file(f.files["run/y"], data_id="d-y", etag="e"),
    "commit (chunk)": _chunk_acked,
    "finish_transfer": lambda f: f.fenced.finish_transfer(f.transfer_id, TransferState.COMPLETED),
    "update_transfer_state": lambda f: f.fenced.update_transfer_state(f.transfer_id, job_id="j1"),
    "delete_transfer": lambda f: f.fenced.delete_transfer(f.transfer_id),
    "add_files": lambda f: f.fenced.add_files(f.transfer_id, [NewFile("run/z", "z", 5)]),
    "reset_interrupted_files": lambda f: f.fenced.reset_interrupted_files(f.transfer_id),
    "upsert_planned_files": lambda f: f.fenced.upsert_planned_files(
        f.transfer_id, [(NewFile("run/y", "y", 21), None), (NewFile("run/w", "w", 1), None)], 7
    ),
    "drop_unplanned_files": lambda f: f.fenced.drop_unplanned_files(f.transfer_id, 7),
    "add_pack_members": lambda f: f.fenced.add_pack_members("m-p", [PackMember("a", "run/a", 1, 1)]),
    "remember_pack": lambda f: f.fenced.remember_pack(_pack("p")),
    "add_samples": lambda f: f.fenced.add_samples(f.transfer_id, [NewSample(1, "S2", {})]),
    "update_sample": lambda f: f.fenced.update_sample(f.transfer_id, 0, status=SampleState.ACTIVE, started=1.0),
    "sample_finished": lambda f: f.fenced.sample_finished(
        f.transfer_id, 0, SampleInventoryRecord(SERVER, "alice", "S1", "s-1", {}, ("d-x",))
    ),
    "remember_sample": lambda f: f.fenced.remember_sample(SampleInventoryRecord(SERVER, "alice", "S9", "s-9")),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_by_a_host_that_lost_its_lease_refuses_whole(fleet: Fleet, write: str) -> None:
    fleet.take_over()
    before = fleet.rows()
    with pytest.raises(LeaseLost) as lost:
        WRITES[write](fleet)
    assert lost.value.key == f"transfer:{fleet.transfer_id}"
    assert fleet.rows() == before
    record = fleet.b.get_transfer(fleet.transfer_id)
    assert record is not None and (record.status, record.host) == ("running", "b")


@pytest.mark.parametrize("write", list(WRITES))
def test_the_same_write_under_a_live_lease_is_made(fleet: Fleet, write: str) -> None:
    before = fleet.rows()
    WRITES[write](fleet)
    assert fleet.rows() != before


def test_leases_and_budgets_are_not_fenced(fleet: Fleet) -> None:
    """A fenced-out host's heartbeat says the lease is gone; the requests it spent still count."""
    fleet.take_over()
    assert fleet.fenced.heartbeat_held(fleet.lease.key) is False
    stored = fleet.fenced.update_buckets(SERVER, "alice", lambda old: {"upload": {"spent": 3}})
    assert stored == {"upload": {"spent": 3}}
    fleet.lease.release()  # a's token is not the lease's any more: b keeps it
    assert fleet.b.lease_holder(fleet.lease.key) is not None
    assert fleet.b.heartbeat_held(fleet.lease.key) is True


def test_the_new_holder_writes_on_and_the_old_one_stays_out(fleet: Fleet) -> None:
    """b's own fenced writes go through after the takeover; a's, interleaved with them, never do."""
    b_fenced = fleet.b.fenced(fleet.take_over())
    b_fenced.set_file(fleet.files["run/x"], status=FileState.DONE.value, bytes_done=10)
    with pytest.raises(LeaseLost):
        fleet.fenced.set_file(fleet.files["run/y"], status=FileState.FAILED.value, error="a woke up")
    b_fenced.finish_transfer(fleet.transfer_id, TransferState.INTERRUPTED)
    with pytest.raises(LeaseLost):
        fleet.fenced.finish_transfer(fleet.transfer_id, TransferState.COMPLETED)
    hosts = {(r["local_path"], r["status"], r["host"]) for r in fleet.b._read("SELECT * FROM files")}
    assert hosts == {("run/x", "done", "b"), ("run/y", "planned", "a")}
    record = fleet.b.get_transfer(fleet.transfer_id)
    assert record is not None and (record.status, record.host) == ("interrupted", "b")


def test_a_lease_spanning_the_transfer_fences_it_too(fleet: Fleet) -> None:
    """``sync --samples``: the run's visit lease spans its transfers; b taking the visit stops a's writes."""
    visit = fleet.a.acquire_lease("visit:run", stale_after=TTL)
    both = fleet.a.fenced(visit, fleet.lease)
    both.set_file(fleet.files["run/y"], data_id="d-y")
    time.sleep(TTL + 0.2)
    fleet.a.heartbeat_held(fleet.lease.key)  # a's transfer lease is live; its visit is not
    fleet.b.acquire_lease("visit:run", stale_after=60.0)
    before = fleet.rows()
    with pytest.raises(LeaseLost) as lost:
        both.set_file(fleet.files["run/y"], status=FileState.FAILED.value, error="a woke up")
    assert lost.value.key == "visit:run"
    with pytest.raises(LeaseLost):
        both.commit(_acked(fleet))
    assert fleet.rows() == before
    fleet.fenced.commit(_acked(fleet))  # fenced by the transfer's lease alone, a may still write
