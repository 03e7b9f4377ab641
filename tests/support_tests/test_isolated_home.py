"""No test sees the developer's home (tests/conftest.py): their saved logins never become a test's credential."""

from __future__ import annotations

import json
import os
import pwd
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowxfer.cli import main
from flowxfer.journal import default_journal_path
from flowxfer.transfer import default_config_dir
from tests.support.server import DEFAULT_USERS, ServerProcess

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def test_home_is_a_fresh_folder_and_everything_follows_it() -> None:
    home = Path.home()
    assert home != REAL_HOME and home.is_dir() and not any(home.iterdir())
    assert not {"XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"} & set(os.environ)
    assert default_config_dir().is_relative_to(home)
    assert Path(default_journal_path()).is_relative_to(home)


def test_a_test_that_sets_home_itself_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_dir() == tmp_path / ".config" / "flowxfer"


def test_the_official_cli_token_file_is_read_from_home_as_it_is_when_the_command_runs(tmp_path: Path) -> None:
    """In-process (as many CLI tests run), the official CLI's token file is looked for under HOME as the
    command finds it, not as it was when flowxfer was imported (the developer's)."""
    home = Path.home()
    assert home != REAL_HOME  # never write into a real home
    with ServerProcess(tmp_path / "root") as server:
        request = urllib.request.Request(
            f"{server.base_url}/login",
            data=json.dumps({"username": "alice", "password": DEFAULT_USERS["alice"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as answer:  # noqa: S310 - loopback
            token = json.loads(answer.read())["token"]
        official = home / ".config" / "flow" / "api-token"
        official.parent.mkdir(parents=True)
        official.write_text(token)
        official.chmod(0o600)
        result = CliRunner().invoke(main, ["--base-url", server.base_url, "--json", "samples", "organisms"])
    assert result.exit_code == 0, result.output
    assert token not in result.output
