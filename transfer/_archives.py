"""Zip and tar.gz archives behind one reader, told apart by their first bytes.

Our server builds stored zips; hosted Flow builds tar.gz. A job's name
need not say which (the server decides the content), so :func:`open_archive`
reads the magic bytes. Each reader lists its entries with what it alone can
see wrong with them (a symbolic link, an encrypted member, an unknown
compression), and the layout problems of its format (zip members that
overlap: the zip-bomb trick); the rules every archive obeys (names, duplicates,
sizes, free space) are checked once, in :mod:`._extract`.
"""

from __future__ import annotations

import gzip
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ._errors import IntegrityError

__all__ = ["Archive", "Entry", "open_archive"]

_KNOWN_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
#: A local file header is at least this long (before its name and extra field).
_LOCAL_HEADER = 30
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One member: its name as stored, size, kind, and why it cannot be extracted (or None)."""

    name: str
    size: int
    is_dir: bool
    problem: str | None
    ref: zipfile.ZipInfo | tarfile.TarInfo


class Archive(Protocol):
    kind: str
    entries: list[Entry]
    #: what reading a damaged member raises
    damaged: tuple[type[BaseException], ...]

    def layout_problems(self) -> list[str]: ...

    def open(self, entry: Entry) -> IO[bytes]: ...

    def close(self) -> None: ...


def _type_problem(name: str, mode: int) -> str | None:
    kind = stat.S_IFMT(mode)
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = (
            "a symbolic link"
            if stat.S_ISLNK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        return f"{name!r} is {what}"
    return None


class _Zip:
    kind = "zip"
    damaged: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError)

    def __init__(self, path: Path) -> None:
        try:
            self._zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise IntegrityError(f"{path.name} is not a readable zip archive: {exc}") from None
        self._infos = self._zf.infolist()
        self.entries = [
            Entry(
                i.filename,
                i.file_size,
                i.filename.endswith(("/", "\\")) or stat.S_ISDIR(i.external_attr >> 16),
                self._problem(i),
                i,
            )
            for i in self._infos
        ]

    @staticmethod
    def _problem(info: zipfile.ZipInfo) -> str | None:
        problem = _type_problem(info.filename, info.external_attr >> 16)
        if problem:
            return problem
        if info.flag_bits & 0x1:
            return f"{info.filename!r} is encrypted"
        if info.compress_type not in _KNOWN_METHODS:
            return f"{info.filename!r} uses compression method {info.compress_type}"
        return None

    def layout_problems(self) -> list[str]:
        problems = [
            f"{i.filename!r}: stored, yet {i.compress_size} bytes hold {i.file_size}"
            for i in self._infos
            if i.compress_type == zipfile.ZIP_STORED and i.compress_size != i.file_size
        ]
        # Member data must lie one after the other, before the central directory: overlapping
        # members (one compressed run of bytes counted many times) are how zip bombs multiply.
        ordered = sorted(self._infos, key=lambda i: i.header_offset)
        for info, following in zip(ordered, [*ordered[1:], None], strict=True):
            end = (
                info.header_offset
                + _LOCAL_HEADER
                + len(info.orig_filename.encode("utf-8", "surrogateescape"))
                + info.compress_size
            )
            boundary = following.header_offset if following is not None else self._zf.start_dir
            if end > boundary:
                problems.append(f"{info.filename!r}: its data overlaps the next entry or the central directory")
        return problems

    def open(self, entry: Entry) -> IO[bytes]:
        assert isinstance(entry.ref, zipfile.ZipInfo)
        return self._zf.open(entry.ref)

    def close(self) -> None:
        self._zf.close()


class _TarGz:
    """A gzipped tar. Listing it reads the whole stream once, gzip's CRC-32 included."""

    kind = "tar.gz"
    damaged: tuple[type[BaseException], ...] = (tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile)

    def __init__(self, path: Path) -> None:
        try:
            self._tf = tarfile.open(path, mode="r:gz")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise IntegrityError(f"{path.name} is not a readable tar.gz archive: {exc}") from None
        try:
            members = self._tf.getmembers()
            self._read_to_the_end()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            self._tf.close()
            raise IntegrityError(f"{path.name} is a damaged tar.gz archive: {exc}") from None
        self.entries = [
            Entry(m.name + ("/" if m.isdir() else ""), m.size if m.isfile() else 0, m.isdir(), self._problem(m), m)
            for m in members
        ]

    def _read_to_the_end(self) -> None:
        """Read past the tar's end marker to the gzip trailer, so its CRC-32 and length are checked."""
        stream = self._tf.fileobj
        assert stream is not None
        while stream.read(_BLOCK):
            pass

    @staticmethod
    def _problem(member: tarfile.TarInfo) -> str | None:
        if member.issym():
            return f"{member.name!r} is a symbolic link"
        if member.islnk():
            return f"{member.name!r} is a hard link"
        if member.ischr() or member.isblk():
            return f"{member.name!r} is a device"
        if member.isfifo():
            return f"{member.name!r} is a FIFO"
        if member.issparse():
            return f"{member.name!r} is a sparse file"
        if not (member.isfile() or member.isdir()):
            return f"{member.name!r} is not a regular file"
        return None

    def layout_problems(self) -> list[str]:
        return []  # tar members follow each other by construction: nothing can overlap

    def open(self, entry: Entry) -> IO[bytes]:
        assert isinstance(entry.ref, tarfile.TarInfo)
        stream = self._tf.extractfile(entry.ref)
        if stream is None:
            raise IntegrityError(f"{entry.name!r} holds no file data")
        return stream

    def close(self) -> None:
        self._tf.close()


def open_archive(path: Path) -> Archive:
    """The zip or tar.gz at ``path``, by its first bytes (not its name).

    :raises IntegrityError: it is neither, or cannot be read as what it claims.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise IntegrityError(f"cannot read {path.name}: {exc.strerror}") from None
    if head.startswith(_ZIP_MAGIC):
        return _Zip(path)
    if head.startswith(_GZIP_MAGIC):
        return _TarGz(path)
    raise IntegrityError(f"{path.name} is neither a zip nor a tar.gz archive (it starts with {head!r})")
