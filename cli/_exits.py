"""Exit codes: the one place where outcomes and exceptions become numbers (``cli.md``).

| code | meaning |
| 0 | everything asked for is done (or was already) |
| 1 | some files failed after retries; the journal keeps them for ``resume`` |
| 2 | usage, configuration or local input error |
| 3 | authentication failed |
| 4 | not found (unknown or unreadable data id) |
| 5 | the server rejected the request (400/413/422 after retries) |
| 75 | try again later: already running elsewhere, or the rate-limit budget ran out |
| 130 / 143 | interrupted by SIGINT / SIGTERM after saving the journal |
"""

from __future__ import annotations

import signal

from flowxfer.journal import JournalError
from flowxfer.transfer import (
    AlreadyRunning,
    AuthError,
    BudgetExhausted,
    FlowxferError,
    GoneError,
    NotFoundError,
    RejectedError,
    TransferReport,
    UsageError,
)

OK = 0
FAILED = 1
USAGE = 2
AUTH = 3
NOT_FOUND = 4
REJECTED = 5
TEMPFAIL = 75


def signal_exit_code(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM: 128 + the signal number, as shells do."""
    return 128 + int(signum)


def exception_exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError | JournalError):
        return USAGE
    if isinstance(exc, AuthError):
        return AUTH
    if isinstance(exc, NotFoundError | GoneError):
        return NOT_FOUND
    if isinstance(exc, RejectedError):
        return REJECTED
    if isinstance(exc, AlreadyRunning | BudgetExhausted):
        return TEMPFAIL
    if isinstance(exc, FlowxferError):
        return FAILED
    return FAILED


def report_exit_code(report: TransferReport, signum: int | None) -> int:
    """The exit code of a finished (or stopped) transfer."""
    if report.status == "completed":
        return OK
    if report.stop_reason == "budget":
        return TEMPFAIL
    if signum is not None and report.status == "interrupted":
        return signal_exit_code(signum)
    failed = sum(report.error_kinds.values())
    if failed and report.error_kinds.get("not_found", 0) == failed:
        return NOT_FOUND
    if failed and report.error_kinds.get("rejected", 0) == failed:
        return REJECTED
    return FAILED


def worst(codes: list[int]) -> int:
    """The exit code of several transfers (``resume`` of many): the most serious one."""
    order = [signal_exit_code(signal.SIGINT), signal_exit_code(signal.SIGTERM), USAGE, AUTH, FAILED, NOT_FOUND,
             REJECTED, TEMPFAIL, OK]
    for code in order:
        if code in codes:
            return code
    return OK
