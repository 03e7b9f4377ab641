"""The fast reader of plain ustar archives gives exactly what the :mod:`tarfile` path gives, or hands over to it.

``sync --pack-small`` sends plain ustar tars; the server reads those itself
(:func:`flowxfer.server._unpack._plain_tar`) and leaves everything else to
:mod:`tarfile`. Each test unpacks the same archive both ways, through the
real :func:`unpack` and through the tarfile path alone, and compares the
listings, the bytes on disk, or the refusal.
"""

from __future__ import annotations

import bisect
import io
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowxfer.server import _unpack
from flowxfer.server._unpack import UnpackError, UnpackLimits, unpack

LIMITS = UnpackLimits(max_members=10_000, max_bytes=1 << 30, max_ratio=1000.0)

_part = st.text(st.sampled_from("abcXYZ019_-.é"), min_size=1, max_size=12).filter(lambda p: p not in (".", ".."))
_member = st.tuples(st.lists(_part, min_size=1, max_size=4).map("/".join), st.integers(0, 3000))


def _tar(members: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _via_tarfile(archive: Path, dest: Path) -> list[_unpack.TreeFile]:
    dest.mkdir(parents=True)
    writer = _unpack._Writer(dest, LIMITS, archive.stat().st_size)
    _unpack._tarfile_members(archive, writer, LIMITS)
    return sorted(writer.files, key=lambda f: f.path)


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _outcome(fn, archive: Path, dest: Path) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    """What unpacking gives: the listing and the tree, or a refusal (unpack() words all of them UnpackError)."""
    try:
        return "ok", (fn(archive, dest), _tree(dest))
    except (UnpackError, tarfile.TarError, EOFError, OSError):
        return "refused", None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(_member, max_size=25, unique_by=lambda m: m[0].casefold()), folders=st.booleans())
def test_plain_tars_unpack_as_tarfile_reads_them(tmp_path: Path, members: list[tuple[str, int]], folders: bool) -> None:
    entries: list[tuple[str, bytes | None]] = [(name, os.urandom(size)) for name, size in members]
    names = {name for name, _ in entries}
    if folders:
        entries = [
            (parent, None)
            for parent in sorted({n.rsplit("/", 1)[0] for n in names if "/" in n})
            if parent not in names and not any(parent.startswith(n + "/") for n in names)
        ] + entries
    case = tmp_path / os.urandom(4).hex()
    archive = case / "a.tar"
    case.mkdir()
    archive.write_bytes(_tar(entries))
    fast = _outcome(lambda a, d: unpack(a, d, LIMITS), archive, case / "fast")
    slow = _outcome(_via_tarfile, archive, case / "slow")
    assert fast == slow
    shutil.rmtree(case)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_other_formats_are_read_the_same(tmp_path: Path, fmt: int) -> None:
    long_name = "p" * 120 + "/n.bin"  # a PAX or GNU long-name header, or a ustar prefix
    entries: list[tuple[str, bytes | None]] = [("a.txt", b"alpha"), (long_name, os.urandom(700)), ("d", None)]
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar(entries, fmt))
    assert _outcome(lambda a, d: unpack(a, d, LIMITS), archive, tmp_path / "fast") == _outcome(
        _via_tarfile, archive, tmp_path / "slow"
    )
    assert (tmp_path / "fast" / long_name).stat().st_size == 700


def test_a_member_larger_than_memory_reads_is_streamed(tmp_path: Path) -> None:
    big = os.urandom(_unpack._IN_MEMORY_MEMBER + 1234)
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar([("big.bin", big), ("small.bin", b"s")]))
    files = unpack(archive, tmp_path / "out", LIMITS)
    assert [(f.path, f.size) for f in files] == [("big.bin", len(big)), ("small.bin", 1)]
    assert (tmp_path / "out" / "big.bin").read_bytes() == big


def test_members_cut_by_the_archive_reads_come_out_whole(tmp_path: Path) -> None:
    # The archive is read in 4 MiB blocks into one buffer that each read overwrites: a header or
    # member cut by a block's end must be copied before the next read, or it lands corrupted.
    rng = random.Random(12)
    entries = [(f"d/f{i:04d}", rng.randbytes(rng.randint(1, 50_000))) for i in range(500)]
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar(list(entries), tarfile.USTAR_FORMAT))
    assert archive.stat().st_size > 3 * 4 * 1024 * 1024
    files = unpack(archive, tmp_path / "out", LIMITS)
    assert [(f.path, f.size) for f in files] == [(name, len(data)) for name, data in entries]
    assert _tree(tmp_path / "out") == {"d": None, **dict(entries)}


def _spaced_numbers(data: bytes) -> bytes:
    """Every header's numbers spelled as old tars do (space-padded, space before the NUL), checksums made right."""
    out = bytearray(data)
    at = 0
    while out[at : at + 512] != bytes(512):
        header = out[at : at + 512]
        size = int(header[124:135], 8)
        for start, end in ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148)):
            value = int(header[start:end].rstrip(b"\0 ") or b"0", 8)
            header[start:end] = f"{value:o}".rjust(end - start - 2).encode() + b" \0"
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):6o}\0 ".encode()
        out[at : at + 512] = header
        at += 512 + size + (-size % 512)
    return bytes(out)


def test_plain_numbers_spelled_otherwise_are_still_read_by_the_fast_reader(tmp_path: Path) -> None:
    data = _spaced_numbers(_tar([("a.bin", b"x" * 10), ("d/b.bin", b"y" * 700)]))
    assert data[100:108] == b"   644 \0"
    writer = _unpack._Writer(tmp_path / "out", LIMITS, len(data))
    (tmp_path / "out").mkdir()
    stream = _unpack.PlainTarStream(writer, LIMITS)
    stream.feed(data)
    stream.finish()  # no _NotPlain: the general checks took it
    assert [(f.path, f.size) for f in writer.files] == [("a.bin", 10), ("d/b.bin", 700)]
    assert (tmp_path / "out" / "d" / "b.bin").read_bytes() == b"y" * 700


def _damage(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


@pytest.mark.parametrize(
    "damage",
    [
        "second-header-checksum",
        "cut-in-member",
        "cut-in-header",
        "no-end-blocks",
        "symlink",
        "absolute",
        "dotdot",
        "duplicate",
        "hex-size",
        "folder-with-data",
        "bad-mtime-later",
        "spaced-numbers",
        "bad-devmajor",
        "bad-mode-later",
        "prefix-only-name",
        "old-style-folder",
    ],
)
def test_irregular_tars_get_the_tarfile_verdict(tmp_path: Path, damage: str) -> None:
    entries: list[tuple[str, bytes | None]] = [("a.bin", os.urandom(1000)), ("b.bin", os.urandom(600))]
    data = _tar(entries)
    second = 512 + 1024  # a.bin's header and its two data blocks
    if damage == "second-header-checksum":
        data = _damage(data, second + 10, b"Z")
    elif damage == "cut-in-member":
        data = data[: second + 512 + 100]
    elif damage == "cut-in-header":
        data = data[: second + 200]
    elif damage == "no-end-blocks":
        data = data[: second + 512 + 1024]
    elif damage == "old-style-folder":
        # Type NUL with a name ending in "/": a folder, as old tars wrote them.
        data = _tar([("a.bin", b"x" * 10), ("d/", b"")])
        header = bytearray(data[1024:1536])
        header[156:157] = b"\0"
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\0 ".encode()
        data = data[:1024] + bytes(header) + data[1536:]
    elif damage == "prefix-only-name":
        # An old-style entry (type NUL) whose name field is empty and whose prefix holds the name:
        # tarfile applies the trailing-slash folder rule to the name field only, so this is a file.
        data = _tar([("a.bin", b"x" * 10), ("b.bin", b"")])
        header = bytearray(data[1024:1536])
        header[0:100] = bytes(100)
        header[156:157] = b"\0"
        header[345:500] = b"p".ljust(155, b"\0")
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\0 ".encode()
        data = data[:1024] + bytes(header) + data[1536:]
    elif damage in ("hex-size", "bad-mtime-later", "bad-devmajor", "bad-mode-later"):
        # A number that is not octal (the checksum made right): tarfile refuses it, or stops there.
        data = _tar([("a.bin", b"x" * 10), ("b.bin", b"y" * 10), ("c.bin", b"z" * 10)])
        at = 0 if damage == "hex-size" else 1024
        header = bytearray(data[at : at + 512])
        if damage == "hex-size":
            header[124:136] = b"0000000001a\0"
        elif damage == "bad-devmajor":
            header[329:337] = b"000000z\0"  # the other numbers as tarfile writes them
        elif damage == "bad-mode-later":
            header[100:108] = b"000064z\0"
        else:
            header[136:148] = b"1234567890z\0"
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\0 ".encode()
        data = data[:at] + bytes(header) + data[at + 512 :]
    elif damage == "spaced-numbers":
        data = _spaced_numbers(_tar([("a.bin", b"x" * 10), ("b.bin", b"y" * 700)]))
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("ok.bin")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
            bad = tarfile.TarInfo(
                {
                    "symlink": "link",
                    "absolute": "/etc/x",
                    "dotdot": "../x",
                    "duplicate": "ok.bin",
                    "folder-with-data": "d",
                }[damage]
            )
            if damage == "symlink":
                bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(bad)
            elif damage == "folder-with-data":
                bad.type, bad.size = tarfile.DIRTYPE, 512
                tf.addfile(bad, io.BytesIO(b"d" * 512))
            else:
                bad.size = 3
                tf.addfile(bad, io.BytesIO(b"xyz"))
        data = buffer.getvalue()
    archive = tmp_path / "a.tar"
    archive.write_bytes(data)
    fast = _outcome(lambda a, d: unpack(a, d, LIMITS), archive, tmp_path / "fast")
    slow = _outcome(_via_tarfile, archive, tmp_path / "slow")
    assert fast == slow
    if fast[0] == "refused":
        assert not (tmp_path / "fast").exists()  # nothing stays behind


#: How near a header or a member's end a piece keeps its drawn size (more than a header block).
_MARGIN = 600


def _pieces(data: bytes, cuts: list[int]) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of pieces of the sizes ``cuts`` in turn, but one that starts deep inside a member's
    data (over :data:`_MARGIN` bytes from its start and end) runs on to :data:`_MARGIN` bytes before its end.

    Deep inside a member a piece only adds to the copy of the member being completed, whatever its size:
    what differs between sizes is where pieces cut headers and member ends, and every one of those is
    still cut by pieces of the drawn sizes. Without this, 1-byte pieces fed the 1.5 MB member byte by
    byte (some 15 s for one example).
    """
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    edges = sorted({0, len(data)} | {e for m in members for e in (m.offset, m.offset_data, m.offset_data + m.size)})
    position, index = 0, 0
    while position < len(data):
        end = min(position + cuts[index % len(cuts)], len(data))
        after = bisect.bisect_right(edges, position)
        if position - edges[after - 1] > _MARGIN and end < edges[after] - _MARGIN:
            end = edges[after] - _MARGIN
        yield position, end
        position, index = end, index + 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 700_000), min_size=1, max_size=40), seed=st.integers(0, 2**16))
@example(cuts=[1], seed=0)  # byte by byte, every time
def test_the_stream_takes_the_archive_in_pieces_of_any_size(tmp_path: Path, cuts: list[int], seed: int) -> None:
    """Fed in arbitrary pieces (a byte, a block, more than a megabyte), the stream unpacks what the file path does."""
    rng = __import__("random").Random(seed)
    entries: list[tuple[str, bytes | None]] = [
        (f"d{i % 3}/f{i:03d}.bin", rng.randbytes(rng.choice([0, 1, 511, 512, 513, 40_000]))) for i in range(60)
    ] + [("big.bin", rng.randbytes(1_500_000))]
    data = _tar(sorted(entries, key=lambda e: e[0]))
    case = tmp_path / os.urandom(4).hex()
    (case / "file").mkdir(parents=True)
    archive = case / "a.tar"
    archive.write_bytes(data)
    expected = unpack(archive, case / "file" / "out", LIMITS)
    writer = _unpack._Writer(case / "stream", LIMITS, len(data))
    (case / "stream").mkdir()
    stream = _unpack.PlainTarStream(writer, LIMITS)
    for start, end in _pieces(data, cuts):
        stream.feed(memoryview(data)[start:end])
    stream.finish()
    assert sorted(writer.files, key=lambda f: f.path) == expected
    assert _tree(case / "stream") == _tree(case / "file" / "out")
    shutil.rmtree(case)


_name_piece = st.text(st.sampled_from("aZ09_-.~+,=@%/\\:é\x00\x1f "), max_size=8) | st.sampled_from(
    ["..", ".", "/", "//", "./", "a" * 255, "b" * 256, "c/" * 64, "d/" * 63 + "d"]
)


@given(st.lists(_name_piece, max_size=6).map("".join))
def test_the_simple_name_shortcut_agrees_with_the_full_check(name: str) -> None:
    writer = _unpack._Writer(Path("/nonexistent"), LIMITS, 1)
    try:
        fast_or_full = writer.claim(name)
    except UnpackError as exc:
        assert str(exc) == _unpack.member_path_problem(name)
        return
    assert _unpack.member_path_problem(name) is None
    assert fast_or_full == _unpack._normal(name)


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("d/" * 64 + "d", "member path too deep"),
        ("d/" * 63 + "d", None),
        (("e" * 255 + "/") * 16 + "e", "member path too long"),  # 4097 bytes
        (("x" * 63 + "/") * 63 + "x" * 64, None),  # exactly 4096 bytes in 64 components
        ("f" * 255, None),
    ],
)
def test_the_simple_name_shortcut_keeps_the_length_and_depth_limits(name: str, verdict: str | None) -> None:
    assert _unpack._SIMPLE_NAME.fullmatch(name)  # the shortcut's regex alone would take every one of these
    writer = _unpack._Writer(Path("/nonexistent"), LIMITS, 1)
    if verdict is None:
        assert writer.claim(name) == name
    else:
        with pytest.raises(UnpackError, match=verdict):
            writer.claim(name)


def test_the_simple_name_shortcut_is_taken_for_pack_names() -> None:
    assert _unpack._SIMPLE_NAME.fullmatch("run_01/Sample-1.R1.fastq.gz")
    for name in (".hidden", "a/./b", "a//b", "a/../b", "/abs", "C:x", "a\\b", "é", "a" * 256):
        assert not _unpack._SIMPLE_NAME.fullmatch(name)


def _descriptors_on(path: Path) -> int:
    """How many of this process's open descriptors name ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_a_staged_unpack_flushes_through_a_descriptor_opened_before_its_first_member(tmp_path: Path) -> None:
    """Linux tells ``syncfs`` of a write that failed only through descriptors opened before it: the
    staging folder's is opened with the folder, held while members arrive over the upload, and closed
    by the flush; the listing is the archive's."""
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar([(f"m{i}", os.urandom(3000)) for i in range(40)]))
    dest = tmp_path / "staged"
    staged = _unpack.StagedUnpack(dest, LIMITS, archive.stat().st_size)
    size = archive.stat().st_size
    staged.feed_range(archive, 0, size // 2, _unpack.new_hasher())
    assert _descriptors_on(dest) == 1  # held while the rest of the archive is still to come
    staged.feed_range(archive, size // 2, size - size // 2, _unpack.new_hasher())
    listing = staged.result(archive)
    assert listing is not None and [f.path for f in listing] == [f"m{i}" for i in sorted(range(40), key=str)]
    assert _descriptors_on(dest) == 0
