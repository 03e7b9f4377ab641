"""The public face of the engine: :class:`Flowxfer`, one object per server.

It owns the pieces (credentials, journal, HTTP client, rate limiter) and runs
transfers: a transfer is planned into the journal, then worked by a pool of
file workers under one anyio task group, with a journal writer, a lease
heartbeat and a bucket-sharing loop beside them. Nothing here prints or exits:
callers get a :class:`TransferReport` and progress :mod:`events <._events>`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from flowxfer import protocol
from flowxfer.journal import (
    FileRecord,
    FileState,
    Journal,
    JournalError,
    Lease,
    LeaseHeld,
    TransferRecord,
    TransferState,
    transfer_outcome,
)

from ._bwlimit import BandwidthSchedule
from ._client import Capabilities, FlowClient, check_base_url
from ._config import TransferConfig
from ._credentials import CredentialStore, Tokens, default_config_dir, not_logged_in
from ._download import download_file, fetch_remote
from ._errors import (
    AlreadyRunning,
    AuthError,
    BudgetExhausted,
    ChecksumMismatchError,
    FlowxferError,
    GoneError,
    IntegrityError,
    LocalIOError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    SourceChangedError,
    UnavailableError,
    UsageError,
)
from ._limiter import RateLimiter
from ._plan import (
    RemoteData,
    check_upload_paths,
    params_key,
    plan_downloads,
    plan_uploads,
    scan_local,
)
from ._runtime import ByteBudget, JournalWriter, TransferContext, task_group
from ._sources import FileSource, MemorySource, ReadAhead, describe_mode
from ._upload import (
    StopRequested,
    UploadOptions,
    remember_upload,
    start_over,
    stat_source,
    upload_source,
    upload_verification,
)
from .events import FileFinished, FilesPlanned, FileStarted, Notice, ProgressCallback, TransferStarted, ignore_events

if TYPE_CHECKING:
    from ._bulk import DownloadAdvice
    from ._sync import SyncOptions, SyncPreview

#: The official client's (flowbio): a flowbio user's habits and scripts carry over.
DEFAULT_BASE_URL = "https://app.flow.bio/api"

#: What an access token may be made of (a JWT is base64url with dots; anything printable is let through).
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")

#: The statuses of the files a run still has to work on.
_TODO = (FileState.PLANNED, FileState.ACTIVE, FileState.FAILED)


@dataclass
class FileReport:
    """One file's outcome, as ``cli.md``'s JSON shows it."""

    path: str
    id: str | None
    filename: str
    size: int
    status: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TransferReport:
    """What a transfer did. ``status`` is ``completed``, ``partial``, ``failed`` or ``interrupted``.

    :ivar stop_reason: why an interrupted run stopped: ``"budget"`` (rate
        limits and ``max_wait``), ``"stopped"`` (asked to, e.g. a signal), or None.
    :ivar error_kinds: failed files counted by cause (``rejected``,
        ``not_found``, ``unavailable``, ``integrity``, ``local``, ``protocol``).
    """

    transfer_id: str
    kind: str
    status: str
    files: list[FileReport]
    bytes_transferred: int
    bytes_skipped: int
    seconds: float
    retries: int
    resumed: bool = False
    stop_reason: str | None = None
    requests: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    verified: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "transfer_id": self.transfer_id,
            "kind": self.kind,
            "status": self.status,
            "files": [f.to_json() for f in self.files],
            "bytes_transferred": self.bytes_transferred,
            "bytes_skipped": self.bytes_skipped,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "resumed": self.resumed,
            "stop_reason": self.stop_reason,
            "requests": self.requests,
            "verified": self.verified,
        }
        document.update(self.extra)
        return document


def error_kind(exc: BaseException) -> str:
    """A failed file's cause, for exit codes and summaries."""
    if isinstance(exc, NotFoundError | GoneError):
        return "not_found"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, RejectedError | ChecksumMismatchError):
        return "rejected"
    if isinstance(exc, UnavailableError):
        return "unavailable"
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, LocalIOError | SourceChangedError | UsageError):
        return "local"
    return "other"


Planner = Callable[[TransferContext, TransferRecord, bool], Awaitable[None]]
Worker = Callable[[TransferContext, FileRecord], Awaitable[FileReport]]


def unsent(record: FileRecord) -> bool:
    """An ``upload`` record with nothing sent yet: worth reading ahead (a resumed one asks the server first)."""
    return not record.data_id


class Flowxfer:
    """Resumable, verified transfers to and from one Flow server.

    Example::

        async with Flowxfer("https://api.flow.bio") as fx:
            report = await fx.upload(["run42/"])
            print(report.status, [f.id for f in report.files])

    :param base_url: the server (default: ``$FLOW_API_URL``, else hosted Flow);
        plain ``http://`` only to loopback unless ``allow_insecure_http``.
        ``token``, ``config_dir``, ``journal`` and ``ca_bundle`` likewise
        default to ``$FLOW_API_TOKEN``, ``$FLOWXFER_CONFIG_DIR``,
        ``$FLOWXFER_JOURNAL`` and ``$FLOWXFER_CA_BUNDLE``.
    :param environment: read those variables at all. False for a client that
        must not be steered by its caller's environment: ``flowxfer demo``
        talks to its own embedded server, and a user's ``FLOW_API_TOKEN`` for
        hosted Flow must neither be sent there nor replace the demo's login.
    :param token: an access token to use instead of saved credentials (it
        cannot be refreshed).
    :param config_dir: where ``login`` saves credentials (mode 0600).
    :param journal: a journal path, an open :class:`Journal`, or None for the default path.
    :param progress: called with every progress event; must be quick.
    :param session: an aiohttp session to reuse (not closed by us).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        config_dir: Path | str | None = None,
        journal: Path | str | Journal | None = None,
        config: TransferConfig | None = None,
        progress: ProgressCallback | None = None,
        ca_bundle: Path | str | None = None,
        allow_insecure_http: bool = False,
        session: aiohttp.ClientSession | None = None,
        environment: bool = True,
    ) -> None:
        # Unset arguments come from the same environment variables as the CLI's options
        # (as boto3 does), so a script and the command line see the same server and journal.
        env: Mapping[str, str] = os.environ if environment else {}
        base_url = base_url or env.get("FLOW_API_URL") or DEFAULT_BASE_URL
        token = token if token is not None else (env.get("FLOW_API_TOKEN") or None)
        config_dir = config_dir or env.get("FLOWXFER_CONFIG_DIR") or None
        if journal is None and env.get("FLOWXFER_JOURNAL"):
            journal = env["FLOWXFER_JOURNAL"]
        ca_bundle = ca_bundle or env.get("FLOWXFER_CA_BUNDLE") or None
        self.base_url = check_base_url(base_url, allow_insecure_http)
        self.config = config or TransferConfig()
        self.events = progress or ignore_events
        self.store = CredentialStore(Path(config_dir) if config_dir else default_config_dir())
        if token is not None and not _TOKEN_TEXT.fullmatch(token):
            # It goes into an Authorization header, where aiohttp would refuse it with a ValueError.
            raise UsageError("the access token (--token, FLOW_API_TOKEN) contains spaces or control characters")
        self._token = token
        self._journal_arg = journal
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self._ca_bundle = Path(ca_bundle) if ca_bundle else None
        self._allow_insecure_http = allow_insecure_http
        self._session = session
        self._client: FlowClient | None = None
        self._stopping = False
        self._stop_reason: str | None = None
        self._stop_event = anyio.Event()

    # -- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> Flowxfer:
        tokens: Tokens | None
        if self._token:
            tokens = Tokens(username=_username_from_token(self._token), access_token=self._token)
        else:
            tokens = await anyio.to_thread.run_sync(self.store.load, self.base_url)
        ssl_context = None
        if self._ca_bundle is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=str(self._ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot use CA bundle {self._ca_bundle}: {exc}") from None
        bandwidth = None
        if self.config.bwlimit:
            try:
                bandwidth = BandwidthSchedule.parse(self.config.bwlimit)
            except ValueError as exc:
                raise UsageError(f"bad bandwidth limit {self.config.bwlimit!r}: {exc}") from None
        limiter = RateLimiter(max_wait=self.config.max_wait, bandwidth=bandwidth, events=self._emit,
                              pause=self._pause)
        self._client = FlowClient(
            self.base_url, tokens=tokens, store=None if self._token else self.store, config=self.config,
            limiter=limiter, events=self._emit, session=self._session, ssl_context=ssl_context,
            allow_insecure_http=self._allow_insecure_http, pause=self._pause,
        )
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._journal is not None and not isinstance(self._journal_arg, Journal):
            self._journal.close()
            self._journal = None

    def _emit(self, event: Any) -> None:
        self.events(event)

    @property
    def client(self) -> FlowClient:
        if self._client is None:
            raise RuntimeError("use 'async with Flowxfer(...)'")
        return self._client

    async def journal(self) -> Journal:
        """The journal, opened on first use (``login`` never needs it)."""
        if self._journal is None:
            arg = self._journal_arg
            path = Path(arg) if isinstance(arg, str | Path) else None
            self._journal = await anyio.to_thread.run_sync(partial(Journal.open, path))
        return self._journal

    async def _pause(self, seconds: float) -> None:
        """Wait for rate-limit budget or before a retry -- unless asked to stop.

        Nothing is in flight during such a wait, so a stop ends it at once
        (a SIGINT used to sit out a 30 s Retry-After, then the grace period).

        :raises StopRequested: the transfer is stopping.
        """
        if not self._stopping:
            with anyio.move_on_after(seconds):
                await self._stop_event.wait()
        if self._stopping:
            raise StopRequested("stopped while waiting (for rate-limit budget, or to retry); "
                                "the journal holds where it stopped")

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking new work; in-flight requests get ``grace_period`` to finish.

        Call from the event loop's thread (a signal handler task, a callback).
        """
        if not self._stopping:
            self._stopping = True
            self._stop_reason = self._stop_reason or reason
            self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- accounts ------------------------------------------------------

    async def login(self, username: str, password: str) -> str:
        """Log in and save the tokens (mode 0600); returns the username.

        :raises AuthError: wrong username or password.
        """
        await self.client.login(username, password)
        return username

    async def logout(self) -> bool:
        """Forget the saved tokens of this server; True if there were any."""
        return await anyio.to_thread.run_sync(self.store.forget, self.base_url)

    async def capabilities(self) -> Capabilities:
        return await self.client.capabilities()

    # -- uploads -------------------------------------------------------

    async def upload(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        data_type: str | None = None,
        force: bool = False,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Upload files (folders recursively), skipping those already uploaded unchanged.

        :param force: upload even files the journal knows are on the server unchanged.
        :raises UsageError: a path is missing or a name is one Flow refuses (nothing sent).
        :raises AuthError: not logged in, or the login expired.
        :raises AlreadyRunning: another process is running this same upload.
        """
        resolved = await anyio.to_thread.run_sync(check_upload_paths, list(paths))
        params: dict[str, Any] = {"paths": resolved, "data_type": data_type}
        options = UploadOptions(data_type=data_type)

        async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
            skipped, count, total = await anyio.to_thread.run_sync(
                partial(plan_uploads, ctx.journal, record.id, ctx.server, ctx.username, scan_local(resolved),
                        force=force)
            )
            self._emit(FilesPlanned(count, total))
            for row in skipped:
                self._emit(FileFinished(row.local_path, row.remote_name, "skipped", row.size, row.data_id, None))

        async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
            return await self._upload_one(ctx, record, options)

        return await self._run("upload", params, plan, work, transfer_id=transfer_id, extra_state={"force": force},
                               read_ahead=unsent)

    async def _upload_one(self, ctx: TransferContext, record: FileRecord, options: UploadOptions) -> FileReport:
        self._emit(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
        restarts = 0
        # Bytes read ahead were checked then against the planned size and mtime: all the stat
        # below would find out.
        read_ahead = ctx.read_ahead.take(record) if ctx.read_ahead else None
        while True:
            source: FileSource | MemorySource
            if read_ahead is not None:
                source, read_ahead = read_ahead, None
            else:
                st = await stat_source(record.local_path)
                if not stat.S_ISREG(st.st_mode):
                    # Replaced by a folder or a FIFO since it was planned: not a changed file, a gone one.
                    raise LocalIOError(f"cannot read {record.local_path}: not a regular file "
                                       f"(now {describe_mode(st.st_mode)})")
                if (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns):
                    # Changed since it was planned (or since the interrupted run): a new upload.
                    record = start_over(ctx, record, st)
                source = FileSource(record.local_path, record.size, record.mtime_ns)
            try:
                result = await upload_source(ctx, record, source, options)
            except SourceChangedError as exc:
                restarts += 1
                ctx.counters.files_restarted += 1
                if restarts > ctx.config.file_restarts:
                    raise SourceChangedError(f"{exc}; it kept changing, giving up after {restarts} tries") from None
                self._emit(Notice(f"{record.local_path} changed while being uploaded; starting it again"))
                await anyio.sleep(min(2.0 ** restarts, 10.0))
                record = dataclasses.replace(record, data_id=None, chunk_size=0, bytes_done=0)
                continue
            assert record.mtime_ns is not None
            remember_upload(ctx, record, result, record.mtime_ns)
            ctx.counters.verified.add(upload_verification(ctx.capabilities))
            return FileReport(record.local_path, result.data_id, record.remote_name, record.size, "done")

    # -- downloads -----------------------------------------------------

    async def download(
        self,
        ids: Sequence[str] = (),
        *,
        filename: str | None = None,
        pattern: str | None = None,
        owned: bool = False,
        output_dir: Path | str = ".",
        force: bool = False,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Download data by id and/or by search into ``output_dir``, under their (sanitised) filenames.

        :raises UsageError: nothing named.
        :raises NotFoundError: an id that does not exist or cannot be read (nothing is downloaded).
        """
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids and not (filename or pattern or owned):
            raise UsageError("name data ids, or a search (--filename, --pattern, --owned)")
        out = await anyio.to_thread.run_sync(lambda: Path(output_dir).expanduser().resolve())
        params: dict[str, Any] = {"ids": ids, "filename": filename, "pattern": pattern, "owned": owned,
                                  "output_dir": str(out)}

        async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
            if resumed and record.state.get("planned"):
                return
            items = await self.describe(ids) if ids else []
            if filename or pattern or owned:
                seen = {item.id for item in items}
                items += [item for item in await self.search(filename=filename, pattern=pattern, owned=owned)
                          if item.id not in seen]
            try:
                await anyio.to_thread.run_sync(partial(os.makedirs, out, exist_ok=True))
            except OSError as exc:
                raise UsageError(f"cannot create output folder {out}: {exc.strerror}") from None
            skipped, count, total = await anyio.to_thread.run_sync(
                partial(plan_downloads, ctx.journal, record.id, ctx.server, ctx.username, items, out, force=force)
            )
            await anyio.to_thread.run_sync(partial(ctx.journal.update_transfer_state, record.id, planned=True))
            self._emit(FilesPlanned(count, total))
            from ._bulk import bulk_hint

            hint = bulk_hint(items)
            if hint:
                self._emit(Notice(hint))
            for row in skipped:
                self._emit(FileFinished(row.local_path, row.remote_name, "skipped", row.size, row.data_id, None))

        return await self._run("download", params, plan, self._download_one, transfer_id=transfer_id)

    async def _download_one(self, ctx: TransferContext, record: FileRecord) -> FileReport:
        assert record.data_id is not None
        self._emit(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
        remote = await fetch_remote(ctx, record.data_id, record.remote_name, record.size, record.checksum,
                                    want_map=record.size > ctx.config.download_chunk_size)
        result = await download_file(ctx, record, remote)
        ctx.counters.verified.add(result.verified)
        return FileReport(record.local_path, record.data_id, record.remote_name, record.size, "done")

    async def download_advice(
        self, ids: Sequence[str] = (), *, filename: str | None = None, pattern: str | None = None,
        owned: bool = False,
    ) -> DownloadAdvice:
        """What downloading these would cost one by one and as an archive (``download --dry-run``).

        Sends only metadata requests (``GET /data/<id>``, searches).

        :raises NotFoundError: an id that does not exist or cannot be read.
        """
        from ._bulk import advise_download

        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids and not (filename or pattern or owned):
            raise UsageError("name data ids, or a search (--filename, --pattern, --owned)")
        if self.client.tokens is None:
            raise not_logged_in(self.store, self.base_url)
        items = await self.describe(ids) if ids else []
        if filename or pattern or owned:
            seen = {item.id for item in items}
            items += [item for item in await self.search(filename=filename, pattern=pattern, owned=owned)
                      if item.id not in seen]
        journal = await self.journal()
        limiter = self.client.limiter
        limiter.store = partial(journal.update_buckets, self.base_url, self.client.username)
        await limiter.sync()
        return advise_download(items, self.config, await self.client.capabilities(), limiter)

    # -- bulk and sync (issue 4) ----------------------------------------------

    async def bulk(
        self,
        ids: Sequence[str],
        *,
        name: str | None = None,
        output_dir: Path | str = ".",
        extract: bool = False,
        keep_archive: bool = False,
        poll_interval: float = 1.0,
        job_timeout: float | None = None,
        known: Sequence[RemoteData] | None = None,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Fetch data as one server-built archive: create the job, poll it, download and verify the archive.

        The job id is journaled as soon as the server gives it, so running the
        same call again (or :meth:`resume`) re-attaches to the same job; a job
        that expired is created again once. The report's ``extra`` holds
        ``job_id``, ``archive`` and, with ``extract``, ``extracted``.

        :param name: the archive's name (``.zip``); default ``flow-download.zip``.
        :param extract: unpack the archive safely into ``output_dir``, verifying
            each file against its data's checksum where the server gives one.
        :param keep_archive: keep the archive after a verified extraction.
        :param poll_interval: first wait between two polls of the job, in seconds (it grows to 30 s).
        :param job_timeout: stop waiting for the job after this many seconds
            (the report's ``stop_reason`` is ``"timeout"``; run again to re-attach).
        :param known: descriptions already fetched for these ids (saves a request each).
        :raises UsageError: no ids, or a bad archive name.
        :raises NotFoundError: an id that does not exist or cannot be read (no job is created).
        """
        from ._bulk import run_bulk

        return await run_bulk(self, ids, name=name, output_dir=output_dir, extract=extract,
                              keep_archive=keep_archive, poll_interval=poll_interval, job_timeout=job_timeout,
                              known=known, transfer_id=transfer_id)

    async def sync(
        self,
        root: str | os.PathLike[str],
        options: SyncOptions | None = None,
        *,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Upload what is new or changed in a run folder, once it is ready (``flowxfer sync``).

        A folder still waiting for its ready marker gives a report with status
        ``"waiting"`` (``extra["waiting_for"]``) and sends nothing. Unchanged
        files are counted in ``extra["unchanged"]``, not listed.

        :raises UsageError: not a folder, or names that clash or that Flow
            refuses (all listed, nothing sent).
        :raises AlreadyRunning: another process is syncing this folder.
        """
        from ._sync import SyncOptions, run_sync

        return await run_sync(self, root, options or SyncOptions(), transfer_id=transfer_id)

    async def preview_sync(self, root: str | os.PathLike[str], options: SyncOptions | None = None) -> SyncPreview:
        """What :meth:`sync` would send and how long the rate limits make it (``sync --dry-run``); sends nothing."""
        from ._sync import SyncOptions, preview_sync

        return await preview_sync(self, root, options or SyncOptions())

    async def describe(self, ids: Sequence[str]) -> list[RemoteData]:
        """``GET /data/<id>`` for each id; every unknown or unreadable id is named at once.

        :raises NotFoundError: some ids are unknown or not readable by this user.
        """
        items: list[RemoteData] = []
        missing: list[str] = []
        for data_id in ids:
            try:
                info = await self.client.json_request("GET", f"/data/{quote(data_id, safe='')}", rate_class="api")
            except NotFoundError:
                missing.append(data_id)
                continue
            items.append(_remote_data(info, data_id))
        if missing:
            raise NotFoundError(f"no readable data with id {', '.join(missing)} (unknown, or not shared with you)",
                                404)
        return items

    async def search(
        self, *, filename: str | None = None, pattern: str | None = None, owned: bool = False
    ) -> list[RemoteData]:
        """Every data item matching a search, paging through ``/data/search`` (100 a page)."""
        params: dict[str, str] = {"count": "100"}
        if filename:
            params["filename"] = filename
        if pattern:
            params["pattern"] = pattern
        if owned:
            params["owned"] = "true"
        items: list[RemoteData] = []
        page = 1
        while True:
            answer = await self.client.json_request("GET", "/data/search", rate_class="search",
                                                    params={**params, "page": str(page)})
            data = answer.get("data")
            total = answer.get("count")
            if not isinstance(data, list) or not isinstance(total, int):
                raise ProtocolError("malformed search answer")
            items.extend(_remote_data(entry, None) for entry in data if isinstance(entry, dict))
            if not data or len(items) >= total:
                return items
            page += 1

    # -- resume --------------------------------------------------------

    async def resume(self, transfer_id: str | None = None) -> list[TransferReport]:
        """Continue unfinished transfers of this server from the journal (all, or one).

        :raises UsageError: the id is unknown, ambiguous, or belongs to another server.
        """
        reports = []
        for record in await self.resume_plan(transfer_id):
            if self._stopping:
                break
            reports.append(await self.resume_record(record))
        return reports

    async def resume_plan(self, transfer_id: str | None = None) -> list[TransferRecord]:
        """The transfers :meth:`resume` would continue, oldest first (an id may be abbreviated)."""
        journal = await self.journal()
        if transfer_id is None:
            return [r for r in await anyio.to_thread.run_sync(journal.unfinished_transfers)
                    if r.server == self.base_url]
        matches = await anyio.to_thread.run_sync(journal.find_transfers, transfer_id)
        if not matches:
            raise UsageError(f"no transfer {transfer_id!r} in the journal {journal.path}")
        if len(matches) > 1:
            raise UsageError(f"{transfer_id!r} is ambiguous: {', '.join(m.id for m in matches)}")
        if matches[0].server != self.base_url:
            raise UsageError(f"transfer {matches[0].id} belongs to {matches[0].server}; "
                             f"pass --base-url {matches[0].server}")
        return matches

    async def resume_record(self, record: TransferRecord) -> TransferReport:
        """Re-run one journaled transfer with the parameters it was started with."""
        params = record.params
        if record.kind == "upload":
            return await self.upload(params["paths"], data_type=params.get("data_type"),
                                     force=bool(record.state.get("force")), transfer_id=record.id)
        if record.kind == "download":
            return await self.download(params.get("ids", []), filename=params.get("filename"),
                                       pattern=params.get("pattern"), owned=bool(params.get("owned")),
                                       output_dir=params["output_dir"], transfer_id=record.id)
        if record.kind == "bulk":
            return await self.bulk(params["ids"], name=params.get("name"), output_dir=params["output_dir"],
                                   extract=bool(params.get("extract")), transfer_id=record.id)
        if record.kind == "sync":
            from ._sync import SyncOptions

            return await self.sync(params["root"], SyncOptions.from_params(params), transfer_id=record.id)
        raise UsageError(f"transfer {record.id} is a {record.kind!r} transfer, which this version cannot resume")

    # -- the run -------------------------------------------------------

    async def _run(
        self,
        kind: str,
        params: dict[str, Any],
        plan: Planner,
        work: Worker,
        *,
        transfer_id: str | None = None,
        extra_state: dict[str, Any] | None = None,
        leases: Sequence[str] = (),
        read_ahead: Callable[[FileRecord], bool] | None = None,
    ) -> TransferReport:
        """Plan, then work every file not yet finished, under a lease; always leave the journal consistent.

        :param read_ahead: which records are plain local files to upload: small ones are read
            ahead of their workers (:class:`ReadAhead`).
        """
        client = self.client
        if client.tokens is None:
            raise not_logged_in(self.store, self.base_url)
        journal = await self.journal()
        capabilities = await client.capabilities()
        server, username = self.base_url, client.username
        what = f"flowxfer {kind}"
        held: list[Lease] = []
        try:
            for key in leases:
                held.append(await anyio.to_thread.run_sync(
                    partial(journal.acquire_lease, key, what=what, stale_after=self.config.lease_stale_after)))
            if transfer_id is not None:
                record, lease = await anyio.to_thread.run_sync(
                    partial(journal.reopen_transfer, transfer_id, what=what,
                            stale_after=self.config.lease_stale_after))
                resumed = True
            else:
                record, lease, resumed = await anyio.to_thread.run_sync(partial(
                    journal.begin_transfer, kind, server, username, params,
                    params_key(kind, server, username, params), what=what,
                    stale_after=self.config.lease_stale_after))
        except LeaseHeld as exc:
            for other in held:
                await anyio.to_thread.run_sync(other.release)
            raise AlreadyRunning(str(exc)) from None
        held.append(lease)
        if extra_state:
            record = dataclasses.replace(record, state=await anyio.to_thread.run_sync(
                partial(journal.update_transfer_state, record.id, **extra_state)))

        client.limiter.store = partial(journal.update_buckets, server, username)
        writer = JournalWriter(journal, self.config.journal_flush_interval, self.config.journal_flush_events)
        ctx = TransferContext(
            transfer_id=record.id, client=client, journal=journal, writer=writer, config=self.config,
            capabilities=capabilities, budget=ByteBudget(self.config.byte_budget), events=self._emit,
            server=server, username=username, stopping=lambda: self._stopping,
            read_ahead=ReadAhead(read_ahead) if read_ahead is not None else None,
        )
        started = time.monotonic()
        retries_before = client.retries
        requests_before = client.limiter.requests_by_class()
        failure: BaseException | None = None
        try:
            await client.limiter.sync()  # adopt the budget other processes left us
            if resumed:
                await anyio.to_thread.run_sync(journal.reset_interrupted_files, record.id)
            await plan(ctx, record, resumed)
            summary = await anyio.to_thread.run_sync(journal.summary, record.id)
            self._emit(TransferStarted(record.id, kind, summary.files_total, summary.bytes_total, resumed,
                                       summary.files_finished, summary.bytes_done + summary.bytes_skipped))
            await self._work(ctx, work, held)
        except StopRequested:
            pass  # a wait cut short while planning: an interrupted run like any other
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(ctx, record, held, failure)
        return await self._report(ctx, record, resumed, started, retries_before, requests_before)

    async def _finish(
        self, ctx: TransferContext, record: TransferRecord, held: list[Lease], failure: BaseException | None
    ) -> None:
        journal = ctx.journal
        try:
            await ctx.writer.flush()
            await ctx.client.limiter.sync()
        except JournalError:
            if failure is None:
                raise
        summary = await anyio.to_thread.run_sync(journal.summary, record.id)
        counts = {FileState(k): v for k, v in summary.files_by_status.items()}
        interrupted = self._stopping or (failure is not None and not isinstance(failure, FlowxferError | JournalError))
        status = transfer_outcome(counts, interrupted)
        if failure is not None and status is TransferState.COMPLETED and summary.files_total == 0:
            status = TransferState.FAILED
        error = str(failure) if isinstance(failure, FlowxferError | JournalError) else None
        if failure is not None and summary.files_total == 0 and not record.state.get("planned"):
            # Planning itself failed (a bad id, a bad name): there is nothing to resume.
            await anyio.to_thread.run_sync(journal.delete_transfer, record.id)
        else:
            await anyio.to_thread.run_sync(journal.finish_transfer, record.id, status, error)
        for lease in held:
            await anyio.to_thread.run_sync(lease.release)

    async def _work(self, ctx: TransferContext, work: Worker, leases: list[Lease]) -> None:
        async with task_group() as background:
            background.start_soon(ctx.writer.run)
            background.start_soon(self._heartbeat, leases)
            background.start_soon(self._share_budget, ctx)
            with anyio.CancelScope() as scope:
                background.start_soon(self._grace_watchdog, scope)
                async with task_group() as workers:
                    send, receive = anyio.create_memory_object_stream[FileRecord](ctx.config.concurrency)
                    workers.start_soon(self._produce, ctx, send)
                    async with receive:
                        for _ in range(ctx.config.concurrency):
                            workers.start_soon(self._worker, ctx, receive.clone(), work)
            background.cancel_scope.cancel()

    async def _produce(self, ctx: TransferContext, send: ObjectSendStream[FileRecord]) -> None:
        """Feed workers from the journal a page at a time: memory stays flat for a million files."""
        async with send:
            after = 0
            while not self._stopping:
                page = await anyio.to_thread.run_sync(
                    partial(ctx.journal.files_page, ctx.transfer_id, _TODO, after_id=after, limit=500))
                if not page:
                    return
                group = ctx.config.concurrency
                for start in range(0, len(page), group):
                    records = page[start:start + group]
                    if ctx.read_ahead is not None and not self._stopping:
                        await ctx.read_ahead.read(records)
                    for record in records:
                        if self._stopping:
                            return
                        try:
                            await send.send(record)
                        except anyio.BrokenResourceError:
                            return  # every worker has returned (stopping): nobody is left to feed
                after = page[-1].id

    async def _worker(self, ctx: TransferContext, receive: ObjectReceiveStream[FileRecord], work: Worker) -> None:
        async with receive:
            async for record in receive:
                if self._stopping:
                    return
                try:
                    result = await work(ctx, record)
                except StopRequested:
                    return
                except BudgetExhausted as exc:
                    self._emit(Notice(str(exc)))
                    self._stop_reason = "budget"
                    self.stop("budget")
                    return
                except (AuthError, AlreadyRunning):
                    raise
                except FlowxferError as exc:
                    ctx.writer.batch.update_file(record.id, status=FileState.FAILED.value, error=str(exc)[:1000],
                                                 attempts=record.attempts + 1,
                                                 extra={**record.extra, "error_kind": error_kind(exc)})
                    ctx.writer.added()
                    self._emit(FileFinished(record.local_path, record.remote_name, "failed", record.size,
                                            record.data_id, str(exc)))
                    continue
                self._emit(FileFinished(result.path, result.filename, result.status, result.size, result.id,
                                        None))

    async def _grace_watchdog(self, scope: anyio.CancelScope) -> None:
        await self._stop_event.wait()
        await anyio.sleep(self.config.grace_period)
        scope.cancel()

    async def _heartbeat(self, leases: list[Lease]) -> None:
        while True:
            await anyio.sleep(self.config.heartbeat_interval)
            for lease in leases:
                await anyio.to_thread.run_sync(lease.heartbeat)

    async def _share_budget(self, ctx: TransferContext) -> None:
        while True:
            await anyio.sleep(self.config.bucket_sync_interval)
            await ctx.client.limiter.sync()

    async def _report(
        self,
        ctx: TransferContext,
        record: TransferRecord,
        resumed: bool,
        started: float,
        retries_before: int,
        requests_before: dict[str, int],
    ) -> TransferReport:
        journal = ctx.journal

        def collect() -> tuple[list[FileReport], dict[str, int], TransferRecord | None]:
            files = []
            kinds: dict[str, int] = {}
            for row in journal.iter_files(record.id):
                status = row.status.value if row.status in (FileState.DONE, FileState.SKIPPED,
                                                            FileState.FAILED) else "pending"
                path = row.local_path
                files.append(FileReport(path, row.data_id, row.remote_name, row.size, status, row.error))
                if status == "failed":
                    kinds[row.extra.get("error_kind", "other")] = kinds.get(row.extra.get("error_kind", "other"),
                                                                            0) + 1
            return files, kinds, journal.get_transfer(record.id)

        files, kinds, final = await anyio.to_thread.run_sync(collect)
        summary = await anyio.to_thread.run_sync(journal.summary, record.id)
        requests = ctx.client.limiter.requests_by_class()
        return TransferReport(
            transfer_id=record.id,
            kind=record.kind,
            status=final.status if final else "failed",
            files=files,
            bytes_transferred=ctx.counters.bytes_transferred,
            bytes_skipped=summary.bytes_skipped,
            seconds=time.monotonic() - started,
            retries=ctx.client.retries - retries_before,
            resumed=resumed,
            stop_reason=self._stop_reason if self._stopping else None,
            requests={k: v - requests_before.get(k, 0) for k, v in requests.items()},
            error_kinds=kinds,
            verified="; ".join(sorted(ctx.counters.verified)) or None,
        )


def _remote_data(info: dict[str, Any], expected_id: str | None) -> RemoteData:
    data_id = info.get("id")
    name = info.get("filename")
    size = info.get("size")
    if data_id is None or not isinstance(name, str) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"malformed data description for {expected_id or data_id!r}")
    if expected_id is not None and str(data_id) != expected_id:
        raise ProtocolError(f"asked for data {expected_id}, the server described {data_id}")
    return RemoteData(str(data_id), name, size, protocol.canonical_checksum(info.get("checksum")))


def _username_from_token(token: str) -> str:
    """The username in a JWT's claims (for journal bookkeeping only; never trusted for access)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    for key in ("username", "user", "sub", "name"):
        value = claims.get(key)
        if isinstance(value, str):
            return value
    return ""
