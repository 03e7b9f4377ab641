"""Facts of the Flow wire protocol shared by the engine and the local server.

The architecture forbids the server from importing the engine and vice versa;
what both must agree on (checksum format, filename rules, rate-limit classes
and their header names, cookie name) lives here, in plain synchronous code
with no I/O. Keep it tiny: anything that is only one side's business belongs
to that side.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

# --- checksums -------------------------------------------------------------

CHECKSUM_ALGORITHM = "xxh3-128"
CHECKSUM_PREFIX = CHECKSUM_ALGORITHM + ":"
_CHECKSUM_RE = re.compile(r"^xxh3-128:([0-9a-f]{32})$")


def new_hasher() -> xxhash.xxh3_128:
    """A fresh xxh3-128 hasher: the only digest the protocol speaks."""
    return xxhash.xxh3_128()


def format_checksum(hexdigest: str) -> str:
    """``xxh3-128:<32 lowercase hex>`` from a hex digest."""
    return CHECKSUM_PREFIX + hexdigest.lower()


def parse_checksum(value: str) -> str:
    """The hex digest inside a ``xxh3-128:<hex>`` string.

    :raises ValueError: for any other algorithm or a malformed digest.
    """
    match = _CHECKSUM_RE.match(value.strip().lower())
    if not match:
        raise ValueError(f"not an {CHECKSUM_ALGORITHM} checksum: {value[:80]!r}")
    return match.group(1)


def canonical_checksum(value: object) -> str | None:
    """A checksum as a peer sent it, in the one form we compare (``xxh3-128:<lowercase hex>``).

    Peers may differ in case or surrounding blanks; compare only canonical
    forms. ``None`` when ``value`` is absent or is not a protocol checksum.
    """
    if not isinstance(value, str):
        return None
    try:
        return format_checksum(parse_checksum(value))
    except ValueError:
        return None


def checksum_of(data: bytes | bytearray | memoryview) -> str:
    """The protocol checksum of a block of bytes."""
    return format_checksum(xxhash.xxh3_128_hexdigest(data))


# --- filenames -------------------------------------------------------------

MAX_FILENAME_BYTES = 255


def is_utf8(text: str) -> bool:
    """False for a str holding lone surrogates: bytes that were not UTF-8 (a name from disk, JSON's ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def filename_problem(name: str) -> str | None:
    """Why Flow would refuse ``name`` as a stored filename, or None if it is fine.

    Hosted Flow refuses spaces and ``/``; we also refuse what no filesystem can
    hold safely (NUL and control characters, ``.``/``..``, over 255 bytes), so
    a name accepted here is a valid single path component everywhere.
    """
    if not name:
        return "Empty filename"
    if " " in name:
        return "Spaces in filename"
    if "/" in name:
        return "Slashes in filename"
    if name in (".", ".."):
        return "Filename cannot be . or .."
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "Control characters in filename"
    if not is_utf8(name):
        return "Filename is not valid UTF-8"
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        return f"Filename longer than {MAX_FILENAME_BYTES} bytes"
    return None


# --- bulk archives ---------------------------------------------------------

#: Names a bulk archive may take. The name does not decide the content: our
#: server builds what ``serve --archive-format`` says (hosted Flow builds
#: tar.gz), and the engine tells zip from tar.gz by the archive's first bytes.
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


def archive_member_names(items: Sequence[tuple[str, str]]) -> list[str]:
    """Names inside a bulk archive for ``(id, filename)`` pairs, in order (pure).

    The server names members by this rule and the engine predicts them with
    it, to check an archive's listing before extracting. The first holder of
    a filename keeps it; later ones become ``stem (id).ext`` (the extension
    being everything from the first dot after the first character, so
    ``reads.fastq.gz`` -> ``reads (42).fastq.gz``). Clashes are judged
    case-insensitively, because the archive may be unpacked on macOS or Windows.
    """
    taken: set[str] = set()
    names: list[str] = []
    for data_id, filename in items:
        name = filename
        if name.casefold() in taken:
            dot = filename.find(".", 1)
            stem, ext = (filename, "") if dot < 0 else (filename[:dot], filename[dot:])
            name = f"{stem} ({data_id}){ext}"
            counter = 2
            while name.casefold() in taken:
                name = f"{stem} ({data_id}-{counter}){ext}"
                counter += 1
        taken.add(name.casefold())
        names.append(name)
    return names


# --- cookies ---------------------------------------------------------------

REFRESH_COOKIE = "flow_refresh_token"

# --- rate limits -----------------------------------------------------------

RATE_CLASSES = ("api", "upload", "download", "search")
DEFAULT_HOURLY_LIMITS: dict[str, int] = {"api": 1000, "upload": 100, "download": 500, "search": 300}
HEADER_LIMIT = "X-RateLimit-Limit"
HEADER_REMAINING = "X-RateLimit-Remaining"
HEADER_RESET = "X-RateLimit-Reset"
HEADER_CHECKSUM = "X-Checksum"
#: [ext] On ``GET /downloads/<id>``: the chunk map's unit and its number of chunks, when every chunk
#: but the last is that size (docs/protocol.md, "Downloading by id"): the streams start before the map.
HEADER_CHUNK_SIZE = "X-Chunk-Size"
HEADER_CHUNK_COUNT = "X-Chunk-Count"


@dataclass(frozen=True)
class RateLimit:
    """``count`` requests per ``window`` seconds for one request class."""

    count: int
    window: float = 3600.0


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_window(text: str) -> float:
    """``10s``, ``5m``, ``1h``, ``3600`` (seconds) -> seconds."""
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise ValueError(f"bad window {text!r}: use e.g. 10s, 5m, 1h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"window must be positive: {text!r}")
    return seconds


def parse_rate_limit_spec(spec: str) -> dict[str, RateLimit] | None:
    """Parse ``off``, ``default`` or ``api=1000,upload=100,download=3/10s``.

    Classes not named keep their hosted-Flow default. ``off`` returns None
    (no limits at all).

    :raises ValueError: on an unknown class, a non-positive count or a bad window.
    """
    text = spec.strip().lower()
    limits = {name: RateLimit(count) for name, count in DEFAULT_HOURLY_LIMITS.items()}
    if text == "off":
        return None
    if text in ("", "default"):
        return limits
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in RATE_CLASSES:
            raise ValueError(
                f"bad rate-limit item {item!r}: expected CLASS=COUNT[/WINDOW] with CLASS in {', '.join(RATE_CLASSES)}"
            )
        count_text, _, window_text = value.partition("/")
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"bad count in {item!r}") from None
        if count <= 0:
            raise ValueError(f"count must be positive in {item!r}")
        limits[name] = RateLimit(count, parse_window(window_text) if window_text else 3600.0)
    return limits
