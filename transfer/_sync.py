"""``sync DIR``: upload what is new or changed in a run folder, once it is ready.

A sync is planned by one streaming walk of the folder (never the whole tree
in memory: one folder's listing at a time, decisions in batches against the
journal's inventory), then worked like any upload. The pieces:

- **readiness**: a marker file (``--ready-marker``) must exist, and with
  ``--min-age`` a file must have been left alone for that long (its mtime
  *and* ctime: ctime cannot be set back by a copy that preserves mtimes);
- **change detection** (:func:`compare`): a file whose size and mtime match
  what the inventory recorded when it was uploaded is unchanged; same size
  but another mtime is decided by its checksum; anything else is uploaded
  as a new data item, the old id recorded as superseded;
- **remote names** (:func:`remote_name_for`): the basename, or the relative
  path flattened with ``--name-from-path``; clashes (case-insensitive, as
  Flow's archives judge them) and names Flow refuses are one planning error
  listing every one before any byte moves;
- **packing** (:mod:`._packing`): files under ``--pack-small`` go into one
  deterministic tar per folder;
- **sharing**: each uploaded item is granted to the ``--share`` targets
  through the permissions API, each grant journaled as a step, before the
  item counts as done.

Unchanged files leave no row in the journal (a million-file folder synced
every five minutes must not grow it by a million rows each time); the
report counts them instead.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from flowxfer import protocol
from flowxfer.journal import (
    FileRecord,
    FileState,
    InventoryRecord,
    Journal,
    JournalBatch,
    NewFile,
    PackMember,
    PackRecord,
    TransferRecord,
)

from ._download import local_checksum
from ._errors import LocalIOError, RejectedError, SourceChangedError, UsageError
from ._globs import PathFilter
from ._names import flatten_relative_path, remote_name_problem
from ._packing import PackPlan, TarSource, member_paths, members_in_folder, plan_packs
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext
from ._tokenbucket import TokenBucket
from ._upload import UploadOptions, UploadResult, upload_source
from ._walk import Entry, walk
from ._workers import remember_upload, upload_file, upload_verification
from .events import FilesPlanned, FileStarted, Notice

__all__ = [
    "ShareGrant",
    "SyncOptions",
    "SyncPreview",
    "SyncSummary",
    "Verdict",
    "compare",
    "parse_share",
    "preview_sync",
    "remote_name_for",
    "run_sync",
]

LEVELS = {"read": 1, "edit": 2, "share": 3}
#: Decisions against the inventory are taken this many files at a time (one query each).
_BATCH = 500
#: How many paths a report or an error lists before it says "and N more".
_SHOWN = 50


# --- options -------------------------------------------------------------------


@dataclass(frozen=True)
class ShareGrant:
    """``--share group:NAME=LEVEL`` / ``user:NAME=LEVEL``: a grant made on every uploaded item."""

    kind: str
    name: str
    level: int

    def __str__(self) -> str:
        level = {v: k for k, v in LEVELS.items()}[self.level]
        return f"{self.kind}:{self.name}={level}"


def parse_share(text: str) -> ShareGrant:
    """Parse ``group:NAME=read|edit|share`` or ``user:NAME=...`` (a level may also be 1, 2 or 3).

    :raises ValueError: for anything else.
    """
    kind, colon, rest = text.partition(":")
    name, equals, level_text = rest.rpartition("=")
    if not colon or not equals or kind not in ("group", "user") or not name:
        raise ValueError(f"expected group:NAME=LEVEL or user:NAME=LEVEL, not {text!r}")
    level = LEVELS.get(level_text.lower())
    if level is None and level_text in ("1", "2", "3"):
        level = int(level_text)
    if level is None:
        raise ValueError(f"the level in {text!r} must be read, edit or share")
    return ShareGrant(kind, name, level)


@dataclass(frozen=True)
class SyncOptions:
    """What ``sync`` was asked to do (everything but the folder).

    :param rules: ``(kind, pattern)`` include/exclude rules in command-line
        order; the last matching rule decides (:class:`~._globs.PathFilter`).
    :param ready_marker: a path relative to the folder that must exist
        before anything is uploaded.
    :param min_age: seconds a file must have been left alone (mtime and ctime).
    :param name_from_path: name files by their flattened relative path.
    :param pack_small: pack files smaller than this many bytes into tars (None: never).
    :param shares: grants made on every uploaded item.
    """

    rules: tuple[tuple[str, str], ...] = ()
    ready_marker: str | None = None
    min_age: float | None = None
    name_from_path: bool = False
    pack_small: int | None = None
    shares: tuple[ShareGrant, ...] = ()
    data_type: str | None = None

    def params(self, root: str) -> dict[str, Any]:
        """What makes two syncs "the same sync" (the second continues the first)."""
        return {"root": root, "rules": [list(r) for r in self.rules], "ready_marker": self.ready_marker,
                "min_age": self.min_age, "name_from_path": self.name_from_path, "pack_small": self.pack_small,
                "shares": [dataclasses.asdict(s) for s in self.shares], "data_type": self.data_type}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SyncOptions:
        return cls(
            rules=tuple((str(k), str(p)) for k, p in params.get("rules", [])),
            ready_marker=params.get("ready_marker"), min_age=params.get("min_age"),
            name_from_path=bool(params.get("name_from_path")), pack_small=params.get("pack_small"),
            shares=tuple(ShareGrant(**s) for s in params.get("shares", [])), data_type=params.get("data_type"),
        )


# --- the pure decisions ----------------------------------------------------------


class Verdict(enum.Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    IN_DOUBT = "in doubt"  # same size, other mtime: the checksum decides


def compare(size: int, mtime_ns: int, known: InventoryRecord | None) -> Verdict:
    """Is a local file what the inventory says was uploaded from it?"""
    if known is None:
        return Verdict.NEW
    if known.size != size:
        return Verdict.CHANGED
    if known.mtime_ns == mtime_ns:
        return Verdict.UNCHANGED
    return Verdict.IN_DOUBT if known.checksum else Verdict.CHANGED


def remote_name_for(rel: str, name_from_path: bool) -> tuple[str | None, str | None]:
    """The Flow filename of a file at ``rel`` (relative to the synced folder), or why there is none.

    :returns: ``(name, None)`` or ``(None, problem)``.
    """
    if not protocol.is_utf8(rel):
        return None, "the path is not valid UTF-8"
    if name_from_path:
        try:
            return flatten_relative_path(rel), None
        except ValueError as exc:
            return None, str(exc)
    name = rel.rsplit("/", 1)[-1]
    problem = remote_name_problem(name)
    return (None, problem) if problem else (name, None)


def stable(mtime_ns: int, ctime_ns: int, now: float, min_age: float | None) -> bool:
    """Whether a file was left alone for ``min_age`` seconds (always, without ``min_age``)."""
    if not min_age:
        return True
    return now - max(mtime_ns, ctime_ns) / 1e9 >= min_age


# --- planning ------------------------------------------------------------------------


@dataclass
class SyncSummary:
    """What planning found. Lists of paths are capped at :data:`_SHOWN` entries."""

    files: int = 0
    bytes: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    unchanged_bytes: int = 0
    packs: int = 0
    packed_files: int = 0
    waiting: int = 0
    waiting_examples: list[str] = field(default_factory=list)
    deleted: int = 0
    deleted_examples: list[str] = field(default_factory=list)

    @property
    def uploads(self) -> int:
        """New uploads (each one request of the ``upload`` class)."""
        return self.files + self.packs

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RowSink = Callable[[list[tuple[NewFile, str | None]]], None]
MemberSink = Callable[[str, PackPlan], None]


class _Planner:
    """The walk's consumer: decides file by file, in batches, and hands rows to the sinks.

    Runs in a worker thread (stat calls, journal reads). ``rows`` and
    ``members`` receive what must be uploaded; None for a dry run.
    """

    def __init__(self, journal: Journal, server: str, username: str, root: str, options: SyncOptions,
                 now: float, rows: RowSink | None, members: MemberSink | None) -> None:
        self.journal, self.server, self.username = journal, server, username
        self.root = root
        self.root_name = os.path.basename(root.rstrip("/")) or "root"
        self.options = options
        self.now = now
        self.rows, self.members = rows, members
        self.summary = SyncSummary()
        self.problems: list[str] = []
        self.problem_count = 0
        # Names seen so far, as hashes (a million names as str would cost ~100 MB): a repeated hash
        # sends the planner back for a second walk that finds the actual clashing paths.
        self.seen: set[int] = set()
        self.repeated: set[int] = set()
        self._singles: list[tuple[Entry, str]] = []
        self._remember = JournalBatch()

    # -- names -------------------------------------------------------------

    def _names_of(self, rel_dir: str, files: list[Entry]) -> tuple[list[tuple[Entry, str]], list[PackPlan],
                                                                   list[Entry]]:
        """The folder's files to send singly (with names), its tars, and its files still waiting."""
        opts = self.options
        waiting: list[Entry] = []
        small: list[Entry] = []
        singles: list[tuple[Entry, str]] = []
        small_unsettled = False
        for entry in files:
            settled = stable(entry.mtime_ns, entry.ctime_ns, self.now, opts.min_age)
            if opts.pack_small is not None and entry.size < opts.pack_small:
                small.append(entry)
                small_unsettled = small_unsettled or not settled
                continue
            if not settled:
                waiting.append(entry)
                continue
            name, problem = remote_name_for(entry.rel, opts.name_from_path)
            if problem is not None or name is None:
                self._problem(f"{entry.path}: {problem}")
                continue
            singles.append((entry, name))
        packs: list[PackPlan] = []
        if small_unsettled:
            # A folder whose small files are still being written is packed once they all are
            # stable, not tar by tar as they settle (each partial tar would be superseded).
            waiting.extend(small)
        elif small:
            try:
                packs = plan_packs(self.root_name, rel_dir, [PackMember(e.rel, e.path, e.size, e.mtime_ns)
                                                             for e in small])
            except ValueError as exc:
                self._problem(f"{os.path.join(self.root, rel_dir)}: cannot pack its small files: {exc}")
        return singles, packs, waiting

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _SHOWN:
            self.problems.append(text)

    def _note_name(self, name: str) -> None:
        key = hash(name.casefold())
        if key in self.seen:
            self.repeated.add(key)
        else:
            self.seen.add(key)

    # -- the walk -------------------------------------------------------------

    def run(self, skip: frozenset[str]) -> SyncSummary:
        path_filter = PathFilter(self.options.rules)
        for rel_dir, abs_dir, files in walk(self.root, path_filter, skip):
            singles, packs, waiting = self._names_of(rel_dir, files)
            for entry in waiting:
                self.summary.waiting += 1
                if len(self.summary.waiting_examples) < _SHOWN:
                    self.summary.waiting_examples.append(entry.path)
            for entry, name in singles:
                self._note_name(name)
                self._singles.append((entry, name))
                if len(self._singles) >= _BATCH:
                    self._decide_singles()
            for plan in packs:
                self._note_name(plan.remote_name)
            if packs:
                self._decide_packs(abs_dir, packs)
        self._decide_singles()
        if self.repeated:
            self._find_clashes(path_filter, skip)
        if self.problem_count:
            shown = self.problems + ([f"... and {self.problem_count - len(self.problems)} more"]
                                     if self.problem_count > len(self.problems) else [])
            hint = ("" if self.options.name_from_path else
                    "; --name-from-path names files by their relative path (Fastq/L001/x.fq.gz -> "
                    "Fastq__L001__x.fq.gz)")
            raise UsageError("these files cannot be synced as named (nothing was sent):\n  " + "\n  ".join(shown)
                             + f"\n(rename or --exclude them{hint})")
        if self.rows is not None and len(self._remember):
            self.journal.commit(self._remember)
        self._find_deleted()
        return self.summary

    def _find_clashes(self, path_filter: PathFilter, skip: frozenset[str]) -> None:
        """Second walk, only when a name hash repeated: list every path behind each clashing name."""
        holders: dict[str, list[str]] = {}
        for rel_dir, abs_dir, files in walk(self.root, path_filter, skip):
            singles, packs, _ = self._names_of(rel_dir, files)
            named = [(name, entry.path) for entry, name in singles]
            named += [(plan.remote_name, f"{abs_dir}/ (small files packed as {plan.remote_name})") for plan in packs]
            for name, path in named:
                if hash(name.casefold()) in self.repeated:
                    holders.setdefault(name.casefold(), []).append(path)
        for name, paths in sorted(holders.items()):
            if len(paths) > 1:
                self._problem(f"{len(paths)} files would be named {name!r} on Flow: " + ", ".join(paths))

    # -- decisions -------------------------------------------------------------

    def _decide_singles(self) -> None:
        if not self._singles:
            return
        known = self.journal.lookup_inventory(self.server, self.username, "up",
                                              [(e.path, name) for e, name in self._singles])
        rows: list[tuple[NewFile, str | None]] = []
        for entry, name in self._singles:
            record = known.get((entry.path, name))
            verdict = compare(entry.size, entry.mtime_ns, record)
            if verdict is Verdict.IN_DOUBT:
                assert record is not None
                try:
                    same = local_checksum(Path(entry.path)) == record.checksum
                except OSError:
                    same = False
                verdict = Verdict.UNCHANGED if same else Verdict.CHANGED
                if same:
                    # Touched but identical: remember the new mtime so the next run need not hash it.
                    self._remember.remember(dataclasses.replace(record, mtime_ns=entry.mtime_ns))
            if verdict is Verdict.UNCHANGED:
                self.summary.unchanged += 1
                self.summary.unchanged_bytes += entry.size
                continue
            extra: dict[str, Any] = {}
            if record is not None:
                self.summary.changed += 1
                extra["superseded"] = [record.data_id, *record.superseded]
            else:
                self.summary.new += 1
            self.summary.files += 1
            self.summary.bytes += entry.size
            rows.append((NewFile(entry.path, name, entry.size, entry.mtime_ns, extra=extra), None))
        self._singles.clear()
        if rows and self.rows is not None:
            self.rows(rows)

    def _decide_packs(self, abs_dir: str, plans: list[PackPlan]) -> None:
        paths = [f"{abs_dir}/{plan.remote_name}" for plan in plans]
        known = self.journal.lookup_packs(self.server, self.username, paths)
        rows: list[tuple[NewFile, str | None]] = []
        for path, plan in zip(paths, plans, strict=True):
            record = known.get(path)
            if record is not None and record.manifest == plan.manifest:
                self.summary.unchanged += len(plan.members)
                self.summary.unchanged_bytes += plan.data_bytes
                continue
            extra: dict[str, Any] = {"pack": plan.manifest, "members": len(plan.members),
                                     "data_bytes": plan.data_bytes}
            if record is not None:
                self.summary.changed += len(plan.members)
                extra["superseded"] = [record.data_id, *record.superseded]
            else:
                self.summary.new += len(plan.members)
            self.summary.packs += 1
            self.summary.packed_files += len(plan.members)
            self.summary.bytes += plan.size
            if self.members is not None:
                self.members(path, plan)
            rows.append((NewFile(path, plan.remote_name, plan.size, None, extra=extra), plan.manifest))
        if rows and self.rows is not None:
            self.rows(rows)

    def _find_deleted(self) -> None:
        """Files uploaded from this folder earlier that are gone locally: reported, never deleted remotely."""
        prefix = self.root.rstrip("/") + "/"

        def gone(path: str) -> None:
            if not os.path.lexists(path):
                self.summary.deleted += 1
                if len(self.summary.deleted_examples) < _SHOWN:
                    self.summary.deleted_examples.append(path)

        for record in self.journal.iter_inventory(self.server, self.username, "up", prefix):
            gone(record.local_path)
        for pack in self.journal.iter_packs(self.server, self.username, prefix):
            for path in member_paths(pack.local_path, self.journal.pack_members(pack.manifest)):
                gone(path)


def plan_sync(journal: Journal, server: str, username: str, root: str, options: SyncOptions, *, now: float,
              rows: RowSink | None, members: MemberSink | None, skip: frozenset[str] = frozenset()) -> SyncSummary:
    """Walk ``root`` and decide what to upload (blocking: run it in a worker thread).

    :param rows: receives the rows to upload, a batch at a time (None: a dry run).
    :param members: receives each tar's virtual path and plan (its member list) before its row.
    :raises UsageError: names that clash or that Flow refuses, listed all at once.
    """
    return _Planner(journal, server, username, root, options, now, rows, members).run(skip)


# --- previews ------------------------------------------------------------------------


@dataclass
class SyncPreview:
    """``sync --dry-run``: the plan and what it costs against the rate limits.

    :ivar requests: requests by rate-limit class (``upload``: one per new
        upload; continuing chunks are not counted; ``api``: the grants).
    :ivar waits: seconds the buckets would make the run wait, by class.
    :ivar seconds_bandwidth: seconds the bandwidth limit alone needs (None: unlimited).
    """

    root: str
    ready: bool
    waiting_for: str | None
    summary: SyncSummary
    requests: dict[str, int]
    waits: dict[str, float]
    limits: dict[str, str]
    seconds_bandwidth: float | None

    @property
    def seconds(self) -> float:
        return max([*self.waits.values(), self.seconds_bandwidth or 0.0])

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": True, "root": self.root, "ready": self.ready, "waiting_for": self.waiting_for,
                **self.summary.to_json(), "requests": self.requests, "waits": self.waits, "limits": self.limits,
                "seconds_bandwidth": self.seconds_bandwidth, "seconds": self.seconds}


def _resolve_root(root: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(path):
        raise UsageError(f"{root}: not a folder" if os.path.exists(path) else f"{root}: no such folder")
    return path


def _not_ready(root: str, options: SyncOptions) -> str | None:
    """The marker a run folder is still waiting for, or None."""
    if options.ready_marker and not os.path.isfile(os.path.join(root, options.ready_marker)):
        return options.ready_marker
    return None


def _journal_files(journal: Journal) -> frozenset[str]:
    """The journal's own files: never synced, even when the journal lives inside the folder."""
    base = str(journal.path.resolve())
    return frozenset({base, base + "-wal", base + "-shm", base + "-journal"})


async def preview_sync(runner: Runner, root: str | os.PathLike[str], options: SyncOptions) -> SyncPreview:
    """The plan of a sync and its cost, sending nothing (the journal is only read, buckets aside)."""
    path = await anyio.to_thread.run_sync(_resolve_root, root)
    client = runner.require_login()
    journal = await runner.journal()
    marker = await anyio.to_thread.run_sync(_not_ready, path, options)
    summary = await anyio.to_thread.run_sync(partial(
        plan_sync, journal, runner.base_url, client.username, path, options, now=time.time(), rows=None, members=None,
        skip=_journal_files(journal)))
    requests = {"upload": summary.uploads, "api": summary.uploads * len(options.shares)}
    await runner.adopt_budget(journal)  # what other runs left of the hourly budgets
    limiter = client.limiter
    now = time.time()
    waits: dict[str, float] = {}
    limits: dict[str, str] = {}
    for name, count in requests.items():
        bucket = TokenBucket.from_state(limiter.bucket(name).to_state())
        waits[name] = round(bucket.reserve(count, now), 1) if count else 0.0
        limits[name] = limiter.describe(name)
    seconds_bandwidth = None
    if limiter.bandwidth is not None:
        from datetime import datetime

        rate = limiter.bandwidth.rate_at(datetime.now())
        if rate:
            seconds_bandwidth = round(summary.bytes / rate, 1)
    return SyncPreview(path, marker is None, marker, summary, requests, waits, limits, seconds_bandwidth)


# --- the run -------------------------------------------------------------------------


#: Members of the tars a run keeps in memory from planning to upload (:class:`_PlannedPacks`).
_HANDED_MEMBERS = 25_000


class _PlannedPacks:
    """The tars this run planned, handed to their uploads as planned (layout included).

    An upload otherwise reads its member list back from the journal and lays
    the tar out again: for the first tars of a 10,000-file folder, work done
    on the client's one busy core just before the first byte, and done twice.
    The journal stays the record (a resume, or a tar beyond the bound, reads it);
    the bound keeps memory flat for a million small files. A plan is found by
    its tar's virtual path (which names its folder) and manifest together.
    """

    def __init__(self, limit: int) -> None:
        self._plans: dict[tuple[str, str], PackPlan] = {}
        self._room = limit

    def keep(self, path: str, plan: PackPlan) -> None:
        if len(plan.members) <= self._room:
            self._plans[(path, plan.manifest)] = plan
            self._room -= len(plan.members)

    def take(self, path: str, manifest: str) -> PackPlan | None:
        plan = self._plans.pop((path, manifest), None)
        if plan is not None:
            self._room += len(plan.members)
        return plan


async def run_sync(runner: Runner, root: str | os.PathLike[str], options: SyncOptions, *,
                   transfer_id: str | None = None) -> TransferReport:
    """Sync a run folder (see :meth:`Flowxfer.sync`)."""
    path = await anyio.to_thread.run_sync(_resolve_root, root)
    marker = await anyio.to_thread.run_sync(_not_ready, path, options)
    if marker is not None:
        return TransferReport(transfer_id="", kind="sync", status="waiting", files=[], bytes_transferred=0,
                              bytes_skipped=0, seconds=0.0, retries=0, extra={"waiting_for": marker, "root": path})
    found = SyncSummary()
    planned = _PlannedPacks(_HANDED_MEMBERS)

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        nonlocal found
        journal = ctx.journal
        generation = int(record.state.get("plan_gen", 0)) + 1
        await anyio.to_thread.run_sync(partial(journal.update_transfer_state, record.id, plan_gen=generation))

        def rows(batch: list[tuple[NewFile, str | None]]) -> None:
            journal.upsert_planned_files(record.id, batch, generation)

        def members(path: str, pack: PackPlan) -> None:
            journal.add_pack_members(pack.manifest, pack.members)
            planned.keep(path, pack)

        try:
            found = await anyio.to_thread.run_sync(partial(
                plan_sync, journal, ctx.server, ctx.username, path, options, now=time.time(), rows=rows,
                members=members, skip=_journal_files(journal)))
        except BaseException:
            with anyio.CancelScope(shield=True):
                # Nothing planned by a failed planning may be worked, now or by a later resume.
                await anyio.to_thread.run_sync(journal.drop_unplanned_files, record.id, -1)
            raise
        await anyio.to_thread.run_sync(journal.drop_unplanned_files, record.id, generation)
        runner.emit(FilesPlanned(found.files + found.packs, found.bytes))
        if found.waiting:
            runner.emit(Notice(f"{found.waiting} file(s) not yet stable (--min-age {options.min_age:g} s); "
                            "a later run uploads them"))
        if found.deleted:
            runner.emit(Notice(f"{found.deleted} file(s) uploaded earlier are gone locally (kept on Flow), e.g. "
                            + ", ".join(found.deleted_examples[:3])))

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        return await _sync_one(ctx, record, options, planned)

    report = await runner.run("sync", options.params(path), plan, work, transfer_id=transfer_id,
                           leases=[f"sync:{path}"], read_ahead=plain_and_unsent)
    report.bytes_skipped += found.unchanged_bytes
    report.extra.update({
        "root": path, "unchanged": found.unchanged, "unchanged_bytes": found.unchanged_bytes,
        "packs": found.packs, "packed_files": found.packed_files, "waiting": found.waiting,
        "deleted_locally": found.deleted, "deleted_examples": found.deleted_examples,
    })
    if report.status == "completed" and not report.files:
        # Nothing to do: leave no trace, or cron every five minutes fills the journal with empty runs.
        journal = await runner.journal()
        await anyio.to_thread.run_sync(journal.delete_transfer, report.transfer_id)
    return report


def plain_and_unsent(record: FileRecord) -> bool:
    """A file (not a tar of a folder's small files) with nothing sent yet: worth reading ahead."""
    return not record.data_id and "pack" not in record.extra


async def _sync_one(ctx: TransferContext, record: FileRecord, options: SyncOptions,
                    planned: _PlannedPacks) -> FileReport:
    """Upload one file or tar, grant it to the share targets, then journal it done (in that order)."""
    ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
    manifest = record.extra.get("pack")
    # Taken whatever happens next, so a tar sent by an earlier run does not hold its room.
    pack = planned.take(record.local_path, str(manifest)) if manifest else None
    if record.extra.get("uploaded") and record.data_id:
        result = UploadResult(record.data_id, record.checksum)  # sent by an earlier run; grants were pending
    else:
        if manifest:
            result = await _upload_pack(ctx, record, str(manifest), options, pack)
        else:
            record, result = await upload_file(ctx, record, UploadOptions(data_type=options.data_type),
                                               partial(_check_settled, options))
        if options.shares:
            # Grants follow: make "sent" durable first, so a crash before they are all made
            # resumes with the grants instead of uploading the item again.
            ctx.writer.batch.update_file(record.id, data_id=result.data_id, checksum=result.checksum,
                                         bytes_done=record.size, extra={**record.extra, "uploaded": True})
            ctx.writer.added()
            await ctx.writer.flush()
            record = dataclasses.replace(record, data_id=result.data_id, checksum=result.checksum,
                                         extra={**record.extra, "uploaded": True})
            record = await _grant(ctx, record, result.data_id, options.shares)
    if manifest:
        await anyio.to_thread.run_sync(ctx.journal.remember_pack, PackRecord(
            ctx.server, ctx.username, record.local_path, record.remote_name, str(manifest), result.data_id,
            record.size, result.checksum, int(record.extra.get("members", 0)),
            tuple(record.extra.get("superseded", ()))))
        batch = ctx.writer.batch
        batch.update_file(record.id, status=FileState.DONE.value, data_id=result.data_id, bytes_done=record.size,
                          checksum=result.checksum, error=None)
        batch.verify_chunks(record.id)
        ctx.writer.added()
    else:
        assert record.mtime_ns is not None
        remember_upload(ctx, record, result, record.mtime_ns)
    ctx.counters.verified.add(upload_verification(ctx.capabilities))
    return FileReport(record.local_path, result.data_id, record.remote_name, record.size, "done")


def _check_settled(options: SyncOptions, record: FileRecord, st: os.stat_result) -> None:
    """A file changed since it was planned is uploaded now only if it has been left alone for ``--min-age``.

    :raises SourceChangedError: it is still being written; a later run takes it.
    """
    if not stable(st.st_mtime_ns, st.st_ctime_ns, time.time(), options.min_age):
        raise SourceChangedError(f"{record.local_path} changed since it was planned and has not been "
                                 f"left alone for --min-age {options.min_age:g} s yet; a later run takes it")


async def _upload_pack(ctx: TransferContext, record: FileRecord, manifest: str, options: SyncOptions,
                       planned: PackPlan | None) -> UploadResult:
    """Upload a packed tar, generated from its members as it goes (resumable mid-tar).

    :param planned: the tar as this run planned it, or None: read from the journal.
    """
    if planned is not None:
        source = TarSource(planned.members, planned.layout)
    else:
        members = await anyio.to_thread.run_sync(ctx.journal.pack_members, manifest)
        if not members:
            raise LocalIOError(f"{record.remote_name}: its member list is missing from the journal; "
                               "the next sync packs the folder again")
        source = TarSource(members_in_folder(record.local_path, members))
    if source.size != record.size:
        raise LocalIOError(f"{record.remote_name}: the tar would be {source.size} bytes, planned "
                           f"{record.size}; the next sync packs the folder again")
    try:
        return await upload_source(ctx, record, source, UploadOptions(data_type=options.data_type,
                                                                      is_directory=True))
    except SourceChangedError as exc:
        raise SourceChangedError(f"{exc}; the next sync packs the folder again") from None


async def _grant(ctx: TransferContext, record: FileRecord, data_id: str,
                 shares: Sequence[ShareGrant]) -> FileRecord:
    """``PUT /data/<id>/permissions`` for each grant not yet journaled as made."""
    done = list(record.extra.get("shared", []))
    for grant in shares:
        if str(grant) in done:
            continue
        try:
            await ctx.client.json_request("PUT", f"/data/{quote(data_id, safe='')}/permissions",
                                          rate_class="api", json_body={grant.kind: grant.name, "level": grant.level})
        except RejectedError as exc:
            raise RejectedError(f"{record.local_path} was uploaded as {data_id}, but granting {grant} failed: "
                                f"{exc}", exc.status, exc.body) from None
        done.append(str(grant))
        record = dataclasses.replace(record, extra={**record.extra, "shared": done})
        ctx.writer.batch.update_file(record.id, extra=record.extra)
        ctx.writer.added()
        await ctx.writer.flush()
    return record
