"""The samples to send: a sheet's rows, one sample's, or a run folder's, checked before any byte moves.

``samples upload-batch`` reads a flowbio sample sheet, ``samples upload``
names one sample, and ``sync --samples`` reads a run folder's sample sheet
and FASTQs; each becomes the same :class:`~._sheets.SheetRow` list, with the
journal parameters that name it again on ``resume``. Every row is then
checked against the server's catalog and the disk
(:func:`~._validate.plan_samples`): every problem at once, nothing sent.
Sending them is :mod:`._samples`'.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from ._errors import UsageError
from ._illumina import Lanes, RunScan, scan_run, sheet_rows
from ._runner import Runner
from ._samples_remote import fetch_catalog
from ._sheets import Problem, ReadsCell, SheetRow, parse_sheet, split_metadata
from ._validate import SamplePlan, look_at_disk, paths_to_look_at, plan_known_samples, plan_samples

__all__ = ["check_samples", "check_sheet", "one_sample_row", "run_input", "sheet_input"]


async def check_samples(
    runner: Runner,
    rows: Sequence[SheetRow],
    sample_type: str,
    *,
    sheet_problems: Sequence[Problem] = (),
    trust_journal: bool = False,
) -> SamplePlan:
    """Every row against the server's catalog and the disk (metadata requests only, nothing sent).

    :param trust_journal: when the journal's sample inventory says every row's sample was
        made as the row stands (:func:`plan_known_samples`), skip the catalog: ``sync
        --samples`` from cron re-visits done runs, on every host of a fleet.
    """
    client = runner.require_login()
    disk = await anyio.to_thread.run_sync(look_at_disk, paths_to_look_at(rows))
    if trust_journal and not sheet_problems:
        journal = await runner.journal()
        known = await anyio.to_thread.run_sync(
            journal.lookup_samples, runner.base_url, client.username, [row.name for row in rows]
        )
        made = {name: (record.fields, len(record.data_ids)) for name, record in known.items()}
        plan = plan_known_samples(rows, sample_type, made, disk)
        if plan is not None:
            return plan
    catalog = await fetch_catalog(client)
    return plan_samples(rows, sample_type, catalog, disk, sheet_problems=sheet_problems)


def one_sample_row(
    name: str,
    reads1: str | os.PathLike[str],
    reads2: str | os.PathLike[str] | None = None,
    *,
    project: str | None = None,
    organism: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SheetRow:
    """``samples upload``'s one sample as a sheet row (``<id>__annotation`` keys are annotations)."""
    plain, annotations = split_metadata(metadata or {})
    cwd = Path.cwd()
    return SheetRow(
        1,
        name,
        ReadsCell.parse(os.fspath(reads1), cwd),
        ReadsCell.parse(os.fspath(reads2), cwd) if reads2 else None,
        project or None,
        organism or None,
        plain,
        annotations,
    )


def run_input(run: Mapping[str, Any]) -> tuple[RunScan, list[SheetRow], dict[str, Any]]:
    """A run folder's samples as rows (``sync --samples``), from ``root`` and the run options (blocking).

    :raises SheetError: the run's sample sheet, or its FASTQs, have problems (all of them).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(run["root"])))
    lanes: Lanes = "separate" if run.get("lanes") == "separate" else "merge"
    scan = scan_run(root, sample_sheet=run.get("sample_sheet"), lanes=lanes)
    scan.check()
    metadata = dict(run.get("metadata") or {})
    rows = sheet_rows(scan, project=run.get("project"), organism=run.get("organism"), metadata=metadata)
    params = {
        "run": {
            "root": root,
            "sample_sheet": run.get("sample_sheet"),
            "lanes": lanes,
            "project": run.get("project"),
            "organism": run.get("organism"),
            "metadata": metadata,
        }
    }
    return scan, rows, params


def sheet_input(
    sheet: str | os.PathLike[str] | None, sample: Mapping[str, Any] | None, run: Mapping[str, Any] | None = None
) -> tuple[list[SheetRow], tuple[Problem, ...], dict[str, Any]]:
    """The rows to send and the journal parameters that name them: a sheet's, one sample's or a run's (blocking).

    :raises SheetError: the sheet cannot be read (not CSV, not UTF-8, ...).
    """
    if run is not None and sheet is None and sample is None:
        _, rows, params = run_input(run)
        return rows, (), params
    if (sheet is None) == (sample is None):
        raise UsageError("name a sample sheet or one sample")
    if sheet is not None:
        path = Path(sheet).expanduser().absolute()
        parsed = parse_sheet(path)
        return list(parsed.rows), parsed.problems, {"sheet": str(path)}
    assert sample is not None
    resolved = {
        **sample,
        "reads1": os.path.abspath(sample["reads1"]),
        "reads2": os.path.abspath(sample["reads2"]) if sample.get("reads2") else None,
    }
    row = one_sample_row(
        resolved["name"],
        resolved["reads1"],
        resolved["reads2"],
        project=resolved.get("project"),
        organism=resolved.get("organism"),
        metadata=resolved.get("metadata"),
    )
    return [row], (), {"sample": resolved}


async def check_sheet(
    runner: Runner, sheet: str | os.PathLike[str] | None, sample: Mapping[str, Any] | None, sample_type: str
) -> SamplePlan:
    """A sheet's rows, or one sample, checked (see :meth:`Flowxfer.check_samples`); nothing sent."""
    rows, problems, _ = await anyio.to_thread.run_sync(sheet_input, sheet, sample)
    return await check_samples(runner, rows, sample_type, sheet_problems=problems)
