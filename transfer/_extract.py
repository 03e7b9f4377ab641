"""``bulk --extract``: unpacking a downloaded archive without trusting it.

An archive is the server's word about names and sizes, and a server (or
whatever sits between it and us) can lie. So the whole central directory is
checked before a single byte is written (:func:`check_archive`), and a bad
archive writes nothing at all:

- names: absolute paths, ``..``, drive letters, NUL and control
  characters, components of dots and spaces are refused
  (:func:`~._names.archive_member_target`);
- types: only regular files and folders; symbolic links, devices, FIFOs and
  sockets (Unix mode bits in the external attributes) are refused, as are
  encrypted members and compression methods we do not know;
- layout: duplicate paths, a path that is both a file and a folder, and
  members whose data would overlap another's or the central directory
  (the classic zip-bomb trick) are refused; a member's declared size must
  equal the data item's size when we know it, and the total must fit on disk.

Writing (:func:`extract_archive`) then walks folders with ``O_NOFOLLOW``
(a symbolic link planted inside the output folder is not followed), writes
each file to a temporary name with ``O_EXCL``, counts and hashes the bytes
as they come out (the count must equal the declared size; zipfile checks
each member's CRC-32), compares the hash with the data item's checksum when
the server gave one, and only then renames it into place.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowxfer import protocol

from ._errors import IntegrityError, LocalIOError
from ._names import UnsafePathError, archive_member_target

__all__ = ["ExpectedMember", "ExtractResult", "UnsafeArchiveError", "check_archive",
           "extract_archive"]

_BLOCK = 1024 * 1024
_KNOWN_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
#: A local file header is at least this long (before its name and extra field).
_LOCAL_HEADER = 30


class UnsafeArchiveError(IntegrityError):
    """The archive holds entries that cannot be extracted safely; nothing was written.

    :ivar problems: one line per refused entry.
    """

    def __init__(self, archive: Path, problems: list[str]) -> None:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"refusing to extract {archive.name} (nothing was written):\n  " + "\n  ".join(shown))
        self.problems = problems


@dataclass(frozen=True)
class ExpectedMember:
    """What the archive should hold for one data item, from ``GET /data/<id>``."""

    name: str
    data_id: str
    size: int
    checksum: str | None


@dataclass
class ExtractResult:
    files: list[str] = field(default_factory=list)
    verified: int = 0
    unverified: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Planned:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _member_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = ("a symbolic link" if stat.S_ISLNK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        return f"{info.filename!r} is {what}"
    if info.flag_bits & 0x1:
        return f"{info.filename!r} is encrypted"
    if info.compress_type not in _KNOWN_METHODS:
        return f"{info.filename!r} uses compression method {info.compress_type}"
    return None


def check_archive(zf: zipfile.ZipFile, out: Path, archive: Path,
                  expected: dict[str, ExpectedMember] | None) -> list[_Planned]:
    """Check every entry of an open archive before anything is written.

    :raises UnsafeArchiveError: listing every refused entry.
    """
    problems: list[str] = []
    planned: list[_Planned] = []
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    infos = zf.infolist()
    for info in infos:
        try:
            target = archive_member_target(out, info.filename)
        except UnsafePathError as exc:
            problems.append(str(exc))
            continue
        problem = _member_type_problem(info)
        if problem:
            problems.append(problem)
            continue
        parts = target.relative_to(out).parts
        key = tuple(p.casefold() for p in parts)
        is_dir = info.filename.endswith(("/", "\\")) or stat.S_ISDIR(info.external_attr >> 16)
        if is_dir:
            if key in files:
                problems.append(f"{info.filename!r} is both a file and a folder")
            dirs.add(key)
        else:
            if key in files or key in dirs:
                problems.append(f"{info.filename!r} appears twice")
            files.add(key)
            if target == archive:
                problems.append(f"{info.filename!r} would overwrite the archive itself; name it differently")
            known = expected.get(info.filename) if expected is not None else None
            if known is not None and info.file_size != known.size:
                problems.append(f"{info.filename!r} is {info.file_size} bytes in the archive, but data "
                                f"{known.data_id} is {known.size}")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                problems.append(f"{info.filename!r}: stored, yet {info.compress_size} bytes hold {info.file_size}")
        for depth in range(1, len(key)):
            dirs.add(key[:depth])
        planned.append(_Planned(info, parts, is_dir))
    for key in files & dirs:
        problems.append(f"{'/'.join(key)!r} is both a file and a folder")
    # Member data must lie one after the other, before the central directory: overlapping
    # members (one compressed run of bytes counted many times) are how zip bombs multiply.
    ordered = sorted(infos, key=lambda i: i.header_offset)
    limit = zf.start_dir
    for info, following in zip(ordered, [*ordered[1:], None], strict=True):
        end = (info.header_offset + _LOCAL_HEADER + len(info.orig_filename.encode("utf-8", "surrogateescape"))
               + info.compress_size)
        boundary = following.header_offset if following is not None else limit
        if end > boundary:
            problems.append(f"{info.filename!r}: its data overlaps the next entry or the central directory")
    total = sum(i.file_size for i in infos)
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        free = None
    if free is not None and total > free:
        problems.append(f"the archive unpacks to {total} bytes; {out} has {free} free")
    if problems:
        raise UnsafeArchiveError(archive, problems)
    return planned


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    """Open folder ``name`` under ``parent_fd`` without following a symbolic link (creating it if asked)."""
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                   dir_fd=parent_fd)


def _write_member(zf: zipfile.ZipFile, item: _Planned, out_fd: int, expected: ExpectedMember | None) -> bool:
    """Extract one file under ``out_fd``; returns whether its checksum was verified."""
    info = item.info
    fds: list[int] = []
    try:
        parent = out_fd
        for name in item.parts[:-1]:
            parent = _open_dir(parent, name, create=True)
            fds.append(parent)
        final = item.parts[-1]
        temp = f".{final[:200]}.flowxfer-extract"
        try:
            os.unlink(temp, dir_fd=parent)
        except FileNotFoundError:
            pass
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     0o644, dir_fd=parent)
        hasher = protocol.new_hasher()
        written = 0
        try:
            with zf.open(info) as src:
                while block := src.read(_BLOCK):
                    written += len(block)
                    if written > info.file_size:
                        raise IntegrityError(f"{info.filename!r} holds more bytes than its declared {info.file_size}")
                    hasher.update(block)
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
            if written != info.file_size:
                raise IntegrityError(f"{info.filename!r} holds {written} bytes, declared {info.file_size}")
            checksum = protocol.format_checksum(hasher.hexdigest())
            if expected is not None and expected.checksum is not None and checksum != expected.checksum:
                raise IntegrityError(f"{info.filename!r} does not match data {expected.data_id}: "
                                     f"{checksum} != {expected.checksum}")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temp, dir_fd=parent)
            raise
        os.close(fd)
        os.replace(temp, final, src_dir_fd=parent, dst_dir_fd=parent)
        return expected is not None and expected.checksum is not None
    finally:
        for fd in reversed(fds):
            os.close(fd)


def extract_archive(archive: Path, out: Path, expected: Sequence[ExpectedMember] | None,
                    on_file: Callable[[str, int], None] | None = None) -> ExtractResult:
    """Extract ``archive`` under ``out`` safely (blocking: run it in a worker thread).

    :param expected: the data the archive should hold, to verify sizes and
        checksums against (None: only the archive's own CRCs are checked).
    :param on_file: called with each extracted path and its size.
    :raises UnsafeArchiveError: a refused entry (nothing was written).
    :raises IntegrityError: a file's bytes do not match (the files before it stay, verified).
    :raises LocalIOError: the disk refused, or something in the output folder is in the way.
    """
    by_name = {e.name: e for e in expected} if expected is not None else None
    result = ExtractResult()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IntegrityError(f"{archive.name} is not a readable zip archive: {exc}") from None
    with zf:
        planned = check_archive(zf, out, archive, by_name)
        try:
            out.mkdir(parents=True, exist_ok=True)
            out_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise LocalIOError(f"cannot use output folder {out}: {exc.strerror}") from None
        try:
            for item in planned:
                path = str(out.joinpath(*item.parts))
                try:
                    if item.is_dir:
                        fds = []
                        parent = out_fd
                        for name in item.parts:
                            parent = _open_dir(parent, name, create=True)
                            fds.append(parent)
                        for fd in fds:
                            os.close(fd)
                        continue
                    known = by_name.get(item.info.filename) if by_name is not None else None
                    if _write_member(zf, item, out_fd, known):
                        result.verified += 1
                    else:
                        result.unverified.append(path)
                except zipfile.BadZipFile as exc:
                    raise IntegrityError(f"{item.info.filename!r} is damaged in the archive: {exc}") from None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise LocalIOError(f"cannot extract {item.info.filename!r}: something in {out} that is "
                                           "not a plain folder (a symbolic link?) is in the way") from None
                    raise LocalIOError(f"cannot extract {item.info.filename!r}: {exc.strerror}") from None
                result.files.append(path)
                if on_file is not None:
                    on_file(path, item.info.file_size)
        finally:
            os.close(out_fd)
    return result
