"""Figures the reliability suites leave behind, for the README's "Reliability" section.

Set ``FLOWXFER_FIGURES=path.jsonl`` and every chaos, crash, fuzz and load test
appends one JSON object a line (what ran, faults injected, kills survived,
bytes lost, bytes re-sent); ``python -m tests.chaos.figures path.jsonl``
sums them up. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def record(suite: str, **figures: Any) -> None:
    """Append one line of figures (a no-op unless ``FLOWXFER_FIGURES`` names a file)."""
    target = os.environ.get("FLOWXFER_FIGURES")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"suite": suite, **figures}, sort_keys=True) + "\n")


def summarise(path: Path) -> dict[str, dict[str, Any]]:
    """Totals per suite: runs, and the sum (or, for ratios, the maximum) of every numeric figure."""
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {"runs": 0})
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        suite = totals[row.pop("suite")]
        suite["runs"] += 1
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key.startswith("max_") or key.endswith("_ratio"):
                suite[key] = max(suite.get(key, 0), value)
            else:
                suite[key] = suite.get(key, 0) + value
    return dict(totals)


if __name__ == "__main__":
    print(json.dumps(summarise(Path(sys.argv[1])), indent=1, sort_keys=True))
