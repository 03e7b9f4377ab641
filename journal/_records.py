"""The journal's records: what its methods take and return, and how a row becomes one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._states import ChunkState, FileState


@dataclass(frozen=True, slots=True)
class TransferRecord:
    id: str
    kind: str
    status: str
    server: str
    username: str
    params: dict[str, Any]
    params_key: str
    state: dict[str, Any]
    created: float
    updated: float
    finished: float | None
    error: str | None
    #: The host that last started or finished it (``FLOWXFER_HOST_ID``, default the hostname).
    host: str = ""


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    transfer_id: str
    local_path: str
    remote_name: str
    data_id: str | None
    size: int
    mtime_ns: int | None
    chunk_size: int
    checksum: str | None
    etag: str | None
    status: FileState
    bytes_done: int
    attempts: int
    error: str | None
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file to add to a transfer's plan."""

    local_path: str
    remote_name: str = ""
    size: int = 0
    mtime_ns: int | None = None
    data_id: str | None = None
    checksum: str | None = None
    status: FileState = FileState.PLANNED
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    file_id: int
    idx: int
    offset: int
    size: int
    checksum: str | None
    state: ChunkState


@dataclass(frozen=True, slots=True)
class InventoryRecord:
    """What this machine knows to be on a server (up) or written from it (down).

    ``remote`` is the stored filename for uploads and the data id for
    downloads; (local_path, remote) together say "this local file is that
    remote data".
    """

    server: str
    username: str
    direction: str
    local_path: str
    remote: str
    size: int
    mtime_ns: int
    checksum: str | None
    data_id: str
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TransferSummary:
    """Counts and bytes of one transfer, computed from its file rows."""

    files_total: int
    files_by_status: dict[str, int]
    bytes_total: int
    bytes_done: int
    bytes_skipped: int

    @property
    def files_finished(self) -> int:
        return self.files_by_status.get("done", 0) + self.files_by_status.get("skipped", 0)


def file_row(transfer_id: str, f: NewFile, now: float, host: str) -> tuple[Any, ...]:
    """A new ``files`` row's first twelve columns, in the order every ``INSERT INTO files`` names them."""
    return (
        transfer_id,
        f.local_path,
        f.remote_name,
        f.data_id,
        f.size,
        f.mtime_ns,
        f.checksum,
        f.status.value,
        f.error,
        json.dumps(f.extra),
        now,
        host,
    )


def transfer_record(row: dict[str, Any]) -> TransferRecord:
    return TransferRecord(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        server=row["server"],
        username=row["username"],
        params=json.loads(row["params"]),
        params_key=row["params_key"],
        state=json.loads(row["state"]),
        created=row["created"],
        updated=row["updated"],
        finished=row["finished"],
        error=row["error"],
        host=row["host"],
    )


def file_record(row: dict[str, Any]) -> FileRecord:
    return FileRecord(
        id=row["id"],
        transfer_id=row["transfer_id"],
        local_path=row["local_path"],
        remote_name=row["remote_name"],
        data_id=row["data_id"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        chunk_size=row["chunk_size"],
        checksum=row["checksum"],
        etag=row["etag"],
        status=FileState(row["status"]),
        bytes_done=row["bytes_done"],
        attempts=row["attempts"],
        error=row["error"],
        extra=json.loads(row["extra"]),
    )


def inventory_record(row: dict[str, Any]) -> InventoryRecord:
    return InventoryRecord(
        server=row["server"],
        username=row["username"],
        direction=row["direction"],
        local_path=row["local_path"],
        remote=row["remote"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        checksum=row["checksum"],
        data_id=row["data_id"],
        superseded=tuple(json.loads(row["superseded"])),
    )
