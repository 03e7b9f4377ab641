"""Operating-system helpers both the engine and the local server use (no protocol, no I/O policy).

Kept beside :mod:`flowxfer.protocol` so neither side imports the other.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import queue
import sys
from collections.abc import Callable, Generator, Sequence

_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """``sync_file_range(2)`` from libc (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def _load_syncfs() -> Callable[[int], int] | None:
    """``syncfs(2)`` from libc (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()
CAN_SYNC_FILESYSTEM = _syncfs is not None


#: ``mallopt(3)``'s ``M_ARENA_MAX``.
_M_ARENA_MAX = -8


def limit_malloc_arenas(count: int = 1) -> bool:
    """Keep glibc's malloc to ``count`` arenas for the rest of the process; False where it cannot be asked.

    A transfer reads its blocks (4 MiB) in worker threads, and glibc gives
    each thread its own arena; after the first such block is freed its
    dynamic mmap threshold rises above the block size, so later blocks come
    from those arenas, which keep what is freed. With 8 uploads in flight a
    ``samples upload-batch`` peaked at 157–204 MiB, with one arena at
    122–129 MiB and fewer page faults (the blocks are reused, not mapped
    afresh). The reads run under the GIL's allocator anyway, so more arenas
    buy no parallelism. Call it before any thread starts.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names created or renamed inside the folder ``path`` durable.

    :raises OSError: the folder cannot be opened or flushed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(target: str | os.PathLike[str] | int) -> None:
    """Flush every written byte and name of the filesystem holding ``target`` (one barrier for many files).

    Writing thousands of small files with an ``fsync`` each costs a disk
    flush per file; writing them all and flushing once costs one. Only call
    it where :data:`CAN_SYNC_FILESYSTEM` is true.

    ``target`` is a path, or a descriptor on that filesystem (left open).
    Linux reports a writeback error to ``syncfs`` only through descriptors
    opened before the error happened: to vouch for writes spread over a long
    time, pass one opened before the first of them.

    :raises OSError: the flush failed (the data may not be on disk).
    """
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    fd = target if isinstance(target, int) else os.open(target, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        if fd is not target:
            os.close(fd)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-written range to disk now, without waiting.

    Data that must be durable is ``fdatasync``ed before it is vouched for.
    Started early, the disk writes overlap with receiving the next bytes, and
    the ``fdatasync`` waits only for the last blocks. A no-op where the call
    does not exist; errors are ignored (the fdatasync that follows is what
    guarantees durability, this only makes it cheaper).
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


#: ``FS_IOC_GETFLAGS`` / ``FS_IOC_SETFLAGS`` and the ``T`` flag of chattr(1), from linux/fs.h.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subfolders(folder: str | os.PathLike[str]) -> bool:
    """Tell ext2/3/4 that the folders created inside ``folder`` are unrelated (``chattr +T``); True if it took.

    ext4 puts a new folder's files in the block group of the folder itself
    and, by default, a new folder near its parent. A folder that receives
    one sub-folder per upload (the server's unpacked trees) then keeps
    filling the same few groups, and where many files were just deleted
    there (a server root recreated, a test suite's churn) every new inode
    is found only after skipping the recently freed ones: creating a file
    was measured at 0.3–0.6 ms instead of 17 µs. With the flag the
    allocator spreads the sub-folders over groups with room. Elsewhere
    (other filesystems, other systems) this does nothing and says so.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        value = int.from_bytes(flags, sys.byteorder) | _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value.to_bytes(4, sys.byteorder))
        return True
    except OSError:
        return False  # not ext2/3/4, or not allowed to set flags here
    finally:
        os.close(fd)


#: A run of bytes to write: bytes from a socket, or views of them.
Buffer = bytes | bytearray | memoryview
#: At most this many pieces go to one ``pwritev`` (IOV_MAX is 1024 on Linux).
_MAX_IOV = 512


def pwrite_pieces(fd: int, pieces: Sequence[Buffer], offset: int) -> int:
    """Write ``pieces`` back to back at ``offset`` through the page cache; the bytes written (all of them).

    ``pwritev`` takes the pieces as they are, so nothing is joined first; a
    short write (a signal, a quota) continues where it stopped.
    """
    written = 0
    for start in range(0, len(pieces), _MAX_IOV):
        batch = pieces[start : start + _MAX_IOV]
        size = sum(len(p) for p in batch)
        done = os.pwritev(fd, batch, offset + written)
        if done < size:
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                step = os.pwrite(fd, rest, offset + written + done)
                rest = rest[step:]
                done += step
        written += done
    return written


#: Direct I/O wants the file offset, the length and the buffer's address aligned to the disk's
#: logical block size; 4096 covers 512-byte and 4K-sector disks alike. Never less than a memory
#: page: the unaligned head and tail of a run go through the page cache, and a direct write must
#: not share a page with them (on 64 KiB-page kernels a 4 KiB unit would let it).
DIRECT_ALIGN = max(4096, mmap.PAGESIZE)
#: Bytes gathered into one aligned buffer and written with one direct write.
_BOUNCE_SIZE = 4 * 1024 * 1024
#: Runs shorter than this go through the page cache (a small file, a chunk's last bytes):
#: for them a second open costs more than the copy it saves.
_DIRECT_MIN = 256 * 1024
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
_bounce_buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
#: Buffers kept between writes (16 MiB); more exist only while more writes run at once.
_BOUNCE_KEPT = 4


def write_direct(fd: int, pieces: Sequence[Buffer], offset: int) -> int:
    """Write ``pieces`` back to back at ``offset`` of ``fd``, bypassing the page cache where possible.

    For bytes that are about to be ``fdatasync``ed anyway (a download's
    ``.part`` file, an upload's partial file), a buffered write copies every
    byte into freshly allocated page-cache pages and then writes them out
    again; on virtual machines the first touch of those pages is slow and
    its cost varies from run to run by a factor of five. Here the aligned
    middle of the run is copied into a reused, aligned buffer and written with
    ``O_DIRECT`` (through a second open of the same file, so ``fd`` keeps its
    flags); the unaligned head and tail (under a page each) go through the
    page cache. Where direct I/O is not available (not Linux, an alignment
    the disk refuses) or not worth a second open (a run under 256 KiB), the
    bytes go through the page cache, a large run with its writeback started
    at once so the ``fdatasync`` finds most of it written. Either way the
    caller's ``fdatasync`` is what makes the bytes durable.

    Runs in a worker thread; returns the bytes written (all of them).

    :raises OSError: the write failed (a full disk, an I/O error).
    """
    total = sum(len(p) for p in pieces)
    head = min(total, -offset % DIRECT_ALIGN)
    middle = (total - head) // DIRECT_ALIGN * DIRECT_ALIGN
    direct_fd = _open_direct(fd) if total >= _DIRECT_MIN and middle > 0 else -1
    if direct_fd < 0:
        written = pwrite_pieces(fd, pieces, offset)
        if written >= _DIRECT_MIN:
            start_writeback(fd, offset, written)
        return written
    if len(pieces) == 1 and in_place_alignment(pieces[0]) == offset % DIRECT_ALIGN:
        # Received straight into an aligned buffer (a download's fast path): no copy at all.
        try:
            _write_in_place(direct_fd, fd, memoryview(pieces[0]).cast("B"), offset, head, middle)
        finally:
            os.close(direct_fd)
        return total
    try:
        source = _PieceReader(pieces)
        if head:
            pwrite_pieces(fd, source.take(head), offset)
        position = offset + head
        bounce = _acquire_bounce()
        try:
            # Released on every path: a buffer still exported cannot be closed, and that
            # BufferError would replace the real error (a full disk) on its way to the caller.
            with memoryview(bounce) as view:
                remaining = middle
                while remaining:
                    size = min(_BOUNCE_SIZE, remaining)
                    source.copy_into(view, size)
                    if direct_fd >= 0:
                        if not _pwrite_aligned(direct_fd, fd, view[:size], position):
                            # The rest of the run goes through the page cache. Forget the descriptor
                            # before closing it: a close that fails still frees the number, which
                            # another thread may be given at once, and must not be closed again.
                            refused, direct_fd = direct_fd, -1
                            os.close(refused)
                    else:
                        pwrite_pieces(fd, (view[:size],), position)
                        start_writeback(fd, position, size)
                    position += size
                    remaining -= size
        finally:
            _release_bounce(bounce)
        tail = total - head - middle
        if tail:
            pwrite_pieces(fd, source.take(tail), position)
    finally:
        if direct_fd >= 0:
            closing, direct_fd = direct_fd, -1
            os.close(closing)
    return total


def in_place_alignment(buffer: Buffer) -> int | None:
    """Where ``buffer`` starts within a :data:`DIRECT_ALIGN` unit of memory, or None for a read-only buffer.

    A writable buffer whose start sits at the same place in its unit as the
    file offset it goes to can be written with ``O_DIRECT`` as it is (its
    aligned middle at aligned addresses), with no copy into a bounce buffer.
    """
    view = memoryview(buffer)
    if view.readonly or not view.c_contiguous or view.nbytes == 0:
        return None
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor) % DIRECT_ALIGN
    finally:
        del anchor  # the export must end here, or the buffer could not be released (an mmap closed)


def _write_in_place(direct_fd: int, fd: int, view: memoryview, offset: int, head: int, middle: int) -> None:
    """Write ``view`` at ``offset``: its unaligned head and tail through ``fd``, its aligned middle directly."""
    if head:
        pwrite_pieces(fd, (view[:head],), offset)
    # Refused or short (an alignment the disk does not take), the rest goes through fd all the same.
    _pwrite_aligned(direct_fd, fd, view[head : head + middle], offset + head)
    if head + middle < len(view):
        pwrite_pieces(fd, (view[head + middle :],), offset + head + middle)


#: Bytes asked of each read by :func:`read_direct`.
_READ_SIZE = 4 * 1024 * 1024


def read_direct(
    path: str | os.PathLike[str],
    offset: int = 0,
    size: int | None = None,
    read_size: int = _READ_SIZE,
    buffer: mmap.mmap | None = None,
) -> Generator[memoryview, None, None]:
    """The bytes of the file ``path`` front to back, in views of one buffer, past the page cache where possible.

    ``offset`` and ``size`` (None: to the end) choose a range; it ends early
    where the file does (the caller counts). An ``offset`` that is not a
    multiple of :data:`DIRECT_ALIGN` is read through the page cache.
    ``read_size``: bytes asked of each read (rounded up to the alignment).
    ``buffer``: read into this (page-aligned) mapping instead of a new one, up
    to its length: a caller that reads many ranges keeps one, as a fresh
    mapping's every page is faulted in by the first read into it.

    For a file that was just written past the page cache (an upload's
    partial file, :func:`write_direct`) and is read once (a directory
    archive being unpacked): a buffered read would bring every byte back
    into freshly allocated page-cache pages and copy it out again. Here each
    block goes straight from the disk into one aligned buffer. Where direct
    I/O is not available (not Linux, a filesystem without it, an alignment
    the disk refuses) or not worth a second open (a file under 256 KiB), the
    file is read through the page cache into the same buffer.

    Each view is overwritten by the next read: a caller that keeps bytes
    copies them. The buffer is this call's own (not the write buffers'
    pool) and is never closed explicitly, so a view that outlives the
    reading (held by a traceback) stays valid and the buffer is unmapped
    with the last view of it.

    :raises OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    direct_fd = -1
    try:
        remaining = max(0, os.fstat(fd).st_size - offset)
        if size is not None:
            remaining = min(remaining, size)
        # (a small range: a second open costs more than it saves)
        if _O_DIRECT and remaining >= _DIRECT_MIN and offset % DIRECT_ALIGN == 0:
            try:
                direct_fd = os.open(path, os.O_RDONLY | _O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                direct_fd = -1  # a filesystem without direct I/O
        if buffer is not None:
            read_size = len(buffer) // DIRECT_ALIGN * DIRECT_ALIGN
        read_size = max(DIRECT_ALIGN, -(-read_size // DIRECT_ALIGN) * DIRECT_ALIGN)
        length = min(read_size, max(DIRECT_ALIGN, -(-remaining // DIRECT_ALIGN) * DIRECT_ALIGN))
        # Anonymous mappings are page-aligned, as direct I/O needs.
        view = memoryview(buffer if buffer is not None else mmap.mmap(-1, length))[:length]
        position = offset
        while remaining > 0:
            # A direct read asks for whole alignment units (past the range's end: only counted, not given).
            want = view[: min(length, -(-remaining // DIRECT_ALIGN) * DIRECT_ALIGN)]
            count = -1
            if direct_fd >= 0:
                try:
                    count = os.preadv(direct_fd, [want], position)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    # The rest goes through the page cache. Forget the descriptor before closing
                    # it (see write_direct): a close that fails still frees the number.
                    refused, direct_fd = direct_fd, -1
                    os.close(refused)
            if count < 0:
                count = os.preadv(fd, [want[: min(len(want), remaining)]], position)
            count = min(count, remaining)
            if count == 0:
                return
            yield view[:count]
            position += count
            remaining -= count
    finally:
        if direct_fd >= 0:
            os.close(direct_fd)
        os.close(fd)


def _open_direct(fd: int) -> int:
    """A second, ``O_DIRECT`` descriptor of the file behind ``fd``, or -1 where there can be none."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | _O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return -1  # no /proc, or a filesystem without direct I/O (tmpfs answers EINVAL)


def _acquire_bounce() -> mmap.mmap:
    """An aligned buffer (anonymous mappings are page-aligned), reused: hot pages, no allocation per write."""
    try:
        return _bounce_buffers.get_nowait()
    except queue.Empty:
        return mmap.mmap(-1, _BOUNCE_SIZE)


def _release_bounce(bounce: mmap.mmap) -> None:
    """Keep the buffer for the next write, unless enough are kept (a burst of writers must not stay resident)."""
    if _bounce_buffers.qsize() < _BOUNCE_KEPT:
        _bounce_buffers.put(bounce)
    else:
        bounce.close()


def _pwrite_aligned(direct_fd: int, fd: int, view: memoryview, position: int) -> bool:
    """One direct write of ``view``; False if the run must continue through the page cache.

    A disk that wants a larger alignment answers EINVAL (EOPNOTSUPP on some
    filesystems that accept the open but not the write), and a short direct
    write leaves the rest unaligned: in both cases the remaining bytes go
    through ``fd``. The caller closes ``direct_fd``.
    """
    try:
        done = os.pwrite(direct_fd, view, position)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        done = 0
    if done == len(view):
        return True
    pwrite_pieces(fd, (view[done:],), position + done)
    start_writeback(fd, position + done, len(view) - done)
    return False


class _PieceReader:
    """Reads a sequence of buffers front to back without joining them."""

    def __init__(self, pieces: Sequence[Buffer]) -> None:
        self._pieces = [memoryview(p).cast("B") for p in pieces if len(p)]
        self._index = 0
        self._offset = 0

    def take(self, size: int) -> list[memoryview]:
        """The next ``size`` bytes, as views."""
        out = []
        while size:
            piece = self._pieces[self._index]
            step = min(size, len(piece) - self._offset)
            out.append(piece[self._offset : self._offset + step])
            size -= step
            self._advance(step, len(piece))
        return out

    def copy_into(self, target: memoryview, size: int) -> None:
        """Copy the next ``size`` bytes to the start of ``target``."""
        filled = 0
        while filled < size:
            piece = self._pieces[self._index]
            step = min(size - filled, len(piece) - self._offset)
            target[filled : filled + step] = piece[self._offset : self._offset + step]
            filled += step
            self._advance(step, len(piece))

    def _advance(self, step: int, length: int) -> None:
        self._offset += step
        if self._offset == length:
            self._index += 1
            self._offset = 0
