"""Results down: every output of pipeline executions, fetched once they finish (``download --execution``).

An execution is read from ``GET /executions/<id>`` (hosted Flow's agent docs,
``endpoints/executions.md``). Waiting polls it trimmed to
``include=status&include=identifier&include=finished`` every
``poll_interval`` seconds (hosted asks for 60 s or more), one request of the
``api`` budget each; never the download budget. Each poll's answer is
journaled at once (the transfer's state, ``executions``), so a run killed
while waiting, started again, polls next when the interval after the last
poll is over, and one killed while downloading does not poll at all: its
outputs are file rows of the same transfer.

Once every execution is terminal its outputs are listed
(:func:`execution_outputs`, reusable: ``--sample`` takes the same listing)
and laid out (:func:`output_targets`): by process, ``DIR/<process>/<file>``,
or flat, ``DIR/<file>``; the same filename from two processes never lands on
one path (flat: ``name (data id).ext``, as Flow's archives do). Downloads
then run as ``download`` does (verified, identical files skipped).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import anyio

from flowxfer.journal import TransferRecord

from ._advice import BULK_MIN_FILES, BULK_SMALL_FILE
from ._client import FlowClient
from ._config import DEFAULT_POLL_INTERVAL
from ._errors import FlowxferError, NotFoundError, ProtocolError, StopRequested, UsageError
from ._names import safe_local_name
from ._plan import RemoteData, already_there, plan_downloads, target_names
from ._remote import describe
from ._report import TransferReport
from ._runner import TAKEN_OVER, Runner
from ._runtime import TransferContext
from ._workers import download_one
from .events import ExecutionWaiting, FileFinished, FilesPlanned, Notice

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "LAYOUTS",
    "TERMINAL",
    "ExecutionFailed",
    "ExecutionOutput",
    "ExecutionUnfinished",
    "archive_wanted",
    "execution_outputs",
    "output_targets",
    "poll_execution",
    "run_execution_download",
]

#: The statuses after which an execution never changes (hosted Flow's).
TERMINAL = ("OK", "ERROR", "CANCELED")
#: How outputs are laid out under the output folder.
LAYOUTS = ("process", "flat")
#: The fields a poll asks for (``include=``): the payload is otherwise large.
POLL_FIELDS = ("status", "identifier", "finished")
#: Which outputs ``archive=`` takes as one server-built archive (see :func:`archive_wanted`).
ARCHIVE_MODES = ("all", "auto")
#: The fields the listing of outputs asks for.
OUTPUT_FIELDS = ("identifier", "status", "downstream_data", "process_executions")


class ExecutionFailed(FlowxferError):
    """An execution ended ``ERROR`` or ``CANCELED``: nothing was downloaded (unless ``--partial``)."""

    kind: ClassVar[str] = "execution"


class ExecutionUnfinished(FlowxferError):
    """An execution is still running and the caller did not ask to wait: try again later."""

    kind: ClassVar[str] = "busy"


@dataclass(frozen=True)
class ExecutionOutput:
    """One file an execution's process produced."""

    execution_id: str
    identifier: str
    process: str
    data: RemoteData


def _path(execution_id: str, fields: Sequence[str]) -> str:
    """The detail's path trimmed to ``fields`` (``include=`` repeats, so it is spelled into the path)."""
    return f"/executions/{quote(execution_id, safe='')}?{urlencode([('include', f) for f in fields])}"


async def _get(client: FlowClient, execution_id: str, fields: Sequence[str]) -> dict[str, Any]:
    """``GET /executions/<id>`` trimmed to ``fields`` (an ``api`` request).

    :raises NotFoundError: unknown, or not visible to this user (Flow does not tell them apart).
    """
    try:
        return await client.json_request("GET", _path(execution_id, fields), rate_class="api")
    except NotFoundError as exc:
        raise NotFoundError(
            f"no execution {execution_id} that you may see (unknown, or not shared with you)", exc.status, exc.body
        ) from None


async def poll_execution(client: FlowClient, execution_id: str) -> dict[str, Any]:
    """One trimmed poll: ``{"status", "identifier"}`` (an ``api`` request).

    :raises NotFoundError: unknown, or not visible to this user.
    """
    answer = await _get(client, execution_id, POLL_FIELDS)
    status = answer.get("status")
    if not isinstance(status, str):
        raise ProtocolError(f"execution {execution_id}: the answer carries no status")
    return {"status": status, "identifier": str(answer.get("identifier") or execution_id)}


def _listed(execution_id: str, answer: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(process name, data item) from ``downstream_data``, else from ``process_executions[].downstream_data``."""
    found: list[tuple[str, dict[str, Any]]] = []
    flat = answer.get("downstream_data")
    if isinstance(flat, list):
        for item in flat:
            if isinstance(item, dict):
                found.append((str(item.get("process_execution_name") or ""), item))
        return found
    steps = answer.get("process_executions")
    if not isinstance(steps, list) or (
        steps and not any(isinstance(step, dict) and "downstream_data" in step for step in steps)
    ):
        # Silence here would read as "no outputs": a shape we do not know is said so.
        raise ProtocolError(
            f"execution {execution_id}: the server's answer lists no outputs "
            "(neither downstream_data nor process_executions[].downstream_data)"
        )
    for step in steps:
        if isinstance(step, dict) and isinstance(step.get("downstream_data"), list):
            name = str(step.get("process_name") or step.get("name") or "")
            found += [(name, item) for item in step["downstream_data"] if isinstance(item, dict)]
    return found


async def execution_outputs(client: FlowClient, execution_id: str) -> tuple[str, str, list[ExecutionOutput]]:
    """An execution's identifier, status and every output, described (sizes, checksums).

    One request for the listing (``api``), then ``GET /data/<id>`` for each
    output, as ``download ID`` does, for the checksum each download is
    verified against.
    """
    answer = await _get(client, execution_id, OUTPUT_FIELDS)
    identifier = str(answer.get("identifier") or execution_id)
    listed = _listed(execution_id, answer)
    ids = list(dict.fromkeys(str(item.get("id")) for _, item in listed if item.get("id") is not None))
    described = {item.id: item for item in await describe(client, ids)} if ids else {}
    outputs = []
    seen: set[str] = set()
    for process, item in listed:
        data_id = str(item.get("id"))
        if data_id in described and data_id not in seen:
            seen.add(data_id)
            outputs.append(ExecutionOutput(execution_id, identifier, process or "output", described[data_id]))
    return identifier, str(answer.get("status") or ""), outputs


def _unique_folders(names: Sequence[str]) -> dict[str, str]:
    """A safe folder name for each distinct name; two that sanitise alike get ``name (2)``..."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for name in dict.fromkeys(names):
        folder = safe_local_name(name)
        candidate, number = folder, 1
        while candidate.lower() in taken:
            number += 1
            candidate = safe_local_name(f"{folder} ({number})")
        taken.add(candidate.lower())
        folders[name] = candidate
    return folders


def output_targets(outputs: Sequence[ExecutionOutput], output_dir: Path, layout: str) -> list[Path]:
    """Where each output goes (pure); no two outputs share a path, whatever their names.

    ``process``: ``DIR/<process>/<filename>``; ``flat``: ``DIR/<filename>``,
    a name taken twice becoming ``name (data id).ext``. With several
    executions each gets its own folder first, named by its identifier.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    executions = list(dict.fromkeys(o.execution_id for o in outputs))
    by_identifier = {o.execution_id: o.identifier for o in outputs}
    run_folders = _unique_folders([by_identifier[e] for e in executions]) if len(executions) > 1 else {}
    groups: dict[tuple[str, str], list[int]] = {}
    process_folders: dict[str, dict[str, str]] = {}
    for execution in executions:
        process_folders[execution] = _unique_folders([o.process for o in outputs if o.execution_id == execution])
    for index, output in enumerate(outputs):
        process = process_folders[output.execution_id][output.process] if layout == "process" else ""
        groups.setdefault((output.execution_id, process), []).append(index)
    targets: list[Path] = [output_dir] * len(outputs)
    for (execution, process), indexes in groups.items():
        folder = output_dir
        if run_folders:
            folder = folder / run_folders[by_identifier[execution]]
        if process:
            folder = folder / process
        for index, name in zip(indexes, target_names([outputs[i].data for i in indexes]), strict=True):
            targets[index] = folder / name
    return targets


@dataclass
class _Waiter:
    """Polls the executions of one transfer until they are terminal, journaling every answer."""

    runner: Runner
    ctx: TransferContext
    transfer_id: str
    wait: bool
    poll_interval: float
    max_wait: float | None
    known: dict[str, dict[str, Any]]

    async def _sleep(self, seconds: float, started: float) -> None:
        """Wait ``seconds`` in slices, renewing the transfer's lease (its workers' heartbeat has not started)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await self.runner.pause(min(left, self.ctx.config.heartbeat_period))
            if not await anyio.to_thread.run_sync(self.ctx.journal.heartbeat_held, f"transfer:{self.transfer_id}"):
                # Another host took the download over while this one waited (frozen past the TTL).
                self.runner.lose_lease(TAKEN_OVER)

    async def terminal(self, execution_id: str, started: float) -> dict[str, Any]:
        """The execution's last journaled or polled state: terminal, or (no ``wait``) as it is now."""
        entry = self.known.get(execution_id)
        while True:
            if entry is not None and (entry["status"] in TERMINAL or not self.wait and entry.get("fresh")):
                return entry
            if entry is not None and self.wait:
                # A poll journaled by an earlier run (or this one): the next is due an interval after it.
                due = entry["polled"] + self.poll_interval - time.time()
                if self.max_wait is not None and time.monotonic() - started + max(due, 0) > self.max_wait:
                    raise _WaitedTooLong(execution_id, entry)
                if due > 0:
                    if not entry.get("fresh"):  # journaled by an earlier run: say why we wait before polling
                        self.runner.emit(
                            ExecutionWaiting(
                                execution_id, entry["identifier"], entry["status"], time.monotonic() - started, due
                            )
                        )
                    await self._sleep(due, started)
            answer = await poll_execution(self.runner.client, execution_id)
            entry = {**answer, "polled": time.time()}
            self.known[execution_id] = entry
            await anyio.to_thread.run_sync(
                partial(self.ctx.journal.update_transfer_state, self.transfer_id, executions=dict(self.known))
            )
            entry = {**entry, "fresh": True}
            terminal = entry["status"] in TERMINAL
            self.runner.emit(
                ExecutionWaiting(
                    execution_id,
                    entry["identifier"],
                    entry["status"],
                    time.monotonic() - started,
                    None if terminal or not self.wait else self.poll_interval,
                )
            )


class _WaitedTooLong(Exception):
    def __init__(self, execution_id: str, entry: dict[str, Any]) -> None:
        super().__init__(execution_id)
        self.execution_id = execution_id
        self.entry = entry


def _statuses(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """What the report says of each execution: ``{id: {identifier, status}}``."""
    return {k: {"identifier": v["identifier"], "status": v["status"]} for k, v in entries.items()}


def _describe_status(execution_id: str, entry: dict[str, Any]) -> str:
    status = entry["status"]
    shown = status if status in TERMINAL else f"still running (status {status!r})"
    return f"execution {execution_id} ({entry['identifier']}) is {shown}"


async def run_execution_download(
    runner: Runner,
    execution_ids: Sequence[str],
    *,
    output_dir: Path | str = ".",
    layout: str = "process",
    wait: bool = False,
    partial_results: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_wait: float | None = None,
    force: bool = False,
    archive: str | None = None,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.download_executions`.

    :param archive: ``"all"`` or ``"auto"``: the outputs to fetch as one archive
        (every one not already there, or the small ones when :func:`archive_wanted`
        says so) are not downloaded here but journaled and returned in
        ``extra["archived"]`` (``[id, filename, size, checksum, target]``), for
        :func:`~._results_bulk.run_results_bulk` to fetch.
    """
    ids = list(dict.fromkeys(str(i).strip() for i in execution_ids if str(i).strip()))
    if not ids:
        raise UsageError("name at least one execution id")
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if poll_interval <= 0:
        raise UsageError("the poll interval must be more than 0 seconds")
    if archive not in (None, *ARCHIVE_MODES):
        raise UsageError(f"unknown archive mode {archive!r}: use one of {', '.join(ARCHIVE_MODES)}")
    out = await anyio.to_thread.run_sync(lambda: Path(output_dir).expanduser().resolve())
    params: dict[str, Any] = {"executions": ids, "layout": layout, "output_dir": str(out), "partial": partial_results}
    if archive is not None:
        params["archive"] = archive
    outcome: dict[str, dict[str, str]] = {}
    archived: list[list[Any]] = []

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        state = record.state
        known = {k: dict(v) for k, v in (state.get("executions") or {}).items()} if resumed else {}
        if resumed and state.get("planned"):
            outcome.update(_statuses(known))
            archived[:] = state.get("archived") or []
            return
        waiter = _Waiter(runner, ctx, record.id, wait, poll_interval, max_wait, known)
        started = time.monotonic()
        entries = {}
        for execution_id in ids:
            try:
                entries[execution_id] = await waiter.terminal(execution_id, started)
            except _WaitedTooLong as exc:
                outcome.update(_statuses(waiter.known))
                runner.emit(
                    Notice(
                        f"{_describe_status(exc.execution_id, exc.entry)} after --max-wait "
                        f"{max_wait:g} s; run the same command again to keep waiting"
                    )
                )
                runner.stop("max-wait")
                raise StopRequested() from None
        outcome.update(_statuses(entries))
        failed = [k for k, v in entries.items() if v["status"] in ("ERROR", "CANCELED")]
        running = [k for k, v in entries.items() if v["status"] not in TERMINAL]
        if failed and not partial_results:
            raise ExecutionFailed(
                "; ".join(f"execution {k} ({entries[k]['identifier']}) ended {entries[k]['status']}" for k in failed)
                + ": nothing downloaded (--partial takes the outputs it has)"
            )
        if running and not partial_results:
            raise ExecutionUnfinished(
                "; ".join(_describe_status(k, entries[k]) for k in running)
                + ": not finished; --wait waits for it, --partial takes what it has so far"
            )
        outputs: list[ExecutionOutput] = []
        for execution_id in ids:
            outputs += (await execution_outputs(runner.client, execution_id))[2]
        targets = output_targets(outputs, out, layout)
        archived[:] = await _plan_outputs(runner, ctx, record, [o.data for o in outputs], targets, force, archive)

    report = await runner.run(
        "results",
        params,
        plan,
        download_one,
        transfer_id=transfer_id,
        extra_state={"wait": wait, "poll_interval": poll_interval},
    )
    if report.stop_reason == "max-wait":
        runner.clear_stop()  # the wait's own end: the client may go on (another call, resume)
    report.extra["executions"] = outcome
    if archive is not None:
        report.extra["archived"] = archived
    return report


def archive_wanted(items: Sequence[RemoteData], mode: str | None) -> list[bool]:
    """Which of the outputs still to fetch go into one archive (pure).

    ``all``: every one (``bulk --execution``). ``auto`` (``download --execution
    --auto-bulk``): the small ones, when there are more than ``download``'s
    threshold of them (as :func:`~._advice.bulk_hint` counts). None: none.
    """
    if mode == "all":
        return [True] * len(items)
    small = [item.size < BULK_SMALL_FILE for item in items]
    return small if mode == "auto" and sum(small) > BULK_MIN_FILES else [False] * len(items)


async def _plan_outputs(
    runner: Runner,
    ctx: TransferContext,
    record: TransferRecord,
    items: list[RemoteData],
    targets: list[Path],
    force: bool,
    archive: str | None,
) -> list[list[Any]]:
    """Journal the downloads at their targets (folders made first); identical files already there are skipped.

    :returns: the outputs left to the archive (see :func:`run_execution_download`), journaled with the plan.
    """

    def make_folders() -> None:
        for folder in dict.fromkeys(t.parent for t in targets):
            os.makedirs(folder, exist_ok=True)

    try:
        await anyio.to_thread.run_sync(make_folders)
    except OSError as exc:
        raise UsageError(f"cannot create an output folder: {exc}") from None
    paths = [str(t) for t in targets]
    identical = await anyio.to_thread.run_sync(
        partial(already_there, ctx.journal, ctx.server, ctx.username, items, paths, force=force)
    )
    pending = [i for i, same in enumerate(identical) if not same]
    chosen = {pending[n] for n, wanted in enumerate(archive_wanted([items[i] for i in pending], archive)) if wanted}
    archived = [[items[i].id, items[i].filename, items[i].size, items[i].checksum, paths[i]] for i in sorted(chosen)]
    keep = [i for i in range(len(items)) if i not in chosen]
    skipped, count, total = await anyio.to_thread.run_sync(
        partial(
            plan_downloads,
            ctx.journal,
            record.id,
            ctx.server,
            ctx.username,
            [items[i] for i in keep],
            targets[0].parent if targets else Path("."),
            force=force,
            targets=[paths[i] for i in keep],
            identical=[identical[i] for i in keep],
        )
    )
    await anyio.to_thread.run_sync(
        partial(ctx.journal.update_transfer_state, record.id, planned=True, archived=archived)
    )
    runner.emit(FilesPlanned(count, total))
    for row in skipped:
        runner.emit(FileFinished(row.local_path, row.remote_name, "skipped", row.size, row.data_id, None))
    return archived
