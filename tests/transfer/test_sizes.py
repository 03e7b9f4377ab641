from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._sizes import (
    format_duration,
    format_rate,
    format_size,
    parse_duration,
    parse_rate,
    parse_size,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("100B", 100),
        ("100 b", 100),
        ("512k", 512 * KiB),
        ("512K", 512 * KiB),
        ("512KiB", 512 * KiB),
        ("512KB", 512 * KiB),
        ("512kb", 512 * KiB),
        ("512Ki", 512 * KiB),
        ("8M", 8 * MiB),
        ("8m", 8 * MiB),
        ("8MiB", 8 * MiB),
        ("8MB", 8 * MiB),
        ("8 MiB", 8 * MiB),
        ("  8M  ", 8 * MiB),
        ("1G", GiB),
        ("1GB", GiB),
        ("1.5G", 3 * GiB // 2),
        ("1.5 GiB", 3 * GiB // 2),
        (".5M", MiB // 2),
        ("2.T", 2 * TiB),
        ("2T", 2 * TiB),
        ("1P", 1024**5),
        ("0.1M", 104857),  # 104857.6 bytes, truncated
        ("0k", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "-1",
        "-8M",
        "M",
        "8X",
        "8MM",
        "8 M B",
        "1e3",
        "inf",
        "nan",
        "1.5",
        "0.5B",
        "8MiBs",
        "8iB",
        "8 /s",
        "٣",
        "1,000",
        "0x10",
        "+5",
    ],
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_messages_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size("-1M")
    with pytest.raises(ValueError, match="empty"):
        parse_size("")
    with pytest.raises(ValueError, match="8M"):
        parse_size("lots")


@given(st.integers(min_value=0, max_value=2**60), st.sampled_from(["", "k", "M", "G", "T"]))
def test_parse_size_integers(number: int, unit: str) -> None:
    power = {"": 0, "k": 1, "M": 2, "G": 3, "T": 4}[unit]
    assert parse_size(f"{number}{unit}") == number * 1024**power
    assert parse_size(f"{number}{unit.lower()}iB" if unit else f"{number}B") == number * 1024**power


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10M", 10.0 * MiB),
        ("10M/s", 10.0 * MiB),
        ("10MiB/s", 10.0 * MiB),
        ("512k/S", 512.0 * KiB),
        ("1.5", 1.5),
        ("off", None),
        ("OFF", None),
        (" none ", None),
        ("unlimited", None),
        ("0", None),
        ("0/s", None),
        ("0M", None),
    ],
)
def test_parse_rate(text: str, expected: float | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "/s", "-1M", "fast", "10M/h", "10M/ s/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1H30M", 5400.0),
        ("1d2h3m4s5ms", 86400 + 7200 + 180 + 4 + 0.005),
        ("1.5h", 5400.0),
        (" 15m ", 900.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "s", "-5s", "5x", "30m1h", "1m1m", "1h30", "h1", "5 minutes", "1e3s", "inf", "1h-30m", "١s"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (8 * MiB, "8 MiB"),
        (3 * GiB // 2, "1.5 GiB"),
        (MiB - 1, "1 MiB"),  # 1023.999 KiB rounds up to the next unit, not to "1024 KiB"
        (5 * TiB, "5 TiB"),
        (-2048, "-2 KiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_reads_back_within_rounding(n: int) -> None:
    text = format_size(n)
    back = parse_size(text)
    # One decimal of a binary unit: off by at most 5% (and exact below 1 KiB).
    assert abs(back - n) <= max(0.05 * n, 0)
    number = float(text.split()[0])
    assert 0 <= number < 1024 or text.endswith("EiB")


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(10 * MiB, "10 MiB/s"), (512, "512 B/s"), (0.5, "0.5 B/s"), (1.5 * KiB, "1.5 KiB/s"), (0, "0 B/s")],
)
def test_format_rate(rate: float, expected: str) -> None:
    assert format_rate(rate) == expected
    assert parse_rate(expected) in (None, pytest.approx(rate, rel=0.05))


def test_format_rate_refuses_infinity() -> None:
    with pytest.raises(ValueError):
        format_rate(math.inf)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0 s"),
        (0.25, "0.2 s"),
        (2.5, "2.5 s"),
        (9.96, "10 s"),
        (42, "42 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),
        (90, "1 min 30 s"),
        (65, "1 min 05 s"),
        (599.7, "10 min"),
        (720, "12 min"),
        (3599.9, "1 h 00 min"),
        (3900, "1 h 05 min"),
        (86399, "1 d 00 h"),
        (2 * 86400 + 3 * 3600, "2 d 03 h"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_format_duration_refuses(bad: float) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)


@given(st.floats(min_value=0, max_value=10**8))
def test_format_duration_is_close(seconds: float) -> None:
    text = format_duration(seconds)
    units = {"s": 1, "min": 60, "h": 3600, "d": 86400}
    words = text.split()
    shown = sum(float(words[i]) * units[words[i + 1]] for i in range(0, len(words), 2))
    # Precision follows magnitude: within a second, a minute or an hour as the unit shown says.
    smallest = units[words[-1]]
    assert abs(shown - seconds) <= max(0.05, smallest / 2 + 1e-9) + 1e-6 * seconds
