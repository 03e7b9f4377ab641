from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer import protocol


@given(st.binary(max_size=4096))
def test_checksum_round_trips(data: bytes) -> None:
    text = protocol.checksum_of(data)
    assert text.startswith("xxh3-128:")
    assert protocol.format_checksum(protocol.parse_checksum(text)) == text


@pytest.mark.parametrize("bad", ["md5:abc", "xxh3-128:zz", "xxh3-128:" + "0" * 31, ""])
def test_parse_checksum_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        protocol.parse_checksum(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("Sample1_S1_L001_R1_001.fastq.gz", True),
        ("a..b.txt", True),
        ("has space.txt", False),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("nul\x00.txt", False),
        ("x" * 255, True),
        ("x" * 256, False),
        ("é" * 128, False),
        ("", False),
    ],
)
def test_filename_problem(name: str, ok: bool) -> None:
    assert (protocol.filename_problem(name) is None) == ok


def test_rate_limit_spec() -> None:
    assert protocol.parse_rate_limit_spec("off") is None
    limits = protocol.parse_rate_limit_spec("download=3/10s,api=50")
    assert limits is not None
    assert limits["download"] == protocol.RateLimit(3, 10.0)
    assert limits["api"] == protocol.RateLimit(50, 3600.0)
    assert limits["upload"] == protocol.RateLimit(100, 3600.0)
    for bad in ("bogus=1", "api=0", "api=x", "api=5/0s", "api"):
        with pytest.raises(ValueError):
            protocol.parse_rate_limit_spec(bad)
