"""Progress events gathered between two commits (:class:`JournalBatch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._records import InventoryRecord
from ._states import ChunkState, FileState, check_chunk_transition, check_file_transition

if TYPE_CHECKING:
    from ._pack_records import PackRecord


class JournalBatch:
    """Progress events gathered between two commits.

    Events on the same key coalesce (last write wins), so a file that went
    ``active`` then ``done`` within one batch costs one row update. State
    changes are checked (:mod:`._states`) against the record's real state: a
    change following another in the same batch at once, the first one of a
    batch against the row when :meth:`Journal.commit` applies it, inside the
    transaction; an illegal one raises :class:`IllegalTransition` and nothing
    of the batch is written.
    Not thread-safe: fill it on one thread, hand it to :meth:`Journal.commit`.
    """

    __slots__ = (
        "chunk_plans",
        "file_updates",
        "file_from",
        "chunk_updates",
        "chunk_from",
        "verified_files",
        "inventory",
        "packs",
        "fds",
        "_events",
    )

    def __init__(self) -> None:
        self.chunk_plans: dict[int, list[tuple[int, int]]] = {}
        self.file_updates: dict[int, dict[str, Any]] = {}
        #: The first status each file is given in this batch: checked against its row at commit.
        self.file_from: dict[int, FileState] = {}
        self.chunk_updates: dict[tuple[int, int], tuple[ChunkState, str | None]] = {}
        #: The first state each chunk is given in this batch: checked against its row at commit.
        self.chunk_from: dict[tuple[int, int], ChunkState] = {}
        self.verified_files: set[int] = set()
        self.inventory: dict[tuple[str, str, str, str, str], InventoryRecord] = {}
        self.packs: dict[tuple[str, str, str], PackRecord] = {}
        self.fds: set[int] = set()
        self._events = 0

    def __len__(self) -> int:
        return self._events

    def plan_chunks(self, file_id: int, chunks: Sequence[tuple[int, int]]) -> None:
        """Replace a file's chunk plan with ``(offset, size)`` pairs, all ``planned``.

        Chunk events queued earlier for this file belonged to the old plan and are dropped.
        """
        self.chunk_plans[file_id] = list(chunks)
        for key in [key for key in self.chunk_updates if key[0] == file_id]:
            del self.chunk_updates[key]
            self.chunk_from.pop(key, None)
        self._events += 1

    def update_file(self, file_id: int, **fields: Any) -> None:
        """Set columns of a file row; its status changes only through :meth:`file_state`.

        :raises ValueError: ``status`` among the fields.
        """
        if "status" in fields:
            raise ValueError("a file's status changes through JournalBatch.file_state, which checks it")
        self.file_updates.setdefault(file_id, {}).update(fields)
        self._events += 1

    def file_state(self, file_id: int, new: FileState, **fields: Any) -> None:
        """Move a file to ``new``, setting other columns too.

        :raises IllegalTransition: at once when the file got another status earlier in this
            batch and ``new`` may not follow it; otherwise at commit, against its row.
        """
        earlier = self.file_updates.get(file_id, {}).get("status")
        if earlier is not None:
            check_file_transition(FileState(earlier), new)
        else:
            self.file_from[file_id] = new
        self.file_updates.setdefault(file_id, {}).update(fields, status=new.value)
        self._events += 1

    def chunk(self, file_id: int, idx: int, new: ChunkState, checksum: str | None = None) -> None:
        """Move chunk ``idx`` of a file to ``new``.

        :raises IllegalTransition: at once when the chunk changed earlier in this batch and
            ``new`` may not follow; otherwise at commit, against its row.
        """
        key = (file_id, idx)
        previous = self.chunk_updates.get(key)
        if previous is not None:
            check_chunk_transition(previous[0], new)
        else:
            self.chunk_from[key] = new
        if checksum is None and previous is not None:
            checksum = previous[1]
        self.chunk_updates[key] = (new, checksum)
        self._events += 1

    def upload_done(self, file_id: int, data_id: str | None, size: int, checksum: str | None) -> None:
        """A file the server took whole: ``done`` with its data id, and its chunks verified."""
        self.file_state(file_id, FileState.DONE, data_id=data_id, bytes_done=size, checksum=checksum, error=None)
        self.verify_chunks(file_id)

    def verify_chunks(self, file_id: int) -> None:
        """Every ``acked`` chunk of the file is now ``verified`` (its whole file passed its check)."""
        self.verified_files.add(file_id)
        self._events += 1

    def remember(self, record: InventoryRecord) -> None:
        """Record that a local file is (now) the same as remote data."""
        key = (record.server, record.username, record.direction, record.local_path, record.remote)
        self.inventory[key] = record
        self._events += 1

    def remember_pack(self, record: PackRecord) -> None:
        """Record that a packed tar is on the server (see :meth:`Journal.remember_pack`).

        Queued with the tar's row going ``done``, both land in one commit: recorded
        apart, a kill between the two left the tar in the inventory and its row
        unfinished, and the next run, finding the tar unchanged, dropped the row.
        """
        self.packs[(record.server, record.username, record.local_path)] = record
        self._events += 1

    def sync_before_commit(self, fd: int) -> None:
        """``fdatasync(fd)`` before this batch commits: its writes must be on disk first."""
        self.fds.add(fd)
