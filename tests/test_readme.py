"""The README cannot rot: its set-up commands are CI's, and every block marked runnable runs.

A block is marked by an HTML comment ``<!-- runnable -->`` on the line before
its fence. The blocks run in order, in one scratch folder, against a real
local server, with the environment a lab would have after ``login``: shell
blocks with bash (``-euo pipefail``), Python blocks with this interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.runfolder import make_run_folder
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: The README's shared journal; its blocks run against a fresh database of a throwaway cluster instead.
README_JOURNAL_URL = "postgresql://flowxfer@db.lab/flowxfer"
FENCE = re.compile(r"(?P<marker><!-- runnable -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)


def blocks() -> list[tuple[bool, str, str]]:
    return [(bool(m.group("marker")), m.group("lang"), m.group("body")) for m in FENCE.finditer(README)]


def test_the_first_two_commands_are_the_demo_and_ci_s_test_command() -> None:
    first, second = blocks()[:2]
    assert first[2].strip() == "pip install -e . && flowxfer demo"
    install, test_command = second[2].strip().split(" && ")
    assert install == "pip install -e '.[dev]'"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[dev]'" in ci
    assert re.search(rf"^\s*{re.escape(test_command)}\s*$", ci, re.M), "CI must run the README's test command"


def test_ci_runs_the_readme_s_checks_before_the_tests() -> None:
    """The Development section's lint and type-check line is CI's, word for word, and runs before pytest."""
    development = README.split("## Development", 1)[1]
    checks = [line.split("#", 1)[0].strip() for line in development.splitlines() if line.startswith("ruff check")]
    assert len(checks) == 1, "the README's Development section lost its checks line"
    assert "python .ci/typecheck.py" in checks[0] and "ruff format --check" in checks[0]
    ci = (ROOT / ".ci" / "run").read_text()
    found = re.search(rf"^\s*{re.escape(checks[0])}\s*$", ci, re.M)
    assert found, "CI must run the README's checks"
    assert found.start() < ci.index("python -m pytest"), "CI must check before it tests"


def test_every_runnable_block_runs(tmp_path: Path, postgres_url: str) -> None:
    runnable = [(lang, body.replace(README_JOURNAL_URL, postgres_url)) for marked, lang, body in blocks() if marked]
    assert len(runnable) >= 6, "the README lost its runnable examples"
    work = tmp_path / "lab"
    fastq = work / "run42" / "Fastq"
    fastq.mkdir(parents=True)
    for read in (1, 2):
        (fastq / f"Sample1_S1_L001_R{read}_001.fastq.gz").write_bytes(os.urandom(70_000 + read))
    make_run_folder(work / "runs", fastq_size=20_000, small_files=30, sample_sheet="v2")
    with ServerProcess(work / "flow-root") as server:  # the README names the root flow-root (admin --root)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLOW_API_URL": server.base_url,
            "FLOWXFER_CONFIG_DIR": str(tmp_path / "config"),
            "FLOWXFER_JOURNAL": str(tmp_path / "journal.db"),
            "FLOW_PASSWORD": server.users["alice"],
        }
        for lang, body in runnable:
            command = ["bash", "-euo", "pipefail", "-c", body] if lang == "sh" else [sys.executable, "-c", body]
            assert lang in ("sh", "python"), f"cannot run a {lang!r} block"
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, (
                f"README block failed:\n{body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
            assert "Traceback" not in done.stderr, body
    assert sorted(p.name for p in (work / "fastq").iterdir()) == sorted(p.name for p in fastq.iterdir())
    assert sorted(p.name for p in (work / "copy").iterdir()) == sorted(p.name for p in fastq.iterdir())
