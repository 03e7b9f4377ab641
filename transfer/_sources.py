"""Where upload bytes come from: a local file, or a tar stream generated on the fly.

Reads are blocking (``pread``) and run in worker threads. Every read checks
that the source is still the one that was planned (size and mtime): a file
that changes while it is being uploaded must be restarted, never shipped torn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ._errors import LocalIOError, SourceChangedError


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
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise SourceChangedError(f"{self.path} disappeared") from None
        except OSError as exc:
            raise LocalIOError(f"cannot read {self.path}: {exc.strerror}") from None
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
