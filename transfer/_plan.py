"""Planning: from what the caller named to file rows in the journal.

Uploads stat local files (streaming, directories walked in sorted order) and
decide per file whether it is already on the server unchanged; downloads ask
the server for sizes and names and decide whether an identical copy is
already on disk. Decisions are taken in batches (one inventory query per
few hundred files), so re-running over 10,000 unchanged files costs
milliseconds per thousand, not a request each.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowxfer import protocol
from flowxfer.journal import FileState, InventoryRecord, Journal, JournalBatch, NewFile

from ._checksums import local_checksum
from ._errors import UsageError
from ._names import remote_name_problem, safe_local_name


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: str
    size: int
    mtime_ns: int
    name: str


def params_key(kind: str, server: str, username: str, params: dict[str, Any]) -> str:
    """What makes two commands "the same command" (so the second continues the first)."""
    text = json.dumps([kind, server, username, params], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_upload_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of the named files and folders; every missing one is reported at once.

    :raises UsageError: a path does not exist or is neither a file nor a folder.
    """
    problems = []
    resolved: list[str] = []
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            problems.append(f"{raw}: no such file or folder")
            continue
        except OSError as exc:
            problems.append(f"{raw}: {exc.strerror}")
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            problems.append(f"{raw}: not a regular file or folder")
            continue
        if path not in resolved:
            resolved.append(path)
    if problems:
        raise UsageError("cannot upload:\n  " + "\n  ".join(problems))
    if not resolved:
        raise UsageError("nothing to upload: name at least one file or folder")
    return resolved


def scan_local(paths: Sequence[str]) -> Iterator[LocalFile]:
    """Regular files under the given paths, folders walked recursively in sorted order.

    Symbolic links to files are followed; links to folders are not descended
    (no cycles). Unreadable folders raise :class:`UsageError` naming them.
    """
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path)
        else:
            st = os.stat(path)
            yield LocalFile(path, st.st_size, st.st_mtime_ns, os.path.basename(path))


def _walk(top: str) -> Iterator[LocalFile]:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        raise UsageError(f"cannot read folder {top}: {exc.strerror}") from None
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path)
            elif entry.is_file(follow_symlinks=True):
                st = entry.stat(follow_symlinks=True)
                yield LocalFile(entry.path, st.st_size, st.st_mtime_ns, entry.name)
        except OSError:
            continue  # vanished or a dangling link between scandir and stat


def plan_uploads(
    journal: Journal,
    transfer_id: str,
    server: str,
    username: str,
    files: Iterable[LocalFile],
    *,
    force: bool,
    batch_size: int = 500,
) -> tuple[list[NewFile], int, int]:
    """Add upload rows to the journal in batches; returns (skipped rows, files, bytes) planned.

    Runs in a worker thread (blocking I/O). Remote names are validated for
    every file before the caller sends any byte: a bad name raises
    :class:`UsageError` listing all of them.
    """
    problems: list[str] = []
    skipped: list[NewFile] = []
    count = total = 0
    batch: list[LocalFile] = []

    def flush() -> None:
        nonlocal count, total
        known = {} if force else journal.lookup_inventory(server, username, "up", [(f.path, f.name) for f in batch])
        rows = []
        remember = []
        for f in batch:
            record = known.get((f.path, f.name))
            row = _upload_row(f, record)
            if row.status is FileState.SKIPPED and record is not None and record.mtime_ns != f.mtime_ns:
                remember.append(
                    InventoryRecord(
                        server,
                        username,
                        "up",
                        f.path,
                        f.name,
                        f.size,
                        f.mtime_ns,
                        record.checksum,
                        record.data_id,
                        record.superseded,
                    )
                )
            if row.status is FileState.SKIPPED:
                skipped.append(row)
            rows.append(row)
            count += 1
            total += f.size
        journal.add_files(transfer_id, rows)
        if remember:
            updates = JournalBatch()
            for item in remember:
                updates.remember(item)
            journal.commit(updates)
        batch.clear()

    for f in files:
        problem = remote_name_problem(f.name)
        if problem is None and not protocol.is_utf8(f.path):
            problem = "the path is not valid UTF-8 (rename the folder)"
        if problem:
            problems.append(f"{f.path}: {problem}")
            continue
        if problems:
            continue  # keep scanning only to report every bad name
        batch.append(f)
        if len(batch) >= batch_size:
            flush()
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise UsageError("these files have names Flow refuses (nothing was sent):\n  " + "\n  ".join(shown))
    if batch:
        flush()
    return skipped, count, total


def _upload_row(f: LocalFile, record: InventoryRecord | None) -> NewFile:
    if record is not None and record.size == f.size:
        same = record.mtime_ns == f.mtime_ns
        if not same and record.checksum:
            # In doubt (touched but maybe not changed): the checksum decides.
            try:
                same = local_checksum(Path(f.path)) == record.checksum
            except OSError:
                same = False
        if same:
            return NewFile(
                f.path,
                f.name,
                f.size,
                f.mtime_ns,
                data_id=record.data_id,
                checksum=record.checksum,
                status=FileState.SKIPPED,
            )
    extra = {"superseded": [record.data_id, *record.superseded]} if record is not None else {}
    return NewFile(f.path, f.name, f.size, f.mtime_ns, extra=extra)


@dataclass(frozen=True, slots=True)
class RemoteData:
    """One data item to download, as the server described it."""

    id: str
    filename: str
    size: int
    checksum: str | None


def target_names(items: Sequence[RemoteData]) -> list[str]:
    """Safe local names, made unique the way Flow's archives do: ``name (id).ext``."""
    seen: set[str] = set()
    names = []
    for item in items:
        name = safe_local_name(item.filename)
        if name.lower() in seen:
            stem, dot, ext = name.partition(".")
            name = safe_local_name(f"{stem} ({item.id}){dot}{ext}")
        seen.add(name.lower())
        names.append(name)
    return names


def already_there(
    journal: Journal, server: str, username: str, items: Sequence[RemoteData], targets: Sequence[str], *, force: bool
) -> list[bool]:
    """Whether each item's target already holds it, identical (never with ``force``). Runs in a worker thread.

    Identical means: same size, and either our inventory says we wrote it
    from this data id and it was not touched since, or its checksum equals
    the server's.
    """
    if force:
        return [False] * len(items)
    known = journal.lookup_inventory(
        server, username, "down", [(t, item.id) for t, item in zip(targets, items, strict=True)]
    )
    found: list[bool] = []
    for target, item in zip(targets, items, strict=True):
        try:
            st = os.stat(target)
        except OSError:
            st = None
        same = False
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == item.size:
            record = known.get((target, item.id))
            if (
                record is not None
                and record.mtime_ns == st.st_mtime_ns
                and (item.checksum is None or record.checksum in (None, item.checksum))
            ):
                same = True
            elif item.checksum is not None and local_checksum(Path(target)) == item.checksum:
                same = True
        found.append(same)
    return found


def plan_downloads(
    journal: Journal,
    transfer_id: str,
    server: str,
    username: str,
    items: Sequence[RemoteData],
    output_dir: Path,
    *,
    force: bool,
    targets: Sequence[str] | None = None,
    identical: Sequence[bool] | None = None,
) -> tuple[list[NewFile], int, int]:
    """Add download rows; an identical file already at the target is skipped (:func:`already_there`).

    Runs in a worker thread.

    :param targets: each item's local path, when the caller lays them out
        (``download --execution``); default: ``output_dir`` / its unique name.
    :param identical: :func:`already_there`'s answer, when the caller has asked it already.
    """
    if targets is None:
        targets = [str(output_dir / name) for name in target_names(items)]
    if identical is None:
        identical = already_there(journal, server, username, items, targets, force=force)
    rows: list[NewFile] = []
    skipped: list[NewFile] = []
    for target, item, same in zip(targets, items, identical, strict=True):
        status = FileState.SKIPPED if same else FileState.PLANNED
        row = NewFile(target, item.filename, item.size, None, data_id=item.id, checksum=item.checksum, status=status)
        rows.append(row)
        if status is FileState.SKIPPED:
            skipped.append(row)
    journal.add_files(transfer_id, rows)
    return skipped, len(rows), sum(item.size for item in items)
