"""Exit codes: the one place where outcomes and exceptions become numbers (``cli.md``).

| code | meaning |
| 0 | everything asked for is done (or was already) |
| 1 | some files failed after retries; the journal keeps them for ``resume`` |
| 2 | usage, configuration or local input error |
| 3 | authentication failed |
| 4 | not found (unknown or unreadable data id) |
| 5 | the server rejected the request (400/413/422 after retries) |
| 6 | a pipeline execution ended ERROR or CANCELED (``download --execution``; the message names it) |
| 75 | try again later: already running elsewhere, the rate-limit budget ran out, an execution is still running
|    | (no ``--wait``), ``--max-wait`` ended the wait, the journal database stayed away past ``--max-wait``,
|    | or another host took over a transfer whose lease this one could not renew |
| 130 / 143 | interrupted by SIGINT / SIGTERM after saving the journal |
"""

from __future__ import annotations

import signal

from flowxfer.journal import JournalError, JournalUnavailableError, LeaseLost
from flowxfer.transfer import FlowxferError, TransferReport

OK = 0
FAILED = 1
USAGE = 2
AUTH = 3
NOT_FOUND = 4
REJECTED = 5
EXECUTION = 6
TEMPFAIL = 75

#: Exit codes by :attr:`FlowxferError.kind`; any other kind fails with 1.
_BY_KIND = {
    "usage": USAGE,
    "auth": AUTH,
    "not_found": NOT_FOUND,
    "rejected": REJECTED,
    "busy": TEMPFAIL,
    "budget": TEMPFAIL,
    "execution": EXECUTION,
}


def signal_exit_code(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM: 128 + the signal number, as shells do."""
    return 128 + int(signum)


def exception_exit_code(exc: BaseException) -> int:
    """The exit code of an error that ended a command: by the error's kind (a bad journal is a usage error)."""
    if isinstance(exc, JournalUnavailableError | LeaseLost):
        # The shared journal's database is away, or another host took the work over: try again later.
        return TEMPFAIL
    if isinstance(exc, JournalError):
        return USAGE
    if isinstance(exc, FlowxferError):
        return _BY_KIND.get(exc.kind, FAILED)
    return FAILED


def report_exit_code(report: TransferReport, signum: int | None) -> int:
    """The exit code of a finished (or stopped) transfer."""
    if report.status == "completed":
        # ``download --execution --partial``: the outputs of a failed run arrived, the run still failed.
        statuses = [e.get("status") for e in report.extra.get("executions", {}).values()]
        return EXECUTION if any(s in ("ERROR", "CANCELED") for s in statuses) else OK
    # database, lease-lost: the fleet (the journal unreachable past --max-wait, the lease taken over)
    if report.stop_reason in ("budget", "max-wait", "database", "lease-lost"):
        return TEMPFAIL
    if signum is not None and report.status == "interrupted":
        return signal_exit_code(signum)
    if report.stop_reason == "timeout":  # an archive job outlasted bulk --timeout: try again later
        return TEMPFAIL
    failed = sum(report.error_kinds.values())
    for kind in ("not_found", "rejected"):
        if failed and report.error_kinds.get(kind, 0) == failed:
            return _BY_KIND[kind]
    return FAILED


def worst(codes: list[int]) -> int:
    """The exit code of several transfers (``resume`` of many): the most serious one."""
    order = [
        signal_exit_code(signal.SIGINT),
        signal_exit_code(signal.SIGTERM),
        USAGE,
        AUTH,
        FAILED,
        NOT_FOUND,
        REJECTED,
        EXECUTION,
        TEMPFAIL,
        OK,
    ]
    for code in order:
        if code in codes:
            return code
    return OK
