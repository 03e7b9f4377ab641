"""Issue 21: "every record carries the host that wrote it", for the tables the journal's own test leaves out.

``test_shared.py::test_every_record_says_which_host_wrote_it``
checks transfers, files, inventory and buckets. Migration 4 gave a ``host``
column to seven tables: packs (``sync --pack-small``), samples and
sample_inventory (``samples upload``) were not checked, so a write that left
their host empty (or the previous writer's) would pass. Both backends.
"""

from __future__ import annotations

from flowxfer.journal import Journal, NewSample, PackRecord, SampleInventoryRecord, SampleState


def _hosts(journal: Journal, table: str) -> set[str]:
    return {row["host"] for row in journal._read(f"SELECT host FROM {table}")}


def test_packs_samples_and_sample_inventory_say_which_host_wrote_them(journal: Journal) -> None:
    journal.host = "ingest-1"
    record, lease, _ = journal.begin_transfer("samples", "s", "u", {}, "k")
    journal.add_samples(record.id, [NewSample(0, "S1", {"organism": "Hs"}), NewSample(1, "S2", {})])
    journal.remember_pack(PackRecord("s", "u", "/run/small.tar", "small.tar", "m1", "d1", 10, None, 2))
    journal.remember_sample(SampleInventoryRecord("s", "u", "S0", "id0"))
    assert {t: _hosts(journal, t) for t in ("samples", "packs", "sample_inventory")} == dict.fromkeys(
        ("samples", "packs", "sample_inventory"), {"ingest-1"}
    )

    # Another host carries the work on: each row it touches now names it.
    journal.host = "ingest-2"
    journal.update_sample(record.id, 0, status=SampleState.ACTIVE)
    journal.sample_finished(record.id, 1, SampleInventoryRecord("s", "u", "S2", "id2"))
    journal.remember_pack(PackRecord("s", "u", "/run/small.tar", "small.tar", "m2", "d2", 12, None, 3))
    by_row = {row["row"]: row["host"] for row in journal._read('SELECT "row", host FROM samples')}
    assert by_row == {0: "ingest-2", 1: "ingest-2"}
    assert _hosts(journal, "packs") == {"ingest-2"}
    inventory = {row["name"]: row["host"] for row in journal._read("SELECT name, host FROM sample_inventory")}
    assert inventory == {"S0": "ingest-1", "S2": "ingest-2"}
    lease.release()
