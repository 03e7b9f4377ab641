"""Sizes, rates and durations as people type and read them.

Parsing is strict where a typo would be costly (a chunk size of ``8`` bytes
instead of ``8M`` would make millions of requests) and lenient about spelling
(``8M``, ``8MiB``, ``8mb``, ``8 MiB`` are one thing). All units are binary, as
in rclone: ``k``/``K``/``KB``/``KiB`` = 1024, ``M`` = 1024², ``G`` = 1024³,
``T`` = 1024⁴, ``P`` = 1024⁵, ``E`` = 1024⁶. ``MB`` means MiB here, never 10⁶: transfer
tools that mix the two confuse everyone, and our users' numbers (chunk sizes,
bandwidth caps) are round binary numbers anyway.

Formatting produces text that the parsers read back (``1.5 GiB``), rounded
for people, never for machines.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a size or duration is parsed: fractions loads decimal (start-up cost)
    from fractions import Fraction

__all__ = [
    "format_duration",
    "format_rate",
    "format_size",
    "parse_duration",
    "parse_rate",
    "parse_size",
]

_UNIT_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}

# A decimal number (no exponent, no sign: a sign is diagnosed separately), an
# optional space, then an optional unit: K, KB, KiB, Ki in any case, or B alone.
_SIZE_RE = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?:(?P<unit>[kmgtpe])(?:i?b)?|(?P<unit_i>[kmgtpe])i|(?P<bytes>b))?$",
    re.IGNORECASE | re.ASCII,
)

_RATE_OFF = frozenset({"off", "none", "unlimited"})


def _parse_quantity(text: str, what: str) -> tuple[Fraction, str]:
    """The exact byte count ``text`` names (units applied), and its unit letter (``""`` for bytes).

    :raises ValueError: on empty, negative or malformed input.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty {what}: use e.g. 8M, 512k, 1.5G or a number of bytes")
    if stripped.startswith("-"):
        raise ValueError(f"{what} must not be negative: {text!r}")
    match = _SIZE_RE.match(stripped)
    if not match:
        raise ValueError(
            f"bad {what} {text!r}: use a number with an optional binary unit, e.g. 100, 512k, 8M, 8MiB, 1.5G"
        )
    unit = (match.group("unit") or match.group("unit_i") or "").lower()
    from fractions import Fraction

    return Fraction(match.group("number")) * (1024 ** _UNIT_POWERS[unit]), unit


def parse_size(text: str) -> int:
    """The number of bytes in ``8M``, ``8MiB``, ``8m``, ``1G``, ``512k``, ``1.5G``, ``100``, ``0``.

    Units are binary whatever their spelling (``MB`` is MiB, as in rclone); a
    bare number is bytes. A fractional result of a unit (``0.1M``) is
    truncated to whole bytes; a fractional number of plain bytes (``1.5``)
    is refused, as it can only be a typo.

    :param text: the size as typed; surrounding whitespace and a space before the unit are fine.
    :raises ValueError: on empty, negative or malformed text (the message says what is accepted).
    """
    value, unit = _parse_quantity(text, "size")
    if value.denominator != 1 and not unit:
        raise ValueError(f"a size in bytes must be a whole number: {text!r}")
    return math.floor(value)


def parse_rate(text: str) -> float | None:
    """Bytes per second in ``10M``, ``512k/s``, ``1.5MiB/s``; None (unlimited) for ``off`` or ``0``.

    A rate is a size per second, with an optional trailing ``/s``. ``off``,
    ``none`` and ``unlimited`` (any case) and any zero rate mean no limit,
    as rclone's ``--bwlimit off`` / ``0`` do.

    :raises ValueError: on empty, negative or malformed text.
    """
    if not isinstance(text, str):
        raise TypeError(f"rate must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if stripped.lower() in _RATE_OFF:
        return None
    if stripped.lower().endswith("/s"):
        stripped = stripped[:-2].rstrip()
    value, _ = _parse_quantity(stripped, "rate")
    if value == 0:
        return None
    return float(value)


_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)\s*", re.IGNORECASE | re.ASCII)
_BARE_NUMBER_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)$", re.ASCII)


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``1d``, ``500ms``, ``1h30m``, ``1h 30m`` or a bare ``90``.

    A compound duration names each unit at most once, largest first
    (``1h30m``, not ``30m1h``): anything else is more likely a typo than a
    wish. ``m`` is minutes; ``ms`` milliseconds. Zero is allowed.

    :raises ValueError: on empty, negative or malformed text.
    """
    if not isinstance(text, str):
        raise TypeError(f"duration must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty duration: use e.g. 90s, 15m, 2h, 1h30m")
    if stripped.startswith("-"):
        raise ValueError(f"duration must not be negative: {text!r}")
    from fractions import Fraction

    if _BARE_NUMBER_RE.match(stripped):
        return float(Fraction(stripped))
    position = 0
    total = Fraction(0)
    last_unit_seconds = math.inf
    while position < len(stripped):
        match = _DURATION_PART_RE.match(stripped, position)
        if not match:
            raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 1d, 500ms, 1h30m")
        unit_seconds = _DURATION_UNITS[match.group(2).lower()]
        if unit_seconds >= last_unit_seconds:
            raise ValueError(f"bad duration {text!r}: name each unit once, largest first (e.g. 1h30m)")
        last_unit_seconds = unit_seconds
        total += Fraction(match.group(1)) * Fraction(unit_seconds)
        position = match.end()
    return float(total)


_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _format_bytes(n: float) -> str:
    if not math.isfinite(n):
        raise ValueError(f"cannot format a non-finite size: {n!r}")
    if n < 0:
        return "-" + _format_bytes(-n)
    if n < 1024:
        # Whole bytes print whole; a fraction only appears for rates below 1 KiB/s.
        return f"{n:.0f} B" if float(n).is_integer() or n >= 10 else f"{n:.1f} B"
    power = 0
    value = float(n)
    while value >= 1024 and power < len(_SIZE_UNITS) - 1:
        value /= 1024
        power += 1
    # One decimal is plenty for people; round first so 1023.96 KiB reads "1 MiB", not "1024 KiB".
    text = f"{value:.1f}"
    if float(text) >= 1024 and power < len(_SIZE_UNITS) - 1:
        value /= 1024
        power += 1
        text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return f"{text} {_SIZE_UNITS[power]}"


def format_size(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 GiB``, ``8 MiB`` (one decimal at most, binary units).

    The output reads back through :func:`parse_size` (to within the rounding).
    Negative counts (differences) keep their sign.
    """
    return _format_bytes(n)


def format_rate(bytes_per_s: float) -> str:
    """A rate for people: ``10 MiB/s``, ``512 B/s``.

    :raises ValueError: for a non-finite rate.
    """
    return _format_bytes(bytes_per_s) + "/s"


def format_duration(seconds: float) -> str:
    """A duration for people: ``42 s``, ``1 min 30 s``, ``12 min``, ``1 h 05 min``, ``2 d 03 h``.

    Precision follows magnitude: seconds below ten minutes, minutes below a
    day, hours beyond. Below ten seconds one decimal is kept (``2.5 s``).

    :raises ValueError: for a negative or non-finite duration (an ETA without
        a rate should be shown as unknown by the caller, not as a number).
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds < 9.95:
        text = f"{seconds:.1f}"
        return (text[:-2] if text.endswith(".0") else text) + " s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min" if secs == 0 else f"{minutes} min {secs:02d} s"
    total_minutes = round(seconds / 60)
    if total_minutes < 60:
        return f"{total_minutes} min"
    if total_minutes < 24 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return f"{hours} h {minutes:02d} min"
    total_hours = round(seconds / 3600)
    days, hours = divmod(total_hours, 24)
    return f"{days} d {hours:02d} h"
