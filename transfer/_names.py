"""Names that cross a trust boundary: server-given filenames, archive members, run-folder paths.

Everything a server or an archive says about names is untrusted: a
filename may hold ``../``, a drive letter, a device name, control characters
that rewrite a terminal, or 300 bytes; an archive member may be absolute.
These functions are pure (no filesystem access) and strict: they either
return something safe or raise.

- :func:`safe_local_name` turns a server's filename into one safe path
  component (it repairs rather than refuses: a download must land somewhere).
- :func:`safe_join` and :func:`archive_member_target` put relative names under
  a root and raise :class:`UnsafePathError` if they would leave it (they
  refuse rather than repair: a silently renamed path is a surprise).
- :func:`flatten_relative_path` turns a run folder's relative path into one
  Flow filename (``--name-from-path``).

Symbolic links are not this module's business: :func:`safe_join` and
:func:`archive_member_target` do path arithmetic only, so a symlink inside
the root that points outside it must be refused by the caller that creates
files (open with ``O_NOFOLLOW``, or extract members only as regular files).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from flowxfer import protocol

__all__ = [
    "UnsafePathError",
    "archive_member_target",
    "flatten_relative_path",
    "remote_name_problem",
    "safe_join",
    "safe_local_name",
]

MAX_NAME_BYTES = 255


class UnsafePathError(ValueError):
    """A path would escape its root, or is otherwise unsafe to create (absolute, ``..``, a drive, NUL).

    :ivar name: the offending name as it was given.
    """

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


# --- safe_local_name -------------------------------------------------------

# Characters Windows refuses in names (and ``/``, ``\``), replaced by "_".
_REPLACED = frozenset('/\\:*?"<>|')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{prefix}{digit}" for prefix in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"]
)
# A short, common extension chain worth keeping when a long name is cut: ".fastq.gz", ".tar.gz", ".bam".
_EXTENSION_RE = re.compile(r"(?:\.[A-Za-z0-9_-]{1,12}){1,2}$", re.ASCII)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _clean_char(char: str) -> str:
    if char in _REPLACED:
        return "_"
    category = unicodedata.category(char)
    # Cf: invisible formatting, among them the bidirectional overrides that make
    # "abc\u202etxt.exe" display as "abcexe.txt", and zero-width characters.
    if category == "Cf":
        return ""
    # Cc: C0/C1 controls and DEL; Cs: lone surrogates (not encodable); Zl/Zp: line/paragraph separators.
    if category in ("Cc", "Cs", "Zl", "Zp"):
        return "_"
    return char


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` of UTF-8, cut between code points."""
    encoded = text.encode("utf-8")[:max_bytes]
    return encoded.decode("utf-8", "ignore")


def safe_local_name(remote_name: str) -> str:
    """One safe path component for a file the server calls ``remote_name``.

    The result, the same for the same input on every platform:

    - is NFC-normalised (a name typed on macOS and one typed on Linux match);
    - holds no ``/`` or ``\\``, no characters Windows refuses (``:*?"<>|``,
      each replaced by ``_``), no control characters (C0, DEL, C1, line
      separators: replaced by ``_``), no whitespace but plain spaces (other
      whitespace becomes ``_``) and no invisible formatting characters
      (Unicode category Cf, removed: bidirectional overrides make
      ``abc\\u202etxt.exe`` display as ``abcexe.txt``);
    - has no leading whitespace and no trailing dots or whitespace
      (Windows drops them, so ``a.`` and ``a`` would collide);
    - does not start with ``-`` (replaced by ``_``): a file named ``-rf``
      is an accident waiting for a shell glob;
    - is not a Windows device name, with or without extension
      (``CON``, ``aux.txt``, ``com1.tar.gz`` get a ``_`` prefix);
    - is at most 255 bytes of UTF-8: a longer name keeps its extension
      (up to two short suffixes, e.g. ``.fastq.gz``) and its stem is cut,
      with ``~`` and a short hash of the full name added so that two long
      names differing only near the end stay different;
    - is never empty, ``.`` or ``..``: such names become ``data-<hash>``.

    Applying it to its own result changes nothing.
    """
    text = unicodedata.normalize("NFC", "".join(_clean_char(c) for c in remote_name))
    text = text.lstrip().rstrip(". \t\u3000\u00a0")
    text = "".join(c if not c.isspace() or c == " " else "_" for c in text)
    if text.startswith("-"):
        text = "_" + text[1:]
    if not text.strip("."):
        return f"data-{_digest(remote_name)}"
    stem_base = text.split(".", 1)[0].rstrip(" ").upper()
    if stem_base in _WINDOWS_RESERVED:
        text = "_" + text
    if _utf8_len(text) > MAX_NAME_BYTES:
        match = _EXTENSION_RE.search(text)
        extension = match.group(0) if match and match.start() > 0 else ""
        marker = f"~{_digest(remote_name)}"
        room = MAX_NAME_BYTES - _utf8_len(extension) - len(marker)
        stem = _cut_utf8(text[: len(text) - len(extension)], room)
        text = unicodedata.normalize("NFC", stem + marker + extension)
    return text


# --- joining under a root ----------------------------------------------------

_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def _components(name: str, what: str, original: str) -> list[str]:
    """Split ``name`` on ``/`` and ``\\`` after refusing what is never relative: NUL, absolute, drive."""
    if "\x00" in name:
        raise UnsafePathError(f"{what} {original!r} contains a NUL character", original)
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        raise UnsafePathError(f"{what} {original!r} is absolute", original)
    parts = unified.split("/")
    for part in parts:
        if _DRIVE_RE.match(part):
            raise UnsafePathError(f"{what} {original!r} names a drive ({part[:2]})", original)
        if part not in ("", ".", "..") and not part.strip(". "):
            # Windows strips trailing dots and spaces: ". ." or "..." would become "." or "..".
            raise UnsafePathError(f"{what} {original!r} has a component made only of dots and spaces", original)
    return parts


def safe_join(root: Path, *parts: str) -> Path:
    """``root`` joined with relative ``parts``, refused if the result would leave ``root``.

    Each part may hold several components (``"a/b"``); ``\\`` counts as a
    separator too, so ``..\\..\\x`` is caught on every platform. ``.`` and
    empty components are dropped and ``..`` goes up one level, as
    :func:`os.path.normpath` would, but never above ``root``. Pure path
    arithmetic: nothing is resolved on disk (see the module doc about
    symbolic links). Joining nothing gives ``root``.

    :raises UnsafePathError: for an absolute part, a drive (``C:``), a NUL,
        a component of dots and spaces only (other than ``.`` and ``..``),
        or ``..`` that climbs above ``root``.
    """
    stack: list[str] = []
    for part in parts:
        for component in _components(part, "path", part):
            if component in ("", "."):
                continue
            if component == "..":
                if not stack:
                    raise UnsafePathError(f"path {'/'.join(parts)!r} escapes its root", "/".join(parts))
                stack.pop()
                continue
            stack.append(component)
    return root.joinpath(*stack)


def archive_member_target(root: Path, member_name: str) -> Path:
    """Where an archive member named ``member_name`` is extracted under ``root``.

    Stricter than :func:`safe_join`, since an archive is not a path anyone
    typed: any ``..`` component is refused even if it would stay inside,
    as are C0 control characters (Flow filenames never hold them). ``\\`` is
    a separator (archives made on Windows use it); empty and ``.``
    components are dropped (``./a//b`` is ``a/b``; a trailing ``/`` marks a
    directory entry). Names are otherwise kept as they are, so the
    extracted tree matches the archive.

    :raises UnsafePathError: for an empty name (or one that is only ``.``
        and separators), an absolute name, a drive, ``..``, NUL or another
        control character, or a component of dots and spaces only. The
        message and the exception's ``name`` carry the member name.
    """
    if not member_name:
        raise UnsafePathError("archive member with an empty name", member_name)
    if "\x00" not in member_name and any(ord(c) < 32 or ord(c) == 127 for c in member_name):
        raise UnsafePathError(f"archive member {member_name!r} contains control characters", member_name)
    components = _components(member_name, "archive member", member_name)
    if ".." in components:
        raise UnsafePathError(f"archive member {member_name!r} contains '..'", member_name)
    kept = [c for c in components if c not in ("", ".")]
    if not kept:
        raise UnsafePathError(f"archive member {member_name!r} names no file", member_name)
    return root.joinpath(*kept)


# --- Flow names ------------------------------------------------------------------


def flatten_relative_path(rel: str, sep: str = "__") -> str:
    """One Flow filename from a path relative to a run folder (``sync --name-from-path``).

    The rule: the path's components (split on ``/`` and ``\\``, empty and
    ``.`` components dropped) are joined with ``sep``, and every space
    becomes ``_`` (Flow refuses spaces). ``Fastq/L001/x.fq.gz`` becomes
    ``Fastq__L001__x.fq.gz``. Different paths can flatten to one name
    (``a__b/c`` and ``a/b__c``); the caller, which sees all of them,
    detects such collisions.

    :param rel: a relative path, as the folder scan produced it.
    :param sep: what replaces each separator; itself subject to the same checks.
    :raises ValueError: for an absolute path, a ``..`` component, an empty
        result, or a result Flow would refuse (:func:`flowxfer.protocol.filename_problem`:
        control characters, longer than 255 bytes, ...).
    """
    unified = rel.replace("\\", "/")
    if unified.startswith("/") or _DRIVE_RE.match(unified):
        raise ValueError(f"not a relative path: {rel!r}")
    components = [c for c in unified.split("/") if c not in ("", ".")]
    if ".." in components:
        raise ValueError(f"path {rel!r} leaves its folder ('..')")
    if not components:
        raise ValueError(f"path {rel!r} names no file")
    name = sep.join(components).replace(" ", "_")
    problem = protocol.filename_problem(name)
    if problem is not None:
        raise ValueError(f"cannot make a Flow filename of {rel!r}: {problem}")
    return name


def remote_name_problem(name: str) -> str | None:
    """Why Flow would refuse ``name`` as a filename, or None: :func:`flowxfer.protocol.filename_problem`.

    The engine calls this for every file before sending any byte, so a bad
    name fails at planning time instead of after a partial upload.
    """
    return protocol.filename_problem(name)
