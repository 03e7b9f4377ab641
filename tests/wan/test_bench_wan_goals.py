"""bench_wan's pure logic: rounds of the official client, the small files' scaling, the goals, the README table.

No process is started: these are the arithmetic and the text that turn a
run's medians into RESULTS.md's goal lines and the README's WAN table.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks._common import NOTES_MARKER, Run, Series, round_plan
from benchmarks._wan import Row
from benchmarks.bench_wan import TASKS, Plan, estimate_seconds
from benchmarks.wan_goals import (
    README_END,
    README_START,
    Goal,
    fixed_goals,
    loopback_goals,
    parse_goals,
    readme_table,
    recorded_shares,
    share_goals,
    small_goals,
    write_readme,
)
from benchmarks.wan_small import BASELINE, BASELINE_START, ONE_BY_ONE, PACKED, Traffic, per_file, scaled, summarise

GiB = 1 << 30
LINK = 125e6


def series(name: str, *seconds: float) -> Series:
    return Series(name, [Run(0, s, 50.0) for s in seconds])


def row(path: str, task: str, tool: str, seconds: float, nbytes: int = GiB) -> Row:
    return Row(path, task, tool, series(tool, seconds), nbytes, LINK)


# --- rounds ------------------------------------------------------------------


def test_the_official_client_runs_only_its_rounds_the_first_ones_in_the_same_alternating_order() -> None:
    plan = round_plan(["flowxfer upload", "flowbio upload"], 3, {"flowbio upload": 1})
    assert plan == [["flowxfer upload", "flowbio upload"], ["flowxfer upload"], ["flowxfer upload"]]
    assert round_plan(["a", "b"], 2) == [["a", "b"], ["a", "b"]]


@given(repeats=st.integers(0, 6), limit=st.integers(0, 9))
def test_every_tool_runs_its_own_count_of_rounds(repeats: int, limit: int) -> None:
    plan = round_plan(["a", "b"], repeats, {"b": limit})
    assert sum(r.count("a") for r in plan) == repeats
    assert sum(r.count("b") for r in plan) == min(limit, repeats)


# --- small files -------------------------------------------------------------


@given(start=st.floats(0, 5), per_file_s=st.floats(0.001, 1), sample=st.integers(1, 500), factor=st.integers(1, 20))
def test_the_sample_scales_to_all_files_with_its_start_up_counted_once(
    start: float, per_file_s: float, sample: int, factor: int
) -> None:
    files = sample * factor
    assert scaled(start + per_file_s * sample, start, sample, files) == pytest.approx(start + per_file_s * files)


def test_a_file_at_a_time_counts_round_trips_and_files_in_flight() -> None:
    cost = per_file(seconds=8.0, files=2000, requests=2000, connections=16, rtt=0.05)
    assert cost.seconds == 8.0 and cost.round_trips == pytest.approx(0.08)
    # each file needs a request's round trip; 0.08 round trips of time each: about 12.6 at once
    assert cost.in_flight == pytest.approx((1 + 16 / 2000) / 0.08)


def test_the_official_client_s_figures_are_scaled_and_its_start_up_left_out_of_its_time_a_file() -> None:
    runs = {
        ONE_BY_ONE: series(ONE_BY_ONE, 8.0, 7.0, 9.0),
        PACKED: series(PACKED, 2.0, 2.0, 2.0),
        BASELINE_START: series(BASELINE_START, 0.5),
        BASELINE: series(BASELINE, 14.5),
    }
    traffic = {
        ONE_BY_ONE: Traffic([2001, 2001, 2001], [16, 16, 16]),
        PACKED: Traffic([3, 3, 3], [1, 1, 1]),
        BASELINE_START: Traffic([1], [1]),
        BASELINE: Traffic([201], [1]),
    }
    result = summarise("clean", "upload 2,000 × 64 KiB", 2000 * 65536, 2000, 200, 0.05, runs, traffic)
    whole = 0.5 + 14.0 * 10
    assert result.ratios == {ONE_BY_ONE: pytest.approx(whole / 8.0), PACKED: pytest.approx(whole / 2.0)}
    assert result.rows[-1].tool == "flowbio v2 (200 of 2,000 files, scaled)"
    assert result.rows[-1].series.median == pytest.approx(whole)
    assert result.per_file[BASELINE].requests == 200 and result.per_file[BASELINE].connections == 0
    assert result.per_file[BASELINE].seconds == pytest.approx(14.0) and result.per_file[BASELINE].files == 200
    assert "200 of 2,000 files, scaled" in result.note


def test_without_the_official_client_there_is_no_ratio_and_no_goal_line() -> None:
    runs = {ONE_BY_ONE: series(ONE_BY_ONE, 8.0), PACKED: series(PACKED, 2.0)}
    result = summarise("clean", "t", 1, 2000, 200, 0.05, runs, {ONE_BY_ONE: Traffic(), PACKED: Traffic()})
    assert result.ratios == {} and len(result.rows) == 2
    assert small_goals("clean", "t", result.ratios, "") == []


def test_the_small_files_goals_are_twenty_and_fifty_times() -> None:
    goals = small_goals("lossy", "upload 2,000 × 64 KiB", {ONE_BY_ONE: 19.99, PACKED: 50.0}, "scaled")
    assert [(g.what, g.met) for g in goals] == [
        ("upload 2,000 × 64 KiB, flowxfer sync", False),
        ("upload 2,000 × 64 KiB, flowxfer sync --pack-small", True),
    ]


# --- goals -------------------------------------------------------------------


def test_at_50_ms_each_share_is_held_to_the_issue_s_figure() -> None:
    rows = [
        row("clean", "upload 1024 MiB", "flowxfer", GiB / LINK / 0.91),
        row("lossy", "download 1024 MiB", "flowxfer", GiB / LINK / 0.89),
        row("clean", "upload 1024 MiB", "flowbio v2", 80.0),
    ]
    goals = share_goals(rows, 50, {})
    assert [(g.path, g.what, g.goal, g.met) for g in goals] == [
        ("clean", "upload 1024 MiB", "≥ 90%", True),
        ("lossy", "download 1024 MiB", "≥ 90%", False),
    ]


def test_at_another_round_trip_each_share_is_held_to_within_ten_points_of_the_recorded_50_ms() -> None:
    rows = [
        row("clean", "upload 1024 MiB", "flowxfer", GiB / LINK / 0.801),
        row("lossy", "upload 1024 MiB", "flowxfer", GiB / LINK / 0.709),
        row("lossy", "download 1024 MiB", "flowxfer", GiB / LINK / 0.95),
    ]
    recorded = {
        ("clean", "upload 1024 MiB"): 0.90,
        ("lossy", "upload 1024 MiB"): 0.81,
        ("lossy", "download 1024 MiB"): 0.90,
    }
    goals = share_goals(rows, 150, recorded)
    assert [g.met for g in goals] == [True, False, True]
    assert goals[0].figure == "80% of the link, 90% at 50 ms, 10 points lower"
    assert goals[2].figure == "95% of the link, 90% at 50 ms, 5 points higher"
    unmatched = share_goals(rows[:1], 150, {})  # nothing recorded at 50 ms: shown, and not met
    assert [(g.figure, g.met) for g in unmatched] == [("80% of the link, no 50 ms figure recorded", False)]


def test_the_fixed_cost_is_0_3_s_and_two_round_trips_of_the_path() -> None:
    goals = fixed_goals({"download": 0.60, "upload": 0.61}, 0.15)
    assert [g.met for g in goals] == [True, False] and goals[0].goal.endswith("= 0.60 s")


@given(
    path=st.sampled_from(["clean", "lossy", "loopback"]),
    what=st.text("abc ×0123456789,", min_size=1).map(str.strip).filter(bool),
    met=st.booleans(),
)
def test_a_goal_line_reads_back_as_the_same_goal(path: str, what: str, met: bool) -> None:
    goal = Goal(path, what.strip(", ") or "x", "85% of the link", "≥ 90%", met, " (a note)")
    assert parse_goals(goal.line()) == [goal]


def test_goal_lines_in_the_notes_are_not_figures_of_the_run() -> None:
    text = f"- clean, a: 1 (goal ≥ 2): missed.\n{NOTES_MARKER}\n- clean, b: 3 (goal ≥ 2): met."
    assert [g.what for g in parse_goals(text)] == ["a"]


ENGINE = """## Engine (issue 3)

Machine: 2 cores, Python 3.11.7, loopback, 2026-11-30. Medians of 5 alternating runs.

| | **flowxfer / flowbio speed-up** | **2.96×** (goal ≥ 3×) | | |
| | **flowxfer / curl time** | **1.25×** (goal ≤ 1.2×) | | |

Peak RSS of the flowxfer CLI across these runs: 86 MiB (goal ≤ 200 MiB).
"""


def test_the_loopback_goals_are_read_from_the_recorded_engine_section() -> None:
    goals = loopback_goals(ENGINE + "\n## Other\n")
    assert [(g.what, g.figure, g.met) for g in goals] == [
        ("upload 1 GiB", "2.96× flowbio", False),  # shown as recorded: 3.0× read as met
        ("download 1 GiB", "1.25× curl's time", False),
        ("peak RSS of the CLI", "86 MiB", True),
    ]
    assert "2026-11-30" in goals[0].note
    assert loopback_goals("") == []


def section(rtt: int, date: str, lines: list[str]) -> str:
    return "\n".join(
        [
            f"## WAN path (issue 20), {rtt} ms RTT",
            "",
            f"Machine: 2 cores, loopback, {date}. Medians of 3 "
            "alternating rounds; the official client's runs 1 round(s), the first ones. Every tool.",
            "",
            "| clean | upload 1024 MiB | flowxfer | 10.05 s | 102 MiB/s | 85% | 153 MiB | x |",
            "| clean | upload 1024 MiB | flowbio v2 | 77.84 s | 13 MiB/s | 11% | 64 MiB |  |",
            "",
            *lines,
            "",
            NOTES_MARKER,
            "| clean | upload 1024 MiB | flowxfer | 1 s | 1 | 99% | 1 |",
            "",
        ]
    )


RESULTS = "\n".join(
    [
        "# Benchmark results",
        "",
        section(
            50,
            "2026-12-07",
            [
                "- clean, upload 1024 MiB: 85% of the link (goal ≥ 90%): missed.",
                "- clean, fixed cost, download 4 KiB: 0.40 s (goal ≤ 0.3 s + 2 round trips = 0.40 s): met.",
            ],
        ),
        section(
            150,
            "2026-12-08",
            [
                "- clean, upload 1024 MiB: 80% of the link, 85% at 50 ms, 5 points lower (goal "
                "within 10 points of 50 ms): met."
            ],
        ),
    ]
)


def test_the_recorded_50_ms_shares_are_the_table_s_not_the_notes() -> None:
    assert recorded_shares(section(50, "d", [])) == {("clean", "upload 1024 MiB"): 0.85}


def test_the_readme_table_shows_each_goal_in_each_recorded_section() -> None:
    table = readme_table(RESULTS)
    assert (
        table[0] == "- 50 ms: recorded 2026-12-07. Medians of 3 alternating rounds; the official client's runs "
        "1 round(s), the first ones."
    )
    assert "| path | what | goal | 50 ms | 150 ms |" in table
    assert (
        "| clean | upload 1024 MiB | ≥ 90% | 85% of the link: **missed** | 80% of the link, 85% at 50 ms, "
        "5 points lower (goal within 10 points of 50 ms): **met** |" in table
    )
    assert (
        "| clean | fixed cost, download 4 KiB | ≤ 0.3 s + 2 round trips = 0.40 s | 0.40 s: **met** | not "
        "recorded |" in table
    )


def test_the_readme_s_table_is_replaced_between_its_markers_only() -> None:
    readme = f"intro\n{README_START}\nold table\n{README_END}\nafter\n"
    assert write_readme(readme, ["| new |"]) == f"intro\n{README_START}\n| new |\n{README_END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        write_readme("no markers", [])


# --- the estimate ------------------------------------------------------------


def plan(**changes: object) -> Plan:
    figures: dict[str, object] = {
        "repeats": 3,
        "baseline_repeats": 1,
        "small_files": 2000,
        "small_size": 65536,
        "baseline_files": 200,
        "tasks": frozenset(TASKS),
    }
    return Plan(**{**figures, **changes})  # type: ignore[arg-type]


def estimate(p: Plan, rtt_ms: float = 50) -> float:
    return estimate_seconds(p, rtt_ms=rtt_ms, link_mbit=1000, lossy_mbit=250, size=GiB, many=GiB, paths=2)


def test_the_estimate_grows_with_the_official_client_s_rounds_and_the_round_trip() -> None:
    full = estimate(plan())
    assert 10 * 60 < full < 30 * 60  # the recorded runs: ~20 min at 50 ms with one official round
    assert estimate(plan(baseline_repeats=3)) > full + 4 * 80  # two more 1 GiB and 16 × 64 MiB, both paths
    assert estimate(plan(baseline_repeats=0), 150) < estimate(plan(), 150)
    assert estimate(plan(), 150) > full
    small_only = estimate(plan(baseline_tasks=frozenset({"small"})), 150)
    assert estimate(plan(baseline_repeats=0), 150) < small_only < estimate(plan(), 150) - 4 * 180


def test_the_official_client_takes_part_only_in_its_tasks() -> None:
    only_small = plan(baseline_tasks=frozenset({"small"}))
    assert (only_small.baseline("small"), only_small.baseline("upload"), only_small.baseline("fixed")) == (1, 0, 0)
    assert plan(baseline_repeats=0).baseline("small") == 0
