"""Operating-system helpers both the engine and the local server use (no protocol, no I/O policy).

Kept beside :mod:`flowxfer.protocol` so neither side imports the other.
"""

from __future__ import annotations

import ctypes
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
