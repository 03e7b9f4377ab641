"""``sync RUN_DIR --samples``: a finished run's FASTQs become samples, the rest goes up as ``sync`` sends it.

Once the run is ready (its marker, as ``sync`` waits for it), its
``SampleSheet.csv`` and FASTQs are read (:func:`~._illumina.scan_run`) and
every sample checked against the server's catalog before any byte moves.
Then two transfers run, each resumable on its own: the loose ``sync`` of
the run with the samples' FASTQs (and ``Undetermined_*``, unless asked for
as plain data) left out, then the samples (:func:`~._samples.run_samples`),
which a re-run from cron skips once they are made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from flowxfer.journal import JournalError, LeaseHeld

from ._errors import AlreadyRunning
from ._report import TransferReport
from ._runner import Runner
from ._runtime import task_group
from ._samples import run_samples
from ._samples_rows import check_samples, run_input
from ._sync import SyncOptions, _not_ready, _resolve_root, run_sync

__all__ = ["SampleSync", "literal_rule", "sync_samples"]


@dataclass(frozen=True)
class SampleSync:
    """What ``--samples`` adds to a sync: the samples' type, their sheet, project, organism and lanes.

    :ivar undetermined: upload ``Undetermined_*`` FASTQs as plain data (left out otherwise).
    """

    sample_type: str
    sample_sheet: str | None = None
    project: str | None = None
    organism: str | None = None
    lanes: str = "merge"
    undetermined: bool = False
    #: Metadata of every sample (``<id>`` and ``<id>__annotation``), as a sheet's columns would give it.
    metadata: tuple[tuple[str, str], ...] = ()

    def run(self, root: str) -> dict[str, Any]:
        return {
            "root": root,
            "sample_sheet": self.sample_sheet,
            "project": self.project,
            "organism": self.organism,
            "lanes": self.lanes,
            "metadata": dict(self.metadata),
        }


def literal_rule(relative: str) -> str:
    """A sync rule that matches exactly this path (relative to the run, ``/`` separators): anchored, escaped."""
    escaped = "".join(f"\\{char}" if char in "*?[]\\" else char for char in relative)
    return escaped if "/" in escaped else f"/{escaped}"


def _relative(paths: Iterable[Path], root: str) -> list[str]:
    return sorted({Path(os.path.relpath(path, root)).as_posix() for path in paths})


async def sync_samples(
    runner: Runner, root: str | os.PathLike[str], options: SyncOptions, samples: SampleSync
) -> list[TransferReport]:
    """See :meth:`Flowxfer.sync_samples`."""
    path = await anyio.to_thread.run_sync(_resolve_root, root)
    if await anyio.to_thread.run_sync(_not_ready, path, options):
        return [await run_sync(runner, path, options)]  # the "waiting" report; nothing is read yet
    async with visiting(runner, path) as still_ours:
        scan, rows, params = await anyio.to_thread.run_sync(run_input, samples.run(path))
        params.update(sample_type=samples.sample_type, skip_invalid=False, stop_on_error=False)
        plan = await check_samples(runner, rows, samples.sample_type, trust_journal=True)
        plan.check()
        fastqs = [p for sample in scan.samples for p in (*sample.reads1, *sample.reads2)]
        if not samples.undetermined:
            fastqs += scan.undetermined
        rules = options.rules + tuple(("exclude", literal_rule(rel)) for rel in _relative(fastqs, path))
        await still_ours()
        loose = await run_sync(runner, path, dataclasses.replace(options, rules=rules))
        if runner.stopping:
            return [loose]
        await still_ours()
        return [loose, await run_samples(runner, plan, rows, params)]


@asynccontextmanager
async def visiting(runner: Runner, path: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold the run's visit lease (``visit:PATH``) from before the first request to the end of its samples.

    A host that finds another live host visiting the run exits 75 at once,
    before it reads the sample sheet or asks the server anything: with a fleet
    cron-syncing the same run folders, most visits are to runs another host is
    sending. The loose sync and the samples hold leases of their own as well;
    this one spans both, and the catalog check before them.

    Yields ``still_ours()``, to call before each transfer: a host frozen past the TTL (a paused VM)
    whose run another host took over and finished would otherwise wake into a new transfer of
    the run, beside the new holder's.

    :raises AlreadyRunning: another live process holds the run (or, from ``still_ours``, took it over).
    """
    journal = await runner.journal()
    stale_after = runner.config.lease_stale_after
    try:
        lease = await anyio.to_thread.run_sync(
            partial(journal.acquire_lease, f"visit:{path}", what="flowxfer sync --samples", stale_after=stale_after)
        )
    except LeaseHeld as exc:
        raise AlreadyRunning(str(exc)) from None

    async def still_ours() -> None:
        if not await anyio.to_thread.run_sync(journal.heartbeat_held, lease.key):
            raise AlreadyRunning(f"another host has taken over {path}: this host's visit lease went stale")

    async def beat() -> None:
        while True:
            await anyio.sleep(runner.config.heartbeat_period)
            with contextlib.suppress(JournalError):
                if not await anyio.to_thread.run_sync(journal.heartbeat_held, lease.key):
                    runner.lose_lease(f"another host has taken over {path} (this host's visit lease was stale)")
                    return

    runner.spanning.append(lease)
    try:
        async with task_group() as group:
            group.start_soon(beat)
            try:
                yield still_ours
            finally:
                group.cancel_scope.cancel()
    finally:
        runner.spanning.remove(lease)
        with anyio.CancelScope(shield=True), contextlib.suppress(JournalError):
            await anyio.to_thread.run_sync(lease.release)
