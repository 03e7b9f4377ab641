"""Synchronous wrappers for scripts that do not run an event loop.

Each call starts an event loop, opens a :class:`Flowxfer`, does one thing and
closes it again. Use the async API directly to do several things at once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio

from ._api import Flowxfer
from ._report import TransferReport


async def _call(method: str, client_options: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    async with Flowxfer(**client_options) as fx:
        return await getattr(fx, method)(*args, **kwargs)


def login(username: str, password: str, **client_options: Any) -> str:
    """Log in and save the tokens; ``client_options`` are :class:`Flowxfer`'s (``base_url=``...)."""
    result: str = anyio.run(partial(_call, "login", client_options, username, password))
    return result


def upload(
    paths: Sequence[str | os.PathLike[str]], *, data_type: str | None = None, force: bool = False, **client_options: Any
) -> TransferReport:
    """Upload files and folders; see :meth:`Flowxfer.upload`."""
    result: TransferReport = anyio.run(
        partial(_call, "upload", client_options, paths, data_type=data_type, force=force)
    )
    return result


def download(
    ids: Sequence[str] = (),
    *,
    output_dir: str | os.PathLike[str] = ".",
    filename: str | None = None,
    pattern: str | None = None,
    owned: bool = False,
    force: bool = False,
    **client_options: Any,
) -> TransferReport:
    """Download data by id or search; see :meth:`Flowxfer.download`."""
    result: TransferReport = anyio.run(
        partial(
            _call,
            "download",
            client_options,
            ids,
            output_dir=output_dir,
            filename=filename,
            pattern=pattern,
            owned=owned,
            force=force,
        )
    )
    return result


def resume(transfer_id: str | None = None, **client_options: Any) -> list[TransferReport]:
    """Continue unfinished transfers; see :meth:`Flowxfer.resume`."""
    result: list[TransferReport] = anyio.run(partial(_call, "resume", client_options, transfer_id))
    return result


def sync(root: str | os.PathLike[str], options: Any = None, **client_options: Any) -> TransferReport:
    """Sync a run folder; see :meth:`Flowxfer.sync` (``options``: a :class:`~flowxfer.transfer.SyncOptions`)."""
    result: TransferReport = anyio.run(partial(_call, "sync", client_options, root, options))
    return result


def bulk(
    ids: Sequence[str],
    *,
    output_dir: str | os.PathLike[str] = ".",
    name: str | None = None,
    extract: bool = False,
    keep_archive: bool = False,
    **client_options: Any,
) -> TransferReport:
    """Fetch data as one archive; see :meth:`Flowxfer.bulk`."""
    result: TransferReport = anyio.run(
        partial(
            _call,
            "bulk",
            client_options,
            ids,
            output_dir=output_dir,
            name=name,
            extract=extract,
            keep_archive=keep_archive,
        )
    )
    return result


def download_executions(
    execution_ids: Sequence[str],
    *,
    output_dir: str | os.PathLike[str] = ".",
    layout: str = "process",
    wait: bool = False,
    partial: bool = False,
    poll_interval: float = 60.0,
    max_wait: float | None = None,
    force: bool = False,
    **client_options: Any,
) -> TransferReport:
    """Download every output of pipeline executions, waiting for them if asked; see
    :meth:`Flowxfer.download_executions`."""
    result: TransferReport = anyio.run(
        functools.partial(
            _call,
            "download_executions",
            client_options,
            execution_ids,
            output_dir=output_dir,
            layout=layout,
            wait=wait,
            partial=partial,
            poll_interval=poll_interval,
            max_wait=max_wait,
            force=force,
        )
    )
    return result


def bulk_executions(
    execution_ids: Sequence[str],
    *,
    auto: bool = False,
    output_dir: str | os.PathLike[str] = ".",
    layout: str = "process",
    partial: bool = False,
    **options: Any,
) -> list[TransferReport]:
    """Every output of pipeline executions as one archive, laid out as :func:`download_executions` lays them
    out; see :meth:`Flowxfer.bulk_executions` (``options``: its other arguments, then the client's)."""
    named = {
        k: options.pop(k)
        for k in ("wait", "poll_interval", "max_wait", "force", "name", "job_poll_interval", "job_timeout")
        if k in options
    }
    result: list[TransferReport] = anyio.run(
        functools.partial(
            _call,
            "bulk_executions",
            options,
            execution_ids,
            auto=auto,
            output_dir=output_dir,
            layout=layout,
            partial=partial,
            **named,
        )
    )
    return result


def upload_samples(
    sheet: str | os.PathLike[str] | None = None,
    *,
    sample_type: str,
    sample: dict[str, Any] | None = None,
    skip_invalid: bool = False,
    stop_on_error: bool = False,
    **client_options: Any,
) -> TransferReport:
    """Make Flow samples from a sample sheet (or one sample); see :meth:`Flowxfer.upload_samples`."""
    result: TransferReport = anyio.run(
        partial(
            _call,
            "upload_samples",
            client_options,
            sheet,
            sample_type=sample_type,
            sample=sample,
            skip_invalid=skip_invalid,
            stop_on_error=stop_on_error,
        )
    )
    return result


def upload_multiplexed(
    reads1: str | os.PathLike[str],
    reads2: str | os.PathLike[str] | None = None,
    *,
    annotation: str | os.PathLike[str],
    reject_warnings: bool = False,
    **client_options: Any,
) -> TransferReport:
    """Multiplexed reads and their annotation sheet; see :meth:`Flowxfer.upload_multiplexed`."""
    result: TransferReport = anyio.run(
        partial(
            _call,
            "upload_multiplexed",
            client_options,
            reads1,
            reads2,
            annotation=annotation,
            reject_warnings=reject_warnings,
        )
    )
    return result


def sync_samples(
    root: str | os.PathLike[str], samples: Any, options: Any = None, **client_options: Any
) -> list[TransferReport]:
    """``sync --samples``; see :meth:`Flowxfer.sync_samples` (``samples``: a :class:`~flowxfer.transfer.SampleSync`)."""
    result: list[TransferReport] = anyio.run(partial(_call, "sync_samples", client_options, root, samples, options))
    return result
