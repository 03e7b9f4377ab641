"""Include/exclude rules for ``sync DIR --include GLOB --exclude GLOB``, gitignore-like.

The rules (for the README):

- ``--include`` and ``--exclude`` may each be given many times; their order
  on the command line matters: **the last rule that matches a path decides**.
- With no ``--include`` at all, every file is included unless an exclude
  rule matches it. With at least one ``--include``, a file that no rule
  matches is excluded.
- A rule matches a file if it matches the file's path or the path of any
  directory above it: ``--exclude Logs/`` drops everything under ``Logs``,
  and a later ``--include Logs/keep.txt`` brings that one file back.
- Paths are relative to ``DIR``, with ``/`` separators, and matching is
  case-sensitive.
- ``*`` matches any run of characters except ``/`` (dotfiles included);
  ``?`` matches one character except ``/``; ``[abc]``, ``[a-z]`` and
  ``[!abc]`` (or ``[^abc]``) match one character of (or not of) a set;
  ``\\`` makes the next character literal.
- ``**`` as a whole path component matches any number of directories:
  ``**/x`` is ``x`` at any depth, ``a/**/b`` is ``b`` anywhere below ``a``
  (``a/b`` included), ``a/**`` is everything inside ``a``. Elsewhere
  ``**`` is the same as ``*``.
- A pattern without ``/`` (a trailing one aside) matches the *name* of a
  file or directory at any depth: ``*.fastq.gz``, ``InterOp``.
- A pattern with a ``/`` in it is anchored at ``DIR``: ``Data/*.xml``
  matches ``Data/RunInfo.xml`` but not ``x/Data/RunInfo.xml``; a leading
  ``/`` (``/RunInfo.xml``) anchors a pattern that has no other ``/``.
- A trailing ``/`` makes a pattern match directories only (and so, by the
  rule above, everything inside them).

A directory is skipped without being listed (:meth:`PathFilter.prune_dir`)
only when an exclude rule decides it and no later include rule could match
anything inside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

__all__ = ["PathFilter", "Rule"]

_KINDS = ("include", "exclude")


def _translate_segment(segment: str, pattern: str) -> str:
    """Regex source for one path component of a glob (``**`` inside a component is ``*``)."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i < len(segment) and segment[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if char == "?":
            out.append("[^/]")
        elif char == "\\":
            i += 1
            if i == len(segment):
                raise ValueError(f"pattern {pattern!r} ends with a lone backslash")
            out.append(re.escape(segment[i]))
        elif char == "[":
            end = i + 1
            if end < len(segment) and segment[end] in "!^":
                end += 1
            if end < len(segment) and segment[end] == "]":
                end += 1  # a ']' first in the set is literal
            while end < len(segment) and segment[end] != "]":
                end += 1
            if end >= len(segment):
                raise ValueError(f"pattern {pattern!r} has an unclosed '['")
            body = segment[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            # Escape regex specials inside the set but keep ranges (a-z) working.
            escaped = "".join("\\" + c if c in "\\[]^" else c for c in body)
            out.append(f"[^/{escaped}]" if negate else f"(?!/)[{escaped}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Rule:
    """One compiled ``--include``/``--exclude`` pattern."""

    kind: str
    pattern: str
    anchored: bool
    dir_only: bool
    segments: tuple[str, ...]
    regex: re.Pattern[str] = field(repr=False, compare=False)
    segment_regexes: tuple[re.Pattern[str] | None, ...] = field(repr=False, compare=False)

    @classmethod
    def compile(cls, kind: str, pattern: str) -> Rule:
        """Compile one rule.

        :raises ValueError: for an unknown kind, an empty pattern, an unclosed ``[`` or a trailing ``\\``.
        """
        if kind not in _KINDS:
            raise ValueError(f"rule kind must be 'include' or 'exclude', not {kind!r}")
        text = pattern
        dir_only = text.endswith("/")
        text = text.rstrip("/") if dir_only else text
        anchored = "/" in text
        text = text.lstrip("/")
        if not text:
            raise ValueError(f"empty {kind} pattern {pattern!r}")
        segments = tuple(text.split("/"))
        if any(segment == "" for segment in segments):
            raise ValueError(f"{kind} pattern {pattern!r} has an empty path component ('//')")
        pieces: list[str] = []
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment == "**":
                # "a/**" is everything inside a; "**/b" and "a/**/b" are b at any depth below.
                pieces.append(".*" if last else "(?:[^/]*/)*")
            else:
                pieces.append(_translate_segment(segment, pattern) + ("" if last else "/"))
        body = "".join(pieces)
        source = body if anchored else f"(?:.*/)?{body}"
        try:
            regex = re.compile(source, re.DOTALL)
            segment_regexes = tuple(
                None if segment == "**" else re.compile(_translate_segment(segment, pattern), re.DOTALL)
                for segment in segments
            )
        except re.error as exc:  # e.g. a reversed range, [z-a]
            raise ValueError(f"bad {kind} pattern {pattern!r}: {exc}") from None
        return cls(kind, pattern, anchored, dir_only, segments, regex, segment_regexes)

    def matches_path(self, path: str, is_dir: bool) -> bool:
        """Whether the pattern matches ``path`` itself (not its parents)."""
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(path) is not None

    def could_match_below(self, directory: Sequence[str]) -> bool:
        """Whether some path strictly inside ``directory`` (its components) could match.

        Conservative: True whenever unsure. An unanchored pattern can match a
        name at any depth, so it always could.
        """
        if not self.anchored:
            return True
        segments, regexes = self.segments, self.segment_regexes

        @cache
        def can(p: int, d: int) -> bool:
            if d == len(directory):
                return p < len(segments)  # something left to match a component below
            if p == len(segments):
                return False
            regex = regexes[p]
            if regex is None:  # "**" takes zero or more components
                return can(p + 1, d) or can(p, d + 1)
            return regex.fullmatch(directory[d]) is not None and can(p + 1, d + 1)

        return can(0, 0)


def _normalise(rel_path: str) -> str:
    path = rel_path.strip("/")
    while path.startswith("./"):
        path = path[2:].lstrip("/")
    return "" if path == "." else path


class PathFilter:
    """Ordered include/exclude rules; the last matching rule decides (see the module doc).

    :param rules: ``(kind, pattern)`` pairs in command-line order, ``kind``
        being ``"include"`` or ``"exclude"``.
    :raises ValueError: for an unknown kind or a malformed pattern.
    """

    def __init__(self, rules: Iterable[tuple[str, str]] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(Rule.compile(kind, pattern) for kind, pattern in rules)
        self.has_includes = any(rule.kind == "include" for rule in self.rules)

    def __repr__(self) -> str:
        return f"PathFilter({[(rule.kind, rule.pattern) for rule in self.rules]!r})"

    def _deciding_rule(self, rel_path: str, is_dir: bool) -> int | None:
        """The index of the last rule matching the path or one of its parent directories."""
        if not rel_path or not self.rules:
            return None  # no rules (the usual sync): nothing to split or join for each of a million files
        components = rel_path.split("/")
        parents = ["/".join(components[:n]) for n in range(1, len(components))]
        for index in range(len(self.rules) - 1, -1, -1):
            rule = self.rules[index]
            if rule.matches_path(rel_path, is_dir) or any(rule.matches_path(p, True) for p in parents):
                return index
        return None

    def matches(self, rel_path: str, is_dir: bool = False) -> bool:
        """Whether ``rel_path`` (relative to the synced folder, ``/``-separated) is included.

        :param is_dir: whether the path is a directory (for patterns ending in ``/``).
        """
        path = _normalise(rel_path)
        index = self._deciding_rule(path, is_dir)
        if index is None:
            return not self.has_includes
        return self.rules[index].kind == "include"

    def prune_dir(self, rel_dir: str) -> bool:
        """True when nothing inside directory ``rel_dir`` can be included, so it need not be listed.

        That is the case when an exclude rule decides the directory and no
        later include rule could match anything inside it. Conservative: a
        False answer only means the directory must be looked at. The root
        (``""``) is never pruned.
        """
        path = _normalise(rel_dir)
        index = self._deciding_rule(path, True)
        if index is None or self.rules[index].kind != "exclude":
            return False
        components = tuple(path.split("/"))
        return not any(
            rule.kind == "include" and rule.could_match_below(components) for rule in self.rules[index + 1 :]
        )
