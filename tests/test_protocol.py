from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer import protocol
from flowxfer.protocol import archive_member_names


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


def test_archive_member_names() -> None:
    """The rule the server names bulk archive members by and the engine predicts them with."""
    items = [
        ("1", "reads.fastq.gz"),
        ("2", "reads.fastq.gz"),
        ("3", "READS.fastq.gz"),
        ("4", "x"),
        ("5", "x"),
        ("6", ".hidden"),
        ("7", ".hidden"),
    ]
    assert archive_member_names(items) == [
        "reads.fastq.gz",
        "reads (2).fastq.gz",
        "READS (3).fastq.gz",
        "x",
        "x (5)",
        ".hidden",
        ".hidden (7)",
    ]


@given(
    st.lists(
        st.tuples(st.integers(1, 9).map(str), st.sampled_from(["a.txt", "A.txt", "b", "a (1).txt"])),
        max_size=12,
        unique_by=lambda t: t[0],
    )
)
def test_archive_member_names_are_unique(items: list[tuple[str, str]]) -> None:
    names = archive_member_names(items)
    assert len({n.casefold() for n in names}) == len(names)


def test_archive_member_names_step_past_a_name_already_taken() -> None:
    # "a (3).txt" is a real file's name here, so the clash of id 3 takes the counter.
    assert archive_member_names([("1", "a.txt"), ("9", "a (3).txt"), ("3", "a.txt")]) == [
        "a.txt",
        "a (3).txt",
        "a (3-2).txt",
    ]


def test_canonical_checksum_is_the_one_form_compared() -> None:
    text = protocol.checksum_of(b"x")
    assert protocol.canonical_checksum(text.upper()) == text
    assert protocol.canonical_checksum(f"  {text} ") == text
    assert protocol.canonical_checksum(None) is None
    assert protocol.canonical_checksum(42) is None
    assert protocol.canonical_checksum("md5:" + "0" * 32) is None
