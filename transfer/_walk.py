"""The streaming walk of a folder tree: one folder's listing in memory at a time.

``sync`` plans a run folder from it, and ``samples sheet`` finds a run's
FASTQs with it (at any depth), so both see the same files: symbolic links
to files followed, links to folders not, unreadable folders an error rather
than files silently missed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ._errors import UsageError
from ._globs import PathFilter

__all__ = ["Entry", "walk"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A regular file found by the walk."""

    name: str
    path: str
    rel: str
    size: int
    mtime_ns: int
    ctime_ns: int


def walk(
    root: str, path_filter: PathFilter, skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str, list[Entry]]]:
    """``(rel_dir, abs_dir, files)`` for every folder under ``root``, depth first, names sorted.

    Only one folder's listing is held at a time (plus the names of folders
    still to visit). Symbolic links to files are followed, links to folders
    are not (no cycles); folders the filter excludes entirely are not listed.

    :raises UsageError: a folder cannot be read (files would be missed silently).
    """
    stack: list[tuple[str, str]] = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        files: list[Entry] = []
        dirs: list[str] = []
        try:
            with os.scandir(abs_dir) as entries:
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if not path_filter.prune_dir(rel):
                                dirs.append(entry.name)
                            continue
                        if not entry.is_file(follow_symlinks=True) or entry.path in skip:
                            continue
                        if not path_filter.matches(rel):
                            continue
                        st = entry.stat(follow_symlinks=True)
                    except OSError:
                        continue  # vanished, or a dangling link, between listing and stat
                    files.append(Entry(entry.name, entry.path, rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError as exc:
            raise UsageError(f"cannot read folder {abs_dir}: {exc.strerror}") from None
        files.sort(key=lambda e: e.name)
        yield rel_dir, abs_dir, files
        for name in sorted(dirs, reverse=True):
            stack.append((f"{rel_dir}/{name}" if rel_dir else name, os.path.join(abs_dir, name)))
