"""Where upload bytes come from: a local file, or a tar stream generated on the fly.

Reads are blocking (``pread``) and run in worker threads. Every read checks
that the source is still the one that was planned (size and mtime): a file
that changes while it is being uploaded must be restarted, never shipped torn.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import anyio

from flowxfer.journal import FileRecord

from ._errors import LocalIOError, SourceChangedError

#: Files up to this size are read by :class:`ReadAhead` before their worker asks.
READ_AHEAD_LIMIT = 256 * 1024
#: Reading ahead stops for the rest of a transfer when a group takes longer than this
#: (seconds: a fixed allowance for the hand-off, and so much per file). A small file in the
#: page cache of a local disk reads in ~20 us, and a group of 16 took 4-5 ms (30 ms at worst)
#: on two busy cores; on a network mount or a cold disk a file takes milliseconds, and then
#: reading a group one file after another keeps the workers waiting, where each worker
#: reading its own file (all at once) does not.
READ_AHEAD_SLOW = (0.1, 0.005)
#: A group not read after this many seconds is abandoned (a mount that hangs), and reading
#: ahead stops: the files' own workers meet the problem, as they always did.
READ_AHEAD_PATIENCE = 2.0


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words, for error messages."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class Source(Protocol):
    """Random-access, read-only bytes of a known size."""

    size: int

    def open(self) -> None: ...

    def read(self, offset: int, length: int) -> bytes | bytearray: ...

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
        try:
            mode = os.fstat(self._fd).st_mode
            if not stat.S_ISREG(mode):
                raise LocalIOError(f"cannot read {self.path}: not a regular file (now {describe_mode(mode)})")
            self._check()
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            self.close()  # a file that changed since it was planned must not cost a descriptor
            raise

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
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class ReadAhead:
    """Small files read ahead of the workers that upload them, a group per worker-thread call.

    Why: handing one read to a worker thread costs the event loop more than
    the read itself (the hand-off, the wake-up and anyio's bookkeeping came
    to 17% of the client's CPU for 10,000 files of 16 KiB), and a folder of
    small files is bounded by what each file costs. The transfer's producer
    reads the next group of files in one call and a worker takes its file's
    bytes instead of reading them. A file that cannot be read ahead (gone,
    changed, unreadable) is left out: its worker reads it and reports the
    problem where it always does. Bytes are taken only for the very size and
    mtime they were read at, so a record planned again after a change
    (``start_over``) never gets the old bytes.

    A file that changes after it was read ahead and before its worker takes
    it is sent as it was planned (the bytes read then, checked against the
    planned size and mtime): consistent with what the journal records, and
    the next run sends the new version.

    Reading ahead pays only where reading is cheap: a group that is slow
    (:data:`READ_AHEAD_SLOW`) or hangs (:data:`READ_AHEAD_PATIENCE`) turns
    it off for the rest of the transfer, and every worker reads its own file
    again, all at once.

    Memory: the producer's lead, at most its group and the workers' queue
    (2 × ``concurrency`` files), of at most :data:`READ_AHEAD_LIMIT` each:
    8 MiB at the default 16 files at once. (A worker holds the small file it
    sends either way.)
    """

    def __init__(
        self,
        wanted: Callable[[FileRecord], bool],
        *,
        slow: tuple[float, float] = READ_AHEAD_SLOW,
        patience: float = READ_AHEAD_PATIENCE,
    ) -> None:
        self._wanted = wanted
        self._slow = slow
        self._patience = patience
        self._loaded: dict[int, tuple[int, int | None, MemorySource]] = {}
        self.enabled = True

    async def read(self, records: Sequence[FileRecord]) -> None:
        """Read the wanted small files among ``records``, in one worker-thread call."""
        if not self.enabled:
            return
        wanted = [r for r in records if r.size <= READ_AHEAD_LIMIT and r.mtime_ns is not None and self._wanted(r)]
        if not wanted:
            return
        started = time.monotonic()
        loaded = None
        with anyio.move_on_after(self._patience):
            # Abandoned, not waited for, when the patience runs out: its thread may be stuck in
            # the file system; what it reads after that is dropped with it.
            loaded = await anyio.to_thread.run_sync(_read_small, wanted, abandon_on_cancel=True)
        fixed, per_file = self._slow
        if loaded is None or time.monotonic() - started > fixed + per_file * len(wanted):
            self.enabled = False
        if loaded:
            self._loaded.update(loaded)

    def take(self, record: FileRecord) -> MemorySource | None:
        """``record``'s bytes if they were read ahead for its size and mtime (once; then they are gone)."""
        loaded = self._loaded.pop(record.id, None)
        if loaded is None or loaded[:2] != (record.size, record.mtime_ns):
            return None
        return loaded[2]


def _read_small(records: Sequence[FileRecord]) -> dict[int, tuple[int, int | None, MemorySource]]:
    loaded = {}
    for record in records:
        try:
            loaded[record.id] = (
                record.size,
                record.mtime_ns,
                FileSource(record.local_path, record.size, record.mtime_ns).load(),
            )
        except (LocalIOError, SourceChangedError, OSError):
            pass  # its worker reads it again and reports what is wrong
    return loaded
