"""Commands load on first use: a download's start-up does not pay for samples, sync or the server.

Start-up is most of a small command's time (issue 20: the fixed cost per
command). Every command must still be there, with the verbs other modules
add to its group.
"""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from flowxfer.cli import main

_LOADED = """
import json, sys
from flowxfer.cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("flowxfer."))))
"""


def loaded_by(*args: str) -> set[str]:
    answer = subprocess.run([sys.executable, "-c", _LOADED, *args], capture_output=True, text=True, check=True)
    return set(json.loads(answer.stdout.strip().splitlines()[-1]))


def test_a_download_loads_neither_samples_sync_nor_the_server() -> None:
    loaded = loaded_by("download", "--help")
    assert "flowxfer.cli._transfers" in loaded
    unwanted = {
        "flowxfer.cli._samples",
        "flowxfer.cli._bulk_sync",
        "flowxfer.cli._serve",
        "flowxfer.cli._demo",
        "flowxfer.transfer._sync",
        "flowxfer.transfer._samples",
        "flowxfer.transfer._illumina",
        "flowxfer.server",
    }
    assert not loaded & unwanted, sorted(loaded & unwanted)


def test_every_command_and_every_added_verb_is_there() -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"]).output
    for command in ("admin", "bulk", "demo", "doctor", "download", "jobs", "login", "logout", "resume"):
        assert f"  {command} " in listing, command
    for command in ("samples", "serve", "show", "sync", "upload"):
        assert f"  {command} " in listing, command
    samples = runner.invoke(main, ["samples", "--help"]).output
    assert "  types " in samples and "  upload-batch " in samples and "  sheet " in samples
    admin = runner.invoke(main, ["admin", "--help"]).output
    assert "  execution " in admin
    unknown = runner.invoke(main, ["downlaod"])
    assert unknown.exit_code == 2 and "No such command" in unknown.output
