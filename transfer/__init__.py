"""The transfer engine: resumable, verified, rate-limit-aware uploads and downloads.

Async use::

    from flowxfer.transfer import Flowxfer

    async with Flowxfer("https://api.flow.bio") as fx:
        report = await fx.upload(["run42/fastq"])

Blocking use (scripts)::

    from flowxfer.transfer import blocking
    report = blocking.upload(["run42/fastq"], base_url="https://api.flow.bio")

Run folders and archives::

    report = await fx.sync("run42/", SyncOptions(ready_marker="CopyComplete.txt", pack_small=1 << 20))
    report = await fx.bulk(ids, output_dir="results/", extract=True)

Progress arrives as event objects (:mod:`flowxfer.transfer.events`) passed
to the ``progress`` callback. Errors are the exceptions below; nothing here
prints or exits.
"""

from __future__ import annotations

from flowxfer.journal import JournalError

from . import _blocking as blocking
from . import events
from ._api import DEFAULT_BASE_URL, Flowxfer
from ._client import Capabilities
from ._config import TransferConfig
from ._credentials import CredentialStore, Tokens, default_config_dir
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
from ._extract import UnsafeArchiveError
from ._report import FileReport, TransferReport
from ._sheets import Problem, SheetError
from ._sync import ShareGrant, SyncOptions, SyncPreview
from ._sync_samples import SampleSync

__all__ = [
    "DEFAULT_BASE_URL",
    "AlreadyRunning",
    "AuthError",
    "BudgetExhausted",
    "Capabilities",
    "CredentialStore",
    "FileReport",
    "Flowxfer",
    "FlowxferError",
    "GoneError",
    "IntegrityError",
    "JournalError",
    "Interrupted",
    "LocalIOError",
    "NotFoundError",
    "ProtocolError",
    "RejectedError",
    "ServerError",
    "Problem",
    "SampleSync",
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
]
