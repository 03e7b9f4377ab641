"""The transfer engine: resumable, verified, rate-limit-aware uploads and downloads.

Async use::

    from flowxfer.transfer import Flowxfer

    async with Flowxfer("https://app.flow.bio/api") as fx:
        report = await fx.upload(["run42/fastq"])

Blocking use (scripts)::

    from flowxfer.transfer import blocking

    report = blocking.upload(["run42/fastq"], base_url="https://app.flow.bio/api")

Run folders and archives::

    report = await fx.sync("run42/", SyncOptions(ready_marker="CopyComplete.txt", pack_small=1 << 20))
    report = await fx.bulk(ids, output_dir="results/", extract=True)

Also here, for front ends such as the CLI: the size and duration formats
(``parse_size``, ``format_size``, ...), sync's ``--include``/``--exclude``
rules (:class:`PathFilter`) and ``--share`` grants (:func:`parse_share`),
the ``doctor`` checks, :func:`task_group`, and
:func:`import_aiohttp_without_default_trust` for a console script's start-up.

Progress arrives as event objects (:mod:`flowxfer.transfer.events`) passed
to the ``progress`` callback. Errors are the exceptions below; nothing here
prints or exits.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowxfer.journal import JournalError

    from . import _blocking as blocking
    from . import events
    from ._advice import BULK_MIN_FILES, BULK_SMALL_FILE, DownloadAdvice
    from ._api import Flowxfer
    from ._baseurl import check_base_url
    from ._client import Capabilities
    from ._config import DEFAULT_BASE_URL, TransferConfig
    from ._credentials import (
        CredentialStore,
        NotLoggedIn,
        Tokens,
        default_config_dir,
        read_token_file,
        readable_by_others,
    )
    from ._doctor import Check, run_checks
    from ._errors import (
        AlreadyRunning,
        AuthError,
        BudgetExhausted,
        FlowxferError,
        GoneError,
        IntegrityError,
        Interrupted,
        LocalIOError,
        NotFoundError,
        ProtocolError,
        RejectedError,
        ServerError,
        SourceChangedError,
        UnavailableError,
        UsageError,
        require_transfer_id,
    )
    from ._executions import ExecutionFailed, ExecutionOutput, ExecutionUnfinished
    from ._extract import UnsafeArchiveError
    from ._globs import PathFilter
    from ._illumina import RunScan, scan_run, sheet_rows
    from ._pathmap import SYNC_NEEDS_ONE_PATH
    from ._preconnect import resolve_names as resolve_early_connection
    from ._preconnect import start as start_early_connection
    from ._report import FileReport, TransferReport
    from ._runtime import task_group
    from ._samples import sample_reports
    from ._samples_remote import owned_projects
    from ._sheets import ANNOTATION_SUFFIX, RESERVED_COLUMNS, Problem, SheetError, format_sheet
    from ._sizes import format_duration, format_rate, format_size, parse_duration, parse_size
    from ._sync import SyncPreview
    from ._sync_samples import SampleSync
    from ._syncplan import ShareGrant, SyncOptions, parse_share
    from ._tls import import_aiohttp_without_default_trust
    from ._validate import SamplePlan

__all__ = [
    "SYNC_NEEDS_ONE_PATH",
    "ANNOTATION_SUFFIX",
    "AlreadyRunning",
    "AuthError",
    "BULK_MIN_FILES",
    "BULK_SMALL_FILE",
    "BudgetExhausted",
    "Capabilities",
    "Check",
    "CredentialStore",
    "DEFAULT_BASE_URL",
    "DownloadAdvice",
    "ExecutionFailed",
    "ExecutionOutput",
    "ExecutionUnfinished",
    "FileReport",
    "Flowxfer",
    "FlowxferError",
    "GoneError",
    "IntegrityError",
    "Interrupted",
    "JournalError",
    "LocalIOError",
    "NotFoundError",
    "NotLoggedIn",
    "PathFilter",
    "Problem",
    "ProtocolError",
    "RESERVED_COLUMNS",
    "RejectedError",
    "RunScan",
    "SamplePlan",
    "SampleSync",
    "ServerError",
    "ShareGrant",
    "SheetError",
    "SourceChangedError",
    "SyncOptions",
    "SyncPreview",
    "Tokens",
    "TransferConfig",
    "TransferReport",
    "UnavailableError",
    "UnsafeArchiveError",
    "UsageError",
    "blocking",
    "check_base_url",
    "default_config_dir",
    "events",
    "format_duration",
    "format_rate",
    "format_sheet",
    "format_size",
    "import_aiohttp_without_default_trust",
    "owned_projects",
    "parse_duration",
    "parse_share",
    "parse_size",
    "read_token_file",
    "readable_by_others",
    "require_transfer_id",
    "resolve_early_connection",
    "run_checks",
    "sample_reports",
    "scan_run",
    "sheet_rows",
    "start_early_connection",
    "task_group",
]


#: Where each public name lives. The names load on first use (PEP 562), so that a
#: command pays for the modules it needs only: ``flowxfer download`` never imports
#: sync, samples or executions, and start-up is most of a small command's time.
_WHERE: dict[str, tuple[str, str | None]] = {
    "JournalError": ("flowxfer.journal", "JournalError"),
    "blocking": ("._blocking", None),
    "events": (".events", None),
    "BULK_MIN_FILES": ("._advice", "BULK_MIN_FILES"),
    "BULK_SMALL_FILE": ("._advice", "BULK_SMALL_FILE"),
    "DownloadAdvice": ("._advice", "DownloadAdvice"),
    "DEFAULT_BASE_URL": ("._config", "DEFAULT_BASE_URL"),
    "Flowxfer": ("._api", "Flowxfer"),
    "check_base_url": ("._baseurl", "check_base_url"),
    "start_early_connection": ("._preconnect", "start"),
    "resolve_early_connection": ("._preconnect", "resolve_names"),
    "Capabilities": ("._client", "Capabilities"),
    "TransferConfig": ("._config", "TransferConfig"),
    "CredentialStore": ("._credentials", "CredentialStore"),
    "NotLoggedIn": ("._credentials", "NotLoggedIn"),
    "Tokens": ("._credentials", "Tokens"),
    "default_config_dir": ("._credentials", "default_config_dir"),
    "read_token_file": ("._credentials", "read_token_file"),
    "readable_by_others": ("._credentials", "readable_by_others"),
    "Check": ("._doctor", "Check"),
    "run_checks": ("._doctor", "run_checks"),
    "AlreadyRunning": ("._errors", "AlreadyRunning"),
    "AuthError": ("._errors", "AuthError"),
    "BudgetExhausted": ("._errors", "BudgetExhausted"),
    "FlowxferError": ("._errors", "FlowxferError"),
    "GoneError": ("._errors", "GoneError"),
    "IntegrityError": ("._errors", "IntegrityError"),
    "Interrupted": ("._errors", "Interrupted"),
    "LocalIOError": ("._errors", "LocalIOError"),
    "NotFoundError": ("._errors", "NotFoundError"),
    "ProtocolError": ("._errors", "ProtocolError"),
    "RejectedError": ("._errors", "RejectedError"),
    "ServerError": ("._errors", "ServerError"),
    "SourceChangedError": ("._errors", "SourceChangedError"),
    "UnavailableError": ("._errors", "UnavailableError"),
    "UsageError": ("._errors", "UsageError"),
    "require_transfer_id": ("._errors", "require_transfer_id"),
    "ExecutionFailed": ("._executions", "ExecutionFailed"),
    "ExecutionOutput": ("._executions", "ExecutionOutput"),
    "ExecutionUnfinished": ("._executions", "ExecutionUnfinished"),
    "UnsafeArchiveError": ("._extract", "UnsafeArchiveError"),
    "PathFilter": ("._globs", "PathFilter"),
    "RunScan": ("._illumina", "RunScan"),
    "scan_run": ("._illumina", "scan_run"),
    "sheet_rows": ("._illumina", "sheet_rows"),
    "FileReport": ("._report", "FileReport"),
    "TransferReport": ("._report", "TransferReport"),
    "SYNC_NEEDS_ONE_PATH": ("._pathmap", "SYNC_NEEDS_ONE_PATH"),
    "task_group": ("._runtime", "task_group"),
    "sample_reports": ("._samples", "sample_reports"),
    "owned_projects": ("._samples_remote", "owned_projects"),
    "ANNOTATION_SUFFIX": ("._sheets", "ANNOTATION_SUFFIX"),
    "RESERVED_COLUMNS": ("._sheets", "RESERVED_COLUMNS"),
    "Problem": ("._sheets", "Problem"),
    "SheetError": ("._sheets", "SheetError"),
    "format_sheet": ("._sheets", "format_sheet"),
    "format_duration": ("._sizes", "format_duration"),
    "format_rate": ("._sizes", "format_rate"),
    "format_size": ("._sizes", "format_size"),
    "parse_duration": ("._sizes", "parse_duration"),
    "parse_size": ("._sizes", "parse_size"),
    "SyncPreview": ("._sync", "SyncPreview"),
    "SampleSync": ("._sync_samples", "SampleSync"),
    "ShareGrant": ("._syncplan", "ShareGrant"),
    "SyncOptions": ("._syncplan", "SyncOptions"),
    "parse_share": ("._syncplan", "parse_share"),
    "SamplePlan": ("._validate", "SamplePlan"),
    "import_aiohttp_without_default_trust": ("._tls", "import_aiohttp_without_default_trust"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    loaded = importlib.import_module(module, __name__)
    value = loaded if attribute is None else getattr(loaded, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
