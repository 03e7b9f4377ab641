"""What an upload ends with, whichever way its chunks travelled: the server's account, checked.

Shared by the strict chunk order (:mod:`._upload`) and the parallel-chunk
extension (:mod:`._upload_parallel`): a lost upload, the local bytes read back
to vouch for chunks the journal never recorded, and the final answer (or a
bounded wait for it) compared with what we sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from flowxfer import protocol
from flowxfer.journal import FileRecord

from ._errors import IntegrityError, NotFoundError, ProtocolError, RejectedError
from ._runtime import TransferContext
from ._sources import Source
from .events import FileVerifying


@dataclass(frozen=True)
class UploadResult:
    """What the server said of a finished upload.

    :ivar sample_id: the sample the final chunk made (``/upload/sample``), when its answer said so.
    """

    data_id: str
    checksum: str | None
    sample_id: str | None = None


class _UploadLost(Exception):
    """The server no longer knows the upload (restarted from scratch, expired, not ours)."""


async def upload_status(ctx: TransferContext, data_id: str) -> dict[str, Any]:
    """``GET /upload/<id>`` [ext]: what the server holds of an upload.

    :raises _UploadLost: the server does not know it (404), or refuses it as not ours (400, 403).
    """
    try:
        return await ctx.client.json_request("GET", f"/upload/{data_id}", rate_class="api")
    except NotFoundError:
        raise _UploadLost() from None
    except RejectedError as exc:
        if exc.status in (400, 403):
            raise _UploadLost() from None
        raise


def _is_count(value: object) -> bool:
    """An offset or a size as JSON should carry it: an integer (not a boolean), not negative."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _confirm_by_reading(ctx: TransferContext, source: Source, server_chunks: list[Any], held: int) -> int:
    """Hash the local bytes of each server chunk and compare; any mismatch restarts the upload.

    Read through the source, not the path: a packed tar (``sync --pack-small``) has no file of its own.
    """

    def compare() -> bool:
        for entry in server_chunks:
            offset, size, checksum = entry["offset"], entry["size"], entry.get("checksum")
            if offset + size > source.size:
                return False
            if checksum is None:
                continue
            if protocol.checksum_of(source.read(offset, size)) != protocol.canonical_checksum(checksum):
                return False
        return True

    if not await anyio.to_thread.run_sync(compare):
        raise _UploadLost()
    return held


async def _poll_ready(ctx: TransferContext, record: FileRecord, data_id: str) -> dict[str, Any]:
    """Wait (bounded) until the server shows the data as ready, e.g. after a lost final answer."""
    delay = 0.5
    for _ in range(12):
        try:
            info = await ctx.client.json_request("GET", f"/data/{data_id}", rate_class="api")
        except NotFoundError:
            info = None
        if info is not None:
            return {
                "id": data_id,
                "data_id": data_id,
                "size": info.get("size"),
                "is_ready": True,
                "checksum": info.get("checksum"),
            }
        await anyio.sleep(delay)
        delay = min(delay * 2, 10.0)
    raise IntegrityError(
        f"{record.local_path}: every chunk was accepted but the server never made data {data_id} ready"
    )


async def _finish(
    ctx: TransferContext, record: FileRecord, answer: dict[str, Any], data_id: str, file_checksum: str | None
) -> UploadResult:
    if not answer.get("is_ready"):
        ctx.events(FileVerifying(record.local_path))
        answer = await _poll_ready(ctx, record, data_id)
    size = answer.get("size")
    if isinstance(size, int) and size != record.size:
        raise IntegrityError(f"{record.local_path}: the server stored {size} bytes of {record.size}")
    raw = answer.get("checksum")
    server_checksum = protocol.canonical_checksum(raw)
    if raw is not None and server_checksum is None:
        raise ProtocolError(f"{record.local_path}: the server answered a malformed checksum {str(raw)[:80]!r}")
    if file_checksum and server_checksum and server_checksum != file_checksum:
        raise IntegrityError(
            f"{record.local_path}: the server's checksum {server_checksum} differs from ours {file_checksum}"
        )
    sample_id = answer.get("sample_id")
    return UploadResult(
        data_id,
        file_checksum or server_checksum,
        str(sample_id) if isinstance(sample_id, str | int) and str(sample_id) else None,
    )


__all__ = ["UploadResult"]
