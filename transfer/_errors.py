"""The engine's exceptions: what can go wrong, named once.

aiohttp, ``OSError`` and journal errors are translated into these at the
boundary where they happen; the CLI maps these (and only these) to exit codes
in one place (``cli/_exits.py``).

Each class names its ``kind``: the one classification of what went wrong,
counted per failed file in :attr:`TransferReport.error_kinds` and mapped to
an exit code by the CLI. A subclass inherits its parent's kind unless it
says otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlowxferError(Exception):
    """Base of every error the engine raises on purpose."""

    kind: ClassVar[str] = "other"


class UsageError(FlowxferError):
    """Bad local input: a missing file, a bad name or size, a bad option, an insecure URL."""

    kind: ClassVar[str] = "usage"


def require_transfer_id(transfer_id: str) -> str:
    """``transfer_id`` to look up by prefix, unless empty: that prefixes every id, so it would pick
    the only transfer or call them all ambiguous."""
    if not transfer_id.strip():
        raise UsageError("an empty transfer id: give one from 'flowxfer jobs'")
    return transfer_id


class AuthError(FlowxferError):
    """Authentication failed: bad credentials, no credentials, or a refresh token that expired."""

    kind: ClassVar[str] = "auth"


class ServerError(FlowxferError):
    """The server answered with an error (after retries, where retrying made sense).

    :ivar status: the HTTP status (0 when no answer came at all).
    :ivar body: the decoded JSON error body, or ``{"error": <text>}`` for HTML/text bodies.
    """

    kind: ClassVar[str] = "other"

    def __init__(self, message: str, status: int = 0, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class NotFoundError(ServerError):
    """404: unknown data id, or data the caller may not read (Flow does not tell them apart)."""

    kind: ClassVar[str] = "not_found"


class RejectedError(ServerError):
    """400/403/413/422 and other non-retryable refusals: the request itself was refused."""

    kind: ClassVar[str] = "rejected"


class GoneError(ServerError):
    """410: an archive job expired."""

    kind: ClassVar[str] = "not_found"


class ChecksumMismatchError(RejectedError):
    """422: the server hashed the chunk it received and it did not match what we sent."""


class UnavailableError(ServerError):
    """The server could not be reached or kept failing (5xx, resets, timeouts) after all retries."""

    kind: ClassVar[str] = "unavailable"


class AnswerLost(UnavailableError):
    """A request that must not be sent twice blindly went out and its answer never came back.

    Raised instead of retrying (``replay=False``): the caller asks the server
    what the request did (a sample's final chunk: was the sample made?).
    """


class ProtocolError(ServerError):
    """The server said something impossible: a malformed answer, a lie about sizes or checksums."""

    kind: ClassVar[str] = "protocol"


class IntegrityError(FlowxferError):
    """Bytes did not verify (checksum/size) and refetching or resending did not fix it."""

    kind: ClassVar[str] = "integrity"


class SourceChangedError(FlowxferError):
    """A local file changed (size or mtime) while it was being read for upload."""

    kind: ClassVar[str] = "local"


class BudgetExhausted(FlowxferError):
    """The rate-limit budget would make us wait longer than the caller allowed (``--max-wait``).

    :ivar rate_class: which budget ran out.
    :ivar wait: how long the wait would have been, in seconds.
    """

    kind: ClassVar[str] = "budget"

    def __init__(self, rate_class: str, wait: float, limit: float) -> None:
        self.rate_class, self.wait, self.limit = rate_class, wait, limit
        super().__init__(
            f"the {rate_class} rate-limit budget is spent: the next request would wait "
            f"{wait:.0f} s, more than --max-wait {limit:.0f} s; run the same command again later"
        )


class AlreadyRunning(FlowxferError):
    """Another live process holds the lease for this work."""

    kind: ClassVar[str] = "busy"


class Interrupted(FlowxferError):
    """The transfer was asked to stop (signal); the journal holds where it stopped."""

    kind: ClassVar[str] = "interrupted"


class LocalIOError(FlowxferError):
    """A local filesystem error (ENOSPC, EACCES, ...) while writing or reading data."""

    kind: ClassVar[str] = "local"


class StopRequested(Interrupted):
    """Raised inside a worker when the transfer is stopping; the file stays resumable.

    An :class:`Interrupted` (so a :class:`FlowxferError`): raised from a wait cut short
    outside any worker (planning, the capabilities probe), it reaches the caller as an
    error the CLI renders, never as a traceback.
    """


class JournalUnreachable(FlowxferError):
    """The shared journal's database stayed away too long (``--max-wait``), or the run lost its lease.

    A "try again later" like a spent rate-limit budget: everything the server
    acknowledged and the journal could record is kept, and the same command
    (or ``flowxfer resume``) continues once the database is back.
    """

    kind: ClassVar[str] = "busy"
