"""``--path-map FROM=TO``: one shared journal, the same files mounted at different places.

A fleet's hosts see the same storage under their own mount points: a run is
``/mnt/a/run1`` on host A and ``/data/run1`` on host B. The journal stores
every path in *one* form, the *journal form*: the path as the host that first
planned it saw it. A host given ``--path-map /mnt/a=/data`` reads a journal
path under ``/mnt/a`` at ``/data`` on its own disk, and writes its own paths
under ``/data`` back in journal form. So the transfer's parameters, its
lease keys and the inventory of what was uploaded name the same run on every
host, and a host that takes over another's transfer finds its files.

Prefixes match whole path components (``/mnt/a`` does not match
``/mnt/ab``); with several maps the longest matching prefix wins.

``sync`` takes no map (:data:`SYNC_NEEDS_ONE_PATH`): it re-plans its folder
on every run from a walk of the disk and knows what it uploaded, which tars
it packed and whose lease it is by the paths it walked, so every step of a
re-plan, not only the files of one transfer, would have to be translated;
one step missed uploads a finished run again. A path every host sees alike
(a symlink is enough: paths are kept as given, links are not resolved) gives
the fleet one run folder without any translation.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SYNC_NEEDS_ONE_PATH", "PathMap"]

#: Why ``sync`` (and ``resume`` of a sync) refuses ``--path-map``, and what to do instead.
SYNC_NEEDS_ONE_PATH = (
    "a sync takes no --path-map: every sync re-plans its folder from the disk and knows what it "
    "uploaded (and which host runs it) by the folder's path, so a host seeing the run under another "
    "path would upload it again. Give every host the run folders at the same path: mount the shared "
    "storage there, or make that path a symlink to where this host sees it (flowxfer keeps a path as "
    "given and does not resolve links), then run the same 'flowxfer sync PATH' on every host"
)


def _under(path: str, prefix: str) -> str | None:
    """The rest of ``path`` below ``prefix`` ('' for the prefix itself), or None if it is not under it."""
    if prefix == "/":
        return path[1:] if path.startswith("/") else None
    if path == prefix:
        return ""
    if path.startswith(prefix + "/"):
        return path[len(prefix) + 1 :]
    return None


def _join(prefix: str, rest: str) -> str:
    return posixpath.join(prefix, rest) if rest else prefix


@dataclass(frozen=True)
class PathMap:
    """Journal-form prefixes and where this host sees them: ``((FROM, TO), ...)``."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> PathMap:
        """``FROM=TO`` texts (absolute paths) into a map.

        :raises ValueError: a text without ``=``, a relative or empty side, or a FROM given twice.
        """
        pairs: list[tuple[str, str]] = []
        for spec in specs:
            source, sep, target = spec.partition("=")
            if not sep or not source or not target:
                raise ValueError(f"{spec!r}: expected FROM=TO, e.g. /mnt/a=/data")
            if not (source.startswith("/") and target.startswith("/")):
                raise ValueError(f"{spec!r}: both sides must be absolute paths")
            source, target = posixpath.normpath(source), posixpath.normpath(target)
            if any(source == known for known, _ in pairs):
                raise ValueError(f"{spec!r}: {source} is mapped twice")
            pairs.append((source, target))
        return cls(tuple(pairs))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def to_local(self, path: str) -> str:
        """Where this host finds a journal-form ``path``."""
        return self._swap(path, 0)

    def to_journal(self, path: str) -> str:
        """The journal form of a path as this host sees it."""
        return self._swap(path, 1)

    def _swap(self, path: str, side: int) -> str:
        best: tuple[int, str] | None = None
        for pair in self.pairs:
            rest = _under(path, pair[side])
            if rest is not None and (best is None or len(pair[side]) > best[0]):
                best = (len(pair[side]), _join(pair[1 - side], rest))
        return best[1] if best is not None else path
