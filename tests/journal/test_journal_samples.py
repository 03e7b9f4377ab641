"""The journal's sample tables: the migration from a sample-less journal, and what a sample row keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flowxfer.journal import (
    SCHEMA_VERSION,
    Journal,
    NewFile,
    NewSample,
    SampleInventoryRecord,
    SampleState,
)
from flowxfer.journal._schema import MIGRATIONS

SERVER = "http://127.0.0.1:1"


def test_a_journal_of_schema_2_is_migrated_keeping_its_transfers(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute(
        "INSERT INTO transfers (id, kind, status, server, params, params_key, created, updated) "
        "VALUES ('t1', 'upload', 'interrupted', ?, '{}', 'k', 1, 1)",
        (SERVER,),
    )
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with Journal.open(path) as journal:
        assert journal.get_transfer("t1") is not None
        journal.add_samples("t1", [NewSample(1, "S1", {"sample_type": "RNA-Seq"})])
        assert [s.name for s in journal.samples_of("t1")] == ["S1"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    conn.close()


def test_a_sample_keeps_its_fields_previous_data_and_id(journal_location: Path | str) -> None:
    with Journal.open(journal_location) as journal:
        record, _lease, _ = journal.begin_transfer("samples", SERVER, "alice", {"sheet": "s.csv"}, "key")
        fields = {"sample_name": "S1", "sample_type": "RNA-Seq", "strandedness": "forward"}
        journal.add_samples(
            record.id, [NewSample(1, "S1", fields), NewSample(2, "S2", {}, SampleState.INVALID, error="row 2: bad")]
        )
        journal.add_samples(record.id, [NewSample(1, "S1", {"changed": "no"})])  # a resumed plan keeps the row
        journal.add_files(record.id, [NewFile("/r1", "r1.fq", 10, 1, extra={"sample": 1, "position": 0})])
        journal.update_sample(record.id, 1, status=SampleState.ACTIVE, previous_data=["111"], started=5.0)
        sample = journal.get_sample(record.id, 1)
        assert sample is not None and sample.fields == fields and sample.previous_data == ("111",)
        assert sample.status is SampleState.ACTIVE and sample.started == 5.0
        made = SampleInventoryRecord(SERVER, "alice", "S1", "999", fields, ("111", "222"))
        journal.sample_finished(record.id, 1, made)
        sample = journal.get_sample(record.id, 1)
        assert sample is not None and sample.status is SampleState.DONE and sample.sample_id == "999"
        assert journal.lookup_samples(SERVER, "alice", ["S1", "S2"]) == {"S1": made}
        assert journal.lookup_samples(SERVER, "bob", ["S1"]) == {}
        assert [s.status for s in journal.samples_of(record.id)] == [SampleState.DONE, SampleState.INVALID]
        journal.delete_transfer(record.id)
        assert journal.samples_of(record.id) == []
        assert list(journal.iter_sample_inventory(SERVER, "alice")) == [made]  # the inventory outlives runs
