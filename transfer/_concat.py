"""Several files read as one: a sample's lane files sent as one Flow file, never copied.

``samples sheet`` merges a sample's lanes by default: its reads1 on Flow is
the concatenation of the lanes' R1 files in lane order. Gzip members
concatenate into a valid gzip stream (RFC 1952: a gzip file is a series of
members), so the lane ``.fastq.gz`` files joined byte for byte are one valid
``.fastq.gz``, and no temporary copy is needed: :class:`ConcatSource` is an
upload :class:`~._sources.Source` whose ranges are read from the parts in
place, exactly as :class:`~._packing.TarSource` reads a tar that is never
stored.

The pure part, :class:`ConcatLayout`, maps a range of the whole onto ranges
of the parts (as :meth:`~._tarpack.TarLayout.segments_in` does for a tar, and
with the same :class:`~._tarpack.MemberPiece`); :func:`concat_identity`
names a list of parts by their paths, sizes and mtimes, so a journal can
tell that a merged file is still the one it planned (any part changed,
added, removed or reordered gives another identity).
"""

from __future__ import annotations

import bisect
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from ._errors import LocalIOError
from ._sources import FileSource, MemorySource, describe_mode
from ._tarpack import MemberPiece

__all__ = ["ConcatLayout", "ConcatSource", "Part", "concat_identity", "stat_part"]


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a concatenation, as planned: its path, size and modification time."""

    path: str
    size: int
    mtime_ns: int


def stat_part(path: str | os.PathLike[str]) -> Part:
    """The :class:`Part` for the regular file at ``path`` as it is now (blocking).

    :raises LocalIOError: the path is missing, unreadable or not a regular file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LocalIOError(f"{path}: no such file") from None
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LocalIOError(f"cannot read {path}: {describe_mode(st.st_mode)}, not a file")
    return Part(os.fspath(path), st.st_size, st.st_mtime_ns)


def concat_identity(parts: Sequence[Part]) -> str:
    """A name for exactly these parts, in this order, at these sizes and mtimes.

    Stable across processes and Python versions (xxh3-128 of a plain text
    line per part), so it can be journaled and compared on a later run.
    """
    digest = xxhash.xxh3_128()
    for part in parts:
        # Length-prefixed path: no path can be made to look like two parts.
        encoded = os.fsencode(part.path)
        digest.update(b"%d:%s %d %d\n" % (len(encoded), encoded, part.size, part.mtime_ns))
    return f"concat:{len(parts)}:{digest.hexdigest()}"


@dataclass(frozen=True)
class ConcatLayout:
    """Where each byte of a concatenation comes from.

    :ivar sizes: the parts' sizes, in order.
    :ivar starts: where each part starts in the whole.
    :ivar size: the whole's size.
    """

    sizes: tuple[int, ...]
    starts: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, sizes: Sequence[int]) -> ConcatLayout:
        """:raises ValueError: for no parts or a negative size."""
        if not sizes:
            raise ValueError("a concatenation needs at least one part")
        starts, offset = [], 0
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError(f"a part's size must be a non-negative integer, not {size!r}")
            starts.append(offset)
            offset += size
        return cls(tuple(sizes), tuple(starts), offset)

    def pieces(self, offset: int, length: int) -> list[MemberPiece]:
        """The parts' ranges that make up bytes ``[offset, offset + length)`` of the whole, in order.

        Empty parts contribute no piece.

        :raises ValueError: for a range that is negative or reaches past :attr:`size`.
        """
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} is outside the {self.size} bytes of the parts")
        pieces: list[MemberPiece] = []
        end = offset + length
        index = max(0, bisect.bisect_right(self.starts, offset) - 1)
        position = offset
        while position < end:
            start, size = self.starts[index], self.sizes[index]
            take = min(end, start + size) - position
            if take > 0:
                pieces.append(MemberPiece(index, position - start, take))
                position += take
            index += 1
        return pieces


class ConcatSource:
    """Several files uploaded as one (an upload :class:`~._sources.Source`), read in place.

    Each part is a :class:`~._sources.FileSource`: opened once, held to the
    size and mtime it was planned with on open and after every read, so a
    lane file that changes mid-upload raises :class:`SourceChangedError`
    instead of shipping a torn merge. A sample has a handful of lanes, so
    every part stays open while the file is sent.

    :ivar parts: the parts, in order.
    :ivar size: the whole's size.
    :ivar mtime_ns: the newest part's mtime (what a readiness check compares).
    :ivar identity: :func:`concat_identity` of the parts.
    """

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = tuple(parts)
        self.layout = ConcatLayout.of([part.size for part in self.parts])
        self.size = self.layout.size
        self.mtime_ns = max(part.mtime_ns for part in self.parts)
        self.identity = concat_identity(self.parts)
        self._files = [FileSource(part.path, part.size, part.mtime_ns) for part in self.parts]

    def open(self) -> None:
        """Open every part and check it is still as planned (blocking).

        :raises SourceChangedError: a part changed or disappeared.
        :raises LocalIOError: a part cannot be read.
        """
        try:
            for file in self._files:
                file.open()
        except BaseException:
            self.close()
            raise

    def read(self, offset: int, length: int) -> bytearray:
        """Bytes ``[offset, offset + length)`` of the whole (blocking).

        A new buffer every call (the request body may keep it until sent).

        :raises SourceChangedError: a part changed since it was planned.
        :raises LocalIOError: a part cannot be read.
        """
        buffer = bytearray(length)
        position = 0
        for piece in self.layout.pieces(offset, length):
            data = self._files[piece.member_index].read(piece.file_offset, piece.length)
            buffer[position : position + piece.length] = data
            position += piece.length
        return buffer

    def close(self) -> None:
        for file in self._files:
            file.close()

    def load(self) -> MemorySource:
        """Open, read whole, check and close: a small merged file in one worker-thread call."""
        self.open()
        try:
            return MemorySource(bytes(self.read(0, self.size)))
        finally:
            self.close()
