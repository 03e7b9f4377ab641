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
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowxfer import protocol

from ._archives import Archive, Entry, open_archive
from ._errors import IntegrityError, LocalIOError
from ._names import UnsafePathError, archive_member_target

__all__ = ["ExpectedMember", "ExtractResult", "UnsafeArchiveError", "check_archive", "extract_archive"]

_BLOCK = 1024 * 1024
#: A folder entry naming only the archive's top (``./``, as ``tar -C dir .`` writes): nothing to make.
_TOP = re.compile(r"^[./\\]*$")


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
    entry: Entry
    parts: tuple[str, ...]
    is_dir: bool


def check_archive(
    archive: Archive, out: Path, path: Path, expected: dict[str, ExpectedMember] | None
) -> list[_Planned]:
    """Check every entry of an open archive (zip or tar.gz) before anything is written.

    :raises UnsafeArchiveError: listing every refused entry.
    """
    problems: list[str] = []
    planned: list[_Planned] = []
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for entry in archive.entries:
        if entry.is_dir and _TOP.match(entry.name) and ".." not in entry.name:
            continue
        try:
            target = archive_member_target(out, entry.name)
        except UnsafePathError as exc:
            problems.append(str(exc))
            continue
        if entry.problem:
            problems.append(entry.problem)
            continue
        parts = target.relative_to(out).parts
        key = tuple(p.casefold() for p in parts)
        if entry.is_dir:
            if key in files:
                problems.append(f"{entry.name!r} is both a file and a folder")
            dirs.add(key)
        else:
            if key in files or key in dirs:
                problems.append(f"{entry.name!r} appears twice")
            files.add(key)
            if target == path:
                problems.append(f"{entry.name!r} would overwrite the archive itself; name it differently")
            known = expected.get(entry.name) if expected is not None else None
            if known is not None and entry.size != known.size:
                problems.append(
                    f"{entry.name!r} is {entry.size} bytes in the archive, but data {known.data_id} is {known.size}"
                )
        for depth in range(1, len(key)):
            dirs.add(key[:depth])
        planned.append(_Planned(entry, parts, entry.is_dir))
    for key in files & dirs:
        problems.append(f"{'/'.join(key)!r} is both a file and a folder")
    problems += archive.layout_problems()
    total = sum(e.size for e in archive.entries)
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        free = None
    if free is not None and total > free:
        problems.append(f"the archive unpacks to {total} bytes; {out} has {free} free")
    if problems:
        raise UnsafeArchiveError(path, problems)
    return planned


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    """Open folder ``name`` under ``parent_fd`` without following a symbolic link (creating it if asked)."""
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=parent_fd)


def _write_member(archive: Archive, item: _Planned, out_fd: int, expected: ExpectedMember | None) -> bool:
    """Extract one file under ``out_fd``; returns whether its checksum was verified."""
    entry = item.entry
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
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
            0o644,
            dir_fd=parent,
        )
        hasher = protocol.new_hasher()
        written = 0
        try:
            with archive.open(entry) as src:
                while block := src.read(_BLOCK):
                    written += len(block)
                    if written > entry.size:
                        raise IntegrityError(f"{entry.name!r} holds more bytes than its declared {entry.size}")
                    hasher.update(block)
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
            if written != entry.size:
                raise IntegrityError(f"{entry.name!r} holds {written} bytes, declared {entry.size}")
            checksum = protocol.format_checksum(hasher.hexdigest())
            if expected is not None and expected.checksum is not None and checksum != expected.checksum:
                raise IntegrityError(
                    f"{entry.name!r} does not match data {expected.data_id}: {checksum} != {expected.checksum}"
                )
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


def extract_archive(
    archive: Path,
    out: Path,
    expected: Sequence[ExpectedMember] | None,
    on_file: Callable[[str, int], None] | None = None,
) -> ExtractResult:
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
    reader = open_archive(archive)
    try:
        planned = check_archive(reader, out, archive, by_name)
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
                    known = by_name.get(item.entry.name) if by_name is not None else None
                    if _write_member(reader, item, out_fd, known):
                        result.verified += 1
                    else:
                        result.unverified.append(path)
                except OSError as exc:
                    if exc.errno is None and isinstance(exc, reader.damaged):  # gzip's own errors
                        raise IntegrityError(f"{item.entry.name!r} is damaged in the archive: {exc}") from None
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise LocalIOError(
                            f"cannot extract {item.entry.name!r}: something in {out} that is "
                            "not a plain folder (a symbolic link?) is in the way"
                        ) from None
                    raise LocalIOError(f"cannot extract {item.entry.name!r}: {exc.strerror}") from None
                except reader.damaged as exc:
                    raise IntegrityError(f"{item.entry.name!r} is damaged in the archive: {exc}") from None
                result.files.append(path)
                if on_file is not None:
                    on_file(path, item.entry.size)
        finally:
            os.close(out_fd)
    finally:
        reader.close()
    return result
