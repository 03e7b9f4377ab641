"""The ``.part`` file a download writes into, on the local disk.

Everything here is about the local file, not the network: where the
``.part`` file lives (beside its target, so the final rename is atomic), how
it is preallocated, how a block is written and hashed in one pass, which
chunks a crash left written but not journaled, and how a local write error
is told to the user (what to fix, and that running again resumes).
:mod:`._download` streams the bytes and calls these from worker threads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import xxhash

from flowxfer import protocol
from flowxfer._os import write_direct

from ._checksums import hash_range
from ._chunks import Chunk
from ._errors import LocalIOError

__all__ = [
    "chunk_digest",
    "contiguous_runs",
    "part_path",
    "preallocate",
    "rehash_chunks",
    "write_block",
    "write_error",
]


def part_path(target: Path) -> Path:
    """The ``.part`` file beside a target: same folder, so the final rename is atomic."""
    return target.with_name(target.name + ".part")


#: Local errors the user can fix, and what to tell them (the journal keeps everything done so far).
_FIXABLE = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota)",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EACCES: "give this user write permission on the folder",
    errno.EPERM: "the folder or file refuses changes (immutable?)",
    errno.EROFS: "the filesystem is read-only",
}


def write_error(path: Path, exc: OSError, need: int | None, doing: str = "cannot write") -> LocalIOError:
    """A local write error said plainly: what, where, why, and that running the same command resumes."""
    message = f"{doing} {path}: {exc.strerror or exc}"
    if need is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        message += f" ({need} bytes needed)"
    hint = _FIXABLE.get(exc.errno or 0)
    if hint:
        message += f"; {hint}, then run the same command again to resume"
    return LocalIOError(message)


def preallocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            os.ftruncate(fd, size)
        else:
            raise


def write_block(fd: int, offset: int, pieces: list[memoryview], hasher: xxhash.xxh3_128 | None) -> None:
    """Write and hash one block (worker thread): the same bytes feed the disk and the hash.

    The block is about to be ``fdatasync``ed (before the journal says its
    chunk is acknowledged), so it is written past the page cache where the
    filesystem allows (:func:`write_direct`): one copy into a reused aligned
    buffer instead of a copy into fresh page-cache pages and a writeback.
    """
    if hasher is not None:
        for piece in pieces:
            hasher.update(piece)
    write_direct(fd, pieces, offset)


def chunk_digest(fd: int, chunk: Chunk) -> str:
    """The checksum of one chunk as it is on disk (worker thread).

    For a chunk two streams wrote (one took the other's tail): neither saw
    all of its bytes in order, so it is read back and hashed once complete.
    """
    hasher = protocol.new_hasher()
    hash_range(lambda offset, length: os.pread(fd, length, offset), chunk.offset, chunk.size, [hasher])
    return protocol.format_checksum(hasher.hexdigest())


def rehash_chunks(fd: int, chunks: Sequence[Chunk], sums: Sequence[str | None]) -> list[int]:
    """Indexes of chunks whose bytes on disk already match the map (recovered after a crash).

    A stream writes its chunks in order, so chunks written but not yet
    journaled sit at the start of each run of unacknowledged chunks: each run
    is read from its start up to its first mismatch, not to its end (the rest
    of a run is mostly preallocated zeros, which would be read for nothing).
    """
    good = []
    for run in contiguous_runs(chunks):
        for chunk in run:
            expected = sums[chunk.index]
            data = os.pread(fd, chunk.size, chunk.offset) if expected is not None else b""
            if expected is None or len(data) != chunk.size or protocol.checksum_of(data) != expected:
                break
            good.append(chunk.index)
    return good


def contiguous_runs(chunks: Sequence[Chunk]) -> list[list[Chunk]]:
    runs: list[list[Chunk]] = []
    for chunk in chunks:
        if runs and runs[-1][-1].end == chunk.offset and runs[-1][-1].index + 1 == chunk.index:
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    return runs
