"""The journal operations sync relies on: re-plannable rows, packs and their members (on both backends)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flowxfer.journal import FileState, IllegalTransition, Journal, JournalBatch, NewFile, PackMember, PackRecord

SERVER, USER = "http://127.0.0.1:1", "alice"


def _transfer(journal: Journal) -> str:
    record, lease, _ = journal.begin_transfer("sync", SERVER, USER, {"root": "/r"}, "key")
    lease.release()
    return record.id


def test_version_one_journal_is_migrated_forward(tmp_path: Path) -> None:
    from flowxfer.journal._schema import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO transfers (id, kind, status, server, params, params_key, created, updated) "
        "VALUES ('t1', 'upload', 'running', 's', '{}', 'k', 0, 0)"
    )
    conn.execute("INSERT INTO files (transfer_id, local_path, status, updated) VALUES ('t1', '/a', 'planned', 0)")
    conn.commit()
    conn.close()
    with Journal.open(path) as journal:
        (row,) = journal.files_page("t1")
        assert row.local_path == "/a" and row.status is FileState.PLANNED
        assert journal.lookup_packs(SERVER, USER, ["/x"]) == {}


def test_replanning_keeps_unchanged_rows_resets_changed_drops_unwanted(journal: Journal) -> None:
    tid = _transfer(journal)
    rows = [(NewFile(f"/r/{n}", n, 10, 1), None) for n in ("a", "b", "c")]
    assert journal.upsert_planned_files(tid, rows, 1) == 3
    a, b, c = journal.files_page(tid)
    journal.set_file(a.id, status="active", data_id="777", bytes_done=5, chunk_size=5)
    journal.set_file(c.id, status="done", data_id="888", bytes_done=10)
    # Generation 2: a unchanged (keeps its partial upload), b changed (starts over), c not wanted.
    again = [
        (NewFile("/r/a", "a", 10, 1), None),
        (NewFile("/r/b", "b", 11, 2), None),
        (NewFile("/r/d", "d", 1, 1), None),
    ]
    assert journal.upsert_planned_files(tid, again, 2) == 2  # b reset, d new
    assert journal.drop_unplanned_files(tid, 2) == 0  # c is done: it stays as the record of what was done
    by_path = {f.local_path: f for f in journal.files_page(tid)}
    assert by_path["/r/a"].data_id == "777" and by_path["/r/a"].bytes_done == 5
    assert by_path["/r/b"].size == 11 and by_path["/r/b"].data_id is None
    assert by_path["/r/c"].status is FileState.DONE
    # Generation 3 wants only a: b and d are dropped, unfinished.
    journal.upsert_planned_files(tid, [(NewFile("/r/a", "a", 10, 1), None)], 3)
    assert journal.drop_unplanned_files(tid, 3) == 2
    assert sorted(f.local_path for f in journal.files_page(tid)) == ["/r/a", "/r/c"]


def test_a_new_plan_key_starts_a_row_over(journal: Journal) -> None:
    tid = _transfer(journal)
    journal.upsert_planned_files(tid, [(NewFile("/r/x.tar", "x.tar", 10240, None, extra={"pack": "m1"}), "m1")], 1)
    (row,) = journal.files_page(tid)
    journal.set_file(row.id, data_id="5", bytes_done=512)
    journal.upsert_planned_files(tid, [(NewFile("/r/x.tar", "x.tar", 10240, None, extra={"pack": "m2"}), "m2")], 2)
    (row,) = journal.files_page(tid)
    assert row.data_id is None and row.bytes_done == 0 and row.extra == {"pack": "m2"}


def test_packs_and_members(journal: Journal) -> None:
    members = [PackMember(f"InterOp/{i:03d}.bin", f"/r/InterOp/{i:03d}.bin", i, i * 10) for i in range(7)]
    journal.add_pack_members("m1", reversed(members))
    journal.add_pack_members("m1", members[:1])  # a manifest's list is written once
    assert journal.pack_members("m1") == members
    first = PackRecord(SERVER, USER, "/r/InterOp/run__InterOp.tar", "run__InterOp.tar", "m1", "11", 20480, None, 7)
    journal.remember_pack(first)
    assert journal.lookup_packs(SERVER, USER, [first.local_path, "/r/none"]) == {first.local_path: first}
    journal.add_pack_members("m2", members[:2])
    second = PackRecord(SERVER, USER, first.local_path, first.remote, "m2", "12", 10240, None, 2, ("11",))
    journal.remember_pack(second)
    assert journal.pack_members("m1") == []  # replaced and needed by no unfinished transfer
    assert list(journal.iter_packs(SERVER, USER, "/r/")) == [second]
    assert list(journal.iter_packs(SERVER, USER, "/q/")) == []
    assert list(journal.iter_packs("other", USER, "/r/")) == []


def test_a_tar_and_its_done_row_commit_together_or_not_at_all(journal: Journal) -> None:
    """A batch records a tar and its row's ``done`` in one transaction: a row that may not go
    ``done`` leaves no tar in the inventory either (recorded apart, a kill between the two let a
    later sync trust the tar and drop its unfinished row)."""
    tid = _transfer(journal)
    paths = ["/r/InterOp/run__InterOp.tar", "/r/C1.1/run__C1.1.tar"]
    journal.upsert_planned_files(
        tid, [(NewFile(p, p.rsplit("/", 1)[1], 10240, None, extra={"pack": p}), p) for p in paths], 1
    )
    refused, accepted = journal.files_page(tid)
    journal.set_file(refused.id, status="skipped")  # "done" may not follow
    for row, tar_path in zip((refused, accepted), paths, strict=True):
        batch = JournalBatch()
        batch.file_state(row.id, FileState.DONE, data_id="11", bytes_done=10240)
        batch.remember_pack(PackRecord(SERVER, USER, tar_path, row.remote_name, tar_path, "11", 10240, None, 7))
        if row is refused:
            with pytest.raises(IllegalTransition):
                journal.commit(batch)
        else:
            journal.commit(batch)
    assert list(journal.lookup_packs(SERVER, USER, paths)) == [paths[1]]
    assert [f.status for f in journal.files_page(tid)] == [FileState.SKIPPED, FileState.DONE]


def test_replanning_adopts_a_tar_the_inventory_holds_whose_row_never_went_done(journal: Journal) -> None:
    """A journal from before the one-commit fix may hold a sent tar whose row a kill left unfinished:
    planning skips the tar (it is on the server), and the row is made done rather than dropped."""
    tid = _transfer(journal)
    sent, unsent, elsewhere = "/r/InterOp/run__InterOp.tar", "/r/C1.1/run__C1.1.tar", "/r/X/run__X.tar"
    journal.upsert_planned_files(
        tid, [(NewFile(p, p.rsplit("/", 1)[1], 10240, None, extra={"pack": "m"}), "m") for p in (sent, unsent)], 1
    )
    journal.set_file(journal.files_page(tid)[0].id, status="active", bytes_done=512)
    journal.remember_pack(PackRecord(SERVER, USER, sent, "run__InterOp.tar", "m", "11", 10240, "xxh:1", 7))
    journal.remember_pack(PackRecord("other", USER, unsent, "run__C1.1.tar", "m", "12", 10240, None, 7))
    journal.remember_pack(PackRecord(SERVER, USER, elsewhere, "run__X.tar", "m", "13", 10240, None, 7))
    assert journal.drop_unplanned_files(tid, 2) == 1  # the tar no inventory of this server holds
    (row,) = journal.files_page(tid)
    assert (row.local_path, row.status, row.data_id, row.checksum, row.bytes_done) == (
        sent,
        FileState.DONE,
        "11",
        "xxh:1",
        10240,
    )
