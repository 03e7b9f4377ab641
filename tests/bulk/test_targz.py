"""tar.gz archives, as hosted Flow builds them: end to end against ``serve --archive-format tar.gz``,
and hostile ones refused with nothing written, as zips are."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import anyio
import pytest

from flowxfer import protocol
from flowxfer.transfer import Flowxfer, IntegrityError, TransferConfig
from flowxfer.transfer._extract import ExpectedMember, UnsafeArchiveError, extract_archive
from tests.bulk.test_bulk import _files, _upload
from tests.bulk.test_extract import _exists, _snapshot, archive_server
from tests.support.server import ServerProcess, running_server
from tests.transfer.conftest import client
from tests.transfer.test_server_restart import as_running

Member = tuple[str, bytes, bytes]  # name, type flag, data (or link target)


def _targz(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data.decode()
                tf.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buffer.getvalue()


F, D = tarfile.REGTYPE, tarfile.DIRTYPE
HOSTILE: dict[str, list[Member]] = {
    "tar slip": [("ok.txt", F, b"fine"), ("../evil.txt", F, b"escaped")],
    "deep tar slip": [("a/b/../../../evil.txt", F, b"escaped")],
    "absolute": [("/tmp/flowxfer-evil.txt", F, b"escaped")],
    "backslashes": [("..\\evil.txt", F, b"escaped")],
    "symlink": [("link", tarfile.SYMTYPE, b"/etc"), ("link/passwd", F, b"x")],
    "hard link": [("ok.txt", F, b"fine"), ("hard", tarfile.LNKTYPE, b"/etc/passwd")],
    "device": [("dev", tarfile.CHRTYPE, b"")],
    "fifo": [("fifo", tarfile.FIFOTYPE, b"")],
    "duplicate": [("twice.txt", F, b"one"), ("twice.txt", F, b"two")],
    "file and folder": [("x", F, b"file"), ("x/y", F, b"inside")],
    "dot-dot folder": [("../", D, b""), ("ok.txt", F, b"fine")],
}

#: Why each kind of member is refused, where the refusal names it.
REASON = {
    "symlink": "symbolic link",
    "hard link": "hard link",
    "device": "a device",
    "fifo": "a FIFO",
    "duplicate": "appears twice",
    "file and folder": "both a file and a folder",
    "tar slip": "'..'",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_targz_writes_nothing(tmp_path: Path, case: str) -> None:
    body = _targz(HOSTILE[case])
    out = tmp_path / "sandbox" / "out"
    out.mkdir(parents=True)
    before = _snapshot(tmp_path)
    async with archive_server(lambda: body) as stand:
        async with Flowxfer(
            f"http://127.0.0.1:{stand.port}",
            token="not-a-jwt",
            config_dir=tmp_path / "cfg",
            journal=tmp_path / "journal.db",
            config=TransferConfig(backoff_base=0.01),
        ) as fx:
            report = await fx.bulk(["1", "2"], name="x.zip", output_dir=out, extract=True, poll_interval=0.05)
    assert report.status == "failed"
    (archive,) = report.files
    assert archive.error is not None and "refusing to extract x.zip (nothing was written)" in archive.error
    assert REASON.get(case, "") in archive.error
    after = _snapshot(tmp_path) - before
    assert {p for p in after if not p.startswith(("journal.db", "cfg"))} == {"sandbox/out/x.zip"}
    assert not _exists("/tmp/flowxfer-evil.txt")


def test_damaged_truncated_and_foreign_archives_are_integrity_errors(tmp_path: Path) -> None:
    good = _targz([("a.txt", F, os.urandom(5000))])
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # inside the gzip trailer's CRC-32
    cases = {
        "crc.tar.gz": bytes(flipped),
        "cut.tar.gz": good[: len(good) // 2],
        "plain.zip": b"just some text, not an archive at all",
        "bare.tar.gz": gzip.compress(b"not a tar" * 100),
    }
    for name, body in cases.items():
        archive = tmp_path / name
        archive.write_bytes(body)
        with pytest.raises(IntegrityError):
            extract_archive(archive, tmp_path / "out", None)
        assert not (tmp_path / "out").exists(), name


def test_by_content_not_by_name_and_checked_like_zips(tmp_path: Path) -> None:
    data = {"d/r1.fastq": os.urandom(70_000), "notes.txt": b"n"}
    archive = tmp_path / "named.zip"  # a tar.gz that calls itself .zip
    archive.write_bytes(_targz([("./", D, b""), ("d", D, b""), *[(n, F, b) for n, b in data.items()]]))
    expected = [ExpectedMember(n, str(i), len(b), protocol.checksum_of(b)) for i, (n, b) in enumerate(data.items())]
    result = extract_archive(archive, tmp_path / "out", expected)
    assert result.verified == 2 and not result.unverified
    assert {
        str(p.relative_to(tmp_path / "out")): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()
    } == data
    wrong = [ExpectedMember("notes.txt", "9", 1, protocol.checksum_of(b"x"))]
    with pytest.raises(IntegrityError, match="does not match data 9"):
        extract_archive(archive, tmp_path / "out2", wrong)
    sized = [ExpectedMember("notes.txt", "9", 2, None)]
    with pytest.raises(UnsafeArchiveError, match="data 9 is 2"):
        extract_archive(archive, tmp_path / "out3", sized)
    zipped = tmp_path / "named.tar.gz"  # and a zip that calls itself .tar.gz
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("z.txt", b"zip")
    assert extract_archive(zipped, tmp_path / "out4", None).files == [str(tmp_path / "out4" / "z.txt")]


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
async def test_bulk_extract_end_to_end_from_a_targz_server(tmp_path: Path, extensions: bool) -> None:
    files = _files(tmp_path / "src", [1000, 300_000, 0, 5])
    out = tmp_path / "out"
    async with running_server(tmp_path / "root", extensions=extensions, archive_format="tar.gz") as srv:
        async with client(srv, tmp_path / "home") as fx:
            ids = await _upload(fx, files)
            report = await fx.bulk(ids, output_dir=out, extract=True, keep_archive=True)
    assert report.status == "completed", report
    archive = Path(report.extra["archive"])

    def on_disk() -> tuple[bytes, dict[str, bytes], dict[str, bytes]]:
        return (
            archive.read_bytes()[:2],
            {p.name: p.read_bytes() for p in out.iterdir() if p != archive},
            {f.name: f.read_bytes() for f in files},
        )

    head, extracted, sent = await anyio.to_thread.run_sync(on_disk)
    assert archive.name == "flow-download.zip" and head == b"\x1f\x8b"  # a tar.gz, whatever its name says
    assert report.extra["extract_verified"] == (4 if extensions else 0)
    assert extracted == sent


async def test_serve_archive_format_flag(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [2000, 3000])
    async with ServerProcess(tmp_path / "root", "--archive-format", "tar.gz", "--no-extensions") as proc:
        async with client(as_running(proc), tmp_path / "home") as fx:
            ids = await _upload(fx, files)
            report = await fx.bulk(ids, name="results.tar.gz", output_dir=tmp_path / "out", extract=True)
    assert report.status == "completed", report
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)
