"""The console script makes process-wide choices; ``main`` called inside another program does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import atexit, gc, json, sys
from flowxfer.cli import main, run

def report():  # at exit: the console script ends the process itself (without the interpreter's teardown)
    import aiohttp.connector  # its import-time default context: the system's CAs, unless the script imported it
    trusted = aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"] > 0
    print(json.dumps({"aiohttp_default_trust": trusted, "frozen": gc.get_freeze_count() > 0}), flush=True)

atexit.register(report)
if sys.argv[1] == "script":
    sys.argv[1:] = ["jobs"]
    run()
else:
    main(["jobs"], standalone_mode=False)
"""


@pytest.mark.parametrize("how", ["script", "embedded"])
def test_process_wide_choices_only_in_the_console_script(tmp_path: Path, how: str) -> None:
    # The script imports aiohttp without its import-time CA loads (transfer/_tls.py) and freezes
    # start-up objects; a program calling main() in its own process keeps both as they were.
    env = {**os.environ, "FLOWXFER_JOURNAL": str(tmp_path / "j.db"), "FLOWXFER_CONFIG_DIR": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, "-c", _PROBE, how], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"aiohttp_default_trust": how == "embedded", "frozen": how == "script"}
