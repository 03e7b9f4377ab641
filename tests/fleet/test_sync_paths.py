"""A sync takes no ``--path-map``: every host names a run folder by one path, a symlink where needed.

``sync`` re-plans its folder from the disk on every run and keys what it
uploaded, its packs and its lease by the folder's path, so a map would have
to translate every step of every re-plan (one missed, and a finished run is
uploaded again). ``sync --path-map`` and ``resume --path-map`` of a sync are
usage errors (exit 2) that say why and what to do; what they say to do -- the
same path on every host, by a symlink to where the host sees the storage --
is what the last test runs: b takes over a's sync through a symlink.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.fleet.conftest import FULL_SPEED, SLOW_UPLOAD, assert_uploaded, host, make_run
from tests.fleet.test_takeover import (
    _kill_mid_upload,
    _refused_while_live,
    _remaining,
    past_the_ttl,
    two_short_ttl_hosts,
)
from tests.support.server import RunningServer


def _says_why_and_what_to_do(stderr: str) -> None:
    assert "a sync takes no --path-map" in stderr, stderr
    assert "would upload it again" in stderr and "symlink" in stderr, stderr


async def test_sync_refuses_a_path_map_saying_why_and_what_to_do(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    make_run(tmp_path / "mnt_a" / "run1")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    refused = await a.run("sync", str(tmp_path / "mnt_a" / "run1"), "--path-map", f"{tmp_path / 'mnt_a'}=/data")
    assert refused.code == 2, refused
    _says_why_and_what_to_do(refused.stderr)


async def test_resuming_a_sync_whose_folder_a_path_map_moves_is_refused_the_same_way(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    mnt_a, data = tmp_path / "mnt_a", tmp_path / "data"
    make_run(mnt_a / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    killed = await _kill_mid_upload(a, "sync", str(mnt_a / "run1"), *SLOW_UPLOAD)
    mnt_a.rename(data)
    await past_the_ttl(postgres_url, killed)
    refused = await b.run("--json", "resume", "--path-map", f"{mnt_a}={data}")
    assert refused.code == 2, refused
    _says_why_and_what_to_do(refused.stderr)


async def test_a_symlink_gives_another_host_the_same_path_and_it_takes_the_sync_over(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """a syncs mnt_a/run1 and dies; b sees the storage at data/ and links mnt_a to it: one sync."""
    mnt_a, data = tmp_path / "mnt_a", tmp_path / "data"
    expected = make_run(mnt_a / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    command = ["sync", str(mnt_a / "run1"), *SLOW_UPLOAD]

    killed = await _kill_mid_upload(a, *command)
    mnt_a.rename(data)  # b's mount: the same files at data/ ...
    mnt_a.symlink_to(data)  # ... and the path the fleet names them by, a link
    await _refused_while_live(b, killed, "--json", *command)
    transfer_id, remaining = await anyio.to_thread.run_sync(_remaining, postgres_url)
    await past_the_ttl(postgres_url, killed)
    finished = await b.run("--json", *command[:2], *FULL_SPEED)
    await assert_uploaded(server, finished, expected)
    assert finished.json()["transfer_id"] == transfer_id
    assert finished.json()["bytes_transferred"] <= remaining, (finished.json()["bytes_transferred"], remaining)
    again = await b.run("--json", *command)  # the next cron run: nothing left, nothing uploaded twice
    assert again.code == 0 and again.json()["bytes_transferred"] == 0, again
