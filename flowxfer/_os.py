"""Operating-system helpers both the engine and the local server use (no protocol, no I/O policy).

Kept beside :mod:`flowxfer.protocol` so neither side imports the other.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

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
    return function  # type: ignore[no-any-return]


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
    return function  # type: ignore[no-any-return]


_syncfs = _load_syncfs()
CAN_SYNC_FILESYSTEM = _syncfs is not None


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Flush every written byte and name of the filesystem holding ``path`` (one barrier for many files).

    Writing thousands of small files with an ``fsync`` each costs a disk
    flush per file; writing them all and flushing once costs one. Only call
    it where :data:`CAN_SYNC_FILESYSTEM` is true.

    :raises OSError: the flush failed (the data may not be on disk).
    """
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
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
