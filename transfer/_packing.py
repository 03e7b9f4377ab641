"""``sync --pack-small``: which small files go into which tar, and the tar as an upload source.

Flow allows 100 new uploads an hour; a run folder holds 10^5 small files.
So files smaller than the packing threshold are packed, folder by folder,
into deterministic tars (:mod:`._tarpack`) uploaded with ``is_directory``:
the server unpacks them into the run's relative paths.

The rules (also in ``docs/sync-and-bulk.md``):

- Every file under the threshold is packed with the other small files of
  the *same folder* (not its subfolders: each folder is its own tar, so a
  change in one folder re-packs only that folder).
- Members are named by their path relative to the synced folder
  (``InterOp/ErrorMetricsOut.bin``), sorted, with mtime 0, mode 0644,
  owner 0:0, no user or group names: the tar's bytes depend only on the
  member names and contents.
- One tar holds at most :data:`MAX_MEMBERS` files and about
  :data:`MAX_PACK_BYTES` of data; a larger folder is cut, in name order,
  into parts.
- The tar's Flow name is the synced folder's name and the folder's relative
  path flattened with ``__`` (``241129_A01234__InterOp.tar``; the folder
  itself gives ``241129_A01234.tar``); further parts add ``.partNNN``
  (``...__L001.part002.tar``), the first part keeping the plain name so a
  folder that grows past one part keeps its first tar.
- A tar's *manifest* is a digest of its member list (names, sizes,
  mtimes in nanoseconds): when a re-run finds the same manifest for the
  same tar, the tar is unchanged and is not sent again.

The pure part (grouping, naming, manifests) does no I/O; :class:`TarSource`
is the edge that reads member files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from flowxfer.journal import PackMember

from ._errors import LocalIOError, SourceChangedError
from ._names import flatten_relative_path
from ._tarpack import LiteralPiece, TarLayout, TarMember, _arcname_problem

__all__ = [
    "MAX_MEMBERS",
    "MAX_PACK_BYTES",
    "PackPlan",
    "TarSource",
    "manifest_of",
    "member_paths",
    "members_in_folder",
    "pack_name",
    "plan_packs",
]

#: Members per tar. The server unpacks a tar while the last chunk's request
#: waits (and makes every file durable, one fsync each), so a tar of 2,500
#: files keeps that answer within seconds, far from any read timeout, and a
#: large folder's parts are unpacked side by side (``--concurrency``). Cost:
#: 100,000 small files are 40 upload requests, inside one hour's budget.
MAX_MEMBERS = 2_500
#: Data per tar before a folder is cut into parts: a part that changes is re-sent whole.
MAX_PACK_BYTES = 1024 * 1024 * 1024
#: Bumped if the tar layout ever changes, so old manifests stop matching.
_LAYOUT_VERSION = "flowxfer-tar-1"


@dataclass(frozen=True)
class PackPlan:
    """One tar to upload: its Flow name, its members and where its bytes come from.

    The layout (a tar header per member) is computed only when asked for: an
    unchanged folder is recognised by its manifest alone, which is much cheaper.
    """

    remote_name: str
    members: tuple[PackMember, ...]
    manifest: str

    @cached_property
    def layout(self) -> TarLayout:
        return TarLayout.build([TarMember(m.arcname, m.size, 0) for m in self.members])

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def data_bytes(self) -> int:
        return sum(m.size for m in self.members)


def manifest_of(members: Sequence[PackMember]) -> str:
    """The digest of a member list (order-independent): equal manifests mean an unchanged tar."""
    digest = hashlib.sha256(_LAYOUT_VERSION.encode())
    for member in sorted(members, key=lambda m: m.arcname):
        digest.update(f"\0{member.arcname}\0{member.size}\0{member.mtime_ns}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def members_in_folder(tar_path: str, members: Sequence[PackMember]) -> list[PackMember]:
    """``members`` as files of the folder that holds the tar whose virtual path is ``tar_path``.

    The journal keeps one member list per manifest, and a manifest names
    members by their path relative to the synced folder, not by where that
    folder is. A run folder moved with ``mv`` or copied with ``cp -a`` keeps
    its names, sizes and mtimes, so its tars have the manifests of the
    original's, and their member lists still named the old place: the
    upload then failed on every run ("disappeared since it was packed").
    Every member of a tar comes from the one folder its virtual path names
    (``<folder>/<tar name>``), so that is where its files are read.
    """
    return [
        PackMember(m.arcname, path, m.size, m.mtime_ns)
        for m, path in zip(members, member_paths(tar_path, members), strict=True)
    ]


def member_paths(tar_path: str, members: Iterable[PackMember]) -> Iterator[str]:
    """Where each member of the tar at virtual path ``tar_path`` is read (:func:`members_in_folder`).

    Paths only, no new records: the unchanged re-run checks every packed
    file for deletion, and building a member record each cost ~1 us, 0.12 s
    for 100,000 files.
    """
    prefix = os.path.join(os.path.dirname(tar_path), "")
    for m in members:
        yield prefix + m.arcname.rpartition("/")[2]


def pack_name(root_name: str, rel_dir: str, part: int) -> str:
    """The Flow filename of a folder's tar (``part`` counts from 1).

    :raises ValueError: when no valid Flow filename can be made of it (see
        :func:`flatten_relative_path`).
    """
    rel = f"{root_name}/{rel_dir}" if rel_dir else root_name
    suffix = ".tar" if part == 1 else f".part{part:03d}.tar"
    return flatten_relative_path(rel) + suffix


def plan_packs(
    root_name: str,
    rel_dir: str,
    members: Sequence[PackMember],
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_PACK_BYTES,
) -> list[PackPlan]:
    """Cut one folder's small files into tars (pure).

    :param members: the folder's small files; their ``arcname`` is the path
        relative to the synced folder.
    :raises ValueError: for a member name a tar cannot hold, or a folder
        name that makes no Flow filename.
    """
    ordered = sorted(members, key=lambda m: m.arcname)
    for member in ordered:
        problem = _arcname_problem(member.arcname)
        if problem is not None:
            raise ValueError(f"cannot pack {member.arcname!r}: {problem}")
    groups: list[list[PackMember]] = []
    current: list[PackMember] = []
    current_bytes = 0
    for member in ordered:
        if current and (len(current) >= max_members or current_bytes + member.size > max_bytes):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(member)
        current_bytes += member.size
    if current:
        groups.append(current)
    plans = []
    for index, group in enumerate(groups, start=1):
        plans.append(PackPlan(pack_name(root_name, rel_dir, index), tuple(group), manifest_of(group)))
    return plans


class TarSource:
    """A packed tar as an upload :class:`~._sources.Source`: bytes generated on demand, never stored.

    Any range can be produced again after a crash, byte for byte, so an
    upload resumes mid-tar like any file. Every member read is checked
    against the size and mtime it was planned with: a member that changed
    raises :class:`SourceChangedError` instead of shipping a torn tar.
    """

    def __init__(self, members: Sequence[PackMember], layout: TarLayout | None = None) -> None:
        """:param layout: the members' layout when already built (:attr:`PackPlan.layout`)."""
        self.members = tuple(sorted(members, key=lambda m: m.arcname))
        if layout is None:
            layout = TarLayout.build([TarMember(m.arcname, m.size, 0) for m in self.members])
        elif [(m.arcname, m.size) for m in layout.members] != [(m.arcname, m.size) for m in self.members]:
            raise ValueError("the layout is not of these members")
        self.layout = layout
        self.size = layout.size

    def open(self) -> None:
        for member in self.members:
            self._check(member)

    def _check(self, member: PackMember) -> None:
        try:
            st = os.stat(member.local_path)
        except FileNotFoundError:
            raise SourceChangedError(f"{member.local_path} disappeared since it was packed") from None
        except OSError as exc:
            raise LocalIOError(f"cannot read {member.local_path}: {exc.strerror}") from None
        if (st.st_size, st.st_mtime_ns) != (member.size, member.mtime_ns):
            raise SourceChangedError(f"{member.local_path} changed since it was packed")

    def read(self, offset: int, length: int) -> bytearray:
        """Bytes ``[offset, offset + length)`` of the tar, each member read straight into place.

        A member's bytes are copied once (by the kernel, into the block's
        buffer, where ``preadv`` exists): appending each member's ``pread``
        to a growing buffer and copying that into ``bytes`` copied them twice
        more, a quarter to a third of the reading thread's time for 4 MiB
        blocks of 16 KiB members.

        Every call returns a new buffer, and nothing may write to it after:
        the request body hands it to the socket transport, which on TLS and on
        Python 3.12+ keeps a reference until the bytes are sent (so never
        reuse one buffer across reads).
        """
        buffer = bytearray(length)
        view = memoryview(buffer)
        position = 0
        for piece in self.layout.segments_in(offset, length):
            if isinstance(piece, LiteralPiece):
                view[position : position + len(piece.data)] = piece.data
                position += len(piece.data)
                continue
            member = self.members[piece.member_index]
            try:
                fd = os.open(member.local_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise SourceChangedError(f"{member.local_path} disappeared while being packed") from None
            except OSError as exc:
                raise LocalIOError(f"cannot read {member.local_path}: {exc.strerror}") from None
            try:
                st = os.fstat(fd)
                if (st.st_size, st.st_mtime_ns) != (member.size, member.mtime_ns):
                    raise SourceChangedError(f"{member.local_path} changed while being packed")
                got = _pread_into(fd, view[position : position + piece.length], piece.file_offset)
            except OSError as exc:
                raise LocalIOError(f"cannot read {member.local_path}: {exc.strerror}") from None
            finally:
                os.close(fd)
            if got != piece.length:
                raise SourceChangedError(f"{member.local_path} shrank while being packed")
            position += piece.length
        if position != length:
            # The layout's pieces always cover the range; if they ever did not, the zeros left
            # in the buffer would be hashed and sent as tar bytes: a wrong tar the server accepts.
            raise AssertionError(f"tar pieces covered {position} of {length} bytes at offset {offset}")
        return buffer

    def close(self) -> None:
        """Nothing stays open between reads (a tar may have 20,000 members)."""


def _pread_into(fd: int, target: memoryview, offset: int, *, vectored: bool | None = None) -> int:
    """Fill ``target`` from ``fd`` at ``offset``; the bytes read (fewer only at the end of the file).

    ``preadv`` reads into ``target`` itself; where the system lacks it
    (``vectored`` False) a ``pread`` is copied in.
    """
    if vectored is None:
        vectored = _HAS_PREADV
    done = 0
    while done < len(target):
        if vectored:
            got = os.preadv(fd, [target[done:]], offset + done)
        else:
            data = os.pread(fd, len(target) - done, offset + done)
            got = len(data)
            target[done : done + got] = data
        if got == 0:
            break
        done += got
    return done


_HAS_PREADV = hasattr(os, "preadv")
