"""An execution's outputs as one server-built archive (``bulk --execution``, ``download --execution --auto-bulk``).

Hosted Flow's published docs do not describe an archive per execution
(``endpoints/downloads.md`` leaves ``POST /downloads/...`` out of scope), so
this is built on the documented ``POST /downloads`` with the outputs' data
ids, and works against hosted Flow and the local server alike:

1. the ``results`` transfer (:func:`~._executions.run_execution_download`)
   waits, lists the outputs, lays them out and skips those already there,
   identical; it downloads itself only what is not to be archived (the large
   files under ``auto``) and journals the rest with their target paths;
2. a ``bulk`` transfer (:func:`~._bulk.run_bulk` with ``placements``) fetches
   those as one archive, extracts it into a staging folder and moves each
   member to the path ``download --execution`` would have given it, so the
   layout (by process or flat, same-named outputs kept apart) is the same
   whichever way the bytes came;
3. a member the archive did not hold under the name Flow's archives use is
   downloaded singly by the same ``results`` transfer run again (which now
   finds the placed files identical and skips them).

Each step is its own journaled transfer, so the same call after a crash
resumes the step it was in (the bulk step re-attaches to its job).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._bulk import run_bulk
from ._executions import DEFAULT_POLL_INTERVAL, run_execution_download
from ._plan import RemoteData
from ._report import TransferReport
from ._runner import Runner
from .events import Notice

__all__ = ["run_results_bulk"]

#: The archive's default name (hosted Flow builds tar.gz whatever the name says).
DEFAULT_RESULTS_ARCHIVE = "flow-results.zip"


async def run_results_bulk(
    runner: Runner,
    execution_ids: Sequence[str],
    *,
    mode: str,
    output_dir: Path | str = ".",
    layout: str = "process",
    wait: bool = False,
    partial_results: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_wait: float | None = None,
    force: bool = False,
    name: str | None = None,
    job_poll_interval: float = 1.0,
    job_timeout: float | None = None,
) -> list[TransferReport]:
    """See :meth:`Flowxfer.bulk_executions`. One report per transfer run (one to three)."""
    common: dict[str, Any] = {
        "output_dir": output_dir,
        "layout": layout,
        "wait": wait,
        "partial_results": partial_results,
        "poll_interval": poll_interval,
        "max_wait": max_wait,
        "force": force,
    }
    first = await run_execution_download(runner, execution_ids, archive=mode, **common)
    reports = [first]
    archived: list[list[Any]] = first.extra.get("archived") or []
    if first.status != "completed" or not archived or runner.stopping:
        return reports
    runner.emit(Notice(f"{len(archived)} output(s) to fetch as one archive"))
    known = [RemoteData(str(i), str(f), int(s), c) for i, f, s, c, _ in archived]
    archive = await run_bulk(
        runner,
        [item.id for item in known],
        name=name or DEFAULT_RESULTS_ARCHIVE,
        output_dir=output_dir,
        known=known,
        placements=[(str(f), str(t)) for _, f, _, _, t in archived],
        poll_interval=job_poll_interval,
        job_timeout=job_timeout,
    )
    reports.append(archive)
    unplaced = archive.extra.get("unplaced") or []
    if archive.status == "completed" and unplaced and not runner.stopping:
        runner.emit(
            Notice(
                f"{len(unplaced)} output(s) were not in the archive under the names expected; "
                "downloading them one by one"
            )
        )
        # Not forced: what the archive placed is in the inventory and skipped; only the missing come.
        reports.append(await run_execution_download(runner, execution_ids, **{**common, "force": False}))
    return reports
