"""``flowxfer journal migrate --to postgresql://...``: a host's SQLite journal moves to the fleet's database.

An upload interrupted on SQLite (kill -9) is migrated, then ``resume`` on
PostgreSQL finishes it: same transfer id, only what was not acknowledged is
sent, and the server holds exactly the files.
"""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli
from tests.fleet.conftest import SLOW_UPLOAD, assert_uploaded, make_run
from tests.support.server import RunningServer

KiB = 1024


async def test_a_migrated_journal_resumes_its_unfinished_upload_on_postgresql(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "run")
    cli = Cli(server.base_url, tmp_path / "home", {"FLOWXFER_HOST_ID": "old-box"})
    await cli.login("alice", server.users["alice"])
    async with cli.start("--log-format", "json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD) as running:
        await running.until_moved(300 * KiB)
        await running.kill9()
    before = (await cli.run("--json", "jobs")).json()["transfers"]
    assert [t["status"] for t in before] == ["running"]  # killed: never recorded its end
    (unfinished,) = before

    migrated = await cli.run("--json", "journal", "migrate", "--to", postgres_url)
    assert migrated.code == 0, migrated.stderr
    document = migrated.json()
    assert document["status"] == "completed" and document["transfers"] == 1 and document["files"] == 4
    assert document["source"] == str(cli.journal) and document["destination"] == postgres_url

    pg = Cli(server.base_url, tmp_path / "home", {"FLOWXFER_JOURNAL": postgres_url, "FLOWXFER_HOST_ID": "new-box"})
    listed = (await pg.run("--json", "jobs")).json()["transfers"]
    assert [(t["transfer_id"], t["bytes_done"]) for t in listed] == [
        (unfinished["transfer_id"], unfinished["bytes_done"])
    ]
    finished = await pg.run("--json", "resume")
    await assert_uploaded(server, finished, expected)
    (report,) = finished.json()["transfers"]
    assert report["transfer_id"] == unfinished["transfer_id"]
    assert report["bytes_transferred"] <= unfinished["bytes_total"] - unfinished["bytes_done"]

    # Migrating again would duplicate the history: refused, and nothing changes.
    again = await cli.run("journal", "migrate", "--to", postgres_url)
    assert again.code == 2 and "not empty" in again.stderr, again
    assert len((await pg.run("--json", "jobs", "--all")).json()["transfers"]) == 1


async def test_migrate_refuses_bad_destinations_and_a_missing_source(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    cli = Cli(server.base_url, tmp_path / "home")
    missing = await cli.run("--json", "journal", "migrate", "--to", postgres_url)
    assert missing.code == 2 and "no journal to migrate" in missing.json()["error"]
    assert not cli.journal.exists()

    await cli.run("jobs")  # creates the (empty) SQLite journal
    for url, said in (
        ("mysql://u:pw@h/db", "unknown scheme"),
        ("postgresql:///nohost", "names no server"),
        (f"sqlite:///{cli.journal}", "the destination is the source"),
    ):
        result = await cli.run("journal", "migrate", "--to", url)
        assert result.code == 2, (url, result)
        assert said in result.stderr, (url, result.stderr)
        assert ":pw@" not in result.stderr
