"""``--path-map FROM=TO``: the pure translation between this host's paths and the journal's."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._pathmap import PathMap

_PART = st.text(alphabet="abcxyz0_.-", min_size=1, max_size=6).filter(lambda p: p not in (".", ".."))
_PATH = st.lists(_PART, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))


def test_a_journal_path_under_from_is_read_under_to() -> None:
    paths = PathMap.parse(["/mnt/a=/data"])
    assert paths.to_local("/mnt/a/run1/x.fq.gz") == "/data/run1/x.fq.gz"
    assert paths.to_journal("/data/run1/x.fq.gz") == "/mnt/a/run1/x.fq.gz"
    assert paths.to_local("/mnt/a") == "/data"


def test_prefixes_match_whole_components_and_the_longest_wins() -> None:
    paths = PathMap.parse(["/mnt/a=/data", "/mnt/a/fast=/ssd"])
    assert paths.to_local("/mnt/ab/x") == "/mnt/ab/x"
    assert paths.to_local("/mnt/a/fast/x") == "/ssd/x"
    assert paths.to_local("/mnt/a/slow/x") == "/data/slow/x"
    assert paths.to_journal("/ssd/x") == "/mnt/a/fast/x"
    assert paths.to_journal("/elsewhere/x") == "/elsewhere/x"


def test_no_map_is_the_identity_and_false() -> None:
    assert not PathMap()
    assert PathMap().to_local("/a/b") == "/a/b"


@pytest.mark.parametrize(
    "spec",
    ["/mnt/a", "=/data", "/mnt/a=", "mnt/a=/data", "/mnt/a=data"],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="FROM=TO|absolute"):
        PathMap.parse([spec])


def test_the_same_from_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="mapped twice"):
        PathMap.parse(["/mnt/a=/data", "/mnt/a/=/other"])


@given(source=_PATH, target=_PATH, rest=st.lists(_PART, max_size=4))
def test_a_path_under_from_round_trips(source: str, target: str, rest: list[str]) -> None:
    paths = PathMap.parse([f"{source}={target}"])
    journal = posixpath.join(source, *rest) if rest else source
    local = paths.to_local(journal)
    assert local == (posixpath.join(target, *rest) if rest else target)
    assert paths.to_journal(local) == journal
