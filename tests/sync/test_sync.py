"""``Flowxfer.sync`` against the real local server, on a synthetic run folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowxfer import protocol
from flowxfer.journal import Journal
from flowxfer.server import Admin
from flowxfer.transfer import Flowxfer, UsageError
from flowxfer.transfer import _sync as sync_module
from flowxfer.transfer._syncplan import ShareGrant, SyncOptions
from flowxfer.transfer.events import BytesMoved, FilesPlanned, FileStarted
from tests.support.faultproxy import DropResponse, FaultProxy, Match
from tests.support.runfolder import MARKERS, complete_run, make_run_folder, run_files
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import KiB, client, write_random

from .conftest import owned_data, tree

PACK = 64 * KiB
OPTIONS = SyncOptions(pack_small=PACK, ready_marker="CopyComplete.txt")


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _checksum(path: Path) -> str:
    return protocol.checksum_of(path.read_bytes())


def _expected_items(run: Path) -> tuple[set[str], dict[str, int]]:
    """The FASTQs sent on their own, and the small files (relative path -> size) sent inside tars."""
    files = run_files(run)
    big = {Path(rel).name for rel, size in files.items() if size >= PACK}
    small = {rel: size for rel, size in files.items() if size < PACK}
    return big, small


async def test_not_ready_sends_nothing(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs", complete=False)
    async with client(server, tmp_path / "home") as fx:
        before = fx.client.limiter.requests_by_class()  # the login
        report = await fx.sync(run, OPTIONS)
        assert report.status == "waiting" and report.extra["waiting_for"] == "CopyComplete.txt"
        assert fx.client.limiter.requests_by_class() == before
        assert await owned_data(fx) == []
        journal = await fx.journal()
        assert journal.list_transfers(include_finished=True) == []


async def test_ready_run_is_sent_once_and_unpacked_where_it_was(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs", lanes=2, samples=2, small_files=40)
    big, small = _expected_items(run)
    async with client(server, tmp_path / "home") as fx:
        report = await fx.sync(run, OPTIONS)
        assert report.status == "completed", report
        assert {f.status for f in report.files} == {"done"}
        assert report.extra["packed_files"] == len(small)
        data = await owned_data(fx)
        names = [d["filename"] for d in data]
        assert len(names) == len(set(names)) == len(report.files) == report.requests["upload"]
        assert big <= set(names)
        # Every small file is on the server exactly once, at its relative path, with its bytes.
        unpacked: dict[str, tuple[int, str]] = {}
        for item in data:
            if item["filename"].endswith(".tar"):
                assert item["is_directory"]
                listing = await tree(fx, item["id"])
                assert not set(listing) & set(unpacked)
                unpacked.update(listing)
        assert {rel: size for rel, (size, _) in unpacked.items()} == small
        assert all(checksum == _checksum(run / rel) for rel, (_, checksum) in unpacked.items())
        # FASTQs arrive whole and verified.
        by_name = {d["filename"]: d for d in data}
        for rel in run_files(run):
            if Path(rel).name in big:
                assert by_name[Path(rel).name]["checksum"] == _checksum(run / rel)


@pytest.mark.parametrize("handed", [True, False], ids=["as-planned", "from-the-journal"])
async def test_a_moved_run_folder_is_sent_from_where_it_is_now(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handed: bool
) -> None:
    """``mv`` (like ``cp -a``) keeps names, sizes and mtimes, so the moved folder's tars have the manifests
    of the original's, whose member lists in the journal name the old place. A tar is uploaded as this
    run planned it, or, past the bound of what a run keeps (here: nothing), from the journal's list."""
    if not handed:
        monkeypatch.setattr(sync_module, "_HANDED_MEMBERS", 0)
    lists_read: list[str] = []
    read_list = Journal.pack_members

    def counted(journal: Journal, manifest: str) -> list[Any]:
        lists_read.append(manifest)  # observed only: the journal's own method answers
        return read_list(journal, manifest)

    monkeypatch.setattr(Journal, "pack_members", counted)
    original = make_run_folder(tmp_path / "incoming", lanes=1, samples=1, small_files=12)
    async with client(server, tmp_path / "home") as fx:
        assert (await fx.sync(original, OPTIONS)).status == "completed"
        moved = tmp_path / "archive" / original.name
        moved.parent.mkdir()
        original.rename(moved)
        lists_read.clear()
        report = await fx.sync(moved, OPTIONS)
        assert report.status == "completed", report  # was: every tar failed, "disappeared since it was packed"
        tars = [f for f in report.files if f.filename.endswith(".tar")]
        assert tars and {f.status for f in report.files} == {"done"}
        assert len(lists_read) == (0 if handed else len(tars))
        unpacked: dict[str, tuple[int, str]] = {}
        for tar in tars:
            unpacked.update(await tree(fx, tar.id))
        small = _expected_items(moved)[1]
        assert {rel: size for rel, (size, _) in unpacked.items()} == small
        assert all(checksum == _checksum(moved / rel) for rel, (_, checksum) in unpacked.items())
        again = await fx.sync(moved, OPTIONS)
        assert again.files == [] and again.extra["deleted_locally"] == 0  # was: the old paths reported gone
        gone = moved / sorted(rel for rel in small if rel.startswith("InterOp/"))[0]
        gone.unlink()
        report = await fx.sync(moved, OPTIONS)
        assert report.status == "completed" and report.extra["deleted_examples"] == [str(gone)]


async def test_rerun_sends_nothing_and_leaves_no_transfer(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs")
    async with client(server, tmp_path / "home") as fx:
        first = await fx.sync(run, OPTIONS)
        again = await fx.sync(run, OPTIONS)
        assert again.status == "completed" and again.files == []
        assert again.bytes_transferred == 0 and again.requests["upload"] == 0
        assert again.extra["unchanged"] == len(run_files(run))
        assert again.bytes_skipped == sum(run_files(run).values())
        journal = await fx.journal()
        assert [t.id for t in journal.list_transfers(include_finished=True)] == [first.transfer_id]


async def test_one_changed_file_is_sent_alone_and_supersedes(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs")
    fastq = run / "Fastq" / "L002" / "Sample1_S1_L002_R2_001.fastq.gz"
    interop = run / "InterOp" / "QMetricsOut.bin"
    async with client(server, tmp_path / "home") as fx:
        first = {f.filename: f.id for f in (await fx.sync(run, OPTIONS)).files}
        write_random(fastq, fastq.stat().st_size + 10, seed=77)
        report = await fx.sync(run, OPTIONS)
        assert [(f.filename, f.status) for f in report.files] == [(fastq.name, "done")]
        assert report.files[0].id != first[fastq.name]
        journal = await fx.journal()
        (record,) = journal.inventory_for_path(server.base_url, "alice", "up", str(fastq))
        assert record.data_id == report.files[0].id and record.superseded == (first[fastq.name],)
        # A small file changed: only its folder's tar goes again, superseding the old one.
        write_random(interop, 100, seed=5)
        report = await fx.sync(run, OPTIONS)
        (tar,) = report.files
        assert tar.filename == f"{run.name}__InterOp.tar" and report.extra["packed_files"] == len(
            list((run / "InterOp").iterdir())
        )
        (pack,) = journal.lookup_packs(server.base_url, "alice", [tar.path]).values()
        assert pack.superseded == (first[tar.filename],)
        assert (await tree(fx, tar.id))["InterOp/QMetricsOut.bin"] == (100, _checksum(interop))


async def test_touched_but_identical_file_is_not_sent(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs")
    fastq = run / "Fastq" / "L001" / "Sample1_S1_L001_R1_001.fastq.gz"
    async with client(server, tmp_path / "home") as fx:
        await fx.sync(run, OPTIONS)
        os.utime(fastq, ns=(10**18, 10**18))
        report = await fx.sync(run, OPTIONS)
        assert report.files == [] and report.requests["upload"] == 0


async def test_growing_folder_with_min_age_sends_only_stable_files(server: RunningServer, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "growing"
    old = [write_random(run / "Fastq" / f"S{i}_R1_001.fastq.gz", 100 * KiB, seed=i) for i in range(3)]
    write_random(run / "InterOp" / "A.bin", 100, 1)
    await anyio.sleep(1.6)
    fresh = write_random(run / "Fastq" / "S9_R1_001.fastq.gz", 80 * KiB, seed=9)
    write_random(run / "InterOp" / "B.bin", 100, 2)  # its folder's tar waits for it
    options = SyncOptions(pack_small=PACK, min_age=1.5)
    async with client(server, tmp_path / "home") as fx:
        report = await fx.sync(run, options)
        assert sorted(f.filename for f in report.files) == sorted(p.name for p in old)
        assert report.extra["waiting"] == 3
        _append(fresh, b"more")  # still being written
        await anyio.sleep(1.6)
        report = await fx.sync(run, options)
        assert sorted(f.filename for f in report.files) == ["S9_R1_001.fastq.gz", "growing__InterOp.tar"]
        assert report.extra["waiting"] == 0
        (fastq,) = [f for f in report.files if f.filename == fresh.name]
        assert fastq.size == 80 * KiB + 4


async def test_file_changed_after_planning_waits_for_min_age(server: RunningServer, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r"
    files = [write_random(run / f"S{i}.fastq.gz", 100 * KiB, seed=i) for i in range(3)]
    await anyio.sleep(1.1)
    options = SyncOptions(min_age=1.0)

    def touch_after_planning(event: Any) -> None:
        if isinstance(event, FilesPlanned):
            _append(files[1], b"late write")

    async with client(server, tmp_path / "home", progress=touch_after_planning, concurrency=1) as fx:
        first = await fx.sync(run, options)
    outcome = {Path(f.path).name: (f.status, f.error) for f in first.files}
    assert outcome["S0.fastq.gz"][0] == outcome["S2.fastq.gz"][0] == "done"
    status, error = outcome["S1.fastq.gz"]
    assert status == "failed" and error is not None and "--min-age" in error
    await anyio.sleep(1.1)
    async with client(server, tmp_path / "home") as fx:
        second = await fx.sync(run, options)
    assert second.status == "completed" and second.transfer_id == first.transfer_id
    assert [
        (Path(f.path).name, f.size)
        for f in second.files
        if f.status == "done" and f.id not in {g.id for g in first.files}
    ] == [("S1.fastq.gz", 100 * KiB + 10)]


async def test_clashes_and_refused_names_are_listed_before_any_byte(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs", small_files=24)
    write_random(run / "Logs" / "bad name.log", 10)
    async with client(server, tmp_path / "home") as fx:
        with pytest.raises(UsageError) as caught:
            await fx.sync(run)  # no packing: per-cycle BCL names repeat
        text = str(caught.value)
        assert "bad name.log: Spaces in filename" in text
        assert "would be named 's_1_1101.bcl.gz'" in text and "C1.1/s_1_1101.bcl.gz" in text
        assert "C2.1/s_1_1101.bcl.gz" in text and "--name-from-path" in text
        assert fx.client.limiter.requests_by_class()["upload"] == 0
        journal = await fx.journal()
        assert journal.list_transfers(include_finished=True) == []  # nothing left for resume to send
        (run / "Logs" / "bad name.log").unlink()
        report = await fx.sync(run, SyncOptions(name_from_path=True))
        assert report.status == "completed"
        names = {f.filename for f in report.files}
        assert "Data__Intensities__BaseCalls__L001__C2.1__s_1_1101.bcl.gz" in names
        assert "Fastq__L001__Sample1_S1_L001_R1_001.fastq.gz" in names


async def test_excludes_and_deleted_files(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs")
    # The last matching rule decides: everything, but not Data/, except its C1.1 folders, and no logs.
    options = SyncOptions(
        pack_small=PACK,
        rules=(("include", "*"), ("exclude", "Data/"), ("include", "Data/**/C1.1/"), ("exclude", "*.log")),
    )
    async with client(server, tmp_path / "home") as fx:
        report = await fx.sync(run, options)
        packed = {rel for item in report.files if item.filename.endswith(".tar") for rel in await tree(fx, item.id)}
        assert not any(rel.endswith(".log") for rel in packed)
        assert {rel.split("/")[4] for rel in packed if rel.startswith("Data/")} == {"C1.1"}
        gone = run / "Fastq" / "L001" / "Sample2_S2_L001_R1_001.fastq.gz"
        gone.unlink()
        (run / "InterOp" / "TileMetricsOut.bin").unlink()
        report = await fx.sync(run, options)
        assert report.extra["deleted_locally"] == 2
        assert set(report.extra["deleted_examples"]) == {str(gone), str(run / "InterOp" / "TileMetricsOut.bin")}
        # The InterOp tar changed (one file fewer) and goes again; nothing is deleted on the server.
        assert [f.filename for f in report.files] == [f"{run.name}__InterOp.tar"]
        assert gone.name in {d["filename"] for d in await owned_data(fx)}


async def test_grants_make_the_run_visible_to_the_group(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root") as srv:
        with Admin(srv.root) as admin:
            admin.add_group("lab")
            admin.add_member("lab", "bob")
        run = make_run_folder(tmp_path / "runs", lanes=1, samples=1, small_files=8)
        options = SyncOptions(pack_small=PACK, shares=(ShareGrant("group", "lab", 1), ShareGrant("user", "carol", 2)))
        async with client(srv, tmp_path / "alice") as fx:
            report = await fx.sync(run, options)
            assert report.status == "completed" and report.requests["api"] >= 2 * len(report.files)
            ids = [f.id for f in report.files]
        async with client(srv, tmp_path / "bob", user="bob") as bob:
            assert [item.id for item in await bob.describe(ids)] == ids


async def test_budget_spent_mid_run_stops_and_next_run_continues(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root", rate_limits="upload=3/3s") as srv:
        run = tmp_path / "runs" / "r"
        for i in range(6):
            write_random(run / f"f{i}.fastq.gz", 1000, seed=i)
        async with client(srv, tmp_path / "home", max_wait=0.5) as fx:
            first = await fx.sync(run)
            assert first.status == "interrupted" and first.stop_reason == "budget"
            done = [f for f in first.files if f.status == "done"]
            assert len(done) == 3
        await anyio.sleep(3.2)
        async with client(srv, tmp_path / "home", max_wait=5) as fx:
            second = await fx.sync(run)
            assert second.status == "completed" and second.transfer_id == first.transfer_id
            assert second.requests["upload"] == 3
            assert sorted(d["filename"] for d in await owned_data(fx)) == [f"f{i}.fastq.gz" for i in range(6)]


async def _stop_after(fx: Flowxfer, events: list[Any], nbytes: int) -> None:
    if sum(e.nbytes for e in events if isinstance(e, BytesMoved)) >= nbytes:
        fx.stop()


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
async def test_pack_resumes_mid_tar(tmp_path: Path, extensions: bool) -> None:
    run = tmp_path / "runs" / "bcl"
    for i in range(60):
        write_random(run / "C1.1" / f"s_1_{1101 + i}.bcl.gz", 7000 + i, seed=i)
    complete_run(run)
    options = SyncOptions(pack_small=PACK, rules=(("exclude", "*.txt"),))
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        events: list[Any] = []

        def watch(event: Any) -> None:
            events.append(event)
            if isinstance(event, BytesMoved) and sum(e.nbytes for e in events if isinstance(e, BytesMoved)) > 150_000:
                fx.stop()

        async with client(srv, tmp_path / "home", progress=watch, concurrency=1) as fx:
            first = await fx.sync(run, options)
        assert first.status == "interrupted"
        (row,) = first.files
        journal = Journal.open(tmp_path / "home" / "journal.db")
        try:
            (record,) = journal.files_page(first.transfer_id)
            assert record.data_id and 0 < record.bytes_done < record.size
        finally:
            journal.close()
        async with client(srv, tmp_path / "home") as fx:
            second = await fx.sync(run, options)
            assert second.status == "completed" and second.transfer_id == first.transfer_id
            assert second.requests["upload"] == 0  # a continuation, not a new upload
            assert second.bytes_transferred <= row.size - record.bytes_done
            (tar,) = second.files
            if extensions:
                listing = await tree(fx, tar.id)
                assert listing == {
                    f"C1.1/{p.name}": (p.stat().st_size, _checksum(p)) for p in sorted((run / "C1.1").iterdir())
                }
            assert len(await owned_data(fx)) == 1


async def test_tar_resume_confirms_chunks_the_journal_missed(tmp_path: Path) -> None:
    """Answers lost after the server stored them: on resume the tar's bytes are regenerated and compared."""
    run = tmp_path / "runs" / "bcl"
    for i in range(60):
        write_random(run / "C1.1" / f"s_1_{1101 + i}.bcl.gz", 7000 + i, seed=i)
    options = SyncOptions(pack_small=PACK)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            via_proxy = dataclasses.replace(srv, base_url=proxy.url)
            lost = proxy.add(DropResponse(Match("POST", r"^/upload$", nth=3), times=None))
            async with client(via_proxy, tmp_path / "home", max_attempts=2, concurrency=1) as fx:
                first = await fx.sync(run, options)
            assert lost.hits >= 1 and first.status == "failed"
            journal = Journal.open(tmp_path / "home" / "journal.db")
            try:
                (record,) = journal.files_page(first.transfer_id)
                server_holds = len(journal.chunks(record.id))
                acked = sum(1 for c in journal.chunks(record.id) if c.state.value == "acked")
            finally:
                journal.close()
            assert 0 < acked < server_holds
            proxy.remove(lost)
            async with client(via_proxy, tmp_path / "home") as fx:
                second = await fx.sync(run, options)
                assert second.status == "completed" and second.transfer_id == first.transfer_id
                assert second.requests["upload"] == 0  # continued, not started again
                (tar,) = second.files
                listing = await tree(fx, tar.id)
        assert listing == {f"C1.1/{p.name}": (p.stat().st_size, _checksum(p)) for p in (run / "C1.1").iterdir()}


async def test_marker_names_are_relative_and_markers_are_synced(server: RunningServer, tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=1, small_files=4)
    async with client(server, tmp_path / "home") as fx:
        report = await fx.sync(run, SyncOptions(pack_small=PACK, ready_marker=MARKERS[1]))
        root_tar = next(f for f in report.files if f.filename == f"{run.name}.tar")
        assert set(await tree(fx, root_tar.id)) == {"RunInfo.xml", "RunParameters.xml", *MARKERS}


async def test_a_file_changed_after_it_was_read_ahead_is_sent_as_planned(server: RunningServer, tmp_path: Path) -> None:
    """Sync reads small files ahead of its workers too: one that changes after that and before
    its worker starts is sent as planned, and the next sync sends the new version."""
    run = tmp_path / "run"
    write_random(run / "a.bin", 3 * KiB, 1)
    second = write_random(run / "b.bin", 3 * KiB, 2)
    planned = second.read_bytes()
    newer: list[bytes] = []

    def change_second_as_it_starts(event: Any) -> None:
        if isinstance(event, FileStarted) and event.path == str(second) and not newer:
            write_random(second, 3 * KiB, 3)
            later = second.stat().st_mtime_ns + 10_000_000_000
            os.utime(second, ns=(later, later))
            newer.append(second.read_bytes())

    async with client(server, tmp_path / "home", progress=change_second_as_it_starts, concurrency=1) as fx:
        report = await fx.sync(run, SyncOptions())
        assert report.status == "completed", report
        sent = {f.path: f.id for f in report.files}
        down = await fx.download([sent[str(second)] or ""], output_dir=tmp_path / "out")
        assert down.status == "completed", down
        assert (tmp_path / "out" / "b.bin").read_bytes() == planned != newer[0]

        again = await fx.sync(run, SyncOptions())
        assert [(f.path, f.status) for f in again.files] == [(str(second), "done")]
        down = await fx.download([again.files[0].id or ""], output_dir=tmp_path / "out2")
        assert (tmp_path / "out2" / "b.bin").read_bytes() == newer[0]


async def test_packed_folders_are_sent_one_archive_body_at_a_time(server: RunningServer, tmp_path: Path) -> None:
    """The server unpacks an archive before it answers its last chunk: archives' bodies are sent
    one after another, so it unpacks one while the next arrives (and the answers still overlap)."""
    run = tmp_path / "run"
    for folder in range(4):
        for index in range(20):
            write_random(run / f"lane{folder}" / f"tile{index:02d}.bcl", 4 * KiB, folder * 100 + index)
    moved: list[str] = []

    def note(event: Any) -> None:
        if isinstance(event, BytesMoved):
            moved.append(event.path)

    async with client(server, tmp_path / "home", progress=note, concurrency=4, chunk_size=1024 * KiB) as fx:
        report = await fx.sync(run, SyncOptions(pack_small=PACK))
        assert report.status == "completed", report
        assert report.extra["packs"] == len(report.files) == 4
        for archive in report.files:
            assert len(await tree(fx, archive.id or "")) == 20  # unpacked whole
    runs = [path for index, path in enumerate(moved) if index == 0 or moved[index - 1] != path]
    assert len(moved) > len(runs)  # several blocks a body, so a mixed order would show
    assert sorted(runs) == sorted(set(runs)), runs  # each archive's bytes in one stretch
