"""Safe unpacking of ``is_directory`` uploads (.zip, .tar, .tar.gz/.bz2/.xz).

Synchronous and blocking: run it in a worker thread. Refuses absolute
paths, ``..``, symlinks, hard links, devices and FIFOs, duplicate paths, and
archives whose member count or unpacked size exceeds the configured bounds
(the real bytes are counted while writing, so a lying header does not help a
bomb). Every file is written with ``O_EXCL`` inside a fresh folder we
created and hashed as it is written; before the listing is returned every
byte and name is on disk (one ``syncfs`` for the whole tree where the
system has it, else an ``fsync`` per file), so the listing never claims more
than the disk holds.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import threading
import weakref
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flowxfer._os import CAN_SYNC_FILESYSTEM, Buffer, read_direct, start_writeback, sync_filesystem
from flowxfer.protocol import checksum_of, format_checksum, new_hasher

from ._sink import feed_file
from ._store import TreeFile

_BLOCK = 1024 * 1024
#: Files at least this large have their writeback started as soon as they are written, so the
#: syncfs at the end waits for less; for smaller ones the call costs more than it overlaps.
_WRITEBACK_MIN = 1024 * 1024
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64


class UnpackError(Exception):
    """The archive is not one we can unpack safely; the message says why."""


@dataclass(frozen=True)
class UnpackLimits:
    max_members: int
    max_bytes: int
    max_ratio: float


_CONTROL = re.compile("[\x00-\x1f]")


def member_path_problem(name: str) -> str | None:
    """Why an archive member name cannot be unpacked under a folder, or None."""
    if not name:
        return "empty member name"
    if _CONTROL.search(name):
        return "control characters in member name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"absolute member path {name!r}"
    if "\\" in name:
        return f"backslash in member path {name!r}"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "member path too long"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return f"'..' in member path {name!r}"
    if any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        return "member path component longer than 255 bytes"
    if len(parts) > MAX_DEPTH:
        return "member path too deep"
    return None


#: A member name that is safe and normal as it stands: ASCII components that do not start with a
#: dot (so none is ``.`` or ``..``) and fit in 255 bytes, joined by single slashes. Names that
#: ``sync --pack-small`` sends are almost all such; the rest take :func:`member_path_problem`.
_SIMPLE_COMPONENT = r"[A-Za-z0-9_+,=@%-][A-Za-z0-9._+,=@%~-]{0,254}"
_SIMPLE_NAME = re.compile(f"{_SIMPLE_COMPONENT}(?:/{_SIMPLE_COMPONENT})*")


def _normal(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


class _Writer:
    """Writes members under ``dest`` while enforcing the byte budget.

    Paths are strings and folders are remembered by their relative name:
    ten thousand members made ten thousand ``Path`` objects (and hashed them)
    for nothing, and thousands of members share a handful of folders (one
    ``mkdir`` each, not one per member).
    """

    def __init__(self, dest: Path, limits: UnpackLimits, archive_size: int) -> None:
        self.dest = dest
        self.budget = min(limits.max_bytes, max(int(archive_size * limits.max_ratio), 1024 * 1024))
        self.written = 0
        self.seen: set[str] = set()
        self.files: list[TreeFile] = []
        self._dest_name = str(dest)
        self._folders: set[str] = {""}  # relative folders known to exist

    def claim(self, name: str) -> str:
        if _SIMPLE_NAME.fullmatch(name) and len(name) <= MAX_PATH_BYTES and name.count("/") < MAX_DEPTH:
            rel = name  # safe and already normal: one regex instead of the dozen steps below
        else:
            problem = member_path_problem(name)
            if problem:
                raise UnpackError(problem)
            rel = _normal(name)
        if rel in self.seen:
            raise UnpackError(f"duplicate member {rel!r}")
        self.seen.add(rel)
        return rel

    def directory(self, rel: str) -> None:
        if rel not in self._folders:
            (self.dest / rel).mkdir(parents=True, exist_ok=True)
            self._folders.add(rel)

    def file(self, rel: str, source: IO[bytes]) -> None:
        """A member read from ``source`` a block at a time (a zip member, a tarfile member)."""
        fd = self._create(rel)
        hasher = new_hasher()
        size = 0
        try:
            while True:
                block = source.read(_BLOCK)
                if not block:
                    break
                size += len(block)
                self._count(len(block))
                hasher.update(block)
                _write_all(fd, block)
            _written(fd, size)
        finally:
            os.close(fd)
        self.files.append(TreeFile(rel, size, format_checksum(hasher.hexdigest())))

    def file_bytes(self, rel: str, data: bytes | memoryview) -> None:
        """A member whose bytes are already in memory (:class:`PlainTarStream`)."""
        self._count(len(data))
        fd = self._create(rel)
        try:
            _write_all(fd, data)
            _written(fd, len(data))
        finally:
            os.close(fd)
        self.files.append(TreeFile(rel, len(data), checksum_of(data)))

    def _count(self, size: int) -> None:
        self.written += size
        if self.written > self.budget:
            raise UnpackError(f"archive unpacks to more than {self.budget} bytes")

    def _create(self, rel: str) -> int:
        if not rel:
            raise UnpackError("a file member has no name")
        self.directory(rel.rpartition("/")[0])
        return os.open(f"{self._dest_name}/{rel}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _written(fd: int, size: int) -> None:
    """A member is written: on its way to disk for the one ``syncfs`` at the end, or flushed now."""
    if CAN_SYNC_FILESYSTEM:
        if size >= _WRITEBACK_MIN:
            start_writeback(fd, 0, size)  # the syncfs at the end then finds it written
    else:
        os.fsync(fd)


class _NotPlain(Exception):
    """The tar holds something only :mod:`tarfile` reads (PAX or GNU headers, base-256 numbers...)."""


_TAR_BLOCK = 512
_ZERO_BLOCK = bytes(_TAR_BLOCK)
_POSIX_MAGIC = b"ustar\x0000"
#: A number field as a plain header has it: octal digits, spaces, and anything after a NUL.
_PLAIN_NUMBER = re.compile(rb" *[0-7]* *(?:\x00[\x00-\xff]*)?")
#: mode, uid, gid, mtime, devmajor, devminor: read by tarfile, not used by us.
_OTHER_NUMBERS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
#: mode, uid, gid, size, mtime and checksum as tarfile (and ``sync --pack-small``) writes them:
#: zero-padded octal ending in NUL, the checksum as ``%06o`` NUL space. One match instead of
#: six field checks and two parses; any other spelling takes the general checks.
_USUAL_NUMBERS = re.compile(rb"[0-7]{7}\x00[0-7]{7}\x00[0-7]{7}\x00([0-7]{11})\x00[0-7]{11}\x00([0-7]{6})\x00 ")
#: Members up to this size are taken whole by :class:`PlainTarStream`; a larger one sends the archive to tarfile.
_IN_MEMORY_MEMBER = 4 * 1024 * 1024


def _octal(field: bytes) -> int:
    """A header number as tarfile reads it when it is plain octal; anything else is not plain."""
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not text.isdigit() or b"8" in text or b"9" in text:
        raise _NotPlain()
    return int(text, 8)


class PlainTarStream:
    """Unpacks an uncompressed tar of plain ustar headers (what ``sync --pack-small`` sends), fed in pieces.

    The same checks as the :mod:`tarfile` path, without its per-member
    objects: ``tarfile`` cost some 40 us a member before a byte was written,
    most of a 10,000-file pack's unpacking after the file system's own work.
    Fed in pieces of any size (:func:`_plain_tar` reads the archive four
    megabytes at a time, into one buffer that the next read overwrites: no
    view of a piece is kept past :meth:`feed`). Unpacking a pack from the
    upload's body as it arrives was tried: on two shared cores it only moved
    the work (1.76 vs 1.74 s for a 10,000-file pack), so the archive is read
    back from its file.
    Anything irregular (another magic, a checksum only a signed sum matches,
    numbers that are not plain octal, PAX/GNU/sparse members, a member over
    :data:`_IN_MEMORY_MEMBER`, an archive cut short) raises :class:`_NotPlain`,
    and the caller starts over with :mod:`tarfile`, whose verdict then stands.
    Each piece is parsed where it lies and members are written from views of
    it: only a header or member that a piece cuts short is copied, to be
    completed from the next. Memory: that one header or member at most.
    """

    def __init__(self, writer: _Writer, limits: UnpackLimits) -> None:
        self.writer = writer
        self.limits = limits
        self.done = False
        self._buffer = bytearray()  # the start of a member or header cut by the end of a piece
        self._member: tuple[str, int] | None = None  # a file member whose bytes are awaited
        self._count = 0

    def feed(self, data: Buffer) -> None:
        if self.done:
            return  # the end-of-archive blocks and tarfile's record padding: nothing more to read
        with memoryview(data) as view:
            start = 0
            if self._buffer:
                # A header or member cut by the end of the last piece: complete it from this one.
                start = self._awaited() - len(self._buffer)
                if len(view) < start:
                    self._buffer += view
                    return
                self._buffer += view[:start]
                with memoryview(self._buffer) as whole:
                    self._parse(whole)
                self._buffer = bytearray()
            # The rest is parsed where it lies: only a header or member it cuts short is copied.
            with view[start:] as rest:
                used = self._parse(rest)
                if not self.done and used < len(rest):
                    self._buffer = bytearray(rest[used:])

    def _awaited(self) -> int:
        """The bytes of the header or (padded) member that comes next."""
        if self._member is None:
            return _TAR_BLOCK
        size = self._member[1]
        return size + (-size % _TAR_BLOCK)

    def _parse(self, view: memoryview) -> int:
        """Unpack what ``view`` holds whole; how many of its bytes that used.

        Members are written from views of ``view``, never copied. No view
        outlives a call that returns. (After a call that raised, a traceback
        may still hold one: a stream that raised is dropped, never fed again.)
        """
        pos = 0
        end = len(view)
        while not self.done:
            awaited = self._awaited()
            if end - pos < awaited:
                break
            if self._member is None:
                self._header(bytes(view[pos : pos + _TAR_BLOCK]))
            else:
                self.writer.file_bytes(self._member[0], view[pos : pos + self._member[1]])
                self._member = None
            pos += awaited
        return pos

    def finish(self) -> None:
        """The archive ended: it must have ended with its end-of-archive block."""
        if not self.done:
            raise _NotPlain()

    def _header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self.done = True
            return
        if header[257:265] != _POSIX_MAGIC:
            raise _NotPlain()
        usual = _USUAL_NUMBERS.fullmatch(header, 100, 156)
        if usual:
            if not (_PLAIN_NUMBER.fullmatch(header, 329, 337) and _PLAIN_NUMBER.fullmatch(header, 337, 345)):
                raise _NotPlain()  # the device numbers, which tarfile reads for every member
            size, checksum = int(usual[1], 8), int(usual[2], 8)
        else:
            if not all(_PLAIN_NUMBER.fullmatch(header, start, end) for start, end in _OTHER_NUMBERS):
                raise _NotPlain()  # tarfile would read these (mode, owner, mtime, device) and may stop there
            size, checksum = _octal(header[124:136]), _octal(header[148:156])
        if checksum != sum(header) - sum(header[148:156]) + 8 * 32:
            raise _NotPlain()
        kind = header[156:157]
        name = header[0:100].split(b"\0", 1)[0]
        if kind == b"\0" and name.endswith(b"/"):
            kind = b"5"  # an old-style folder entry, as tarfile reads it (the name field alone, not the prefix)
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
        text = name.decode("utf-8", "surrogateescape")
        self._count += 1
        if self._count > self.limits.max_members:
            raise UnpackError(f"archive has more than {self.limits.max_members} members")
        if kind == b"5":
            if size:
                raise _NotPlain()  # a folder with data: let tarfile judge
            self.writer.directory(self.writer.claim(text))
        elif kind in (b"0", b"\0", b"7"):
            rel = self.writer.claim(text)
            if size > _IN_MEMORY_MEMBER:
                raise _NotPlain()
            self._member = (rel, size)
        elif kind in (b"1", b"2", b"3", b"4", b"6"):
            raise UnpackError(f"member {text!r} is a link or special file")
        else:
            raise _NotPlain()


def _plain_tar(archive: Path, writer: _Writer, limits: UnpackLimits) -> None:
    """:class:`PlainTarStream` over an archive file, read past the page cache (:func:`read_direct`).

    The archive was just written past the page cache too (the upload's
    chunks) and is read once: a buffered read allocated page-cache pages for
    every byte of it only to copy them out. ``sync --pack-small`` of 10,000
    files of 16 KiB in four tars: the server's CPU 1.34 -> 1.14 s, the sync's
    median 1.62 -> 1.51 s over seven alternating runs.
    """
    stream = PlainTarStream(writer, limits)
    for block in read_direct(archive):
        stream.feed(block)
        if stream.done:
            break
    stream.finish()


def _zip_members(zf: zipfile.ZipFile, writer: _Writer, limits: UnpackLimits) -> None:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UnpackError(f"archive has more than {limits.max_members} members")
    if sum(i.file_size for i in infos) > writer.budget:
        raise UnpackError(f"archive unpacks to more than {writer.budget} bytes")
    for info in infos:
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnpackError(f"member {info.filename!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise UnpackError(f"member {info.filename!r} is encrypted")
        rel = writer.claim(info.filename)
        if info.is_dir():
            writer.directory(rel)
        else:
            with zf.open(info) as source:
                writer.file(rel, source)


def _tar_members(tf: tarfile.TarFile, limits: UnpackLimits) -> Iterator[tarfile.TarInfo]:
    count = 0
    for member in tf:
        count += 1
        if count > limits.max_members:
            raise UnpackError(f"archive has more than {limits.max_members} members")
        yield member


def _tarfile_members(archive: Path, writer: _Writer, limits: UnpackLimits) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in _tar_members(tf, limits):
            if member.isdir():
                writer.directory(writer.claim(member.name))
            elif member.isreg():
                rel = writer.claim(member.name)
                source = tf.extractfile(member)
                if source is None:
                    raise UnpackError(f"member {member.name!r} has no data")
                with source:
                    writer.file(rel, source)
            else:
                raise UnpackError(f"member {member.name!r} is a link or special file")


def unpack(archive: Path, dest: Path, limits: UnpackLimits) -> list[TreeFile]:
    """Unpack ``archive`` into the new folder ``dest``; the files written, sorted by path.

    :raises UnpackError: for an unsupported, corrupt or unsafe archive; ``dest`` is removed.
    """
    archive_size = archive.stat().st_size
    dest.mkdir(parents=True)
    writer = _Writer(dest, limits, archive_size)
    watch = os.open(dest, os.O_RDONLY)  # before any write: the flush sees their errors (sync_filesystem)
    try:
        return _unpacked(archive, dest, limits, writer, archive_size, watch)
    finally:
        os.close(watch)


def _unpacked(
    archive: Path, dest: Path, limits: UnpackLimits, writer: _Writer, archive_size: int, watch: int
) -> list[TreeFile]:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _zip_members(zf, writer, limits)
        elif archive_size and tarfile.is_tarfile(archive):
            try:
                _plain_tar(archive, writer, limits)  # not plain (compressed, GNU...): says so at once
            except _NotPlain:
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                writer = _Writer(dest, limits, archive_size)
                _tarfile_members(archive, writer, limits)
        else:
            raise UnpackError("not a .zip, .tar or compressed .tar archive")
    except UnpackError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        tarfile.TarError,
        ValueError,
        RuntimeError,
        NotImplementedError,
        LookupError,
        zlib.error,  # a damaged deflate stream inside a zip
        lzma.LZMAError,  # a damaged .tar.xz or an lzma zip member
    ) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnpackError(f"corrupt or unsupported archive: {type(exc).__name__}: {exc}") from None
    return _made_durable(dest, writer, watch)


def _made_durable(dest: Path, writer: _Writer, watch: int) -> list[TreeFile]:
    """Flush what was unpacked under ``dest``; the listing, sorted by path.

    ``watch`` is a descriptor on ``dest``'s filesystem opened before the
    first member was written: only through it does the flush report a
    write that failed in between (:func:`~flowxfer._os.sync_filesystem`).
    """
    if CAN_SYNC_FILESYSTEM:
        # One flush for every file and folder written: a 2,500-file tar costs one disk flush, not 2,500.
        try:
            sync_filesystem(watch)
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise UnpackError(f"cannot flush the unpacked files to disk: {exc}") from None
    else:
        with suppress(OSError):
            fd = os.open(dest, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return sorted(writer.files, key=lambda f: f.path)


#: Staging folders held open at once for their flush (:class:`StagedUnpack`). Each unfinished
#: directory upload holds one until its finish, an abandoned one until the server stops (nothing
#: expires an upload): past this many, an upload gets no head start and its finish unpacks the
#: archive through a descriptor of its own, so abandoned uploads cannot use up the server's.
STAGED_WATCHES_MAX = 64
_staged_watches = threading.BoundedSemaphore(STAGED_WATCHES_MAX)


def _release_watch(fd: int) -> None:
    try:
        os.close(fd)
    finally:
        _staged_watches.release()


class StagedUnpack:
    """A plain tar unpacked from its in-order prefix while the rest of it still arrives [ext].

    A parallel-chunk upload of a directory archive (``sync --pack-small``
    against our server) used to be unpacked whole at its ``finish``: for
    2,000 files of 64 KiB through a 50 ms path, about a second in which no
    byte moved. The server already reads each recorded chunk that extends
    the in-order prefix back to hash the whole file ahead of ``finish``;
    here the same bytes also feed a :class:`PlainTarStream` into the upload's
    staging folder (``trees/<id>.tmp``), which nothing serves. ``finish``
    still compares the whole-file checksum first and publishes the folder
    only then, after one flush (:meth:`result`).

    A head start only, never a second verdict: anything the stream does not
    take (not a plain tar, a refused path or size, too many members, a write
    that failed) drops it, and ``finish`` unpacks the archive from its file
    as before (:func:`unpack`), whose verdict stands. Blocking: call from a
    worker thread, one call at a time.
    """

    def __init__(self, dest: Path, limits: UnpackLimits, archive_size: int) -> None:
        self.dest = dest
        self.limits = limits
        self.archive_size = archive_size
        self.failed = False
        self._stream: PlainTarStream | None = None
        #: The descriptor the flush goes through, opened before the first member was written
        #: (:func:`_made_durable`), and what closes it: at :meth:`result`, or when this is dropped unused.
        self._watch = -1
        self._close_watch: Callable[[], object] = lambda: None

    def feed_range(self, archive: Path, offset: int, size: int, hasher: Any) -> None:
        """Hash ``size`` bytes of ``archive`` from ``offset`` into ``hasher`` and unpack them.

        :raises OSError: the archive could not be read (the hash is then incomplete: the caller's to handle).
        """
        feed_file(archive, offset, size, hasher, also=self._feed)

    def _feed(self, data: memoryview) -> None:
        if self.failed:
            return
        try:
            if self._stream is None:
                if not _staged_watches.acquire(blocking=False):
                    raise OSError(f"{STAGED_WATCHES_MAX} staged unpacks are open already")
                try:
                    shutil.rmtree(self.dest, ignore_errors=True)  # a head start from before a failed finish
                    self.dest.mkdir(parents=True)
                    self._watch = os.open(self.dest, os.O_RDONLY)
                except BaseException:
                    _staged_watches.release()
                    raise
                self._close_watch = weakref.finalize(self, _release_watch, self._watch)
                self._stream = PlainTarStream(_Writer(self.dest, self.limits, self.archive_size), self.limits)
            self._stream.feed(data)
        except Exception:  # noqa: BLE001 - any refusal or failure: finish takes the archive road
            self.failed = True
            self._stream = None
            self._close_watch()

    def result(self, archive: Path) -> list[TreeFile] | None:
        """Every byte was fed and the whole file matched: the flushed listing, or None to unpack ``archive``.

        None also when :func:`unpack` would not read ``archive`` as a tar (a
        zip's directory at its end wins there), so both roads give one verdict.
        """
        stream = self._stream
        if self.failed or stream is None or not stream.done:
            return None
        try:
            if zipfile.is_zipfile(archive) or not tarfile.is_tarfile(archive):
                return None
            return _made_durable(self.dest, stream.writer, self._watch)
        except (OSError, UnpackError):
            return None  # the flush failed: the archive road flushes again and reports it
        finally:
            self._close_watch()
