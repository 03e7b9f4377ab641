from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.protocol import checksum_of
from flowxfer.transfer._chunks import (
    Chunk,
    Segment,
    chunk_checksums,
    chunks_from_map,
    plan_chunks,
    plan_segments,
    remaining_ranges,
)

MiB = 1024 * 1024


# --- plan_chunks ---------------------------------------------------------------


def test_chunk_end() -> None:
    assert Chunk(3, 100, 50).end == 150


def test_plan_chunks_examples() -> None:
    assert plan_chunks(0, 8) == [Chunk(0, 0, 0)]
    assert plan_chunks(1, 8) == [Chunk(0, 0, 1)]
    assert plan_chunks(8, 8) == [Chunk(0, 0, 8)]
    assert plan_chunks(9, 8) == [Chunk(0, 0, 8), Chunk(1, 8, 1)]
    assert plan_chunks(20, 8) == [Chunk(0, 0, 8), Chunk(1, 8, 8), Chunk(2, 16, 4)]


@pytest.mark.parametrize(("size", "chunk_size"), [(-1, 8), (10, 0), (10, -8), (0, 0)])
def test_plan_chunks_refuses(size: int, chunk_size: int) -> None:
    with pytest.raises(ValueError):
        plan_chunks(size, chunk_size)


def test_plan_chunks_refuses_non_integers() -> None:
    with pytest.raises(ValueError):
        plan_chunks(10.0, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        plan_chunks(10, True)


@given(st.integers(0, 10**12), st.integers(1, 10**10))
def test_plan_chunks_covers_in_order_without_overlap(size: int, chunk_size: int) -> None:
    if math.ceil(size / chunk_size) > 5000:
        chunk_size = max(chunk_size, size // 5000 + 1)  # keep the list small enough to be fast
    chunks = plan_chunks(size, chunk_size)
    assert len(chunks) == max(1, math.ceil(size / chunk_size))
    assert chunks[0].offset == 0
    assert chunks[-1].end == size
    for index, chunk in enumerate(chunks):
        assert chunk.index == index
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end  # contiguous: no gap, no overlap
    assert all(c.size == chunk_size for c in chunks[:-1])
    assert 0 < chunks[-1].size <= chunk_size or size == 0
    assert sum(c.size for c in chunks) == size


# --- plan_segments -------------------------------------------------------------


def test_plan_segments_balanced_regular() -> None:
    chunks = plan_chunks(100 * MiB, 8 * MiB)  # 12 full chunks and one of 4 MiB
    segments = plan_segments(chunks, 4)
    assert len(segments) == 4
    assert [s.index for s in segments] == [0, 1, 2, 3]
    assert [len(s.chunks) for s in segments] == [3, 3, 3, 4]
    assert segments[0].offset == 0 and segments[-1].end == 100 * MiB
    assert all(isinstance(s, Segment) for s in segments)


def test_plan_segments_small_file_gets_fewer_segments() -> None:
    chunks = plan_chunks(40 * MiB, 8 * MiB)
    assert len(plan_segments(chunks, 4, min_segment_size=32 * MiB)) == 1
    assert len(plan_segments(chunks, 4, min_segment_size=16 * MiB)) == 2
    assert len(plan_segments(chunks, 4, min_segment_size=0)) == 4


def test_plan_segments_never_more_than_chunks() -> None:
    chunks = plan_chunks(10, 4)
    assert len(plan_segments(chunks, 16)) == 3


def test_plan_segments_zero_byte_file_is_one_segment() -> None:
    segments = plan_segments(plan_chunks(0, 8), 4, min_segment_size=1)
    assert segments == [Segment(0, 0, 0, (Chunk(0, 0, 0),))]


def test_plan_segments_empty() -> None:
    assert plan_segments([], 4) == []


def test_plan_segments_irregular_chunks_respect_min_size() -> None:
    # One huge chunk at the end: a balanced cut is impossible; short runs are merged instead.
    chunks = chunks_from_map(
        [{"offset": 0, "size": 1}, {"offset": 1, "size": 1}, {"offset": 2, "size": 1}, {"offset": 3, "size": 100}],
        103,
    )
    segments = plan_segments(chunks, 2, min_segment_size=32)
    assert len(segments) == 1
    segments = plan_segments(chunks, 2)
    assert [s.size for s in segments] == [3, 100]


def test_plan_segments_of_a_resumed_run_keep_offsets() -> None:
    # The engine segments the not-yet-done tail of a file: indexes and offsets don't start at 0.
    tail = plan_chunks(64, 8)[3:]
    segments = plan_segments(tail, 2)
    assert segments[0].offset == 24
    assert segments[-1].end == 64
    assert [c.index for s in segments for c in s.chunks] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize(("segments", "minimum"), [(0, 0), (-1, 0), (2, -1)])
def test_plan_segments_refuses(segments: int, minimum: int) -> None:
    with pytest.raises(ValueError):
        plan_segments(plan_chunks(10, 2), segments, minimum)


def test_plan_segments_refuses_gaps() -> None:
    with pytest.raises(ValueError):
        plan_segments([Chunk(0, 0, 4), Chunk(1, 5, 4)], 2)


@st.composite
def chunk_lists(draw: st.DrawFn) -> list[Chunk]:
    if draw(st.booleans()):
        return plan_chunks(draw(st.integers(0, 10**6)), draw(st.integers(1000, 10**5)))
    sizes = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=60))
    chunks, offset = [], 0
    for index, size in enumerate(sizes):
        chunks.append(Chunk(index, offset, size))
        offset += size
    return chunks


@given(chunk_lists(), st.integers(1, 12), st.integers(0, 2 * 10**6))
def test_plan_segments_partition_the_chunks_in_order(chunks: list[Chunk], wanted: int, minimum: int) -> None:
    segments = plan_segments(chunks, wanted, minimum)
    assert 1 <= len(segments) <= min(wanted, len(chunks))
    # Segments partition the chunk list, in order, each a contiguous byte range.
    assert [c for s in segments for c in s.chunks] == chunks
    for number, segment in enumerate(segments):
        assert segment.index == number
        assert segment.chunks
        assert segment.offset == segment.chunks[0].offset
        assert segment.size == sum(c.size for c in segment.chunks)
        assert segment.end == segment.chunks[-1].end
    if len(segments) > 1:
        assert all(s.size >= max(minimum, 1) for s in segments)
    total = sum(c.size for c in chunks)
    if minimum > 0:
        assert len(segments) <= max(1, total // minimum)


@given(st.integers(1, 10**7), st.integers(1000, 10**6), st.integers(1, 8))
def test_plan_segments_balance_regular_chunks(size: int, chunk_size: int, wanted: int) -> None:
    chunks = plan_chunks(size, chunk_size)
    segments = plan_segments(chunks, wanted)
    ideal = size / len(segments)
    # Cuts go to the chunk boundary nearest the ideal: no segment is off by more than one chunk.
    assert all(abs(s.size - ideal) <= chunk_size for s in segments)


# --- chunks_from_map -----------------------------------------------------------


def entry(offset: Any, size: Any, checksum: Any = None) -> dict[str, Any]:
    return {"offset": offset, "size": size, "checksum": checksum}


def test_chunks_from_map_accepts_irregular_sizes() -> None:
    entries = [entry(0, 10, checksum_of(b"x")), entry(10, 3), entry(13, 7)]
    assert chunks_from_map(entries, 20) == [Chunk(0, 0, 10), Chunk(1, 10, 3), Chunk(2, 13, 7)]


@pytest.mark.parametrize("entries", [[], [entry(0, 0)]])
def test_chunks_from_map_zero_byte_file(entries: list[dict[str, Any]]) -> None:
    assert chunks_from_map(entries, 0) == [Chunk(0, 0, 0)]


@pytest.mark.parametrize(
    ("entries", "size"),
    [
        ([], 10),  # nothing for a non-empty file
        ([entry(0, 5)], 10),  # too short
        ([entry(0, 5), entry(5, 6)], 10),  # too long
        ([entry(1, 9)], 10),  # not from 0
        ([entry(0, 5), entry(6, 4)], 10),  # a gap
        ([entry(0, 5), entry(4, 6)], 10),  # an overlap
        ([entry(5, 5), entry(0, 5)], 10),  # out of order
        ([entry(0, -5), entry(-5, 15)], 10),  # negative
        ([entry(0, 5), entry(5, 0), entry(5, 5)], 10),  # an empty chunk in a non-empty file
        ([entry(0, 0), entry(0, 0)], 0),  # two chunks for nothing
        ([entry(0, 3)], 0),
        ([entry("0", 10)], 10),  # strings are not numbers
        ([entry(0, 10.0)], 10),
        ([entry(0, True)], 1),
        ([{"offset": 0}], 10),  # no size
        ([[0, 10]], 10),  # not an object
        ([entry(0, 10, "md5:abc")], 10),  # a checksum we do not speak
        ([entry(0, 10, 12)], 10),
        ([entry(0, 10)], -10),
    ],
)
def test_chunks_from_map_refuses_a_lying_server(entries: list[Any], size: int) -> None:
    with pytest.raises(ValueError):
        chunks_from_map(entries, size)


def test_chunks_from_map_refuses_non_lists() -> None:
    with pytest.raises(ValueError):
        chunks_from_map("chunks", 6)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        chunks_from_map({"offset": 0, "size": 6}, 6)  # type: ignore[arg-type]


@given(st.lists(st.integers(1, 10**9), min_size=1, max_size=50))
def test_chunks_from_map_round_trips_any_contiguous_map(sizes: list[int]) -> None:
    entries, offset = [], 0
    for size in sizes:
        entries.append(entry(offset, size))
        offset += size
    chunks = chunks_from_map(entries, offset)
    assert [(c.offset, c.size) for c in chunks] == [(e["offset"], e["size"]) for e in entries]
    assert [c.index for c in chunks] == list(range(len(sizes)))


def test_chunk_checksums() -> None:
    upper = checksum_of(b"a").upper().replace("XXH3-128", "xxh3-128")
    assert chunk_checksums([entry(0, 1, upper), entry(1, 1)]) == [checksum_of(b"a"), None]
    assert chunk_checksums([]) == [None]
    with pytest.raises(ValueError):
        chunk_checksums([entry(0, 1, "sha1:00")])
    with pytest.raises(ValueError):
        chunk_checksums([entry(0, 1, 5)])


# --- remaining_ranges ----------------------------------------------------------


def test_remaining_ranges_coalesces() -> None:
    chunks = plan_chunks(100, 10)
    assert remaining_ranges(chunks, set()) == [(0, 100)]
    assert remaining_ranges(chunks, set(range(10))) == []
    assert remaining_ranges(chunks, {0, 1, 5, 9}) == [(20, 50), (60, 90)]
    assert remaining_ranges(chunks, {3}) == [(0, 30), (40, 100)]


def test_remaining_ranges_of_an_empty_file() -> None:
    assert remaining_ranges(plan_chunks(0, 10), set()) == [(0, 0)]
    assert remaining_ranges(plan_chunks(0, 10), {0}) == []


def test_remaining_ranges_ignores_unknown_indexes() -> None:
    assert remaining_ranges(plan_chunks(30, 10), {7, 99}) == [(0, 30)]


@given(st.integers(1, 10**6), st.integers(1, 10**5), st.data())
def test_remaining_ranges_cover_exactly_the_missing_chunks(size: int, chunk_size: int, data: st.DataObject) -> None:
    chunks = plan_chunks(size, min(10**5, max(chunk_size, size // 500 + 1)))
    done = data.draw(st.sets(st.sampled_from([c.index for c in chunks])))
    ranges = remaining_ranges(chunks, done)
    missing = [c for c in chunks if c.index not in done]
    # The ranges hold exactly the missing chunks' bytes ...
    assert sum(end - start for start, end in ranges) == sum(c.size for c in missing)
    for chunk in missing:
        assert any(start <= chunk.offset and chunk.end <= end for start, end in ranges)
    for chunk in chunks:
        if chunk.index in done:
            assert not any(start < chunk.end and chunk.offset < end for start, end in ranges)
    # ... in order, with no two touching (they would have been merged).
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end < start
