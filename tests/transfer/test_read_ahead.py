"""Small files read ahead of their workers: taken once, only for the size and mtime they were read at."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from flowxfer.journal import FileRecord, FileState
from flowxfer.transfer._errors import SourceChangedError
from flowxfer.transfer._sources import READ_AHEAD_LIMIT, FileSource, ReadAhead
from flowxfer.transfer._sync import plain_and_unsent
from flowxfer.transfer._workers import unsent

KiB = 1024


def planned(path: Path, record_id: int, **changes: object) -> FileRecord:
    """The journal's record of ``path`` as planned now (its size and mtime)."""
    st = path.stat()
    record = FileRecord(
        id=record_id,
        transfer_id="t",
        local_path=str(path),
        remote_name=path.name,
        data_id=None,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        chunk_size=0,
        checksum=None,
        etag=None,
        status=FileState.PLANNED,
        bytes_done=0,
        attempts=0,
        error=None,
        extra={},
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def write(path: Path, size: int, fill: bytes = b"a") -> Path:
    path.write_bytes(fill * size)
    return path


async def test_a_wanted_small_file_is_taken_once_with_its_bytes(tmp_path: Path) -> None:
    small = planned(write(tmp_path / "small", 16 * KiB, b"s"), 1)
    at_limit = planned(write(tmp_path / "at-limit", READ_AHEAD_LIMIT, b"l"), 2)
    large = planned(write(tmp_path / "large", READ_AHEAD_LIMIT + 1), 3)
    unwanted = planned(write(tmp_path / "unwanted", 10), 4, data_id="sent-before")
    empty = planned(write(tmp_path / "empty", 0), 5)
    ahead = ReadAhead(lambda record: record.data_id is None)

    await ahead.read([small, at_limit, large, unwanted, empty])

    first = ahead.take(small)
    assert first is not None and first.read(0, first.size) == b"s" * 16 * KiB
    assert ahead.take(small) is None  # once: the worker that took it owns it
    limit = ahead.take(at_limit)
    assert limit is not None and limit.size == READ_AHEAD_LIMIT
    assert ahead.take(large) is None  # its worker streams it as before
    assert ahead.take(unwanted) is None
    nothing = ahead.take(empty)
    assert nothing is not None and nothing.size == 0


async def test_a_file_changed_or_gone_since_planning_is_left_to_its_worker(tmp_path: Path) -> None:
    grown = tmp_path / "grown"
    grown_record = planned(write(grown, 100), 1)
    write(grown, 101)
    touched = tmp_path / "touched"
    touched_record = planned(write(touched, 100), 2)
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, a second later
    gone = tmp_path / "gone"
    gone_record = planned(write(gone, 100), 3)
    gone.unlink()
    fifo = tmp_path / "fifo"
    fifo_record = planned(write(fifo, 0), 4)
    fifo.unlink()
    os.mkfifo(fifo)  # an open that blocked here would hang the test
    ok_record = planned(write(tmp_path / "ok", 100, b"k"), 5)
    ahead = ReadAhead(lambda record: True)

    await ahead.read([grown_record, touched_record, gone_record, fifo_record, ok_record])

    for record in (grown_record, touched_record, gone_record, fifo_record):
        assert ahead.take(record) is None  # no error here: its worker reads it and reports it
    ok = ahead.take(ok_record)
    assert ok is not None and ok.read(0, 100) == b"k" * 100


async def test_bytes_read_ahead_are_not_given_to_the_record_planned_again(tmp_path: Path) -> None:
    """A file that changed is planned again under the same id (``start_over``): the old bytes
    must not be uploaded as the new version."""
    path = write(tmp_path / "f", 100, b"o")
    record = planned(path, 1)
    ahead = ReadAhead(lambda record: True)
    await ahead.read([record])
    write(path, 120, b"n")
    again = planned(path, 1)

    assert ahead.take(again) is None
    assert ahead.take(record) is None  # and they are gone, not kept for ever


async def test_bytes_read_ahead_are_not_given_for_another_mtime_of_the_same_size(tmp_path: Path) -> None:
    path = write(tmp_path / "f", 100, b"o")
    record = planned(path, 1)
    ahead = ReadAhead(lambda record: True)
    await ahead.read([record])
    assert record.mtime_ns is not None

    assert ahead.take(planned(path, 1, mtime_ns=record.mtime_ns + 1_000_000_000)) is None


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_files_that_changed_since_planning_cost_no_descriptor(tmp_path: Path) -> None:
    """Regression: an open whose size/mtime check failed kept its descriptor; read ahead, every
    small file of a run folder still being written cost one, until EMFILE."""
    records = []
    for index in range(50):
        path = write(tmp_path / f"f{index}", 100)
        records.append(planned(path, index, size=99))  # planned at another size
    before = open_descriptors()

    await ReadAhead(lambda record: True).read(records)
    for record in records:
        with pytest.raises(SourceChangedError):
            FileSource(record.local_path, record.size, record.mtime_ns).load()

    assert open_descriptors() == before


async def test_a_slow_group_turns_reading_ahead_off_and_keeps_what_it_read(tmp_path: Path) -> None:
    first = planned(write(tmp_path / "first", 100, b"1"), 1)
    second = planned(write(tmp_path / "second", 100, b"2"), 2)
    ahead = ReadAhead(lambda record: True, slow=(0.0, 0.0))  # any group is too slow

    await ahead.read([first])
    await ahead.read([second])

    assert not ahead.enabled
    taken = ahead.take(first)
    assert taken is not None and taken.read(0, 100) == b"1" * 100
    assert ahead.take(second) is None  # its worker reads it, as before read-ahead


async def test_a_group_that_outlasts_the_patience_is_abandoned(tmp_path: Path) -> None:
    record = planned(write(tmp_path / "f", 100), 1)
    ahead = ReadAhead(lambda record: True, patience=0.0)

    await ahead.read([record])

    assert not ahead.enabled
    assert ahead.take(record) is None


def test_only_plain_files_with_nothing_sent_are_read_ahead(tmp_path: Path) -> None:
    path = write(tmp_path / "f", 10)
    fresh = planned(path, 1)
    assert unsent(fresh) and plain_and_unsent(fresh)
    resumed = planned(path, 2, data_id="d1")  # the server holds part of it: ask it first
    assert not unsent(resumed) and not plain_and_unsent(resumed)
    tar = planned(path, 3, extra={"pack": "manifest"})  # a folder's tar, generated as it is sent
    assert not plain_and_unsent(tar)
