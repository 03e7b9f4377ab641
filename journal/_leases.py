"""Leases and shared rate budgets: how processes, and hosts sharing a journal, stay out of each other's way.

Mixed into :class:`~._journal.Journal`. A lease is a row claimed inside a
transaction under a named lock (PostgreSQL: an advisory lock and ``FOR
UPDATE``; SQLite: ``BEGIN IMMEDIATE``): free, ours, a dead process's on this
host (free at once), or silent for longer than the TTL its holder stored
with it (a dead or cut-off host's). A budget is merged and written back in one such
transaction, so the fleet's spending adds up. A holder's writes for its work are fenced by
its lease (:meth:`LeaseTables._fence`, through :meth:`~._journal.Journal.fenced`): once the
lease is another's they write nothing. Leases and budgets themselves are never fenced.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from ._backend import Params, Transaction
from ._errors import HostIdError, LeaseHeld, LeaseLost
from ._states import IllegalTransition

#: The longest host id: a fully qualified domain name's limit (a hostname fits).
HOST_ID_MAX = 253


def resolve_host_id(explicit: str | None = None) -> str:
    """This host's name in a shared journal: ``explicit``, else ``$FLOWXFER_HOST_ID``, else the hostname.

    An explicit or environment value is checked (:func:`check_host_id`), even an empty one: an
    empty ``FLOWXFER_HOST_ID`` once fell back to the hostname unseen, and a fleet whose hosts
    all ended up with one name would take each other's live leases for their own.
    """
    if explicit is None:
        explicit = os.environ.get("FLOWXFER_HOST_ID")
    return socket.gethostname() if explicit is None else check_host_id(explicit)


def check_host_id(value: str) -> str:
    """``value`` if it can name a host in a shared journal, else :class:`HostIdError` saying why.

    It is shown in ``jobs``/``show`` columns and in "already running ... on HOST" messages, and
    it is how a host recognises its own leases: no blank, padded, control-character or
    unbounded names.
    """
    what = "the host id (--host-id or FLOWXFER_HOST_ID)"
    if not value.strip():
        raise HostIdError(f"{what} is empty: give each host of a fleet its own name, or unset it for the hostname")
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise HostIdError(f"{what} {value!r} has a control character ({control!r})")
    if value != value.strip():
        raise HostIdError(f"{what} {value!r} begins or ends with a space")
    if len(value) > HOST_ID_MAX:
        raise HostIdError(f"{what} is {len(value)} characters long; at most {HOST_ID_MAX}")
    return value


@dataclass(slots=True)
class Lease:
    """The right to run one piece of work; released on exit, taken over when stale."""

    journal: LeaseTables
    key: str
    token: str

    def heartbeat(self) -> None:
        self.journal._heartbeat(self)

    def release(self) -> None:
        self.journal._release(self)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseTables:
    """Leases and budgets (see the module's docstring)."""

    host: str
    pid: int

    # Provided by Journal.
    def _unfenced(self) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- rate-limit buckets ---------------------------------------------

    def update_buckets(
        self,
        server: str,
        username: str,
        merge: Callable[[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]],
    ) -> dict[str, dict[str, Any]]:
        """Read the stored bucket states, let ``merge`` combine them with ours, store the result.

        One write transaction, so processes sharing a budget never lose each
        other's spending. ``merge`` receives ``{class: state}`` (possibly empty)
        and returns the states to store.
        """
        with self._unfenced() as conn:
            # The budget's rows may not exist yet (row locks cannot cover them): a named lock does.
            conn.lock(f"buckets:{server}\n{username}")
            rows = conn.execute(
                "SELECT class, state FROM buckets WHERE server = ? AND username = ?", (server, username)
            ).fetchall()
            stored = {name: json.loads(state) for name, state in rows}
            result = merge(stored)
            now = time.time()
            conn.executemany(
                "INSERT INTO buckets (server, username, class, state, updated, host) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (server, username, class) DO UPDATE SET state = excluded.state, "
                "updated = excluded.updated, host = excluded.host",
                [(server, username, name, json.dumps(state), now, self.host) for name, state in result.items()],
            )
        return result

    # -- leases --------------------------------------------------------

    def acquire_lease(self, key: str, *, what: str = "", stale_after: float = 60.0) -> Lease:
        """Take the lease ``key`` (held with the TTL ``stale_after``), or raise :class:`LeaseHeld` if a
        live process has it."""
        with self._unfenced() as conn:
            return self._take_lease(conn, key, what, stale_after)

    def _take_lease(self, conn: Transaction, key: str, what: str, stale_after: float) -> Lease:
        """Claim ``key`` inside ``conn``: free, ours, a dead process's on this host, or stale (no heartbeat
        for the TTL its holder stored with it: a dead or cut-off host's) -- else :class:`LeaseHeld`.

        ``stale_after`` is our TTL, stored with the lease for the hosts that will look at it: a
        holder's heartbeat rhythm follows its own TTL, so only its own TTL says when it went silent.
        Times are the database's clock where there is one (:meth:`Transaction.now`), so hosts whose
        clocks disagree still agree on when a lease went stale.
        """
        conn.lock(f"lease:{key}")
        now = conn.now()
        row = conn.execute(
            "SELECT pid, host, since, heartbeat, what, ttl FROM leases WHERE key = ?" + conn.for_update, (key,)
        ).fetchone()
        if row is not None:
            pid, host, since, heartbeat, held_what, ttl = row
            ours = pid == self.pid and host == self.host
            dead = host == self.host and not _pid_alive(pid)
            stale = now - heartbeat > ttl
            if not (ours or dead or stale):
                raise LeaseHeld(key, pid, host, since, held_what)
        token = secrets.token_hex(8)
        conn.execute(
            "INSERT INTO leases (key, token, pid, host, since, heartbeat, what, ttl) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT (key) DO UPDATE SET token = excluded.token, pid = excluded.pid, host = excluded.host, "
            "since = excluded.since, heartbeat = excluded.heartbeat, what = excluded.what, ttl = excluded.ttl",
            (key, token, self.pid, self.host, now, now, what, stale_after),
        )
        return Lease(self, key, token)

    def _fence(self, conn: Transaction, leases: Iterable[Lease]) -> None:
        """Fence the writes of ``conn`` by ``leases``: they fail whole unless each lease is still ours.

        A host that lost its lease (frozen or cut off for a whole TTL, another host took over) may
        still hold progress it never recorded; written beside the new holder's, it would claim
        rows the new holder is working on. The lease's row is read and locked inside ``conn``
        (PostgreSQL: ``FOR UPDATE``, so a takeover waits for this commit or this commit sees
        the takeover; SQLite: the write lock already serialises them) by a refusal sent with the
        writes (no extra round trip): when the row's token is not ``lease``'s, the database fails
        the transaction and :meth:`lease_lost` names the error :class:`LeaseLost`.
        """
        for lease in leases:
            # The message is joined to a value read from the table: a refusal made of constants alone
            # would be folded, and fail, when the statement is planned, whatever the row holds.
            conn.refuse_if(
                "SELECT ? || substr(held.token, 1, 0) FROM (SELECT coalesce((SELECT token FROM leases WHERE key = ?"
                + conn.for_update
                + "), '') AS token) AS held WHERE held.token <> ?",
                (_lease_lost_message(lease), lease.key, lease.token),
            )

    @staticmethod
    def lease_lost(refusal: Exception, leases: Iterable[Lease]) -> LeaseLost | None:
        """:class:`LeaseLost` when ``refusal`` is :meth:`_fence`'s for one of ``leases``, else None."""
        for lease in leases:
            if str(refusal) == _lease_lost_message(lease):
                return LeaseLost(lease.key)
        return None

    @contextmanager
    def _losing(self, leases: Sequence[Lease]) -> Iterator[None]:
        """Around a transaction :meth:`_fence` fenced by ``leases``: its refusal raised as :class:`LeaseLost`."""
        try:
            yield
        except IllegalTransition as exc:
            lost = self.lease_lost(exc, leases)
            if lost is None:
                raise
            raise lost from None

    def heartbeat_held(self, key: str) -> bool:
        """Renew the lease ``key`` if this process holds it; whether it does.

        For a long wait before a transfer's workers (and their heartbeat) start:
        ``download --execution --wait`` polls for hours under its lease.
        """
        with self._unfenced() as conn:
            changed = conn.execute(
                "UPDATE leases SET heartbeat = ? WHERE key = ? AND pid = ? AND host = ?",
                (conn.now(), key, self.pid, self.host),
            ).rowcount
        return bool(changed)

    def _heartbeat(self, lease: Lease) -> None:
        with self._unfenced() as conn:
            conn.execute(
                "UPDATE leases SET heartbeat = ? WHERE key = ? AND token = ?", (conn.now(), lease.key, lease.token)
            )

    def _release(self, lease: Lease) -> None:
        with self._unfenced() as conn:
            conn.execute("DELETE FROM leases WHERE key = ? AND token = ?", (lease.key, lease.token))

    def lease_holder(self, key: str) -> tuple[int, str, float] | None:
        rows = self._read("SELECT pid, host, since FROM leases WHERE key = ?", (key,))
        return (rows[0]["pid"], rows[0]["host"], rows[0]["since"]) if rows else None


def _lease_lost_message(lease: Lease) -> str:
    return f"lease {lease.key} is no longer this process's"
