"""The suite's slow-first order (tests/conftest.py's ``SLOW_FIRST``): real files, longest first, stable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tests.conftest import SLOW_FIRST, pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class _Item:
    """What the hook reads of a collected test: its node id."""

    nodeid: str


def test_every_slow_first_entry_is_a_test_file_of_the_suite() -> None:
    assert len(set(SLOW_FIRST)) == len(SLOW_FIRST)
    missing = [path for path in SLOW_FIRST if not (ROOT / path).is_file()]
    assert not missing, f"renamed or gone (update tests/conftest.py's SLOW_FIRST): {missing}"


def test_slow_files_come_first_in_their_order_and_each_file_keeps_its_own() -> None:
    first, second = SLOW_FIRST[0], SLOW_FIRST[1]
    ids = ["tests/a/test_x.py::t1", f"{second}::s1", "tests/test_y.py::t2", f"{first}::f1", f"{second}::s2"]
    ids += ["tests/a/test_x.py::t3", f"{first}::f2[p]"]
    items = [_Item(nodeid) for nodeid in ids]
    pytest_collection_modifyitems(cast(Any, items))
    assert [item.nodeid for item in items] == [
        f"{first}::f1",
        f"{first}::f2[p]",
        f"{second}::s1",
        f"{second}::s2",
        "tests/a/test_x.py::t1",
        "tests/test_y.py::t2",
        "tests/a/test_x.py::t3",
    ]
