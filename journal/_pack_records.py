"""The records of ``sync --pack-small``'s packed tars: loaded when a sync packs or plans packs.

Apart from :mod:`._records` because every command opens the journal and only a packing sync
uses these (issue 20: two dataclasses fewer in every other command's start-up).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PackRecord:
    """A packed tar known to be on a server (``sync --pack-small``).

    ``local_path`` is the tar's virtual path (its folder joined with its
    remote name); ``manifest`` the digest of its member list, which says
    whether the folder's small files are still exactly what was packed.
    """

    server: str
    username: str
    local_path: str
    remote: str
    manifest: str
    data_id: str
    size: int
    checksum: str | None
    members: int
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PackMember:
    """One file inside a packed tar: its name in the tar and the local file it came from."""

    arcname: str
    local_path: str
    size: int
    mtime_ns: int


def pack_record(row: dict[str, Any]) -> PackRecord:
    return PackRecord(
        server=row["server"],
        username=row["username"],
        local_path=row["local_path"],
        remote=row["remote"],
        manifest=row["manifest"],
        data_id=row["data_id"],
        size=row["size"],
        checksum=row["checksum"],
        members=row["members"],
        superseded=tuple(json.loads(row["superseded"])),
    )
