"""A parallel upload's chunks are read back for the whole-file hash past the page cache, as they were written.

Reading them back through the page cache allocated a page for every 4 KiB
and copied it out again: 0.8-1.1 s of the server's CPU per GiB on the two
cores it shares with the client and the path. The ranges read are any
chunk's: aligned or not, at the end of the file or short of it.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import mmap
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowxfer._os import DIRECT_ALIGN, read_direct
from flowxfer.protocol import checksum_of, format_checksum, new_hasher
from flowxfer.server import _sink
from flowxfer.server._sink import feed_file, feed_file_direct
from tests.server.conftest import Api
from tests.server.test_upload_parallel import _put
from tests.support.server import RunningServer

KiB = 1024
MiB = 1024 * KiB

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def _resident_pages(path: Path, offset: int, length: int) -> int:
    """How many pages of ``path``'s bytes ``[offset, offset + length)`` are in the page cache (mincore)."""
    page = mmap.PAGESIZE
    start = offset // page * page
    span = offset + length - start
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, span, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vector = (ctypes.c_ubyte * (-(-span // page)))()
            assert _libc.mincore(address, span, vector) == 0, os.strerror(ctypes.get_errno())
            return sum(v & 1 for v in vector)
        finally:
            _libc.munmap(address, span)
    finally:
        os.close(fd)


def _evicted(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _direct_io_works(folder: Path) -> bool:
    probe = folder / "direct-probe"
    probe.write_bytes(b"\0" * DIRECT_ALIGN)
    try:
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.preadv(fd, [memoryview(mmap.mmap(-1, DIRECT_ALIGN))], 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


# --- read_direct over a range ------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 3 * MiB),
    offset=st.one_of(st.integers(0, 3 * MiB), st.integers(0, 768).map(lambda k: k * DIRECT_ALIGN)),
    length=st.one_of(st.none(), st.integers(0, 3 * MiB)),
    read_size=st.sampled_from([DIRECT_ALIGN, 300 * KiB, 1 * MiB, 4 * MiB]),
    own_buffer=st.booleans(),
)
def test_a_range_comes_back_exact(
    tmp_path: Path, size: int, offset: int, length: int | None, read_size: int, own_buffer: bool
) -> None:
    path = tmp_path / "f"
    data = random.Random(size ^ offset).randbytes(size)
    path.write_bytes(data)
    buffer = mmap.mmap(-1, read_size) if own_buffer else None
    got = b"".join(bytes(v) for v in read_direct(path, offset, length, read_size, buffer))
    assert got == data[offset : None if length is None else offset + length]


def test_an_aligned_range_is_read_direct_and_an_unaligned_one_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_io_works(tmp_path):
        pytest.fail("this test needs a filesystem with direct I/O (tmp_path refused O_DIRECT)")
    path = tmp_path / "f"
    data = random.Random(5).randbytes(5 * MiB + 77)
    path.write_bytes(data)
    reads: list[bool] = []
    real_preadv = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    assert b"".join(bytes(v) for v in read_direct(path, 1 * MiB, 4 * MiB + 77, 1 * MiB)) == data[1 * MiB :]
    assert reads == [True] * 5
    reads.clear()
    assert b"".join(bytes(v) for v in read_direct(path, 1 * MiB + 1, 2 * MiB, 1 * MiB)) == data[MiB + 1 : 3 * MiB + 1]
    assert reads and not any(reads)


# --- the server's read-back ----------------------------------------------------------------------


def test_feed_file_direct_hashes_the_range_and_says_when_the_file_is_short(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = random.Random(9).randbytes(40 * MiB + 3)
    path.write_bytes(data)
    for offset, size in [(0, 0), (0, len(data)), (8 * MiB, 32 * MiB + 3), (1234, 5 * MiB), (40 * MiB, 3)]:
        hasher = new_hasher()
        feed_file_direct(path, offset, size, hasher)
        assert format_checksum(hasher.hexdigest()) == checksum_of(data[offset : offset + size])
    with pytest.raises(OSError, match="shorter"):
        feed_file_direct(path, 32 * MiB, 8 * MiB + 4, new_hasher())
    assert _sink._read_buffers.qsize() <= _sink._READ_BUFFERS_KEPT


def test_reading_back_leaves_the_page_cache_alone(tmp_path: Path) -> None:
    # The unit the server relies on; feed_file (the page cache) fills it.
    if not _direct_io_works(tmp_path):
        pytest.fail("this test needs a filesystem with direct I/O (tmp_path refused O_DIRECT)")
    path = tmp_path / "f"
    path.write_bytes(random.Random(2).randbytes(8 * MiB))
    _evicted(path)
    feed_file_direct(path, 0, 8 * MiB, new_hasher())
    assert _resident_pages(path, 0, 8 * MiB) == 0
    feed_file(path, 0, 8 * MiB, new_hasher())
    assert _resident_pages(path, 0, 8 * MiB) == 8 * MiB // mmap.PAGESIZE


async def _hashing_ahead_done() -> None:
    """Wait until the in-process server has no hash-ahead task left (it runs after a chunk's answer)."""
    for _ in range(1000):
        if not any(t.get_coro().__qualname__.endswith("._advance") for t in asyncio.all_tasks()):  # type: ignore[union-attr]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server kept hashing ahead for 10 s")


async def test_a_parallel_upload_is_hashed_past_the_page_cache_but_for_its_last_quarter(
    api: Api, server: RunningServer
) -> None:
    if not _direct_io_works(server.root):
        pytest.fail("this test needs a filesystem with direct I/O (the server's root refused O_DIRECT)")
    chunk, count = 512 * KiB, 16
    data = random.Random(4).randbytes(count * chunk)
    opened = await api.call(
        "POST", "/upload/parallel", "alice", json={"filename": "p.bin", "size": len(data), "chunk_size": chunk}
    )
    assert opened.status == 200, opened.body
    data_id = str(opened.json()["id"])
    partial = server.root / "partial" / data_id

    async def send(index: int) -> None:
        answer = await _put(api, data_id, data, index * chunk, chunk)
        assert answer.status == 200, answer.body
        await _hashing_ahead_done()  # each chunk read back before the next is recorded

    # The first chunk after five others: nothing extends the hashed prefix until it comes, then
    # six chunks are read back at once.
    for index in reversed(range(1, 6)):
        await send(index)
    _evicted(partial)
    for index in range(0, count):
        if index not in range(1, 6):
            await send(index)
    # Chunks 0-10 were read back with more than a quarter of the slots still to come; 11-15 not.
    assert _resident_pages(partial, 0, 11 * chunk) == 0
    assert _resident_pages(partial, 11 * chunk, 5 * chunk) == 5 * chunk // mmap.PAGESIZE
    finished = await api.call(
        "POST", f"/upload/parallel/{data_id}/finish", "alice", json={"file_checksum": checksum_of(data)}
    )
    assert finished.status == 200 and finished.json()["checksum"] == checksum_of(data), finished.body
    assert (server.root / "data" / data_id).read_bytes() == data
