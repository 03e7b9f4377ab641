"""Where upload bytes come from: a local file, or a tar stream generated on the fly.

Reads are blocking (``pread``) and run in worker threads. Every read checks
that the source is still the one that was planned (size and mtime): a file
that changes while it is being uploaded must be restarted, never shipped torn.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from ._errors import LocalIOError, SourceChangedError


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words, for error messages."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


class Source(Protocol):
    """Random-access, read-only bytes of a known size."""

    size: int

    def open(self) -> None: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class FileSource:
    """A regular file, read with ``pread`` and checked against its planned size and mtime."""

    def __init__(self, path: Path | str, size: int, mtime_ns: int | None) -> None:
        self.path = str(path)
        self.size = size
        self.mtime_ns = mtime_ns
        self._fd: int | None = None

    def open(self) -> None:
        # O_NONBLOCK: a FIFO put where the file was would otherwise block this open for ever
        # (no writer ever comes); it changes nothing for a regular file.
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            self._fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise SourceChangedError(f"{self.path} disappeared") from None
        except OSError as exc:
            raise LocalIOError(f"cannot read {self.path}: {exc.strerror}") from None
        mode = os.fstat(self._fd).st_mode
        if not stat.S_ISREG(mode):
            self.close()
            raise LocalIOError(f"cannot read {self.path}: not a regular file (now {describe_mode(mode)})")
        self._check()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def _check(self) -> None:
        assert self._fd is not None
        st = os.fstat(self._fd)
        if st.st_size != self.size or (self.mtime_ns is not None and st.st_mtime_ns != self.mtime_ns):
            raise SourceChangedError(f"{self.path} changed (size or modification time) since it was planned")

    def read(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise RuntimeError("FileSource.read before open")
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise LocalIOError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(data) != length:
            raise SourceChangedError(f"{self.path} shrank while it was being read")
        self._check()
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def load(self) -> MemorySource:
        """Open, read whole, check and close (blocking): a small file in one worker-thread call.

        The check after the read holds the bytes to the planned size and
        mtime, as every :meth:`read` does.
        """
        self.open()
        try:
            return MemorySource(self.read(0, self.size))
        finally:
            self.close()


class MemorySource:
    """A small file's bytes, read once (:meth:`FileSource.load`); reads are slices, no I/O."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def open(self) -> None:
        pass

    def read(self, offset: int, length: int) -> bytes:
        if offset == 0 and length == self.size:
            return self.data
        return self.data[offset:offset + length]

    def close(self) -> None:
        pass
