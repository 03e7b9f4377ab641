"""Chunk plans, download segments, server chunk maps and resume ranges: byte arithmetic only.

A *chunk* is the unit of verification and of acknowledgement in the journal:
one upload request, or one checksummed span of a download. A *segment* is a
run of whole chunks fetched by one ranged ``GET``; downloads are rate-limited
per request, so a file gets a few long segments rather than one request per
chunk.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from flowxfer import protocol

__all__ = [
    "Chunk",
    "Segment",
    "chunk_checksums",
    "chunks_from_map",
    "plan_chunks",
    "plan_segments",
    "remaining_ranges",
]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes ``[offset, offset + size)`` of a file, the ``index``-th chunk of its plan."""

    index: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        """The offset just past the chunk's last byte."""
        return self.offset + self.size


def _require_int(value: object, what: str) -> int:
    # bool is an int subclass; a True chunk size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    return value


def plan_chunks(size: int, chunk_size: int) -> list[Chunk]:
    """Cut ``size`` bytes into contiguous chunks of ``chunk_size`` (the last one shorter).

    A 0-byte file gets exactly one chunk of size 0: the Flow protocol needs
    one upload request (with ``is_last=true``) even when there are no bytes.

    :param size: the file's size in bytes.
    :param chunk_size: bytes per chunk.
    :raises ValueError: if ``size`` < 0 or ``chunk_size`` <= 0.
    """
    _require_int(size, "size")
    _require_int(chunk_size, "chunk_size")
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive: {chunk_size}")
    if size == 0:
        return [Chunk(0, 0, 0)]
    return [
        Chunk(index, offset, min(chunk_size, size - offset)) for index, offset in enumerate(range(0, size, chunk_size))
    ]


@dataclass(frozen=True)
class Segment:
    """A run of whole, consecutive chunks fetched by one ranged request: bytes ``[offset, end)``."""

    index: int
    offset: int
    size: int
    chunks: tuple[Chunk, ...]

    @property
    def end(self) -> int:
        """The offset just past the segment's last byte."""
        return self.offset + self.size


def _cuts(prefix: Sequence[int], parts: int) -> list[int]:
    """Chunk indexes at which to cut ``len(prefix) - 1`` chunks into ``parts`` non-empty runs.

    ``prefix[i]`` is the byte offset where chunk ``i`` starts (``prefix[-1]``
    the total). Each cut goes to the chunk boundary nearest the ideal
    ``k * total / parts``, kept strictly increasing and leaving at least one
    chunk for every later run.
    """
    count = len(prefix) - 1
    total = prefix[-1]
    cuts = [0]
    for k in range(1, parts):
        lowest = cuts[-1] + 1
        highest = count - (parts - k)
        ideal = total * k / parts
        at = bisect.bisect_left(prefix, ideal, lowest, highest + 1)
        # bisect gives the first boundary >= ideal; the one before may be nearer.
        candidates = [i for i in (at - 1, at) if lowest <= i <= highest]
        cuts.append(min(candidates, key=lambda i: (abs(prefix[i] - ideal), i)))
    cuts.append(count)
    return cuts


def plan_segments(chunks: Sequence[Chunk], segments: int, min_segment_size: int = 0) -> list[Segment]:
    """Group a download's chunks into at most ``segments`` contiguous runs of balanced byte size.

    Fewer segments are made when there are fewer chunks, or when the file is
    too small for every segment to get ``min_segment_size`` bytes: each
    segment costs a request against the hourly download budget, so a small
    file is fetched whole. A single segment is always allowed, whatever its
    size. Chunks are never split (each is verified whole), so with irregular
    chunk sizes (a server's chunk map) the balance is as good as the chunk
    boundaries allow.

    :param chunks: the file's chunks, in order and contiguous (from
        :func:`plan_chunks` or :func:`chunks_from_map`). An empty list gives
        no segments.
    :param segments: the most segments wanted (``--segments``).
    :param min_segment_size: the fewest bytes worth one more request.
    :raises ValueError: if ``segments`` < 1, ``min_segment_size`` < 0 or the chunks are not contiguous.
    """
    _require_int(segments, "segments")
    _require_int(min_segment_size, "min_segment_size")
    if segments < 1:
        raise ValueError(f"segments must be at least 1: {segments}")
    if min_segment_size < 0:
        raise ValueError(f"min_segment_size must not be negative: {min_segment_size}")
    if not chunks:
        return []
    for before, after in zip(chunks, chunks[1:], strict=False):
        if after.offset != before.end:
            raise ValueError(f"chunks are not contiguous: {before} then {after}")
    base = chunks[0].offset
    prefix = [chunk.offset - base for chunk in chunks] + [chunks[-1].end - base]
    total = prefix[-1]
    parts = min(segments, len(chunks))
    if min_segment_size > 0:
        parts = min(parts, max(1, total // min_segment_size))
    while True:
        cuts = _cuts(prefix, parts)
        sizes = [prefix[b] - prefix[a] for a, b in zip(cuts, cuts[1:], strict=False)]
        # Irregular chunks can leave one run short even when the total would allow all of them.
        if parts == 1 or min(sizes) >= max(min_segment_size, 1):
            break
        parts -= 1
    return [
        Segment(number, chunks[a].offset, size, tuple(chunks[a:b]))
        for number, (a, b, size) in enumerate(zip(cuts, cuts[1:], sizes, strict=False))
    ]


def _entry_int(entry: Mapping[str, Any], key: str, position: int) -> int:
    if key not in entry:
        raise ValueError(f"chunk map entry {position} has no {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"chunk map entry {position}: {key} must be an integer, not {value!r}")
    return value


def chunks_from_map(entries: Sequence[Mapping[str, Any]], size: int) -> list[Chunk]:
    """Chunks from a server's chunk map (``[{"offset", "size", "checksum"}, ...]``), checked.

    A server that lies must not make us write outside the file or skip
    bytes, so the map must cover ``[0, size)`` exactly: offsets start at 0,
    each chunk starts where the previous ended, sizes are positive integers
    and add up to ``size``. A 0-byte file may come with an empty map or a
    single 0-size entry; both give the single 0-size chunk of
    :func:`plan_chunks`. A ``checksum``, when present and not null, must be
    a protocol checksum (see :func:`chunk_checksums` to read them).

    :param entries: the ``chunks`` list of ``GET /data/<id>/chunks`` (or ``GET /upload/<id>``).
    :param size: the file's size as the server reported it elsewhere.
    :raises ValueError: when the map is malformed or does not add up.
    """
    _require_int(size, "size")
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise ValueError(f"chunk map must be a list, not {type(entries).__name__}")
    if size == 0 and len(entries) <= 1:
        if entries:
            chunk = _checked_entry(entries[0], 0)
            if chunk.offset != 0 or chunk.size != 0:
                raise ValueError(f"chunk map of a 0-byte file has a chunk at {chunk.offset}+{chunk.size}")
        return [Chunk(0, 0, 0)]
    chunks: list[Chunk] = []
    expected_offset = 0
    for position, entry in enumerate(entries):
        chunk = _checked_entry(entry, position)
        if chunk.size <= 0:
            raise ValueError(f"chunk map entry {position} has size {chunk.size}; chunks must hold bytes")
        if chunk.offset != expected_offset:
            raise ValueError(
                f"chunk map entry {position} starts at {chunk.offset}, expected {expected_offset} "
                "(chunks must be contiguous from 0)"
            )
        if chunk.end > size:
            raise ValueError(f"chunk map runs past the file's size {size} (entry {position} ends at {chunk.end})")
        chunks.append(chunk)
        expected_offset = chunk.end
    if expected_offset != size:
        raise ValueError(f"chunk map covers {expected_offset} bytes, but the file has {size}")
    return chunks


def _checked_entry(entry: object, position: int) -> Chunk:
    if not isinstance(entry, Mapping):
        raise ValueError(f"chunk map entry {position} is not an object: {entry!r}")
    offset = _entry_int(entry, "offset", position)
    size = _entry_int(entry, "size", position)
    if offset < 0 or size < 0:
        raise ValueError(f"chunk map entry {position} has a negative offset or size: {offset}+{size}")
    checksum = entry.get("checksum")
    if checksum is not None:
        if not isinstance(checksum, str):
            raise ValueError(f"chunk map entry {position}: checksum must be a string, not {checksum!r}")
        protocol.parse_checksum(checksum)
    return Chunk(position, offset, size)


def chunk_checksums(entries: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The checksums of a chunk map, normalised (``xxh3-128:<lowercase hex>``), None where absent.

    Call after :func:`chunks_from_map` accepted the map; an empty map (a
    0-byte file) gives ``[None]``, matching its single chunk.

    :raises ValueError: for a malformed checksum.
    """
    if not entries:
        return [None]
    result: list[str | None] = []
    for entry in entries:
        checksum = entry.get("checksum")
        if checksum is not None and not isinstance(checksum, str):
            raise ValueError(f"chunk checksum must be a string, not {checksum!r}")
        result.append(None if checksum is None else protocol.format_checksum(protocol.parse_checksum(checksum)))
    return result


def remaining_ranges(chunks: Iterable[Chunk], done: AbstractSet[int]) -> list[tuple[int, int]]:
    """Byte ranges ``(offset, end)`` still to fetch: the chunks not in ``done``, adjacent ones merged.

    A resumed download then needs one request per gap instead of one per
    chunk. A 0-size chunk that is not done yields an empty range ``(0, 0)``
    rather than nothing, so a 0-byte file that is not finished still shows
    work to do.

    :param chunks: the file's chunks in offset order.
    :param done: indexes of chunks already written and verified.
    """
    ranges: list[tuple[int, int]] = []
    for chunk in chunks:
        if chunk.index in done:
            continue
        if ranges and ranges[-1][1] == chunk.offset:
            ranges[-1] = (ranges[-1][0], chunk.end)
        else:
            ranges.append((chunk.offset, chunk.end))
    return ranges
