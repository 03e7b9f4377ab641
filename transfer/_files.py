"""Plain files up and down: what ``upload`` and ``download`` are as transfers.

Each says what its transfer is (the journal parameters that name it, how it
is planned into the journal, which file worker works a file) and hands that
to the :class:`~._runner.Runner`, as :mod:`._bulk` and :mod:`._sync` do for
theirs; the facade (:class:`~._api.Flowxfer`) only delegates here. The files
themselves are worked by :mod:`._workers`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from flowxfer.journal import FileRecord, Journal, TransferRecord

from ._advice import bulk_hint
from ._by_id import PREFETCH_LIMIT, Prefetched, describe_by_id
from ._client import FlowClient
from ._errors import UsageError
from ._plan import LocalFile, RemoteData, check_upload_paths, plan_downloads, plan_uploads, scan_local
from ._remote import describe, search
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext, task_group
from ._workers import UploadWave, download_one, unsent, upload_one
from .events import FileFinished, FilesPlanned, Notice

__all__ = ["check_named", "named_data", "run_download", "run_upload"]


def _statuses(journal: Journal, transfer_id: str) -> dict[str, str]:
    return {row.local_path: row.status.value for row in journal.iter_files(transfer_id)}


async def run_upload(
    runner: Runner,
    paths: Sequence[str | os.PathLike[str]],
    *,
    data_type: str | None = None,
    force: bool = False,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.upload`."""
    from ._upload import UploadOptions  # here: a download does not load the upload modules

    resolved = await anyio.to_thread.run_sync(check_upload_paths, list(paths))
    # Named in the journal's form (``--path-map``): the same upload on every host of a fleet.
    params: dict[str, Any] = {"paths": [runner.paths.to_journal(p) for p in resolved], "data_type": data_type}
    options = UploadOptions(data_type=data_type)
    wave = UploadWave()

    def scan() -> Iterator[LocalFile]:
        for found in scan_local(resolved):
            yield dataclasses.replace(found, path=runner.paths.to_journal(found.path))

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        skipped, count, total = await anyio.to_thread.run_sync(
            partial(plan_uploads, ctx.journal, record.id, ctx.server, ctx.username, scan(), force=force)
        )
        runner.emit(FilesPlanned(count, total))
        summary = await anyio.to_thread.run_sync(ctx.journal.summary, record.id)
        wave.todo = summary.files_total - summary.files_finished
        # A resume keeps the rows its transfer holds: a file it uploaded before stays done (so the
        # summary counts it), one still to do is its worker's to report; neither was skipped now.
        held = await anyio.to_thread.run_sync(_statuses, ctx.journal, record.id) if resumed and skipped else {}
        for row in skipped:
            status = held.get(row.local_path, "skipped")
            if status in ("done", "skipped"):
                runner.emit(FileFinished(row.local_path, row.remote_name, status, row.size, row.data_id, None))

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        return await upload_one(
            ctx, record, dataclasses.replace(options, together=wave.take(ctx.config.concurrency_for(None)))
        )

    return await runner.run(
        "upload", params, plan, work, transfer_id=transfer_id, extra_state={"force": force}, read_ahead=unsent
    )


def check_named(ids: Sequence[str], filename: str | None, pattern: str | None, owned: bool) -> list[str]:
    """The ids, each once, in order.

    :raises UsageError: neither ids nor a search named.
    """
    unique = list(dict.fromkeys(str(i) for i in ids))
    if not unique and not (filename or pattern or owned):
        raise UsageError("name data ids, or a search (--filename, --pattern, --owned)")
    return unique


async def named_data(
    client: FlowClient,
    ids: list[str],
    filename: str | None,
    pattern: str | None,
    owned: bool,
    prefetched: dict[str, Prefetched] | None = None,
    chunk_size: int = PREFETCH_LIMIT,
    first: int = 0,
    on_streams: Callable[[int], None] | None = None,
) -> list[RemoteData]:
    """The data named by ids, then by a search (each item once).

    :param prefetched: where to keep small files' bytes when the ids are described by
        ``GET /downloads/<id>`` ([ext] ``download_by_id``: the bytes come with the description);
        None: by ``GET /data/<id>``, bytes later.
    :param chunk_size: the download's chunk size: at most one chunk comes with a description
        (verified as one, a small file whole).
    :param first: the bytes the first id's answer may bring, its head read, the rest held for
        the file's first stream (:func:`describe_by_id`); the caller closes what is left in ``prefetched``.
    :param on_streams: told the first id's size when its streams will ask for more than its answer brings.
    """
    items: list[RemoteData] = []
    if ids and prefetched is not None and (await client.capabilities()).download_by_id:
        items, bodies = await describe_by_id(
            client, ids, limit=min(chunk_size, PREFETCH_LIMIT), first=first, on_streams=on_streams
        )
        prefetched.update(bodies)
    elif ids:
        items = await describe(client, ids)
    if filename or pattern or owned:
        seen = {item.id for item in items}
        items += [
            item
            for item in await search(client, filename=filename, pattern=pattern, owned=owned)
            if item.id not in seen
        ]
    return items


async def _downloaded_before(runner: Runner, ids: Sequence[str]) -> bool:
    """Whether any of ``ids`` was downloaded with this journal before, when it matters.

    Described by id ([ext] ``download_by_id``), a file's first bytes come with its
    description, a request from the hourly download budget; a file downloaded
    before may be found identical and skipped, which must cost no download
    request: those ids are described by ``/data``. Only asked when the server
    offers the extension (the journal is opened for it, not beside it).
    """
    if not ids or not (await runner.client.capabilities()).download_by_id:
        return False
    journal = await runner.journal()
    known = await anyio.to_thread.run_sync(
        partial(journal.downloaded_ids, runner.base_url, runner.client.username or "", list(ids))
    )
    return bool(known)


async def run_download(
    runner: Runner,
    ids: Sequence[str] = (),
    *,
    filename: str | None = None,
    pattern: str | None = None,
    owned: bool = False,
    output_dir: Path | str = ".",
    force: bool = False,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.download`."""
    ids = check_named(ids, filename, pattern, owned)
    out = await anyio.to_thread.run_sync(lambda: Path(output_dir).expanduser().resolve())
    params: dict[str, Any] = {
        "ids": ids,
        "filename": filename,
        "pattern": pattern,
        "owned": owned,
        "output_dir": str(out),
    }

    # What the ids are is asked while the journal opens (on a WAN path the request, with its
    # connection's handshake, is a round trip or two); a resumed transfer planned already
    # does not wait for the answer.
    looked_up: list[list[RemoteData] | Exception] = []
    answered = anyio.Event()
    prefetched: dict[str, Prefetched] = {}

    async def look_up() -> None:
        from ._download import warm_described  # here: an upload does not load the download modules

        try:
            by_id = force or not await _downloaded_before(runner, ids)
            looked_up.append(
                await named_data(
                    runner.client,
                    ids,
                    filename,
                    pattern,
                    owned,
                    prefetched if by_id else None,
                    runner.config.download_chunk_size,
                    # The smallest segment a plan makes: the first stream's range covers at least that.
                    runner.config.min_segment_size,
                    # Its streams' connections open while the answer and the plan go on.
                    partial(warm_described, runner.client, runner.config),
                )
            )
        except Exception as exc:  # raised where it is needed: in plan, inside the run
            looked_up.append(exc)
        answered.set()

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        if resumed and record.state.get("planned"):
            return
        await answered.wait()
        if isinstance(looked_up[0], Exception):
            raise looked_up[0]
        items = looked_up[0]
        try:
            await anyio.to_thread.run_sync(partial(os.makedirs, out, exist_ok=True))
        except OSError as exc:
            raise UsageError(f"cannot create output folder {out}: {exc.strerror}") from None
        skipped, count, total = await anyio.to_thread.run_sync(
            partial(plan_downloads, ctx.journal, record.id, ctx.server, ctx.username, items, out, force=force)
        )
        await anyio.to_thread.run_sync(partial(ctx.journal.update_transfer_state, record.id, planned=True))
        runner.emit(FilesPlanned(count, total))
        hint = bulk_hint(items)
        if hint:
            runner.emit(Notice(hint))
        for row in skipped:
            runner.emit(FileFinished(row.local_path, row.remote_name, "skipped", row.size, row.data_id, None))

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        return await download_one(ctx, record, prefetched.pop(record.data_id or "", None))

    try:
        async with task_group() as group:
            group.start_soon(look_up)
            report = await runner.run("download", params, plan, work, transfer_id=transfer_id)
            group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for left in prefetched.values():  # a file no worker took: its held answer goes
                await left.aclose()
    return report
