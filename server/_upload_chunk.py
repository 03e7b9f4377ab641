"""The records one upload request builds as it goes, and the check of the chunk protocol's fields.

What a chunk says (:class:`ChunkMeta`), where its bytes go (:class:`Target`)
and everything the request holds (:class:`Chunk`), apart from the machinery
that fills them (:mod:`._uploads`) so that the request's state is readable in
one place, and the field check is a plain function.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowxfer._os import Buffer
from flowxfer.protocol import filename_problem, format_checksum, parse_checksum

from ._http import ApiError, bad_request
from ._sink import Received, Sink
from ._store import ChunkRow, DataRow
from ._upload_routes import FALSE_WORDS, TRUE_WORDS, Prepared, UploadRoute


@dataclass
class ChunkMeta:
    """The validated form fields of one chunk."""

    filename: str
    offset: int
    is_last: bool
    data_id: str | None
    data_type: str | None
    is_directory: bool
    checksum: str | None
    file_checksum: str | None


@dataclass
class Target:
    """Where this chunk's bytes go, and what we hold for the upload so far."""

    data_id: str
    path: Path
    offset: int
    is_new: bool
    row: DataRow | None
    fd: int = -1
    file_hasher: Any | None = None
    lock: asyncio.Lock | None = None
    committed: bool = False
    #: The whole upload is in this one request and in memory (:data:`._upload_whole.WHOLE_IN_MEMORY`);
    #: ``path`` is its place in the data folder, ``written`` once a file is there.
    whole: bool = False
    written: bool = False
    #: The commit recording it was handed to the store: it may stand even if this request is cancelled.
    commit_sent: bool = False
    #: A replay of a complete upload's last chunk (:attr:`UploadRoute.replayable`): its bytes are
    #: hashed to compare with the recorded chunk, and dropped.
    replay: bool = False
    #: A chunk of a parallel-chunk upload (:mod:`._upload_parallel`): its slot holds exactly ``due``
    #: bytes, other slots belong to other requests (so nothing is truncated), and ``held`` is
    #: what the slot already held when this request came (a repeat, compared and dropped).
    parallel: bool = False
    due: int = 0
    held: ChunkRow | None = None


@dataclass
class Chunk:
    """Everything one request accumulated; released in one place whatever happens."""

    route: UploadRoute
    fields: dict[str, str] = field(default_factory=dict)
    #: The route's repeatable fields (``previous_data``), one item per form part, in order.
    lists: dict[str, list[str]] = field(default_factory=dict)
    #: The route's decision for this chunk (:meth:`UploadRoute.prepare`), made before a byte is stored.
    prepared: Prepared | None = None
    blob_seen: bool = False
    target: Target | None = None
    received: Received | None = None
    tree_tmp: Path | None = None
    spool: Path | None = None
    spool_fd: int = -1
    sink: Sink | None = None
    #: The blob of a whole upload kept in memory (``target.whole``).
    kept: list[Buffer] = field(default_factory=list)
    #: Bytes of the server's in-memory allowance this request holds (given back in ``_release``).
    held: int = 0


def parse_meta(fields: dict[str, str], extensions: bool) -> ChunkMeta:
    """The chunk protocol's own fields, checked (400 on anything malformed)."""
    filename = fields.get("filename")
    if filename is None:
        bad_request("filename is required")
    problem = filename_problem(filename)
    if problem == "Spaces in filename":
        # flowbio's callers expect hosted Flow's exact shape for this one.
        raise ApiError(400, problem, filename=[problem])
    if problem:
        bad_request(problem)
    offset_text = fields.get("expected_file_size")
    if offset_text is None:
        bad_request("expected_file_size is required")
    offset_text = offset_text.strip()
    if not offset_text.isascii() or not offset_text.isdigit() or len(offset_text) > 19:
        bad_request("expected_file_size must be a non-negative integer (a byte offset)")
    flags: dict[str, bool] = {}
    for name in ("is_last", "is_directory"):
        word = fields.get(name, "").strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            bad_request(f"{name} must be true or false")
        flags[name] = word in TRUE_WORDS
    data_id = fields.get("data", "").strip() or None
    data_type = fields.get("data_type", "").strip() or None
    if data_type is not None and len(data_type) > 255:
        bad_request("data_type longer than 255 characters")
    checksum = file_checksum = None
    if extensions:
        checksum = checksum_field(fields, "checksum")
        file_checksum = checksum_field(fields, "file_checksum")
    return ChunkMeta(
        filename,
        int(offset_text),
        flags["is_last"],
        data_id,
        data_type,
        flags["is_directory"],
        checksum,
        file_checksum,
    )


def checksum_field(fields: dict[str, str], name: str) -> str | None:
    value = fields.get(name, "")
    if not value:
        return None
    if value != value.strip():
        bad_request(f"{name} must read xxh3-128:<32 hex digits>")
    try:
        return format_checksum(parse_checksum(value))
    except ValueError:
        bad_request(f"{name} must read xxh3-128:<32 hex digits>")
