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
the ``doctor`` checks, and :func:`task_group`.

Progress arrives as event objects (:mod:`flowxfer.transfer.events`) passed
to the ``progress`` callback. Errors are the exceptions below; nothing here
prints or exits.
"""

from __future__ import annotations

from flowxfer.journal import JournalError

from . import _blocking as blocking
from . import events
from ._advice import BULK_MIN_FILES, BULK_SMALL_FILE, DownloadAdvice
from ._api import DEFAULT_BASE_URL, Flowxfer
from ._client import Capabilities
from ._config import TransferConfig
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
)
from ._executions import ExecutionFailed, ExecutionOutput, ExecutionUnfinished
from ._extract import UnsafeArchiveError
from ._globs import PathFilter
from ._illumina import RunScan, scan_run, sheet_rows
from ._report import FileReport, TransferReport
from ._runtime import task_group
from ._samples import sample_reports
from ._samples_remote import owned_projects
from ._sheets import ANNOTATION_SUFFIX, RESERVED_COLUMNS, Problem, SheetError, format_sheet
from ._sizes import format_duration, format_rate, format_size, parse_duration, parse_size
from ._sync import SyncPreview
from ._sync_samples import SampleSync
from ._syncplan import ShareGrant, SyncOptions, parse_share
from ._validate import SamplePlan

__all__ = [
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
    "default_config_dir",
    "events",
    "format_duration",
    "format_rate",
    "format_sheet",
    "format_size",
    "owned_projects",
    "parse_duration",
    "parse_share",
    "parse_size",
    "read_token_file",
    "readable_by_others",
    "run_checks",
    "sample_reports",
    "scan_run",
    "sheet_rows",
    "task_group",
]
