"""write_direct and read_direct: every byte lands where it belongs and comes back, direct or through the page cache."""

from __future__ import annotations

import errno
import fcntl
import gc
import mmap
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowxfer import _os
from flowxfer._os import (
    DIRECT_ALIGN,
    _open_direct,
    _pwrite_aligned,
    in_place_alignment,
    read_direct,
    spread_subfolders,
    write_direct,
)

KiB = 1024
MiB = 1024 * KiB


def _pieces(sizes: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


def _write_and_check(path: Path, offset: int, pieces: list[bytes], views: bool) -> None:
    """Write ``pieces`` at ``offset`` into a file full of a known pattern; only the run may change."""
    total = sum(len(p) for p in pieces)
    size = offset + total + 3 * DIRECT_ALIGN + 17
    before = bytes(range(256)) * (size // 256 + 1)
    before = before[:size]
    path.write_bytes(before)
    fd = os.open(path, os.O_RDWR)
    try:
        given_pieces = [memoryview(p)[0:] for p in pieces] if views else pieces
        assert write_direct(fd, given_pieces, offset) == total
        os.fdatasync(fd)
    finally:
        os.close(fd)
    expected = before[:offset] + b"".join(pieces) + before[offset + total :]
    after = path.read_bytes()
    assert len(after) == len(expected)
    assert after == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset=st.integers(0, 3 * DIRECT_ALIGN + 5),
    sizes=st.lists(st.integers(1, 200 * KiB), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    views=st.booleans(),
)
def test_any_run_lands_exactly(tmp_path: Path, offset: int, sizes: list[int], seed: int, views: bool) -> None:
    _write_and_check(tmp_path / "f", offset, _pieces(sizes, seed), views)


def test_a_buffer_s_place_in_its_alignment_unit_is_known_only_where_it_can_be_written_in_place() -> None:
    buffer = mmap.mmap(-1, 2 * DIRECT_ALIGN)  # anonymous mappings start on a page
    view = memoryview(buffer)
    assert in_place_alignment(view) == 0
    assert in_place_alignment(view[5:]) == 5
    assert in_place_alignment(view[DIRECT_ALIGN + 7 :]) == 7
    assert in_place_alignment(b"read-only bytes") is None
    assert in_place_alignment(view[3:3]) is None
    del view
    buffer.close()  # no export of the buffer outlives the question


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset=st.integers(0, 3 * DIRECT_ALIGN + 5),
    size=st.integers(256 * KiB, 4 * MiB + 2 * DIRECT_ALIGN),
    seed=st.integers(0, 2**16),
)
def test_a_run_received_in_place_lands_exactly(tmp_path: Path, offset: int, size: int, seed: int) -> None:
    """One writable buffer placed as its file offset is (a download received in place) is written from where it is."""
    data = random.Random(seed).randbytes(size)
    at = offset % DIRECT_ALIGN
    buffer = mmap.mmap(-1, size + DIRECT_ALIGN)
    region = memoryview(buffer)[at : at + size]
    region[:] = data
    assert in_place_alignment(region) == offset % DIRECT_ALIGN
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * ((offset + size + 2 * DIRECT_ALIGN) // 256 + 1))
    before = path.read_bytes()
    while not _os._bounce_buffers.empty():
        _os._bounce_buffers.get_nowait()
    fd = os.open(path, os.O_RDWR)
    try:
        assert write_direct(fd, [region], offset) == size
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == before[:offset] + data + before[offset + size :]
    assert _os._bounce_buffers.empty(), "the bytes were copied into a bounce buffer, not written from where they were"


@pytest.mark.parametrize("offset", [0, 1, DIRECT_ALIGN - 1, DIRECT_ALIGN, 5 * MiB + 123])
def test_runs_longer_than_one_bounce_buffer(tmp_path: Path, offset: int) -> None:
    # 9 MiB in socket-sized, unaligned pieces: three bounce buffers, a head and a tail.
    sizes = [256 * KiB - 7] * 36 + [1234]
    _write_and_check(tmp_path / "f", offset, _pieces(sizes, offset), views=True)


def test_a_direct_write_the_disk_refuses_falls_back_to_the_page_cache(tmp_path: Path) -> None:
    # A buffer the kernel will not take directly (misaligned address: EINVAL, as a disk that wants
    # a larger alignment answers) is written through the ordinary descriptor instead.
    path = tmp_path / "f"
    path.write_bytes(bytes(3 * DIRECT_ALIGN))
    data = bytearray(random.Random(5).randbytes(DIRECT_ALIGN + 1))
    fd = os.open(path, os.O_RDWR)
    direct_fd = _open_direct(fd)
    try:
        assert direct_fd >= 0, "this test needs a filesystem with direct I/O (ext4, xfs, tmpfs on Linux)"
        assert _pwrite_aligned(direct_fd, fd, memoryview(data)[1:], DIRECT_ALIGN) is False
        os.fdatasync(fd)
    finally:
        os.close(direct_fd)
        os.close(fd)
    assert path.read_bytes() == bytes(DIRECT_ALIGN) + bytes(data[1:]) + bytes(DIRECT_ALIGN)


def test_an_empty_run_writes_nothing(tmp_path: Path) -> None:
    _write_and_check(tmp_path / "f", 10, [], views=False)


def _topdir_flag(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, flags, True)  # FS_IOC_GETFLAGS
        return bool(int.from_bytes(flags, sys.byteorder) & 0x00020000)  # FS_TOPDIR_FL
    except OSError:
        return False
    finally:
        os.close(fd)


def test_spread_subfolders_says_whether_the_flag_took(tmp_path: Path) -> None:
    folder = tmp_path / "trees"
    folder.mkdir()
    took = spread_subfolders(folder)
    assert took == _topdir_flag(folder)
    assert spread_subfolders(tmp_path / "missing") is False


def test_the_server_spreads_its_unpacked_trees(tmp_path: Path) -> None:
    # Where the filesystem has the flag (ext2/3/4), the server sets it on trees/ at start-up.
    from flowxfer.server._app import _open_state
    from flowxfer.server._config import ServerConfig

    probe = tmp_path / "probe"
    probe.mkdir()
    state = _open_state(ServerConfig(root=tmp_path / "root", users={}))
    try:
        assert _topdir_flag(state.layout.trees) == spread_subfolders(probe)
    finally:
        state.store.close()


def test_a_burst_of_writers_does_not_stay_resident(tmp_path: Path) -> None:
    # Eight runs written at once take eight aligned buffers; afterwards at most _BOUNCE_KEPT stay.
    import threading

    from flowxfer._os import _BOUNCE_KEPT, _bounce_buffers

    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            pieces = _pieces([1024 * KiB - 3] * 3, index)
            barrier.wait()
            _write_and_check(tmp_path / f"f{index}", 5, pieces, views=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _bounce_buffers.qsize() <= _BOUNCE_KEPT


# --- read_direct -------------------------------------------------------------------------------


def _read_all(path: Path) -> bytes:
    """Every block ``read_direct`` yields, copied before the next is asked for (views do not outlive it)."""
    return b"".join(bytes(block) for block in read_direct(path))


@pytest.mark.parametrize("size", [0, 1, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, 4 * MiB, 9 * MiB + 7])
def test_read_direct_reads_every_byte_in_order(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    data = random.Random(size).randbytes(size)
    path.write_bytes(data)
    assert _read_all(path) == data


def test_read_direct_sees_what_write_direct_just_wrote(tmp_path: Path) -> None:
    # An upload's partial file: an unaligned head and tail in the page cache, the middle on disk only.
    path = tmp_path / "f"
    pieces = _pieces([256 * KiB - 7] * 20 + [999], 3)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        write_direct(fd, pieces, 0)
        write_direct(fd, pieces[:3], sum(len(p) for p in pieces))
    finally:
        os.close(fd)
    assert _read_all(path) == b"".join(pieces) + b"".join(pieces[:3])


def _watch_reads(
    monkeypatch: pytest.MonkeyPatch,
    tamper: Callable[[bool, list[memoryview]], list[memoryview]] = lambda direct, buffers: buffers,
) -> list[tuple[bool, int]]:
    """Each ``os.preadv`` as (on a direct descriptor?, offset); ``tamper`` may shorten the buffers or raise."""
    reads: list[tuple[bool, int]] = []
    real_preadv = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        reads.append((direct, offset))
        return real_preadv(fd, tamper(direct, buffers), offset)

    monkeypatch.setattr(os, "preadv", preadv)
    return reads


def _random_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def test_read_direct_reads_through_the_page_cache_where_a_direct_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk that wants a larger alignment answers EINVAL to the direct read: the rest is read the
    # ordinary way, from where the direct reads stopped.
    data = _random_file(tmp_path / "f", 9 * MiB + 3, 8)

    def refuse_the_second(direct: bool, buffers: list[memoryview]) -> list[memoryview]:
        if direct and sum(d for d, _ in reads) > 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return buffers

    reads = _watch_reads(monkeypatch, refuse_the_second)
    assert _read_all(tmp_path / "f") == data
    assert [offset for direct, offset in reads if direct] == [0, 4 * MiB], (
        "this test needs a filesystem with direct I/O (ext4, xfs, tmpfs on Linux)"
    )


def test_read_direct_continues_after_short_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read may return fewer bytes than asked anywhere, not only at the end: each block starts where
    # the last one ended (direct reads cut short at an aligned length, buffered ones at any length).
    data = _random_file(tmp_path / "f", 5 * MiB + 11, 10)
    reads = _watch_reads(monkeypatch, lambda direct, buffers: [buffers[0][: 3 * DIRECT_ALIGN if direct else 1000]])
    assert _read_all(tmp_path / "f") == data
    assert any(direct for direct, _ in reads)


def test_read_direct_reads_a_small_file_through_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _random_file(tmp_path / "f", 100 * KiB, 11)
    reads = _watch_reads(monkeypatch)
    assert _read_all(tmp_path / "f") == data
    assert reads and not any(direct for direct, _ in reads)


def test_read_direct_stopped_early_closes_what_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(9 * MiB))
    before = len(os.listdir("/proc/self/fd"))
    blocks = read_direct(path)
    assert len(next(blocks)) > 0
    blocks.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(FileNotFoundError):
        next(read_direct(tmp_path / "missing"))


def test_a_block_kept_past_the_reading_stays_valid(tmp_path: Path) -> None:
    # A block still referenced when the reader is dropped (an unpacker's traceback holds one):
    # no error while the reader is closed, and the bytes stay readable.
    path = tmp_path / "f"
    data = random.Random(9).randbytes(5 * MiB)
    path.write_bytes(data)
    blocks = read_direct(path)
    kept = memoryview(next(blocks))[10:20]
    blocks.close()
    del blocks
    gc.collect()
    assert bytes(kept) == data[10:20]


#: Threads that allocate, then glibc's own account of its arenas (``malloc_info``): how many heaps it keeps.
_COUNT_ARENAS = """
import ctypes, os, sys, tempfile, threading
from flowxfer._os import limit_malloc_arenas
if sys.argv[1] == "limited":
    assert limit_malloc_arenas()
barrier = threading.Barrier(5)
def work():
    held = [os.urandom(256 * 1024) for _ in range(4)]  # a worker thread's blocks, as a transfer reads them
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
barrier.wait()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = sys.argv[2]
handle = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, handle)
libc.fclose(handle)
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_keeps_to_one_arena_when_limited(tmp_path: Path) -> None:
    """Worker threads' allocations share one arena once limited (four threads, four more without)."""

    def heaps(mode: str) -> int:
        command = [sys.executable, "-c", _COUNT_ARENAS, mode, str(tmp_path / f"{mode}.xml")]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return int(done.stdout)

    assert heaps("limited") == 1
    assert heaps("free") > 1  # the test can tell: without the limit glibc gives threads arenas of their own
