"""Riding out a journal database that is briefly away (PostgreSQL restarting, a failover).

A shared journal lives on a server that can restart under a running transfer.
Every journal call a transfer makes goes through :class:`PatientJournal`,
which retries a call that raised :class:`JournalUnavailableError` with
backoff, in the worker thread the call already runs in, so no caller needs a
retry loop of its own and a progress batch is committed exactly as it would
have been. It gives up (raising the error) once the database has been away
longer than ``--max-wait``, or when the run is stopping; after that every
call is tried once and fails at once, so the run's last flush records what
it can instead of waiting again.

Journal calls are retried whole: each is one transaction, and a transaction
cut by a lost connection was rolled back by the server.

Once the run holds its transfer's lease, :meth:`PatientJournal.fence` makes
every write commit under it (:meth:`Journal.fenced`): progress batches, file
and sample rows, the transfer's state and its end. A host that lost the
lease (another host took the transfer over) writes nothing more, and is told
to stop: a progress batch is dropped (the new holder redoes that work), any
other write raises :class:`LeaseLost` to the work that made it, which ends.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flowxfer.journal import Journal, JournalBatch, JournalUnavailableError, Lease, LeaseLost

from ._retry import RetryPolicy

__all__ = ["PatientJournal", "database_wait_message"]

#: The longest pause between two attempts to reach the database.
_RETRY_CAP = 5.0
#: Full-jitter backoff between attempts (many worker threads find the database gone at once).
_POLICY = RetryPolicy(base=0.2, cap=_RETRY_CAP)

T = TypeVar("T")


def database_wait_message(max_wait: float | None) -> str:
    """What a run says once when the journal database goes away."""
    limit = f"up to {max_wait:g} s (--max-wait)" if max_wait is not None else "until it is back"
    return f"the journal database is unreachable; waiting {limit}, transfers in flight carry on"


class _DatabaseWait:
    """The retry loop of a database that is away, and the outage it is in: shared by every call of a run.

    :param max_wait: seconds the database may stay away before a call fails
        (None: as long as it takes, unless the run stops).
    :param stopping: whether the run is stopping: a stopping run waits no more.
    :param on_wait: called once, on the first wait of an outage (to tell the user).
    """

    def __init__(self, *, max_wait: float | None, stopping: Callable[[], bool], on_wait: Callable[[str], None]) -> None:
        self._max_wait = max_wait
        self._stopping = stopping
        self._on_wait = on_wait
        self._lock = threading.Lock()
        self._away_since: float | None = None
        self.gave_up = False
        self._rng = random.Random()

    def run(self, call: Callable[[], T]) -> T:
        """``call()``, retried while it raises :class:`JournalUnavailableError` and waiting is allowed."""
        attempt = 0
        while True:
            began = time.monotonic()
            try:
                result = call()
            except JournalUnavailableError:
                attempt += 1
                if not self._may_wait(began):
                    raise
                time.sleep(min(max(0.05, _POLICY.backoff(attempt, self._rng)), self._time_left()))
                continue
            self._back()
            return result

    def _may_wait(self, began: float) -> bool:
        """Note the outage (it began when the failed call did); whether one more attempt is allowed."""
        with self._lock:
            now = time.monotonic()
            first = self._away_since is None and not self.gave_up
            if self._away_since is None:
                self._away_since = began
            if self._stopping() or (self._max_wait is not None and now - self._away_since > self._max_wait):
                self.gave_up = True
            may = not self.gave_up
        if first and may:
            # Outside the lock: the notice goes through the event loop, which may itself be waiting on it.
            self._on_wait(database_wait_message(self._max_wait))
        return may

    def _time_left(self) -> float:
        with self._lock:
            if self._max_wait is None or self._away_since is None:
                return _RETRY_CAP
            return max(0.05, self._max_wait - (time.monotonic() - self._away_since) + 0.05)

    def _back(self) -> None:
        if self._away_since is not None:
            with self._lock:
                self._away_since = None


class PatientJournal:
    """A :class:`Journal` whose calls wait for an unreachable database instead of failing.

    ``waiting`` (``max_wait``, ``stopping``, ``on_wait``): as for :class:`_DatabaseWait`.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        max_wait: float | None,
        stopping: Callable[[], bool],
        on_wait: Callable[[str], None],
    ) -> None:
        self._journal = journal
        self._wait = _DatabaseWait(max_wait=max_wait, stopping=stopping, on_wait=on_wait)
        self._on_lost: Callable[[str], None] = lambda why: None

    @staticmethod
    def open(
        open_journal: Callable[[], Journal],
        *,
        max_wait: float | None,
        stopping: Callable[[], bool],
        on_wait: Callable[[str], None],
    ) -> Journal:
        """``open_journal()``, waiting for an unreachable database as any later call would: a host
        started during the database's restart waits up to ``max_wait`` too."""
        return _DatabaseWait(max_wait=max_wait, stopping=stopping, on_wait=on_wait).run(open_journal)

    @property
    def gave_up(self) -> bool:
        """Whether the database stayed away past ``max_wait`` (the run should stop: exit 75)."""
        return self._wait.gave_up

    def fence(self, leases: Sequence[Lease], on_lost: Callable[[str], None]) -> None:
        """Write only under ``leases`` from now on; ``on_lost`` is told why once a write finds one another's.

        A batch that finds a lease another holder's writes nothing and is dropped (the new
        holder redoes that work); any other write raises :class:`LeaseLost` after ``on_lost``
        (called from the thread the write ran in) has stopped the run.
        """
        self._journal, self._on_lost = self._journal.fenced(*leases), on_lost

    def commit(self, batch: JournalBatch) -> None:
        try:
            self._patiently(self._journal.commit)(batch)
        except LeaseLost:
            pass  # told by _patiently

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._journal, name)
        if not callable(value) or name.startswith("__"):
            return value
        return self._patiently(value)

    def _patiently(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call``, retried while the database is away (see the module's docstring)."""

        def patiently(*args: Any, **kwargs: Any) -> Any:
            try:
                return self._wait.run(functools.partial(call, *args, **kwargs))
            except LeaseLost as exc:
                self._on_lost(str(exc))
                raise

        return patiently
