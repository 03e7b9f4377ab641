"""The journal's errors: callers catch :class:`JournalError` and never see a database driver's own."""

from __future__ import annotations

import time


class JournalError(Exception):
    """Any problem with the journal itself (not with a transfer)."""


class JournalCorruptError(JournalError):
    """The journal file is not a database, or not a flowxfer journal, or damaged."""


class JournalVersionError(JournalError):
    """The journal was written by a newer flowxfer than this one."""


class JournalBusyError(JournalError):
    """Another process held the journal's write lock for too long."""


class JournalUnavailableError(JournalError):
    """The journal's database server cannot be reached (down, restarting, network): worth retrying.

    The journal object stays usable: once the server is back, the next call works.
    """


class JournalLocationError(JournalError):
    """A ``--journal`` value that is neither a path nor a URL of a backend we know."""


class HostIdError(JournalError):
    """A host id (``--host-id``, ``FLOWXFER_HOST_ID``) that cannot name a host in a shared journal."""


class LeaseHeld(JournalError):
    """Another live process is running this work."""

    def __init__(self, key: str, pid: int, host: str, since: float, what: str) -> None:
        self.key, self.pid, self.host, self.since, self.what = key, pid, host, since, what
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        super().__init__(f"already running ({what or key}): pid {pid} on {host}, since {started}")


class LeaseLost(JournalError):
    """A write fenced by a lease found the lease another holder's: it wrote nothing.

    The holder went silent for longer than its TTL (frozen, cut off) and another process or host
    took the work over; what the old holder still had to record is the new holder's to redo.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"the lease {key} is no longer ours: another host or process has taken over this work")
