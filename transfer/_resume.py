"""``resume``: which journaled transfers to continue, and each one re-run as it was started.

A transfer's journal row holds its kind and the parameters it was started
with; running the same kind again with those parameters and its id picks up
where it stopped (every kind's planner knows a resumed run). This is the one
place that knows every kind of transfer, so it sits above the modules that
run them, and the facade (:class:`~._api.Flowxfer`) only delegates here.
"""

from __future__ import annotations

import anyio

from flowxfer.journal import TransferRecord

from ._bulk import run_bulk
from ._errors import UsageError, require_transfer_id
from ._executions import DEFAULT_POLL_INTERVAL, run_execution_download
from ._files import run_download, run_upload
from ._multiplexed import upload_multiplexed
from ._pathmap import SYNC_NEEDS_ONE_PATH
from ._report import TransferReport
from ._runner import Runner
from ._samples import upload_samples
from ._sync import run_sync
from ._syncplan import SyncOptions

__all__ = ["resume_all", "resume_plan", "resume_record"]


async def resume_all(runner: Runner, transfer_id: str | None = None) -> list[TransferReport]:
    """See :meth:`Flowxfer.resume`."""
    reports = []
    for record in await resume_plan(runner, transfer_id):
        if runner.stopping:
            break
        reports.append(await resume_record(runner, record))
    return reports


async def resume_plan(runner: Runner, transfer_id: str | None = None) -> list[TransferRecord]:
    """See :meth:`Flowxfer.resume_plan`."""
    journal = await runner.journal()
    if transfer_id is None:
        return [r for r in await anyio.to_thread.run_sync(journal.unfinished_transfers) if r.server == runner.base_url]
    matches = await anyio.to_thread.run_sync(journal.find_transfers, require_transfer_id(transfer_id))
    if not matches:
        raise UsageError(f"no transfer {transfer_id!r} in the journal {journal.location}")
    if len(matches) > 1:
        raise UsageError(f"{transfer_id!r} is ambiguous: {', '.join(m.id for m in matches)}")
    if matches[0].server != runner.base_url:
        raise UsageError(
            f"transfer {matches[0].id} belongs to {matches[0].server}; pass --base-url {matches[0].server}"
        )
    return matches


async def resume_record(runner: Runner, record: TransferRecord) -> TransferReport:
    """See :meth:`Flowxfer.resume_record`."""
    params, state, tid = record.params, record.state, record.id
    if record.kind == "upload":
        return await run_upload(
            runner,
            [runner.paths.to_local(p) for p in params["paths"]],
            data_type=params.get("data_type"),
            force=bool(state.get("force")),
            transfer_id=tid,
        )
    if record.kind == "download":
        return await run_download(
            runner,
            params.get("ids", []),
            filename=params.get("filename"),
            pattern=params.get("pattern"),
            owned=bool(params.get("owned")),
            output_dir=params["output_dir"],
            transfer_id=tid,
        )
    if record.kind == "bulk":
        return await run_bulk(
            runner,
            params["ids"],
            name=params.get("name"),
            output_dir=params["output_dir"],
            extract=bool(params.get("extract")),
            transfer_id=tid,
        )
    if record.kind == "results":
        return await run_execution_download(
            runner,
            params["executions"],
            output_dir=params["output_dir"],
            layout=params["layout"],
            partial_results=bool(params.get("partial")),
            wait=bool(state.get("wait")),
            poll_interval=float(state.get("poll_interval") or DEFAULT_POLL_INTERVAL),
            transfer_id=tid,
        )
    if record.kind == "samples":
        return await upload_samples(
            runner,
            sheet=params.get("sheet"),
            sample=params.get("sample"),
            run=params.get("run"),
            sample_type=params["sample_type"],
            skip_invalid=bool(params.get("skip_invalid")),
            stop_on_error=bool(params.get("stop_on_error")),
            transfer_id=tid,
        )
    if record.kind == "multiplexed":
        return await upload_multiplexed(
            runner,
            params["reads1"],
            params.get("reads2"),
            params["annotation"],
            reject_warnings=bool(params.get("reject_warnings")),
            transfer_id=tid,
        )
    if record.kind == "sync":
        if runner.paths.to_local(params["root"]) != params["root"]:
            moved = f"transfer {record.id} syncs {params['root']}, which --path-map moves"
            raise UsageError(f"{moved}; {SYNC_NEEDS_ONE_PATH}")
        return await run_sync(runner, params["root"], SyncOptions.from_params(params), transfer_id=tid)
    raise UsageError(f"transfer {record.id} is a {record.kind!r} transfer, which this version cannot resume")
