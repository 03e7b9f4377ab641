"""The pure decisions of sync and packing, and the tar source's bytes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.journal import InventoryRecord, PackMember
from flowxfer.transfer import SourceChangedError
from flowxfer.transfer._packing import (
    PackPlan,
    TarSource,
    _pread_into,
    manifest_of,
    member_paths,
    members_in_folder,
    pack_name,
    plan_packs,
)
from flowxfer.transfer._sync import _PlannedPacks
from flowxfer.transfer._syncplan import (
    ShareGrant,
    Verdict,
    compare,
    parse_share,
    remote_name_for,
    stable,
)
from tests.support.runfolder import make_run_folder, run_files


def _record(size: int, mtime_ns: int, checksum: str | None = "xxh3-128:" + "0" * 32) -> InventoryRecord:
    return InventoryRecord("s", "u", "up", "/p", "x", size, mtime_ns, checksum, "42")


def test_compare() -> None:
    assert compare(10, 5, None) is Verdict.NEW
    assert compare(10, 5, _record(10, 5)) is Verdict.UNCHANGED
    assert compare(11, 5, _record(10, 5)) is Verdict.CHANGED
    assert compare(10, 6, _record(10, 5)) is Verdict.IN_DOUBT
    assert compare(10, 6, _record(10, 5, None)) is Verdict.CHANGED


def test_remote_names() -> None:
    assert remote_name_for("Fastq/L001/x.fq.gz", False) == ("x.fq.gz", None)
    assert remote_name_for("Fastq/L001/x.fq.gz", True) == ("Fastq__L001__x.fq.gz", None)
    assert remote_name_for("Logs/a b.log", True) == ("Logs__a_b.log", None)
    assert remote_name_for("Logs/a b.log", False) == (None, "Spaces in filename")
    name, problem = remote_name_for("bad\udcff.bin", False)
    assert name is None and problem is not None and "UTF-8" in problem


def test_stability_uses_the_later_of_mtime_and_ctime() -> None:
    now = 1000.0
    assert stable(0, 0, now, None)
    assert stable(int(900e9), int(900e9), now, 60)
    assert not stable(int(900e9), int(990e9), now, 60)  # mtime set back by a copy; ctime is recent
    assert not stable(int(990e9), int(900e9), now, 60)


def test_share_specs() -> None:
    assert parse_share("group:lab=read") == ShareGrant("group", "lab", 1)
    assert parse_share("user:bob=SHARE") == ShareGrant("user", "bob", 3)
    assert parse_share("user:a=b=2") == ShareGrant("user", "a=b", 2)
    assert str(ShareGrant("group", "lab", 2)) == "group:lab=edit"
    for bad in ("lab=read", "team:lab=read", "group:=read", "group:lab=write", "group:lab"):
        with pytest.raises(ValueError):
            parse_share(bad)


def test_pack_names_and_parts() -> None:
    assert pack_name("RUN", "", 1) == "RUN.tar"
    assert pack_name("RUN", "Data/L001/C1.1", 1) == "RUN__Data__L001__C1.1.tar"
    assert pack_name("RUN", "InterOp", 2) == "RUN__InterOp.part002.tar"
    members = [PackMember(f"d/{i:02d}", f"/r/d/{i:02d}", 100, 1) for i in range(5)]
    plans = plan_packs("RUN", "d", list(reversed(members)), max_members=2)
    assert [p.remote_name for p in plans] == ["RUN__d.tar", "RUN__d.part002.tar", "RUN__d.part003.tar"]
    assert [len(p.members) for p in plans] == [2, 2, 1]
    assert [m.arcname for p in plans for m in p.members] == [m.arcname for m in members]
    by_bytes = plan_packs("RUN", "d", members, max_bytes=250)
    assert [len(p.members) for p in by_bytes] == [2, 2, 1]


def test_manifest_depends_on_names_sizes_and_mtimes_only() -> None:
    a = [PackMember("x/a", "/1/a", 1, 10), PackMember("x/b", "/1/b", 2, 20)]
    assert manifest_of(a) == manifest_of(list(reversed(a)))
    assert manifest_of(a) == manifest_of([PackMember("x/a", "/elsewhere/a", 1, 10), a[1]])
    assert manifest_of(a) != manifest_of([PackMember("x/a", "/1/a", 1, 11), a[1]])
    assert manifest_of(a) != manifest_of([PackMember("x/a", "/1/a", 3, 10), a[1]])
    assert manifest_of(a) != manifest_of(a[:1])


def _members(run: Path, folder: str) -> list[PackMember]:
    out = []
    for path in sorted((run / folder).iterdir()):
        st_ = path.stat()
        out.append(PackMember(f"{folder}/{path.name}", str(path), st_.st_size, st_.st_mtime_ns))
    return out


def test_tar_source_is_what_tarfile_writes_and_regenerates_identically(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, small_files=40)
    members = _members(run, "InterOp")
    source = TarSource(list(reversed(members)))
    source.open()
    whole = source.read(0, source.size)
    assert whole == TarSource(members).read(0, source.size)  # regenerated: byte-identical
    # Any cut of it reads the same bytes (what a resumed upload sends).
    for offset, length in ((0, 1), (511, 2), (700, 5000), (source.size - 3, 3)):
        assert source.read(offset, length) == whole[offset : offset + length]
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for member in sorted(members, key=lambda m: m.arcname):
            info = tarfile.TarInfo(member.arcname)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                member.size,
                0,
                0o644,
                0,
                0,
                "",
                "",
            )
            with open(member.local_path, "rb") as handle:
                tf.addfile(info, handle)
    assert whole == reference.getvalue()
    with tarfile.open(fileobj=io.BytesIO(whole)) as tf:
        assert {m.name: m.size for m in tf.getmembers()} == {
            rel: size for rel, size in run_files(run).items() if rel.startswith("InterOp/")
        }


def test_tar_source_refuses_a_changed_member(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, small_files=8)
    members = _members(run, "InterOp")
    source = TarSource(members)
    source.open()
    target = Path(members[-1].local_path)
    os.utime(target, ns=(1, 1))  # same size, other mtime: its bytes may differ
    with pytest.raises(SourceChangedError):
        source.read(0, source.size)
    with pytest.raises(SourceChangedError):
        TarSource(members).open()
    target.unlink()
    with pytest.raises(SourceChangedError, match="disappeared"):
        source.read(0, source.size)


@pytest.mark.parametrize("vectored", [True, False] if hasattr(os, "preadv") else [False])
def test_members_are_read_into_place_and_a_short_file_reads_short(tmp_path: Path, vectored: bool) -> None:
    path = tmp_path / "member"
    path.write_bytes(b"0123456789")
    buffer = bytearray(b"x" * 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _pread_into(fd, memoryview(buffer)[2:6], 3, vectored=vectored) == 4
        assert buffer == b"xx3456" + b"x" * 10
        assert _pread_into(fd, memoryview(buffer)[4:16], 0, vectored=vectored) == 10  # the file ends first
        assert buffer == b"xx340123456789xx"
    finally:
        os.close(fd)


@pytest.mark.parametrize("vectored", [True, False] if hasattr(os, "preadv") else [False])
def test_short_reads_are_continued_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vectored: bool
) -> None:
    # A regular file reads short only at its end; other files (network mounts, FUSE) may read
    # short anywhere. Cap every read at 7 bytes: each must continue at the next byte, into the
    # next part of the buffer.
    real_preadv, real_pread = getattr(os, "preadv", None), os.pread

    def capped_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        assert real_preadv is not None
        return real_preadv(fd, [buffers[0][:7]], offset)

    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real_pread(fd, min(n, 7), offset))
    if real_preadv is not None:
        monkeypatch.setattr(os, "preadv", capped_preadv)
    content = bytes(range(256)) * 3
    path = tmp_path / "member"
    path.write_bytes(content)
    buffer = bytearray(len(content))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _pread_into(fd, memoryview(buffer)[5:], 5, vectored=vectored) == len(content) - 5
    finally:
        os.close(fd)
    assert buffer[5:] == content[5:] and buffer[:5] == bytes(5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=8), st.data())
def test_tar_source_ranges_property(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("tar")
    members = []
    for index, size in enumerate(sizes):
        path = folder / f"f{index}"
        path.write_bytes(os.urandom(size))
        stat_ = path.stat()
        members.append(PackMember(f"d/f{index}", str(path), size, stat_.st_mtime_ns))
    source = TarSource(members)
    whole = source.read(0, source.size)
    offset = data.draw(st.integers(min_value=0, max_value=source.size))
    length = data.draw(st.integers(min_value=0, max_value=source.size - offset))
    assert source.read(offset, length) == whole[offset : offset + length]


def test_members_are_read_from_the_folder_of_their_tar() -> None:
    """A manifest's member list may name another folder with the same content (moved or copied)."""
    journaled = [
        PackMember("InterOp/a.bin", "/old/RUN/InterOp/a.bin", 3, 7),
        PackMember("InterOp/b.bin", "/old/RUN/InterOp/b.bin", 4, 8),
    ]
    assert members_in_folder("/new/place/RUN/InterOp/RUN__InterOp.tar", journaled) == [
        PackMember("InterOp/a.bin", "/new/place/RUN/InterOp/a.bin", 3, 7),
        PackMember("InterOp/b.bin", "/new/place/RUN/InterOp/b.bin", 4, 8),
    ]
    assert members_in_folder("/new/RUN/RUN.tar", [PackMember("x.txt", "/old/RUN/x.txt", 1, 2)]) == [
        PackMember("x.txt", "/new/RUN/x.txt", 1, 2)
    ]
    assert members_in_folder(
        "/new/RUN/C1.1/RUN__C1.1.part002.tar", [PackMember("C1.1/s.bcl", "/o/C1.1/s.bcl", 1, 2)]
    ) == [PackMember("C1.1/s.bcl", "/new/RUN/C1.1/s.bcl", 1, 2)]
    assert list(member_paths("/RUN.tar", [PackMember("x.txt", "/old/x.txt", 1, 2)])) == ["/x.txt"]  # a root of /


def test_a_run_keeps_planned_tars_within_its_bound() -> None:
    def plan(name: str, count: int) -> PackPlan:
        members = tuple(PackMember(f"{name}/{i:03d}", f"/r/{name}/{i:03d}", 10, 1) for i in range(count))
        return PackPlan(f"{name}.tar", members, manifest_of(members))

    a, b, c = plan("a", 6), plan("b", 5), plan("c", 4)
    kept = _PlannedPacks(10)
    kept.keep("/r/a/a.tar", a)
    kept.keep("/r/b/b.tar", b)  # 6 + 5 > 10: left to the journal
    kept.keep("/r/c/c.tar", c)
    assert kept.take("/r/b/b.tar", b.manifest) is None
    assert kept.take("/elsewhere/a/a.tar", a.manifest) is None  # the same manifest in another folder
    assert kept.take("/r/a/a.tar", a.manifest) is a and kept.take("/r/a/a.tar", a.manifest) is None
    kept.keep("/r/b/b.tar", b)  # a's room is free again
    assert kept.take("/r/b/b.tar", b.manifest) is b and kept.take("/r/c/c.tar", c.manifest) is c


def test_tar_source_refuses_a_layout_of_other_members(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, small_files=8)
    members = _members(run, "InterOp")
    (plan,) = plan_packs("run", "InterOp", members)
    assert TarSource(members, plan.layout).read(0, plan.size) == TarSource(members).read(0, plan.size)
    with pytest.raises(ValueError, match="not of these members"):
        TarSource(members[1:], plan.layout)
