"""One by one or as an archive: ``download --dry-run`` and ``download --auto-bulk``.

:func:`~._advice.advise_download` does the arithmetic on data already
described; here the data is looked up (metadata requests only) and, for
``--auto-bulk``, the download is split between a ``bulk`` transfer for the
many small files and a plain ``download`` for the rest. It sits above both
:mod:`._bulk` and :mod:`._files` because it runs either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ._advice import BULK_MIN_FILES, BULK_SMALL_FILE, DownloadAdvice, advise_download
from ._bulk import run_bulk
from ._files import check_named, named_data, run_download
from ._report import TransferReport
from ._runner import Runner
from ._sizes import format_size

__all__ = ["download_advice", "download_auto_bulk"]


async def download_advice(
    runner: Runner,
    ids: Sequence[str] = (),
    *,
    filename: str | None = None,
    pattern: str | None = None,
    owned: bool = False,
) -> DownloadAdvice:
    """See :meth:`Flowxfer.download_advice`."""
    unique = check_named(ids, filename, pattern, owned)
    client = runner.require_login()
    items = await named_data(client, unique, filename, pattern, owned)
    await runner.adopt_budget(await runner.journal())
    return advise_download(items, runner.config, await client.capabilities(), client.limiter)


async def download_auto_bulk(
    runner: Runner,
    ids: Sequence[str] = (),
    *,
    filename: str | None = None,
    pattern: str | None = None,
    owned: bool = False,
    output_dir: Path | str = ".",
    force: bool = False,
    on_part: Callable[[str, str | None], None] | None = None,
) -> list[TransferReport]:
    """See :meth:`Flowxfer.download_auto_bulk`."""
    advice = await download_advice(runner, ids, filename=filename, pattern=pattern, owned=owned)
    announce = on_part or (lambda kind, why: None)
    if not advice.bulk_advised:
        announce("download", None)
        return [
            await run_download(
                runner, [item.id for item in advice.small + advice.large], output_dir=output_dir, force=force
            )
        ]
    announce(
        "bulk",
        f"{len(advice.small)} files under {format_size(BULK_SMALL_FILE)} (more than "
        f"{BULK_MIN_FILES}): fetching them as one archive",
    )
    reports = [
        await run_bulk(
            runner, [item.id for item in advice.small], output_dir=output_dir, extract=True, known=list(advice.small)
        )
    ]
    if advice.large and not runner.stopping:
        announce("download", None)
        reports.append(
            await run_download(runner, [item.id for item in advice.large], output_dir=output_dir, force=force)
        )
    return reports
