"""Odd input on the CLI found by this review that no test covered: an empty transfer id, a root that cannot be.

- ``show ""`` and ``resume ""``: the empty string is taken as a prefix of
  every id; with one transfer in the journal ``show ""`` shows it (exit 0)
  and ``resume ""`` resumes it, with two they report "ambiguous". An empty
  id is a usage error (exit 2); ``resume`` says so now, ``show`` not yet.
- ``serve --root`` under a folder that cannot be made: "cannot serve" with
  exit 1, where the contract says a local input error is exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowxfer.transfer import TransferConfig
from tests.cli.conftest import Cli
from tests.support.server import RunningServer
from tests.transfer.conftest import write_random


async def _one_transfer(server: RunningServer, tmp_path: Path) -> Cli:
    cli = Cli(server.base_url, tmp_path / "home")
    await cli.login("alice", server.users["alice"])
    src = write_random(tmp_path / "a.bin", 1000, 1)
    assert (await cli.run("upload", str(src))).code == 0
    return cli


@pytest.mark.parametrize("command", ["resume", "show"])
async def test_an_empty_transfer_id_is_a_usage_error(server: RunningServer, tmp_path: Path, command: str) -> None:
    cli = await _one_transfer(server, tmp_path)
    for given in ("", " "):
        result = await cli.run(command, given)
        assert result.code == 2, (given, result)
        assert "empty transfer id" in result.stderr, result.stderr


async def test_a_root_that_cannot_be_made_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    cli = Cli("http://127.0.0.1:9", tmp_path / "home")
    result = await cli.run("serve", "--root", str(blocker / "root"), "--port", "0")
    assert result.code == 2, result
    assert "root" in result.stderr, result.stderr


async def test_a_tiny_chunk_size_is_a_usage_error(server: RunningServer, tmp_path: Path) -> None:
    """``--chunk-size 1`` made one request and one journal write per byte (270 B/s): refused, exit 2."""
    cli = await _one_transfer(server, tmp_path)
    src = write_random(tmp_path / "b.bin", 1000, 2)
    for command in (["upload", str(src)], ["sync", str(src)]):
        result = await cli.run(*command, "--chunk-size", "1")
        assert result.code == 2, (command, result)
        assert "--chunk-size" in result.stderr and "at least 64 KiB" in result.stderr, result.stderr
    with pytest.raises(ValueError, match="at least"):
        TransferConfig(chunk_size=TransferConfig.MIN_CHUNK_SIZE - 1)
    assert (await cli.run("upload", str(src), "--chunk-size", "64k")).code == 0


async def test_resume_of_a_completed_transfer_says_per_file_what_its_summary_counts(
    server: RunningServer, tmp_path: Path
) -> None:
    """It printed "skipped a.bin (unchanged, ...)" above "1 uploaded, 0 skipped": the journal (and the
    JSON) hold the file as done by this transfer, so the file's line must say so too."""
    cli = await _one_transfer(server, tmp_path)
    (transfer,) = (await cli.run("--json", "jobs", "--all")).json()["transfers"]
    result = await cli.run("resume", transfer["transfer_id"])
    assert result.code == 0, result
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["uploaded"], lines
    assert "1 uploaded, 0 skipped, 0 failed; 0 B" in lines[-1], lines
    again = await cli.run("--json", "resume", transfer["transfer_id"])
    assert [f["status"] for f in again.json()["transfers"][0]["files"]] == ["done"], again.stdout
