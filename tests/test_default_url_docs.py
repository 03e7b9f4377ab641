"""The project's own docs name the API's real default URL, the one the code uses (``https://app.flow.bio/api``).

``https://api.flow.bio`` is the platform's overview page, not its API: an
example that names it sends a reader's first request to an HTML page. The
README may mention it only to say so.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowxfer.transfer import DEFAULT_BASE_URL

ROOT = Path(__file__).resolve().parent.parent
WRONG = re.compile(re.escape("https://api.flow.bio") + r"(?![\w./-])")
#: How the README says the old default was wrong (the only mentions allowed).
SAYS_SO = ("not the API", "until this version")


def _documents() -> list[Path]:
    folders = ["docs", "transfer", "cli", "journal", "server", "flowxfer", "benchmarks"]
    found = [ROOT / "README.md"]
    for folder in folders:
        found += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".md", ".py", ".rst", ".txt"))
    return found


def test_the_default_url_is_the_api() -> None:
    assert DEFAULT_BASE_URL == "https://app.flow.bio/api"


def test_no_document_names_the_overview_page_as_the_api() -> None:
    offenders = []
    for path in _documents():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if WRONG.search(line) and not any(words in line for words in SAYS_SO):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
