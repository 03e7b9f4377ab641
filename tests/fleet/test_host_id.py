"""A host id that cannot name a host is a usage error (exit 2), never silently the hostname.

A fleet tells its members apart by host id: in ``jobs``/``show``, in "already
running ... on HOST", and in whose lease is whose. An empty
``FLOWXFER_HOST_ID`` once fell back to the hostname unseen (click reads an
empty variable as unset); blank, padded, control-character and over-long
names are refused by the CLI and by the library alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowxfer.journal import HOST_ID_MAX, HostIdError, Journal, check_host_id
from tests.cli.conftest import Cli
from tests.support.server import RunningServer

_BAD = {
    "empty": ("", "is empty"),
    "spaces": ("   ", "is empty"),
    "padded": (" ingest-1", "begins or ends with a space"),
    "tab": ("ingest\t1", "control character"),
    "newline": ("ingest-1\n", "control character"),
    "escape": ("ingest\x1b[31m", "control character"),
    "long": ("h" * (HOST_ID_MAX + 1), f"at most {HOST_ID_MAX}"),
}


@pytest.mark.parametrize("name", list(_BAD))
@pytest.mark.parametrize("given", ["flag", "env"])
async def test_a_bad_host_id_is_a_usage_error(server: RunningServer, tmp_path: Path, name: str, given: str) -> None:
    """Refused up front, whatever the command: ``login`` would not have opened the journal at all."""
    value, why = _BAD[name]
    login = ("login", "-u", "alice", "--password-stdin")
    password = server.users["alice"] + "\n"
    if given == "flag":
        result = await Cli(server.base_url, tmp_path).run("--host-id", value, *login, stdin=password)
    else:
        result = await Cli(server.base_url, tmp_path, {"FLOWXFER_HOST_ID": value}).run(*login, stdin=password)
    assert result.code == 2, result
    assert "host id (--host-id or FLOWXFER_HOST_ID)" in result.stderr and why in result.stderr, result.stderr
    assert not (tmp_path / "config").exists()  # refused before anything was done


async def test_a_good_host_id_names_the_host(server: RunningServer, tmp_path: Path) -> None:
    longest = "h" * HOST_ID_MAX
    result = await Cli(server.base_url, tmp_path, {"FLOWXFER_HOST_ID": longest}).run("--json", "jobs")
    assert result.code == 0, result
    assert (await Cli(server.base_url, tmp_path).run("--host-id", "ingest-1.lab.example", "jobs")).code == 0


@pytest.mark.parametrize("name", list(_BAD))
def test_the_library_refuses_the_same_names(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value, why = _BAD[name]
    with pytest.raises(HostIdError, match=why):
        check_host_id(value)
    with pytest.raises(HostIdError, match=why):
        Journal.open(tmp_path / "j.db", host_id=value)
    monkeypatch.setenv("FLOWXFER_HOST_ID", value)
    with pytest.raises(HostIdError, match=why):
        Journal.open(tmp_path / "j.db")
    assert not (tmp_path / "j.db").exists()
