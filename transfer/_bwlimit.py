"""``--bwlimit``: one rate, ``off``, or an rclone-style weekly timetable.

Accepted text:

- ``10M``, ``512k/s``, ``1.5MiB/s``: one rate at all times (see :func:`parse_rate`);
- ``off`` or ``0``: no limit;
- a timetable of space-separated ``TIME,RATE`` entries, e.g.
  ``"08:00,10M 19:00,off"``. ``TIME`` is ``HH:MM`` (24 h, every day) or
  ``Day-HH:MM`` with ``Day`` one of ``Mon Tue Wed Thu Fri Sat Sun`` (or the
  full English name, any case), as rclone writes them.

Each entry's rate holds from its time until the next entry's time; the
timetable wraps around: before the first entry of the week (or of the day,
for a daily timetable) the last entry applies. A daily entry stands for the
same time on each of the seven days, so daily and weekly entries may be
mixed, and the daily ones still apply on the named day
(``"08:00,10M 19:00,1M Sat-00:00,off"``: Saturday is unlimited from
midnight until the daily 08:00 entry, and otherwise as every day). Two
entries for the same minute of the week are refused as ambiguous. rclone's
separate upload:download rates (``10M:1M``) are not supported: a transfer
only moves bytes one way.

Times are wall-clock times of the :class:`~datetime.datetime` given to
:meth:`BandwidthSchedule.rate_at` (local time if it is naive; its own zone
if it is aware).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ._sizes import format_rate, parse_rate

__all__ = ["BandwidthSchedule"]

_MINUTES_PER_DAY = 24 * 60
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS: dict[str, int] = {name: index for index, name in enumerate(_DAY_NAMES)}
_DAYS.update({name[:3]: index for index, name in enumerate(_DAY_NAMES)})

_ENTRY_RE = re.compile(r"^(?:(?P<day>[a-z]+)-)?(?P<hour>\d{1,2}):(?P<minute>\d{2}),(?P<rate>.+)$", re.ASCII)


@dataclass(frozen=True)
class BandwidthSchedule:
    """A bandwidth limit that may change with the time of day and week.

    :ivar entries: ``(minute_of_week, rate)`` pairs sorted by minute, Monday
        00:00 being minute 0; ``rate`` is bytes per second or None for no
        limit. A plain rate is one entry at minute 0.
    """

    entries: tuple[tuple[int, float | None], ...]
    _minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a bandwidth schedule needs at least one entry")
        minutes = [minute for minute, _ in self.entries]
        if minutes != sorted(set(minutes)) or minutes[0] < 0 or minutes[-1] >= _MINUTES_PER_WEEK:
            raise ValueError("schedule entries must be distinct minutes of the week, in order")
        for _, rate in self.entries:
            if rate is not None and not rate > 0:
                raise ValueError(f"a bandwidth limit must be positive (None for no limit), not {rate!r}")
        # Kept beside the fields (not one of them) so rate_at, called per block of bytes, only bisects.
        object.__setattr__(self, "_minutes", tuple(minutes))

    @classmethod
    def constant(cls, rate: float | None) -> BandwidthSchedule:
        """One rate (bytes/s, None for unlimited) at all times."""
        return cls(((0, rate),))

    @classmethod
    def parse(cls, text: str) -> BandwidthSchedule:
        """Read ``10M``, ``off`` or a timetable such as ``"08:00,10M 19:00,off"`` (see the module doc).

        :raises ValueError: on a bad rate, time or day, an empty text, or two
            entries for the same minute of the week.
        """
        stripped = text.strip()
        if not stripped:
            raise ValueError('empty bandwidth limit: use e.g. 10M, off, or "08:00,10M 19:00,off"')
        if "," not in stripped:
            return cls.constant(parse_rate(stripped))
        by_minute: dict[int, float | None] = {}
        for item in stripped.split():
            match = _ENTRY_RE.match(item.lower())
            if not match:
                raise ValueError(
                    f"bad bandwidth timetable entry {item!r}: expected HH:MM,RATE or Day-HH:MM,RATE "
                    "(e.g. 08:00,10M or Mon-08:00,10M)"
                )
            hour, minute = int(match.group("hour")), int(match.group("minute"))
            if hour > 23 or minute > 59:
                raise ValueError(f"bad time in bandwidth timetable entry {item!r}: use 00:00 to 23:59")
            try:
                rate = parse_rate(match.group("rate"))
            except ValueError as exc:
                raise ValueError(f"bad rate in bandwidth timetable entry {item!r}: {exc}") from None
            day_name = match.group("day")
            if day_name is None:
                days = range(7)
            elif day_name in _DAYS:
                days = range(_DAYS[day_name], _DAYS[day_name] + 1)
            else:
                raise ValueError(f"bad day in bandwidth timetable entry {item!r}: use Mon, Tue, ... Sun")
            for day in days:
                at = day * _MINUTES_PER_DAY + hour * 60 + minute
                if at in by_minute:
                    raise ValueError(f"bandwidth timetable names the same time twice (at {item!r})")
                by_minute[at] = rate
        return cls(tuple(sorted(by_minute.items())))

    @property
    def is_constant(self) -> bool:
        """True when the rate never changes (so nobody needs to watch the clock)."""
        return len({rate for _, rate in self.entries}) == 1

    def _index_at(self, when: datetime) -> int:
        minute = when.weekday() * _MINUTES_PER_DAY + when.hour * 60 + when.minute
        # The last entry at or before this minute; index -1 (the week's last entry) wraps around.
        return bisect.bisect_right(self._minutes, minute) - 1

    def rate_at(self, when: datetime) -> float | None:
        """The limit in force at ``when``, in bytes per second; None means unlimited."""
        return self.entries[self._index_at(when)][1]

    def next_change_after(self, when: datetime) -> datetime | None:
        """The first instant after ``when`` at which the rate differs from ``rate_at(when)``.

        An entry takes effect at the start of its minute, so the answer is
        always a whole minute, strictly later than ``when``. None when the
        rate never changes. The answer carries ``when``'s tzinfo; across a
        daylight-saving change it is the wall-clock time, as the timetable is.
        """
        if self.is_constant:
            return None
        current = self.rate_at(when)
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        week_start = midnight - timedelta(days=when.weekday())
        candidates: list[tuple[datetime, float | None]] = []
        for minute, rate in self.entries:
            at = week_start + timedelta(minutes=minute)
            if at <= when:
                at += timedelta(days=7)
            candidates.append((at, rate))
        candidates.sort(key=lambda item: item[0])
        for at, rate in candidates:
            if rate != current:
                return at
        return None  # pragma: no cover - not constant, so some entry differs

    def describe(self) -> str:
        """The schedule for people, in the timetable syntax (rates rounded as :func:`format_rate` does)."""

        def rate_text(rate: float | None) -> str:
            return "off" if rate is None else format_rate(rate).replace(" ", "")

        if len(self.entries) == 1:
            return rate_text(self.entries[0][1])
        days = [name[:3].title() for name in _DAY_NAMES]
        parts = []
        for minute, rate in self.entries:
            day, rest = divmod(minute, _MINUTES_PER_DAY)
            hour, mins = divmod(rest, 60)
            parts.append(f"{days[day]}-{hour:02d}:{mins:02d},{rate_text(rate)}")
        return " ".join(parts)
