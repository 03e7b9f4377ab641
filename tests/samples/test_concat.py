"""Several files read as one (a sample's lanes): ranges across boundaries, change detection, gzip."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.transfer import LocalIOError, SourceChangedError
from flowxfer.transfer._concat import ConcatLayout, ConcatSource, Part, concat_identity, stat_part
from flowxfer.transfer._sources import Source
from flowxfer.transfer._tarpack import MemberPiece


def parts_of(tmp_path: Path, contents: list[bytes]) -> list[Part]:
    parts = []
    for index, data in enumerate(contents):
        path = tmp_path / f"L{index + 1:03d}.fastq.gz"
        path.write_bytes(data)
        parts.append(stat_part(path))
    return parts


@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.data())
def test_layout_pieces_cover_exactly_the_range(sizes: list[int], data: st.DataObject) -> None:
    layout = ConcatLayout.of(sizes)
    assert layout.size == sum(sizes)
    offset = data.draw(st.integers(0, layout.size))
    length = data.draw(st.integers(0, layout.size - offset))
    pieces = layout.pieces(offset, length)
    whole = b"".join(bytes([i]) * size for i, size in enumerate(sizes))
    rebuilt = b"".join(bytes([p.member_index]) * p.length for p in pieces)
    assert rebuilt == whole[offset : offset + length]
    assert all(
        p.length > 0 and 0 <= p.file_offset and p.file_offset + p.length <= sizes[p.member_index] for p in pieces
    )
    assert [p.member_index for p in pieces] == sorted({p.member_index for p in pieces})


def test_layout_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        ConcatLayout.of([])
    with pytest.raises(ValueError):
        ConcatLayout.of([3, -1])
    layout = ConcatLayout.of([3, 0, 4])
    assert layout.pieces(2, 3) == [MemberPiece(0, 2, 1), MemberPiece(2, 0, 2)]
    with pytest.raises(ValueError):
        layout.pieces(5, 3)
    with pytest.raises(ValueError):
        layout.pieces(-1, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.data())
def test_reads_are_the_concatenation(contents: list[bytes], data: st.DataObject) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = ConcatSource(parts_of(Path(folder), contents))
        whole = b"".join(contents)
        assert source.size == len(whole)
        checked: Source = source  # it is an upload source
        checked.open()
        try:
            for _ in range(5):
                offset = data.draw(st.integers(0, len(whole)))
                length = data.draw(st.integers(0, len(whole) - offset))
                assert bytes(source.read(offset, length)) == whole[offset : offset + length]
        finally:
            checked.close()


def test_gzip_lanes_joined_are_one_valid_fastq_gz(tmp_path: Path) -> None:
    rng = random.Random(7)
    lanes = [
        b"".join(
            b"@r%d\n%s\n+\n%s\n" % (i, bytes(rng.choice(b"ACGT") for _ in range(50)), b"I" * 50)
            for i in range(200 * lane, 200 * lane + 200)
        )
        for lane in range(3)
    ]
    source = ConcatSource(parts_of(tmp_path, [gzip.compress(lane, mtime=0) for lane in lanes]))
    source.open()
    try:
        chunk = 1000  # read as the upload does: in chunks that cut across the lane files
        sent = b"".join(bytes(source.read(o, min(chunk, source.size - o))) for o in range(0, source.size, chunk))
    finally:
        source.close()
    assert gzip.decompress(sent) == b"".join(lanes)
    assert bytes(source.load().data) == sent


def test_a_part_that_changes_or_goes_stops_the_read(tmp_path: Path) -> None:
    parts = parts_of(tmp_path, [b"a" * 100, b"b" * 100])
    source = ConcatSource(parts)
    source.open()
    try:
        assert bytes(source.read(90, 20)) == b"a" * 10 + b"b" * 10
        with open(parts[1].path, "ab") as handle:
            handle.write(b"more")
        with pytest.raises(SourceChangedError):
            source.read(150, 10)
    finally:
        source.close()
    with pytest.raises(SourceChangedError):
        ConcatSource(parts).open()  # planned at the old size
    os.unlink(parts[0].path)
    with pytest.raises(SourceChangedError, match="disappeared"):
        ConcatSource(parts).open()


def test_identity_names_exactly_these_parts(tmp_path: Path) -> None:
    parts = parts_of(tmp_path, [b"x" * 10, b"y" * 20])
    identity = concat_identity(parts)
    assert identity == ConcatSource(parts).identity == concat_identity(list(parts))
    assert identity.startswith("concat:2:")
    changed = [parts[0], Part(parts[1].path, parts[1].size, parts[1].mtime_ns + 1)]
    assert (
        len(
            {
                identity,
                concat_identity(changed),
                concat_identity(parts[::-1]),
                concat_identity(parts[:1]),
                concat_identity([parts[0], Part(parts[1].path + "x", parts[1].size, parts[1].mtime_ns)]),
            }
        )
        == 5
    )
    assert ConcatSource(parts).mtime_ns == max(p.mtime_ns for p in parts)


def test_stat_part(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    part = stat_part(tmp_path / "a")
    assert part.size == 3 and part.path == str(tmp_path / "a")
    with pytest.raises(LocalIOError, match="no such file"):
        stat_part(tmp_path / "missing")
    with pytest.raises(LocalIOError, match="a folder"):
        stat_part(tmp_path)
