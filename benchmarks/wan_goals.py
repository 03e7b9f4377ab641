"""Issue 20's goals, met or missed: the lines that end each WAN section and the README's WAN table.

Every goal is one line of one shape, ``- PATH, WHAT: FIGURE (goal GOAL): met|missed``
(a note may follow the verdict), so that the README's table can be written
from the recorded sections of RESULTS.md alone (:func:`readme_table`), not
from a run's memory: what the README shows is what was recorded.

At 50 ms the shares of the link are held to the issue's figures; at any
other round trip to "within 10 points of the 50 ms figures", the recorded
50 ms section's. The ratios (against curl, the official client) and the
fixed cost (0.3 s + 2 round trips of the run's path) are the same goals at
any round trip. The loopback goals are the Engine section's recorded figures
(``python -m benchmarks.bench_engine`` measures them again).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._common import NOTES_MARKER
from ._wan import Row

#: The issue's goals for flowxfer's share of the link at 50 ms, by path and task kind.
SHARES = {
    "clean": {"download": 0.93, "upload 1": 0.90, "upload many": 0.93},
    "lossy": {"download": 0.90, "upload 1": 0.85, "upload many": 0.90},
}
#: How far (in points of the link) a figure at another round trip may fall below its 50 ms figure.
POINTS = 10
#: The small files' goals: the official client's time over ours.
SMALL = {"flowxfer sync": 20.0, "flowxfer sync --pack-small": 50.0}
HEADING = "WAN path (issue 20), {rtt:g} ms RTT"


@dataclass(frozen=True)
class Goal:
    path: str
    what: str
    figure: str
    goal: str
    met: bool
    note: str = ""

    def line(self) -> str:
        return f"- {self.path}, {self.what}: {self.figure} (goal {self.goal}): {self.verdict}{self.note}."

    @property
    def verdict(self) -> str:
        return "met" if self.met else "missed"


GOAL_LINE = re.compile(
    r"^- (?P<path>[^,:]+), (?P<what>[^:]+): (?P<figure>.+?) \(goal (?P<goal>[^)]+)\): "
    r"(?P<verdict>met|missed)(?P<note>.*?)\.?$"
)


def parse_goals(text: str) -> list[Goal]:
    """The goal lines of a recorded section (its figures, before the notes)."""
    figures = text.split(NOTES_MARKER, 1)[0]
    found = (GOAL_LINE.match(line.strip()) for line in figures.splitlines())
    return [Goal(m["path"], m["what"], m["figure"], m["goal"], m["verdict"] == "met", m["note"]) for m in found if m]


def kind(task: str) -> str:
    return "download" if task.startswith("download") else "upload many" if "×" in task else "upload 1"


def share_goals(rows: Iterable[Row], rtt_ms: float, recorded_50: dict[tuple[str, str], float]) -> list[Goal]:
    """flowxfer's share of the link on each large-transfer row: the issue's figure at 50 ms, else
    within :data:`POINTS` of the recorded 50 ms share of the same path and task."""
    goals = []
    for row in rows:
        share = row.link_share
        if row.tool != "flowxfer" or share is None:
            continue
        if rtt_ms == 50:
            goal = SHARES[row.path][kind(row.task)]
            goals.append(Goal(row.path, row.task, f"{share:.0%} of the link", f"≥ {goal:.0%}", share >= goal))
            continue
        before = recorded_50.get((row.path, row.task))
        if before is None:  # shown, not skipped: a goal without its figure is not met
            goals.append(
                Goal(
                    row.path,
                    row.task,
                    f"{share:.0%} of the link, no 50 ms figure recorded",
                    f"within {POINTS} points of 50 ms",
                    False,
                    " (record the 50 ms section first)",
                )
            )
            continue
        drop = (before - share) * 100
        figure = f"{share:.0%} of the link, {before:.0%} at 50 ms, {_points(drop)}"
        goals.append(Goal(row.path, row.task, figure, f"within {POINTS} points of 50 ms", drop <= POINTS))
    return goals


def _points(drop: float) -> str:
    return f"{drop:.0f} points lower" if drop >= 0.5 else f"{-drop:.0f} points higher" if drop <= -0.5 else "the same"


def ratio_goals(rows: Sequence[Row]) -> list[Goal]:
    """Against curl (clean download) and the official client (clean, 16 files)."""
    median = {(r.path, kind(r.task), r.tool): r.series.median for r in rows}
    goals = []
    curl, ours = median.get(("clean", "download", "curl")), median.get(("clean", "download", "flowxfer"))
    if curl and ours:
        goals.append(
            Goal("clean", "download against curl", f"{ours / curl:.2f}× curl's time", "≤ 1.05×", ours / curl <= 1.05)
        )
    for row in rows:
        official = median.get((row.path, "upload many", "flowbio v2"))
        if row.path == "clean" and kind(row.task) == "upload many" and row.tool == "flowxfer" and official:
            ratio = official / row.series.median
            goals.append(Goal("clean", f"{row.task} against the official client", f"{ratio:.1f}×", "≥ 7×", ratio >= 7))
    return goals


def fixed_goals(on_path: dict[str, float], rtt: float) -> list[Goal]:
    """A 4 KiB command through the clean path, start to last byte: at most 0.3 s + 2 round trips."""
    goal = 0.3 + 2 * rtt
    return [
        Goal(
            "clean",
            f"fixed cost, {direction} 4 KiB",
            f"{seconds:.2f} s",
            f"≤ 0.3 s + 2 round trips = {goal:.2f} s",
            seconds <= goal,
        )
        for direction, seconds in on_path.items()
    ]


def small_goals(path: str, task: str, ratios: dict[str, float], note: str) -> list[Goal]:
    """2,000 small files: one by one ≥ 20× the official client, packed ≥ 50×."""
    return [
        Goal(
            path,
            f"{task}, {tool}",
            f"{ratios[tool]:.1f}× the official client",
            f"≥ {goal:g}×",
            ratios[tool] >= goal,
            f" ({note})",
        )
        for tool, goal in SMALL.items()
        if tool in ratios
    ]


def section(results: str, heading: str) -> str:
    """One ``## heading`` section of RESULTS.md's text ('' if absent)."""
    marker = f"## {heading}\n"
    if marker not in results:
        return ""
    return results.split(marker, 1)[1].split("\n## ", 1)[0]


def recorded_shares(text: str) -> dict[tuple[str, str], float]:
    """flowxfer's share of the link by (path, task) in a recorded WAN section's table."""
    shares = {}
    for line in text.split(NOTES_MARKER, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[2] == "flowxfer" and cells[5].endswith("%"):
            shares[(cells[0], cells[1])] = float(cells[5].rstrip("%")) / 100
    return shares


def loopback_goals(results: str) -> list[Goal]:
    """The loopback goals from the Engine section as recorded (upload ≥ 3× flowbio, download ≤ 1.2× curl,
    peak RSS ≤ 200 MiB), or none if it is not there."""
    engine = section(results, "Engine (issue 3)")
    date = re.search(r"\d{4}-\d{2}-\d{2}", engine)
    when = date[0] if date else "undated"
    note = f" (the Engine section, {when}; `python -m benchmarks.bench_engine` measures again)"
    found = {
        "upload": re.search(r"flowxfer / flowbio speed-up\*\* \| \*\*([\d.]+)×", engine),
        "download": re.search(r"flowxfer / curl time\*\* \| \*\*([\d.]+)×", engine),
        "rss": re.search(r"Peak RSS of the flowxfer CLI across these runs: (\d+) MiB", engine),
    }
    goals = []
    if found["upload"]:
        up = float(found["upload"][1])
        goals.append(Goal("loopback", "upload 1 GiB", f"{up:.2f}× flowbio", "≥ 3×", up >= 3, note))
    if found["download"]:
        down = float(found["download"][1])
        goals.append(Goal("loopback", "download 1 GiB", f"{down:.2f}× curl's time", "≤ 1.2×", down <= 1.2, note))
    if found["rss"]:
        rss = int(found["rss"][1])
        goals.append(Goal("loopback", "peak RSS of the CLI", f"{rss} MiB", "≤ 200 MiB", rss <= 200, note))
    return goals


README_START = "<!-- wan-table: written from RESULTS.md by `python -m benchmarks.bench_wan --readme` -->"
README_END = "<!-- /wan-table -->"


def readme_table(results: str, rtts: Sequence[float] = (50, 150)) -> list[str]:
    """The README's WAN table: each goal with its figure and verdict in each recorded section."""
    recorded = {rtt: section(results, HEADING.format(rtt=rtt)) for rtt in rtts}
    recorded = {rtt: text for rtt, text in recorded.items() if text}
    goals = {rtt: {(g.path, g.what): g for g in parse_goals(text)} for rtt, text in recorded.items()}
    # The loopback rows come from the Engine section as it stands, not as a WAN section copied it.
    keys = list(dict.fromkeys(key for found in goals.values() for key in found if key[0] != "loopback"))
    lines = []
    for rtt, text in recorded.items():
        when = re.search(r"\d{4}-\d{2}-\d{2}", text)
        rounds = re.search(r"Medians of [^.]*\.", text)
        lines.append(f"- {rtt:g} ms: recorded {when[0] if when else '(undated)'}. {rounds[0] if rounds else ''}")
    lines += [
        "",
        "| path | what | goal | " + " | ".join(f"{rtt:g} ms" for rtt in recorded) + " |",
        "|---|---|---|" + "---|" * len(recorded),
    ]
    for path, what in keys:
        first = next(found[(path, what)] for found in goals.values() if (path, what) in found)
        cells = []
        for found in goals.values():
            goal = found.get((path, what))
            if goal is None:
                cells.append("not recorded")
                continue
            own = "" if goal.goal == first.goal else f" (goal {goal.goal})"
            cells.append(f"{goal.figure}{own}: **{goal.verdict}**")
        lines.append(f"| {path} | {what} | {first.goal} | " + " | ".join(cells) + " |")
    for goal in loopback_goals(results) if recorded else []:
        cell = f"{goal.figure}: **{goal.verdict}**{goal.note}"
        lines.append(f"| {goal.path} | {goal.what} | {goal.goal} | " + " | ".join([cell] * len(recorded)) + " |")
    return lines


def write_readme(readme: str, table: Sequence[str]) -> str:
    """``readme`` with the text between the WAN table's markers replaced by ``table``."""
    if README_START not in readme or README_END not in readme:
        raise ValueError("README.md has no WAN table markers")
    head, rest = readme.split(README_START, 1)
    return head + README_START + "\n" + "\n".join(table) + "\n" + README_END + rest.split(README_END, 1)[1]
