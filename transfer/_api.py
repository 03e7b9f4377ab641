"""The public face of the engine: :class:`Flowxfer`, one object per server.

It owns the pieces (credentials, journal, HTTP client, rate limiter) and
says what each transfer is: its parameters, how it is planned, which file
worker works it. How a transfer runs (the worker pool, leases, the journal's
last flush, the report) is the :class:`~._runner.Runner`'s. Nothing here
prints or exits: callers get a :class:`TransferReport` and progress
:mod:`events <.events>`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from flowxfer.journal import Journal, TransferRecord

from ._capcache import CapabilityCache
from ._client import Capabilities, FlowClient, check_base_url
from ._config import DEFAULT_BASE_URL, DEFAULT_POLL_INTERVAL, TransferConfig
from ._credentials import CredentialStore, Tokens, default_config_dir, unverified_claims
from ._errors import UsageError
from ._files import run_download, run_upload
from ._journal_wait import PatientJournal
from ._limiter import RateLimiter
from ._pathmap import PathMap
from ._remote import describe, search
from ._report import TransferReport
from ._runner import Runner
from ._tls import verified_context
from .events import ignore_events

if TYPE_CHECKING:
    from ._advice import DownloadAdvice
    from ._catalog import Catalog
    from ._plan import RemoteData
    from ._sync import SyncPreview
    from ._sync_samples import SampleSync
    from ._syncplan import SyncOptions
    from ._validate import SamplePlan
    from .events import ProgressCallback

__all__ = ["DEFAULT_BASE_URL", "Flowxfer"]

#: What an access token may be made of (a JWT is base64url with dots; anything printable is let through).
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


class Flowxfer:
    """Resumable, verified transfers to and from one Flow server.

    Example::

        async with Flowxfer("https://app.flow.bio/api") as fx:
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
    :param journal: a journal path, a URL (``postgresql://USER@HOST/DB``, ``sqlite:///PATH``),
        an open :class:`Journal`, or None for the default path.
    :param host_id: this host's name in a shared journal (default ``$FLOWXFER_HOST_ID``, else
        the hostname): the host column of ``jobs``, and who holds a lease.
    :param path_map: ``"FROM=TO"`` texts: journal paths under FROM are read under TO on this
        host (a shared journal, the same storage mounted elsewhere; see :mod:`._pathmap`).
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
        host_id: str | None = None,
        path_map: Sequence[str] = (),
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
        self.store = CredentialStore(Path(config_dir) if config_dir else default_config_dir())
        if token is not None and not _TOKEN_TEXT.fullmatch(token):
            # It goes into an Authorization header, where aiohttp would refuse it with a ValueError.
            raise UsageError("the access token (--token, FLOW_API_TOKEN) contains spaces or control characters")
        self._token = token
        self._journal_arg = journal
        self._host_id = host_id if host_id is not None else env.get("FLOWXFER_HOST_ID")
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self._journal_opening = anyio.Lock()
        self._ca_bundle = Path(ca_bundle) if ca_bundle else None
        self._allow_insecure_http = allow_insecure_http
        self._session = session
        self._runner = Runner(self.base_url, self.config, progress or ignore_events, self.journal)
        try:
            self._runner.paths = PathMap.parse(path_map)
        except ValueError as exc:
            raise UsageError(f"bad --path-map {exc}") from None

    # -- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> Flowxfer:
        from ._bwlimit import BandwidthSchedule

        tokens: Tokens | None
        if self._token:
            tokens = Tokens(username=_username_from_token(self._token), access_token=self._token)
        else:
            tokens = await anyio.to_thread.run_sync(self.store.load, self.base_url)
        ssl_context = None
        if self._ca_bundle is not None:
            try:
                ssl_context = await anyio.to_thread.run_sync(verified_context, self._ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot use CA bundle {self._ca_bundle}: {exc}") from None
        bandwidth = None
        if self.config.bwlimit:
            try:
                bandwidth = BandwidthSchedule.parse(self.config.bwlimit)
            except ValueError as exc:
                raise UsageError(f"bad bandwidth limit {self.config.bwlimit!r}: {exc}") from None
        runner = self._runner
        limiter = RateLimiter(
            max_wait=self.config.max_wait, bandwidth=bandwidth, events=runner.emit, pause=runner.pause
        )
        client = FlowClient(
            self.base_url,
            tokens=tokens,
            store=None if self._token else self.store,
            config=self.config,
            limiter=limiter,
            events=runner.emit,
            session=self._session,
            ssl_context=ssl_context,
            allow_insecure_http=self._allow_insecure_http,
            pause=runner.pause,
            capability_cache=CapabilityCache(self.store.config_dir),
        )
        await client.__aenter__()
        runner.attach(client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner.attached:
            await self._runner.client.aclose()
        if self._journal is not None and not isinstance(self._journal_arg, Journal):
            self._journal.close()
            self._journal = None

    @property
    def events(self) -> ProgressCallback:
        """The progress callback (may be replaced between transfers)."""
        return self._runner.events

    @events.setter
    def events(self, callback: ProgressCallback) -> None:
        self._runner.events = callback

    @property
    def client(self) -> FlowClient:
        return self._runner.client

    async def journal(self) -> Journal:
        """The journal, opened on first use (``login`` never needs it)."""
        async with self._journal_opening:  # a download's look-up may ask while the run opens it
            if self._journal is None:
                self._journal = await self._open_journal()
        return self._journal

    async def _open_journal(self) -> Journal:
        """Open the journal the caller named (or the default), in a worker thread."""
        arg = self._journal_arg
        # A string stays a string: Path() would fold "postgresql://h/db" into "postgresql:/h/db".
        location = arg if isinstance(arg, str | Path) else None
        # --max-wait bounds a database wait too, even a single call's.
        timeout = min(self.config.journal_timeout, max(1.0, self.config.max_wait or self.config.journal_timeout))
        opening = partial(Journal.open, location, host_id=self._host_id, connect_timeout=timeout)
        if self.config.max_wait is None:  # no bound given (doctor, a plain run): one attempt, 75 at once
            return await anyio.to_thread.run_sync(opening)
        return await anyio.to_thread.run_sync(  # a database away at start is waited out like one mid-run
            partial(
                PatientJournal.open,
                opening,
                max_wait=self.config.max_wait,
                stopping=lambda: self.stopping,
                on_wait=self._runner._notice_from_any_thread,
            )
        )

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking new work; in-flight requests get ``grace_period`` to finish.

        Call from the event loop's thread (a signal handler task, a callback).
        """
        self._runner.stop(reason)

    @property
    def stopping(self) -> bool:
        return self._runner.stopping

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
        return await run_upload(self._runner, paths, data_type=data_type, force=force, transfer_id=transfer_id)

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
        return await run_download(
            self._runner,
            ids,
            filename=filename,
            pattern=pattern,
            owned=owned,
            output_dir=output_dir,
            force=force,
            transfer_id=transfer_id,
        )

    async def download_advice(
        self,
        ids: Sequence[str] = (),
        *,
        filename: str | None = None,
        pattern: str | None = None,
        owned: bool = False,
    ) -> DownloadAdvice:
        """What downloading these would cost one by one and as an archive (``download --dry-run``).

        Sends only metadata requests (``GET /data/<id>``, searches).

        :raises NotFoundError: an id that does not exist or cannot be read.
        """
        from ._auto_bulk import download_advice

        return await download_advice(self._runner, ids, filename=filename, pattern=pattern, owned=owned)

    async def download_auto_bulk(
        self,
        ids: Sequence[str] = (),
        *,
        filename: str | None = None,
        pattern: str | None = None,
        owned: bool = False,
        output_dir: Path | str = ".",
        force: bool = False,
        on_part: Callable[[str, str | None], None] | None = None,
    ) -> list[TransferReport]:
        """Download, taking the archive path for the small files when :meth:`download_advice` advises it.

        More than :data:`BULK_MIN_FILES` files under :data:`BULK_SMALL_FILE`
        come as one archive (``bulk --extract``), the rest one by one.

        :param on_part: called before each transfer with its kind (``"bulk"``
            or ``"download"``) and, for the archive, why it was chosen.
        :returns: one report per transfer run (one or two).
        """
        from ._auto_bulk import download_auto_bulk

        return await download_auto_bulk(
            self._runner,
            ids,
            filename=filename,
            pattern=pattern,
            owned=owned,
            output_dir=output_dir,
            force=force,
            on_part=on_part,
        )

    async def download_executions(
        self,
        execution_ids: Sequence[str],
        *,
        output_dir: Path | str = ".",
        layout: str = "process",
        wait: bool = False,
        partial: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_wait: float | None = None,
        force: bool = False,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Download every output of pipeline executions, once they finish (``download --execution``).

        Outputs land in ``output_dir/<process>/<filename>`` (``layout="process"``)
        or ``output_dir/<filename>`` (``"flat"``; a name two outputs share gets
        ``(data id)``); with several executions each has its own folder first.
        Running the same call again fetches only what is new or changed.
        The report's ``extra["executions"]`` holds each one's identifier and status.

        :param wait: poll each execution (``api`` budget, every ``poll_interval``
            seconds) until it is ``OK``, ``ERROR`` or ``CANCELED``; each poll is
            journaled, so the same call after a crash goes on waiting.
        :param partial: download what a failed or unfinished execution has.
        :param max_wait: stop waiting after this many seconds: the report is
            ``interrupted`` with ``stop_reason == "max-wait"``; call again to go on.
        :raises ExecutionFailed: an execution ended ``ERROR`` or ``CANCELED`` (nothing downloaded).
        :raises ExecutionUnfinished: an execution is still running and ``wait`` is off.
        :raises NotFoundError: an execution is unknown or not visible to this user.
        """
        from ._executions import run_execution_download

        return await run_execution_download(
            self._runner,
            execution_ids,
            output_dir=output_dir,
            layout=layout,
            wait=wait,
            partial_results=partial,
            poll_interval=poll_interval,
            max_wait=max_wait,
            force=force,
            transfer_id=transfer_id,
        )

    async def bulk_executions(
        self,
        execution_ids: Sequence[str],
        *,
        auto: bool = False,
        output_dir: Path | str = ".",
        layout: str = "process",
        wait: bool = False,
        partial: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_wait: float | None = None,
        force: bool = False,
        name: str | None = None,
        job_poll_interval: float = 1.0,
        job_timeout: float | None = None,
    ) -> list[TransferReport]:
        """:meth:`download_executions` with the outputs fetched as one server-built archive (``bulk --execution``).

        The outputs land where :meth:`download_executions` puts them (same
        layout, same-named outputs kept apart); those already there, identical,
        are not asked for again. Built on ``POST /downloads`` with the outputs'
        data ids, so it works against hosted Flow too.

        :param auto: archive only the small outputs, and only when there are more
            than ``download --auto-bulk``'s threshold of them; the rest come one by one.
        :param name: the archive's name (default ``flow-results.zip``).
        :returns: one report per transfer run: the ``results`` one, then the
            ``bulk`` one (when anything was archived), then a ``results`` one
            for any output the archive did not hold under its expected name.
        :raises ExecutionFailed, ExecutionUnfinished, NotFoundError: as :meth:`download_executions`.
        """
        from ._results_bulk import run_results_bulk

        return await run_results_bulk(
            self._runner,
            execution_ids,
            mode="auto" if auto else "all",
            output_dir=output_dir,
            layout=layout,
            wait=wait,
            partial_results=partial,
            poll_interval=poll_interval,
            max_wait=max_wait,
            force=force,
            name=name,
            job_poll_interval=job_poll_interval,
            job_timeout=job_timeout,
        )

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

        return await run_bulk(
            self._runner,
            ids,
            name=name,
            output_dir=output_dir,
            extract=extract,
            keep_archive=keep_archive,
            poll_interval=poll_interval,
            job_timeout=job_timeout,
            known=known,
            transfer_id=transfer_id,
        )

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
        from ._sync import run_sync
        from ._syncplan import SyncOptions

        return await run_sync(self._runner, root, options or SyncOptions(), transfer_id=transfer_id)

    async def sync_samples(
        self, root: str | os.PathLike[str], samples: SampleSync, options: SyncOptions | None = None
    ) -> list[TransferReport]:
        """``sync --samples``: once the run is ready, its FASTQs become samples and the rest is synced.

        Every sample is checked before any byte moves. Returns the sync's report
        (``"waiting"`` while the run is not ready: then nothing else), then the samples'.

        :raises SheetError: the run's sample sheet or FASTQs, or the samples, have problems (nothing sent).
        """
        from ._sync_samples import sync_samples
        from ._syncplan import SyncOptions

        return await sync_samples(self._runner, root, options or SyncOptions(), samples)

    async def preview_sync(self, root: str | os.PathLike[str], options: SyncOptions | None = None) -> SyncPreview:
        """What :meth:`sync` would send and how long the rate limits make it (``sync --dry-run``); sends nothing."""
        from ._sync import preview_sync
        from ._syncplan import SyncOptions

        return await preview_sync(self._runner, root, options or SyncOptions())

    # -- samples (issue 19) ---------------------------------------------

    async def upload_samples(
        self,
        sheet: str | os.PathLike[str] | None = None,
        *,
        sample_type: str,
        sample: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        skip_invalid: bool = False,
        stop_on_error: bool = False,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Make one Flow sample per row of a flowbio sample sheet (or of ``sample``), exactly once.

        Every row is checked against the server's catalog and the disk first;
        samples go up concurrently, each one's files in order. Running it again
        creates nothing: samples made before are ``skipped`` with their ids.
        The report's ``extra["samples"]`` holds each row's outcome.

        :param sample: one sample instead of a sheet: ``name``, ``reads1``, optional
            ``reads2``, ``project``, ``organism`` and ``metadata`` (a dict).
        :param run: a run folder's samples instead (``root``, ``sample_sheet``, ``lanes``, ``project``,
            ``organism``), as :meth:`sync_samples` makes them.
        :param skip_invalid: send the valid rows when some are not (they are reported).
        :param stop_on_error: stop at the first sample that fails.
        :raises SheetError: problems with the sheet or its rows (every one; nothing sent).
        """
        from ._samples import upload_samples

        return await upload_samples(
            self._runner,
            sheet=sheet,
            sample=sample,
            run=run,
            sample_type=sample_type,
            skip_invalid=skip_invalid,
            stop_on_error=stop_on_error,
            transfer_id=transfer_id,
        )

    async def check_samples(
        self,
        sheet: str | os.PathLike[str] | None = None,
        *,
        sample_type: str,
        sample: Mapping[str, Any] | None = None,
    ) -> SamplePlan:
        """What :meth:`upload_samples` would send, checked against the server's catalog and the disk (sends nothing)."""
        from ._samples_rows import check_sheet

        return await check_sheet(self._runner, sheet, sample, sample_type)

    async def upload_multiplexed(
        self,
        reads1: str | os.PathLike[str],
        reads2: str | os.PathLike[str] | None = None,
        *,
        annotation: str | os.PathLike[str],
        reject_warnings: bool = False,
        transfer_id: str | None = None,
    ) -> TransferReport:
        """Multiplexed reads and their annotation sheet (the sheet first, then reads1, then reads2).

        The report's ``extra`` holds ``annotation_id``, ``data_ids``, the sheet's
        accepted ``warnings`` and, when it was refused, its ``problems``.

        :param reject_warnings: refuse the upload when the sheet has warnings (accepted by default).
        :raises UsageError: a file is missing or unreadable (nothing sent).
        """
        from ._multiplexed import upload_multiplexed

        return await upload_multiplexed(
            self._runner, reads1, reads2, annotation, reject_warnings=reject_warnings, transfer_id=transfer_id
        )

    async def samples_data(
        self, samples: Sequence[str] = (), projects: Sequence[str] = (), *, raw_only: bool = False
    ) -> list[str]:
        """The data ids of these samples, and of every sample of these projects (for :meth:`download`).

        Every file related to each sample: its raw reads and the outputs of the
        executions run on it; with ``raw_only``, its reads alone.

        :raises NotFoundError: a sample or project that is unknown or not the caller's.
        """
        from ._samples_remote import data_of_samples

        return await data_of_samples(self._runner.require_login(), samples, projects, raw_only=raw_only)

    async def samples_catalog(self) -> Catalog:
        """The server's sample types, metadata attributes, organisms and the caller's projects."""
        from ._samples_remote import fetch_catalog

        return await fetch_catalog(self._runner.require_login())

    async def describe(self, ids: Sequence[str]) -> list[RemoteData]:
        """``GET /data/<id>`` for each id; every unknown or unreadable id is named at once.

        :raises NotFoundError: some ids are unknown or not readable by this user.
        """
        return await describe(self.client, ids)

    async def search(
        self, *, filename: str | None = None, pattern: str | None = None, owned: bool = False
    ) -> list[RemoteData]:
        """Every data item matching a search, paging through ``/data/search`` (100 a page)."""
        return await search(self.client, filename=filename, pattern=pattern, owned=owned)

    # -- resume --------------------------------------------------------

    async def resume(self, transfer_id: str | None = None) -> list[TransferReport]:
        """Continue unfinished transfers of this server from the journal (all, or one).

        :raises UsageError: the id is unknown, ambiguous, or belongs to another server.
        """
        from ._resume import resume_all

        return await resume_all(self._runner, transfer_id)

    async def resume_plan(self, transfer_id: str | None = None) -> list[TransferRecord]:
        """The transfers :meth:`resume` would continue, oldest first (an id may be abbreviated)."""
        from ._resume import resume_plan

        return await resume_plan(self._runner, transfer_id)

    async def resume_record(self, record: TransferRecord) -> TransferReport:
        """Re-run one journaled transfer with the parameters it was started with."""
        from ._resume import resume_record

        return await resume_record(self._runner, record)


def _username_from_token(token: str) -> str:
    """The username in a JWT's claims (for journal bookkeeping only; never trusted for access)."""
    claims = unverified_claims(token) or {}
    for key in ("username", "user", "sub", "name"):
        value = claims.get(key)
        if isinstance(value, str):
            return value
    return ""
