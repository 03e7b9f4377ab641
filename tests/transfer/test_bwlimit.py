from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.transfer._bwlimit import BandwidthSchedule

MiB = 1024 * 1024
MONDAY = datetime(2024, 1, 1)  # a Monday


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute, seconds=second)


def test_plain_rate_applies_always() -> None:
    schedule = BandwidthSchedule.parse("10M")
    assert schedule.rate_at(at(0, 0)) == 10 * MiB
    assert schedule.rate_at(at(6, 23, 59)) == 10 * MiB
    assert schedule.is_constant
    assert schedule.next_change_after(at(3, 12)) is None


@pytest.mark.parametrize("text", ["off", "0", "OFF", " off "])
def test_off_is_unlimited(text: str) -> None:
    schedule = BandwidthSchedule.parse(text)
    assert schedule.rate_at(at(2, 9)) is None
    assert schedule.next_change_after(at(2, 9)) is None


def test_daily_timetable() -> None:
    schedule = BandwidthSchedule.parse("08:00,10M 19:00,off")
    assert schedule.rate_at(at(0, 8)) == 10 * MiB
    assert schedule.rate_at(at(0, 18, 59, 59)) == 10 * MiB
    assert schedule.rate_at(at(0, 19)) is None
    # Before the first entry the last one applies (the timetable wraps around midnight).
    assert schedule.rate_at(at(0, 7, 59, 59)) is None
    assert schedule.rate_at(at(0, 0)) is None
    assert schedule.rate_at(at(4, 12)) == 10 * MiB


def test_entry_order_in_text_does_not_matter() -> None:
    assert BandwidthSchedule.parse("19:00,off 08:00,10M") == BandwidthSchedule.parse("08:00,10M 19:00,off")


def test_weekly_timetable_with_days() -> None:
    schedule = BandwidthSchedule.parse("Mon-08:00,512k Fri-23:59,10M Sat-10:00,1M Sun-20:00,off")
    assert schedule.rate_at(at(0, 7)) is None  # Monday before 08:00: Sunday 20:00's "off" wraps
    assert schedule.rate_at(at(0, 8)) == 512 * 1024
    assert schedule.rate_at(at(3, 12)) == 512 * 1024  # Thursday
    assert schedule.rate_at(at(4, 23, 59)) == 10 * MiB
    assert schedule.rate_at(at(5, 9, 59)) == 10 * MiB
    assert schedule.rate_at(at(5, 10)) == 1 * MiB
    assert schedule.rate_at(at(6, 20)) is None


def test_daily_and_weekly_entries_mix() -> None:
    schedule = BandwidthSchedule.parse("08:00,10M 19:00,1M saturday-00:00,off")
    assert schedule.rate_at(at(5, 0)) is None  # Saturday: off from midnight ...
    assert schedule.rate_at(at(5, 7, 59)) is None
    assert schedule.rate_at(at(5, 8)) == 10 * MiB  # ... until the daily 08:00 entry
    assert schedule.rate_at(at(6, 7)) == 1 * MiB  # Sunday morning: Saturday 19:00's rate
    assert schedule.rate_at(at(4, 23)) == 1 * MiB  # Friday evening


def test_next_change_after() -> None:
    schedule = BandwidthSchedule.parse("08:00,10M 19:00,off")
    assert schedule.next_change_after(at(0, 12)) == at(0, 19)
    assert schedule.next_change_after(at(0, 20)) == at(1, 8)
    assert schedule.next_change_after(at(0, 7, 30)) == at(0, 8)
    # Exactly at a change: it has happened; the next one is later.
    assert schedule.next_change_after(at(0, 8)) == at(0, 19)
    assert schedule.next_change_after(at(6, 20)) == at(7, 8)  # Sunday night -> next Monday


def test_next_change_skips_entries_that_keep_the_rate() -> None:
    schedule = BandwidthSchedule.parse("08:00,10M 12:00,10M 19:00,off")
    assert schedule.next_change_after(at(0, 9)) == at(0, 19)
    assert BandwidthSchedule.parse("08:00,10M 19:00,10M").next_change_after(at(0, 9)) is None


def test_aware_datetimes_keep_their_zone() -> None:
    zone = timezone(timedelta(hours=2))
    schedule = BandwidthSchedule.parse("08:00,10M 19:00,off")
    when = datetime(2024, 1, 1, 12, 0, tzinfo=zone)
    assert schedule.rate_at(when) == 10 * MiB
    change = schedule.next_change_after(when)
    assert change == datetime(2024, 1, 1, 19, 0, tzinfo=zone)
    assert change is not None and change.tzinfo is zone


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fast",
        "08:00,",
        "24:00,10M",
        "08:60,10M",
        "8,10M",
        "08:00,10M 08:00,off",  # the same time twice
        "Mon-08:00,1M 08:00,2M",  # Monday 08:00 named twice
        "Xyz-08:00,10M",
        "08:00,-1M",
        "08:00,10X",
        "08:00;10M",
        "08:00,10M,5M",
        "-1M",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        BandwidthSchedule.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        BandwidthSchedule(())
    with pytest.raises(ValueError):
        BandwidthSchedule(((10, 1.0), (5, 2.0)))
    with pytest.raises(ValueError):
        BandwidthSchedule(((0, 0.0),))
    with pytest.raises(ValueError):
        BandwidthSchedule(((7 * 24 * 60, 1.0),))


def test_describe_reads_back() -> None:
    schedule = BandwidthSchedule.parse("Mon-08:00,512k Sat-10:00,off")
    assert schedule.describe() == "Mon-08:00,512KiB/s Sat-10:00,off"
    assert BandwidthSchedule.parse(schedule.describe()) == schedule
    assert BandwidthSchedule.parse("10M").describe() == "10MiB/s"


_times = st.tuples(st.integers(0, 6), st.integers(0, 23), st.integers(0, 59))
_rates = st.sampled_from(["off", "1M", "2M", "512k"])


@settings(deadline=None)  # walks a week minute by minute: fast here, not on a loaded CI machine
@given(
    entries=st.dictionaries(_times, _rates, min_size=1, max_size=6),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_next_change_is_the_first_minute_with_another_rate(
    entries: dict[tuple[int, int, int], str], when: datetime
) -> None:
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    text = " ".join(f"{days[d]}-{h:02d}:{m:02d},{rate}" for (d, h, m), rate in entries.items())
    schedule = BandwidthSchedule.parse(text)
    current = schedule.rate_at(when)
    change = schedule.next_change_after(when)
    # Walk minute by minute through the next week: brute force against the bisecting answer.
    probe = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    expected = None
    for _ in range(7 * 24 * 60):
        if schedule.rate_at(probe) != current:
            expected = probe
            break
        probe += timedelta(minutes=1)
    assert change == expected
    if change is not None:
        assert change > when
        assert schedule.rate_at(change) != current
