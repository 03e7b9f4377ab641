from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.transfer import SourceChangedError as EngineSourceChangedError
from flowxfer.transfer._tarpack import (
    LiteralPiece,
    MemberPiece,
    SourceChangedError,
    TarLayout,
    TarMember,
    _tarfile_header,
    header_bytes,
    header_size,
    read_tar_range,
)

LONG = "Data/Intensities/BaseCalls/L001/" + "very_long_directory_name_" * 6 + "/s_1_1101.bcl.gz"


def make_sources(tmp_path: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    sources = {}
    for number, (name, data) in enumerate(contents.items()):
        path = tmp_path / f"src{number}"
        path.write_bytes(data)
        sources[name] = path
    return sources


def build(contents: dict[str, bytes], mtime: int = 0) -> TarLayout:
    return TarLayout.build([TarMember(name, len(data), mtime) for name, data in contents.items()])


def tarfile_bytes(layout: TarLayout, contents: dict[str, bytes]) -> bytes:
    """What the standard library writes for the same members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in layout.members:
            info = tarfile.TarInfo(member.arcname)
            info.size, info.mtime, info.mode = member.size, member.mtime, 0o644
            archive.addfile(info, io.BytesIO(contents[member.arcname]))
    return buffer.getvalue()


CONTENTS = {
    "b.txt": b"hello",
    "a/RunInfo.xml": b"<RunInfo/>" * 100,
    "empty.bin": b"",
    "exact.bin": b"\x01" * 512,
    "odd.bin": os.urandom(513),
    LONG: os.urandom(3000),
    "caf\u00e9/\u00fcn\u00efc\u00f8d\u00e9.txt": "d\u00e9j\u00e0 vu".encode(),
}


def test_stream_is_what_tarfile_reads_back(tmp_path: Path) -> None:
    layout = build(CONTENTS)
    sources = make_sources(tmp_path, CONTENTS)
    data = read_tar_range(layout, sources, 0, layout.size)
    assert len(data) == layout.size
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == sorted(CONTENTS)
        for member in members:
            assert member.isreg()
            assert member.size == len(CONTENTS[member.name])
            assert member.mode == 0o644 and member.mtime == 0
            assert member.uid == member.gid == 0 and member.uname == member.gname == ""
            extracted = archive.extractfile(member)
            assert extracted is not None
            assert extracted.read() == CONTENTS[member.name]


def test_stream_is_byte_identical_to_tarfile_writing_it(tmp_path: Path) -> None:
    layout = build(CONTENTS)
    data = read_tar_range(layout, make_sources(tmp_path, CONTENTS), 0, layout.size)
    assert data == tarfile_bytes(layout, CONTENTS)
    assert layout.size % tarfile.RECORDSIZE == 0


def test_two_builds_are_identical_whatever_the_order(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, CONTENTS)
    forward = build(CONTENTS)
    backward = TarLayout.build([TarMember(n, len(d)) for n, d in reversed(list(CONTENTS.items()))])
    assert forward == backward
    assert read_tar_range(forward, sources, 0, forward.size) == read_tar_range(backward, sources, 0, backward.size)


def test_sources_in_member_order(tmp_path: Path) -> None:
    layout = build(CONTENTS)
    by_name = make_sources(tmp_path, CONTENTS)
    in_order = [by_name[m.arcname] for m in layout.members]
    assert read_tar_range(layout, in_order, 0, layout.size) == read_tar_range(layout, by_name, 0, layout.size)
    assert layout.index_of("b.txt") == [m.arcname for m in layout.members].index("b.txt")
    with pytest.raises(KeyError):
        layout.index_of("nope")


def test_extracts_to_the_right_bytes(tmp_path: Path) -> None:
    layout = build(CONTENTS)
    data = read_tar_range(layout, make_sources(tmp_path, CONTENTS), 0, layout.size)
    target = tmp_path / "out"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(target, filter="data")
    for name, content in CONTENTS.items():
        assert (target / name).read_bytes() == content


def test_empty_tar() -> None:
    layout = TarLayout.build([])
    assert layout.size == tarfile.RECORDSIZE
    assert read_tar_range(layout, [], 0, layout.size) == bytes(layout.size)
    with tarfile.open(fileobj=io.BytesIO(bytes(layout.size))) as archive:
        assert archive.getmembers() == []


def test_mtime_goes_into_the_header(tmp_path: Path) -> None:
    layout = build({"x": b"1"}, mtime=1_700_000_000)
    data = read_tar_range(layout, make_sources(tmp_path, {"x": b"1"}), 0, layout.size)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getmember("x").mtime == 1_700_000_000


def test_huge_members_get_pax_sizes() -> None:
    big = 9 * 1024**3  # beyond ustar's 8 GiB
    layout = TarLayout.build([TarMember("big.bam", big), TarMember("small", 1)])
    assert layout.data_offsets[0] > 512  # a PAX header came first
    header = layout.segments_in(0, layout.data_offsets[0])
    assert len(header) == 1 and isinstance(header[0], LiteralPiece)
    assert b"size=9663676416" in header[0].data
    assert layout.size == layout.end_offset + (-(layout.end_offset + 1024) % tarfile.RECORDSIZE) + 1024


def test_segments_describe_headers_and_file_ranges() -> None:
    layout = TarLayout.build([TarMember("a", 700), TarMember("b", 10)])
    pieces = layout.segments_in(0, layout.size)
    assert [type(p) for p in pieces] == [LiteralPiece, MemberPiece, LiteralPiece, MemberPiece, LiteralPiece]
    assert pieces[1] == MemberPiece(0, 0, 700)
    assert pieces[3] == MemberPiece(1, 0, 10)
    # A range inside one member's bytes is one piece of that file.
    assert layout.segments_in(layout.data_offsets[0] + 100, 50) == [MemberPiece(0, 100, 50)]
    assert layout.segments_in(5, 0) == []


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (0, 10**9)])
def test_segments_refuse_ranges_outside(offset: int, length: int) -> None:
    layout = TarLayout.build([TarMember("a", 1)])
    with pytest.raises(ValueError):
        layout.segments_in(offset, length)


@pytest.mark.parametrize(
    "members",
    [
        [TarMember("", 1)],
        [TarMember("/abs", 1)],
        [TarMember("../up", 1)],
        [TarMember("a/../b", 1)],
        [TarMember("a//b", 1)],
        [TarMember("./a", 1)],
        [TarMember("dir/", 1)],
        [TarMember("a\\b", 1)],
        [TarMember("nul\x00", 1)],
        [TarMember("nl\n", 1)],
        [TarMember("bad\udcff", 1)],
        [TarMember("a", -1)],
        [TarMember("a", 1, -5)],
        [TarMember("a", 1.5)],  # type: ignore[arg-type]
        [TarMember("a", 1), TarMember("a", 2)],
    ],
)
def test_build_refuses(members: list[TarMember]) -> None:
    with pytest.raises(ValueError):
        TarLayout.build(members)


def test_source_that_changed_size_is_refused(tmp_path: Path) -> None:
    contents = {"a": b"12345", "b": b"xyz"}
    layout = build(contents)
    sources = make_sources(tmp_path, contents)
    sources["a"].write_bytes(b"123456")
    with pytest.raises(SourceChangedError) as info:
        read_tar_range(layout, sources, 0, layout.size)
    assert info.value.path == sources["a"] and info.value.expected == 5 and info.value.actual == 6
    assert isinstance(info.value, EngineSourceChangedError)  # the engine's error, with details
    # A range that does not touch the changed file still reads.
    b_start = layout.data_offsets[layout.index_of("b")]
    assert read_tar_range(layout, sources, b_start, 3) == b"xyz"


def test_missing_source_is_an_os_error(tmp_path: Path) -> None:
    layout = build({"a": b"1"})
    with pytest.raises(FileNotFoundError):
        read_tar_range(layout, [tmp_path / "gone"], 0, layout.size)


_names = st.lists(
    st.text(alphabet=st.sampled_from(list("abcxyz_.\u00e9")), min_size=1, max_size=40),
    min_size=1,
    max_size=3,
).map("/".join)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(_names, st.binary(max_size=2000), max_size=6),
    st.lists(st.integers(0, 2**32), max_size=8),
    st.data(),
)
def test_any_slicing_concatenates_to_the_whole(
    tmp_path_factory: pytest.TempPathFactory, contents: dict[str, bytes], cuts: list[int], data: st.DataObject
) -> None:
    contents = {n: d for n, d in contents.items() if all(p not in (".", "..") for p in n.split("/"))}
    # A name may not be both a file and a directory of another.
    names = sorted(contents)
    contents = {n: contents[n] for n in names if not any(o.startswith(n + "/") for o in names)}
    tmp_path = tmp_path_factory.mktemp("tar")
    layout = build(contents)
    sources = make_sources(tmp_path, contents)
    whole = read_tar_range(layout, sources, 0, layout.size)
    assert whole == tarfile_bytes(layout, contents)
    points = sorted({0, layout.size, *(c % (layout.size + 1) for c in cuts)})
    parts = [read_tar_range(layout, sources, a, b - a) for a, b in zip(points, points[1:], strict=False)]
    assert b"".join(parts) == whole
    # Pieces are consistent with the stream: literal bytes as they are, member ranges inside their file.
    offset = data.draw(st.integers(0, layout.size))
    length = data.draw(st.integers(0, layout.size - offset))
    position = offset
    for piece in layout.segments_in(offset, length):
        if isinstance(piece, LiteralPiece):
            assert whole[position : position + len(piece.data)] == piece.data
            position += len(piece.data)
        else:
            member = layout.members[piece.member_index]
            assert 0 <= piece.file_offset and piece.file_offset + piece.length <= member.size
            assert (
                whole[position : position + piece.length]
                == contents[member.arcname][piece.file_offset : piece.file_offset + piece.length]
            )
            position += piece.length
    assert position == offset + length


_NAME_PART = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/\\"), min_size=1, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(_NAME_PART, min_size=1, max_size=4),
    size=st.one_of(st.integers(0, 10**6), st.integers(8**11 - 2, 8**11 + 2), st.integers(0, 2**40)),
    mtime=st.one_of(st.integers(0, 2**31), st.integers(8**11 - 2, 8**11 + 2)),
)
def test_header_size_is_the_length_of_the_header(parts: list[str], size: int, mtime: int) -> None:
    # The fast paths (one plain ustar block, made without tarfile) must agree with what tarfile writes,
    # byte for byte, around every limit.
    member = TarMember("/".join(parts), size, mtime)
    if member.arcname in (".", "..") or ".." in parts or "." in parts:
        return
    assert header_bytes(member) == _tarfile_header(member)
    assert header_size(member) == len(header_bytes(member))


@pytest.mark.parametrize("name", ["a" * 100, "a" * 101, "\u00e9" * 10, "x/" * 49 + "yy", "x/" * 50 + "y"])
def test_header_size_at_the_name_limits(name: str) -> None:
    member = TarMember(name, 10, 0)
    assert header_bytes(member) == _tarfile_header(member)
    assert header_size(member) == len(header_bytes(member))


@pytest.mark.parametrize(("size", "mtime"), [(8**11 - 1, 0), (8**11, 0), (0, 8**11 - 1), (0, 8**11), (2**40, 2**40)])
def test_header_size_at_the_number_limits(size: int, mtime: int) -> None:
    member = TarMember("s_1_1101.bcl.gz", size, mtime)
    assert header_bytes(member) == _tarfile_header(member)
    assert header_size(member) == len(header_bytes(member))
