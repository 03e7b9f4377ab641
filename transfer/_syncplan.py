"""How ``sync`` decides what to upload: its options, the pure decisions, the walk and the planner.

A sync is planned by one streaming walk of the folder (never the whole tree
in memory: one folder's listing at a time, decisions in batches against the
journal's inventory). The pieces:

- **readiness** (:func:`stable`): with ``--min-age`` a file must have been
  left alone for that long (its mtime *and* ctime: ctime cannot be set back
  by a copy that preserves mtimes);
- **change detection** (:func:`compare`): a file whose size and mtime match
  what the inventory recorded when it was uploaded is unchanged; same size
  but another mtime is decided by its checksum; anything else is uploaded
  as a new data item, the old id recorded as superseded;
- **remote names** (:func:`remote_name_for`): the basename, or the relative
  path flattened with ``--name-from-path``; clashes (case-insensitive, as
  Flow's archives judge them) and names Flow refuses are one planning error
  listing every one before any byte moves;
- **packing** (:mod:`._packing`): files under ``--pack-small`` go into one
  deterministic tar per folder.

Unchanged files leave no row in the journal (a million-file folder synced
every five minutes must not grow it by a million rows each time); the
report counts them instead.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowxfer import protocol
from flowxfer.journal import (
    InventoryRecord,
    Journal,
    JournalBatch,
    NewFile,
    PackMember,
)

from ._checksums import local_checksum
from ._errors import UsageError
from ._globs import PathFilter
from ._names import flatten_relative_path, remote_name_problem
from ._packing import PackPlan, member_paths, plan_packs
from ._walk import Entry, walk

__all__ = [
    "ShareGrant",
    "SyncOptions",
    "SyncSummary",
    "Verdict",
    "compare",
    "parse_share",
    "plan_sync",
    "remote_name_for",
    "stable",
    "walk",
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
        return {
            "root": root,
            "rules": [list(r) for r in self.rules],
            "ready_marker": self.ready_marker,
            "min_age": self.min_age,
            "name_from_path": self.name_from_path,
            "pack_small": self.pack_small,
            "shares": [dataclasses.asdict(s) for s in self.shares],
            "data_type": self.data_type,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SyncOptions:
        return cls(
            rules=tuple((str(k), str(p)) for k, p in params.get("rules", [])),
            ready_marker=params.get("ready_marker"),
            min_age=params.get("min_age"),
            name_from_path=bool(params.get("name_from_path")),
            pack_small=params.get("pack_small"),
            shares=tuple(ShareGrant(**s) for s in params.get("shares", [])),
            data_type=params.get("data_type"),
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

    def __init__(
        self,
        journal: Journal,
        server: str,
        username: str,
        root: str,
        options: SyncOptions,
        now: float,
        rows: RowSink | None,
        members: MemberSink | None,
    ) -> None:
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

    def _names_of(
        self, rel_dir: str, files: list[Entry]
    ) -> tuple[list[tuple[Entry, str]], list[PackPlan], list[Entry]]:
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
                packs = plan_packs(
                    self.root_name, rel_dir, [PackMember(e.rel, e.path, e.size, e.mtime_ns) for e in small]
                )
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
            shown = self.problems + (
                [f"... and {self.problem_count - len(self.problems)} more"]
                if self.problem_count > len(self.problems)
                else []
            )
            hint = (
                ""
                if self.options.name_from_path
                else "; --name-from-path names files by their relative path (Fastq/L001/x.fq.gz -> "
                "Fastq__L001__x.fq.gz)"
            )
            raise UsageError(
                "these files cannot be synced as named (nothing was sent):\n  "
                + "\n  ".join(shown)
                + f"\n(rename or --exclude them{hint})"
            )
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
        known = self.journal.lookup_inventory(
            self.server, self.username, "up", [(e.path, name) for e, name in self._singles]
        )
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
            extra: dict[str, Any] = {"pack": plan.manifest, "members": len(plan.members), "data_bytes": plan.data_bytes}
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


def plan_sync(
    journal: Journal,
    server: str,
    username: str,
    root: str,
    options: SyncOptions,
    *,
    now: float,
    rows: RowSink | None,
    members: MemberSink | None,
    skip: frozenset[str] = frozenset(),
) -> SyncSummary:
    """Walk ``root`` and decide what to upload (blocking: run it in a worker thread).

    :param rows: receives the rows to upload, a batch at a time (None: a dry run).
    :param members: receives each tar's virtual path and plan (its member list) before its row.
    :raises UsageError: names that clash or that Flow refuses, listed all at once.
    """
    return _Planner(journal, server, username, root, options, now, rows, members).run(skip)
