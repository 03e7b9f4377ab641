"""The engine end to end against the real local server: real sockets, real files, real journal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flowxfer.journal import ChunkState, Journal
from flowxfer.transfer import Flowxfer, JournalError, NotFoundError, UsageError
from flowxfer.transfer.events import BytesMoved, FileFinished, FileStarted, Notice, Retrying, Waiting
from tests.support.server import RunningServer, running_server

from .conftest import KiB, StopAfter, client, write_random

CHUNK = 64 * KiB
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 40 * CHUNK + 5]


def make_tree(root: Path) -> dict[str, Path]:
    files = {}
    for index, size in enumerate(SIZES):
        files[f"f{index}_{size}.bin"] = write_random(root / f"sub{index % 2}" / f"f{index}_{size}.bin", size, index)
    return files


async def test_round_trip_every_size_both_modes(any_server: RunningServer, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    async with client(any_server, tmp_path / "home", segments=3) as fx:
        up = await fx.upload([tmp_path / "src"])
        assert up.status == "completed", up
        assert {f.status for f in up.files} == {"done"}
        ids = [f.id for f in up.files]
        assert all(ids) and len(set(ids)) == len(ids)
        down = await fx.download(ids, output_dir=tmp_path / "out")
        assert down.status == "completed", down
    for name, path in files.items():
        assert (tmp_path / "out" / name).read_bytes() == path.read_bytes(), name
    assert not list((tmp_path / "out").glob("*.part"))


async def test_files_around_the_in_memory_limit(any_server: RunningServer, tmp_path: Path) -> None:
    """Files up to INLINE_LIMIT go as one ready-made body (its form makes it a little over 1 MiB); one byte more
    streams. Warnings are errors here: aiohttp's own bytes payload warned about such bodies."""
    from flowxfer.transfer._upload import INLINE_LIMIT

    sizes = [INLINE_LIMIT - 300, INLINE_LIMIT, INLINE_LIMIT + 1]
    files = {size: write_random(tmp_path / "src" / f"s{size}.bin", size, size) for size in sizes}
    async with client(any_server, tmp_path / "home", chunk_size=16 * 1024 * 1024) as fx:
        up = await fx.upload([tmp_path / "src"])
        assert up.status == "completed", up
        assert up.bytes_transferred == sum(sizes) and up.requests["upload"] == len(sizes)
        down = await fx.download([f.id for f in up.files], output_dir=tmp_path / "out")
        assert down.status == "completed", down
    for path in files.values():
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes()


async def test_rerun_skips_unchanged_and_sends_no_upload(server: RunningServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    async with client(server, tmp_path / "home") as fx:
        first = await fx.upload([tmp_path / "src"])
        again = await fx.upload([tmp_path / "src"])
    assert again.status == "completed"
    assert {f.status for f in again.files} == {"skipped"}
    assert again.bytes_transferred == 0
    assert again.requests["upload"] == 0
    assert sorted(f.id for f in again.files) == sorted(f.id for f in first.files)


async def test_changed_file_is_uploaded_again_touched_file_is_not(server: RunningServer, tmp_path: Path) -> None:
    a = write_random(tmp_path / "a.bin", 5000, 1)
    b = write_random(tmp_path / "b.bin", 5000, 2)
    async with client(server, tmp_path / "home") as fx:
        first = {f.filename: f.id for f in (await fx.upload([a, b])).files}
        write_random(a, 5000, 99)  # same size, new bytes
        os.utime(b, ns=(1, 1))  # touched: same bytes, new mtime; the checksum decides
        second = await fx.upload([a, b])
    outcome = {f.filename: (f.status, f.id) for f in second.files}
    assert outcome["a.bin"][0] == "done" and outcome["a.bin"][1] != first["a.bin"]
    assert outcome["b.bin"] == ("skipped", first["b.bin"])


async def test_download_skips_identical_and_replaces_different(server: RunningServer, tmp_path: Path) -> None:
    src = write_random(tmp_path / "x.bin", 3 * CHUNK, 3)
    async with client(server, tmp_path / "home") as fx:
        (uploaded,) = (await fx.upload([src])).files
        out = tmp_path / "out"
        await fx.download([uploaded.id], output_dir=out)
        again = await fx.download([uploaded.id], output_dir=out)
        assert [f.status for f in again.files] == ["skipped"]
        (out / "x.bin").write_bytes(b"not the same" + b"\0" * (3 * CHUNK - 12))
        third = await fx.download([uploaded.id], output_dir=out)
        assert [f.status for f in third.files] == ["done"]
    assert (out / "x.bin").read_bytes() == src.read_bytes()


async def test_download_by_search_and_clashing_names(server: RunningServer, tmp_path: Path) -> None:
    one = write_random(tmp_path / "l1" / "S1_R1.fastq.gz", 1000, 1)
    two = write_random(tmp_path / "l2" / "S1_R1.fastq.gz", 2000, 2)
    async with client(server, tmp_path / "home") as fx:
        await fx.upload([one, two])
        report = await fx.download(filename="s1_r1", output_dir=tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 2 and "S1_R1.fastq.gz" in names
    other = next(n for n in names if n != "S1_R1.fastq.gz")
    assert other.startswith("S1_R1 (") and other.endswith(").fastq.gz")
    assert sorted(p.stat().st_size for p in (tmp_path / "out").iterdir()) == [1000, 2000]
    assert report.requests["search"] == 1


async def test_unknown_ids_are_named_and_nothing_is_left_to_resume(server: RunningServer, tmp_path: Path) -> None:
    async with client(server, tmp_path / "home") as fx:
        with pytest.raises(NotFoundError, match="404404, 505505"):
            await fx.download(["404404", "505505"], output_dir=tmp_path / "out")
        journal = await fx.journal()
        assert journal.list_transfers(include_finished=True) == []


async def test_bad_names_refused_before_any_byte(server: RunningServer, tmp_path: Path) -> None:
    write_random(tmp_path / "src" / "good.bin", 10)
    write_random(tmp_path / "src" / "bad name.bin", 10)
    async with client(server, tmp_path / "home") as fx:
        with pytest.raises(UsageError, match="bad name.bin"):
            await fx.upload([tmp_path / "src"])
        with pytest.raises(UsageError, match="no such file"):
            await fx.upload([tmp_path / "missing"])
        assert fx.client.limiter.requests_by_class()["upload"] == 0


async def _stop_after(fx: Flowxfer, events: list[Any], nbytes: int) -> None:
    moved = sum(e.nbytes for e in events if isinstance(e, BytesMoved))
    if moved >= nbytes:
        fx.stop()


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
async def test_stopped_upload_resumes_without_resending(tmp_path: Path, extensions: bool) -> None:
    big = write_random(tmp_path / "src" / "big.bin", 60 * CHUNK + 3, 7)
    small = [write_random(tmp_path / "src" / f"s{i}.bin", 3000, i) for i in range(5)]
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        stopper = StopAfter(20 * CHUNK)
        async with client(srv, tmp_path / "home", progress=stopper, concurrency=2, grace_period=5) as fx:
            stopper.fx = fx
            first = await fx.upload([tmp_path / "src"])
        assert first.status == "interrupted" and first.stop_reason == "stopped"
        async with client(srv, tmp_path / "home", concurrency=2) as fx:
            second = await fx.upload([tmp_path / "src"])
            assert second.status == "completed" and second.resumed
            assert second.transfer_id == first.transfer_id
            total = big.stat().st_size + sum(p.stat().st_size for p in small)
            sent = first.bytes_transferred + second.bytes_transferred
            # Nothing acknowledged is sent again: at most one chunk per file in flight.
            assert total <= sent <= total + 2 * CHUNK
            ids = {f.filename: f.id for f in second.files}
            out = await fx.download(list(ids.values()), output_dir=tmp_path / "out")
            assert out.status == "completed"
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
async def test_stopped_download_resumes_from_the_part_file(tmp_path: Path, extensions: bool) -> None:
    big = write_random(tmp_path / "big.bin", 80 * CHUNK + 11, 8)
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        async with client(srv, tmp_path / "home") as fx:
            (item,) = (await fx.upload([big])).files
        stopper = StopAfter(30 * CHUNK)
        async with client(
            srv, tmp_path / "home", progress=stopper, segments=4, block_size=16 * KiB, grace_period=0.2
        ) as fx:
            stopper.fx = fx
            first = await fx.download([item.id], output_dir=tmp_path / "out")
        assert first.status == "interrupted"
        assert (tmp_path / "out" / "big.bin.part").exists() and not (tmp_path / "out" / "big.bin").exists()
        async with client(srv, tmp_path / "home", segments=4) as fx:
            second = await fx.download([item.id], output_dir=tmp_path / "out")
        assert second.status == "completed" and second.transfer_id == first.transfer_id
        size = big.stat().st_size
        # Streams cut mid-chunk lose that chunk only: at most one chunk per stream.
        assert first.bytes_transferred + second.bytes_transferred <= size + 4 * CHUNK
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()
    journal = Journal.open(tmp_path / "home" / "journal.db")
    try:
        (row,) = journal.iter_files(second.transfer_id)
        assert {c.state for c in journal.chunks(row.id)} == {ChunkState.VERIFIED}
    finally:
        journal.close()


async def test_tokens_expiring_every_two_seconds(tmp_path: Path) -> None:
    files = [write_random(tmp_path / "src" / f"f{i}.bin", 6 * CHUNK, i) for i in range(3)]
    async with running_server(tmp_path / "root", access_ttl=2) as srv:
        # 1.1 MiB at 400 KiB/s: about three seconds each way, longer than an access token lives (it is
        # refreshed half a second before its end): the upload and then the download each need a new one.
        async with client(srv, tmp_path / "home", bwlimit="400k", concurrency=3) as fx:
            first_token = fx.client.tokens.access_token
            report = await fx.upload([tmp_path / "src"])
            assert report.status == "completed", report
            assert fx.client.tokens.access_token != first_token
            after_upload = fx.client.tokens.access_token
            down = await fx.download([f.id for f in report.files], output_dir=tmp_path / "out")
            assert down.status == "completed"
            assert fx.client.tokens.access_token != after_upload
    for f in files:
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


async def test_rate_limit_is_waited_for_and_learned(tmp_path: Path) -> None:
    files = [write_random(tmp_path / "src" / f"f{i}.bin", 100, i) for i in range(5)]
    events: list[Any] = []
    async with running_server(tmp_path / "root", rate_limits="upload=2/2s") as srv:
        async with client(srv, tmp_path / "home", events=events) as fx:
            report = await fx.upload([tmp_path / "src"])
    assert report.status == "completed"
    assert len([f for f in report.files if f.status == "done"]) == len(files)
    # Either our bucket (learned from the headers) made us wait, or a 429 did; never a failure.
    assert any(isinstance(e, Waiting) for e in events) or any(isinstance(e, Retrying) for e in events)


async def test_budget_exhausted_stops_cleanly_and_next_run_continues(tmp_path: Path) -> None:
    for i in range(4):
        write_random(tmp_path / "src" / f"f{i}.bin", 100, i)
    async with running_server(tmp_path / "root", rate_limits="upload=2/3s") as srv:
        async with client(srv, tmp_path / "home", max_wait=0.5) as fx:
            first = await fx.upload([tmp_path / "src"])
        assert first.status == "interrupted" and first.stop_reason == "budget"
        done_first = [f for f in first.files if f.status == "done"]
        assert len(done_first) == 2
        async with client(srv, tmp_path / "home") as fx:
            second = await fx.upload([tmp_path / "src"])
        assert second.status == "completed" and second.transfer_id == first.transfer_id
        assert second.requests["upload"] == 2


async def test_corrupt_journal_is_an_error_not_a_new_journal(server: RunningServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "journal.db").write_bytes(b"\x00garbage" * 512)
    async with client(server, home) as fx:
        with pytest.raises(JournalError):
            await fx.upload([write_random(tmp_path / "a.bin", 10)])
    assert (home / "journal.db").read_bytes().startswith(b"\x00garbage")


async def test_events_report_each_file_once(server: RunningServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    events: list[Any] = []
    async with client(server, tmp_path / "home", events=events) as fx:
        await fx.upload([tmp_path / "src"])
    finished = [e for e in events if isinstance(e, FileFinished)]
    assert sorted(e.name for e in finished) == sorted(f"f{i}_{s}.bin" for i, s in enumerate(SIZES))
    assert sum(e.nbytes for e in events if isinstance(e, BytesMoved)) == sum(SIZES)


def _rewrite(path: Path, seed: int) -> bytes:
    """New bytes of the same size and a later mtime: what an instrument still writing a file does."""
    size = path.stat().st_size
    write_random(path, size, seed)
    later = path.stat().st_mtime_ns + 10_000_000_000
    os.utime(path, ns=(later, later))
    return path.read_bytes()


async def test_file_changed_while_uploading_is_restarted_not_torn(any_server: RunningServer, tmp_path: Path) -> None:
    src = write_random(tmp_path / "growing.bin", 40 * CHUNK + 5, 1)
    original = src.read_bytes()
    final: list[bytes] = []

    def change_once(event: Any) -> None:
        if isinstance(event, BytesMoved) and event.path == str(src) and not final:
            final.append(_rewrite(src, 2))  # after the first chunk left: the rest would be the new version

    events: list[Any] = []
    async with client(any_server, tmp_path / "home", events=events, progress=change_once) as fx:
        report = await fx.upload([src])
        assert report.status == "completed", report
        (uploaded,) = report.files
        down = await fx.download([uploaded.id or ""], output_dir=tmp_path / "out")
        assert down.status == "completed", down
    assert final and final[0] != original
    assert (tmp_path / "out" / "growing.bin").read_bytes() == final[0]  # the new version, whole: nothing torn
    assert any(isinstance(e, Notice) and "changed while being uploaded" in e.message for e in events)


async def test_file_that_keeps_changing_fails_alone(server: RunningServer, tmp_path: Path) -> None:
    restless = write_random(tmp_path / "restless.bin", 40 * CHUNK, 3)
    calm = write_random(tmp_path / "calm.bin", 3 * CHUNK, 4)
    seeds = iter(range(10, 10_000))

    def change_always(event: Any) -> None:
        if isinstance(event, BytesMoved) and event.path == str(restless):
            _rewrite(restless, next(seeds))

    async with client(server, tmp_path / "home", progress=change_always, file_restarts=1, concurrency=1) as fx:
        report = await fx.upload([restless, calm])
    outcome = {f.filename: f for f in report.files}
    assert report.status == "partial", report
    assert outcome["calm.bin"].status == "done"
    assert outcome["restless.bin"].status == "failed"
    assert "kept changing" in str(outcome["restless.bin"].error), outcome["restless.bin"].error


async def test_a_small_file_changed_after_it_was_read_ahead_is_sent_as_planned(
    server: RunningServer, tmp_path: Path
) -> None:
    """Small files are read ahead of their workers: one that changes after that and before its
    worker starts is sent as it was planned (the journal says so), and the next run sends the
    new version. (Without read-ahead the worker would have sent the new version at once.)"""
    first = write_random(tmp_path / "src" / "a.bin", 3 * KiB, 1)
    second = write_random(tmp_path / "src" / "b.bin", 3 * KiB, 2)
    planned = second.read_bytes()
    changed: list[bytes] = []

    def change_second_as_it_starts(event: Any) -> None:
        if isinstance(event, FileStarted) and event.path == str(second) and not changed:
            changed.append(_rewrite(second, 3))  # same size, a later mtime

    async with client(server, tmp_path / "home", progress=change_second_as_it_starts, concurrency=1) as fx:
        report = await fx.upload([first, second])
        assert report.status == "completed", report
        sent = {f.path: f.id for f in report.files}
        down = await fx.download([sent[str(second)] or ""], output_dir=tmp_path / "out")
        assert down.status == "completed", down
        assert (tmp_path / "out" / "b.bin").read_bytes() == planned != changed[0]

        again = await fx.upload([first, second])
        assert {f.path: f.status for f in again.files} == {str(first): "skipped", str(second): "done"}
        newer = {f.path: f.id for f in again.files}[str(second)]
        down = await fx.download([newer or ""], output_dir=tmp_path / "out2")
        assert (tmp_path / "out2" / "b.bin").read_bytes() == changed[0]
