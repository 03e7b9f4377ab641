"""bench_wan's start-to-first-byte column of the fixed cost: read from the path's trace (pure arithmetic)."""

from __future__ import annotations

import pytest

from benchmarks._common import Run
from benchmarks.bench_wan import first_answer_byte

#: Two commands' connections as the path's trace keeps them: [accepted, first byte, last byte, bytes].
TRACE = {
    "connections": {
        "1": [100.00, 100.10, 100.11, 300],  # a login before the runs
        "2": [200.20, 200.40, 200.41, 4500],  # the first command's early connection
        "3": [200.30, 200.35, 200.36, 200],  # a second connection of it, answered first
        "4": [300.25, None, 0.0, 0],  # a connection that got nothing back
        "5": [300.30, 300.55, 300.56, 4500],
    }
}


def test_the_first_answer_of_any_connection_the_command_opened_half_a_round_trip_later() -> None:
    assert first_answer_byte(TRACE, Run(0, 0.6, 40.0, started=200.0), rtt=0.05) == pytest.approx(0.375)
    assert first_answer_byte(TRACE, Run(0, 0.6, 40.0, started=300.0), rtt=0.05) == pytest.approx(0.575)


def test_no_answer_in_the_command_s_time_or_no_start_known_gives_none() -> None:
    assert first_answer_byte(TRACE, Run(0, 0.6, 40.0, started=400.0), rtt=0.05) is None
    assert first_answer_byte(TRACE, Run(0, 0.6, 40.0), rtt=0.05) is None
    assert first_answer_byte({}, Run(0, 0.6, 40.0, started=200.0), rtt=0.05) is None
