"""``--journal`` as a URL through the real CLI: parsing, every command on PostgreSQL, the host column, doctor."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import anyio

from flowxfer.transfer import Flowxfer
from tests.cli.conftest import FLOWXFER, Cli, Result, no_traceback
from tests.fleet.conftest import assert_uploaded, host, make_run
from tests.support.postgres import PostgresCluster
from tests.support.rig import stored
from tests.support.server import RunningServer, login


async def _run_in(cli: Cli, cwd: Path, *args: str) -> Result:
    """``flowxfer ARGS`` started in ``cwd`` (where a relative journal path lands)."""
    done = await anyio.run_process([*FLOWXFER, *args], cwd=cwd, check=False, env=cli.env())
    result = Result(done.returncode, done.stdout.decode(), done.stderr.decode())
    no_traceback(result.stderr)
    return result


async def test_an_unknown_scheme_is_a_usage_error(server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(server.base_url, tmp_path / "home")
    for args in (["--journal", "mysql://u@h/db", "jobs"], ["--journal", "mysql://u:hunter2@h/db", "upload", "x"]):
        result = await cli.run(*args)
        assert result.code == 2, result
        assert "unknown scheme 'mysql'" in result.stderr
        assert "hunter2" not in result.stderr
    cli.env_extra["FLOWXFER_JOURNAL"] = "ftp://somewhere/j.db"
    result = await cli.run("jobs")
    assert result.code == 2 and "unknown scheme 'ftp'" in result.stderr


async def test_a_relative_sqlite_url_is_a_file_under_the_working_folder(server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(server.base_url, tmp_path / "home", {"FLOWXFER_JOURNAL": "sqlite:///state/j.db"})
    (tmp_path / "work").mkdir()
    result = await _run_in(cli, tmp_path / "work", "--json", "jobs", "--all")
    assert result.code == 0, result
    assert result.json() == {"transfers": []}
    assert (tmp_path / "work" / "state" / "j.db").is_file()
    # Not the old misreading: a folder literally named "sqlite:".
    assert not any("sqlite" in name for name in os.listdir(tmp_path / "work"))


async def test_bad_fleet_options_are_usage_errors(server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(server.base_url, tmp_path / "home")
    (tmp_path / "f").write_bytes(b"x")
    for args, said in (
        (["--lease-ttl", "0", "jobs"], "--lease-ttl"),
        (["upload", str(tmp_path / "f"), "--path-map", "relative=/data"], "absolute"),
        (["resume", "--path-map", "/mnt/a"], "FROM=TO"),
    ):
        await cli.login("alice", server.users["alice"]) if args[0] == "upload" else None
        result = await cli.run(*args)
        assert result.code == 2, (args, result)
        assert said in result.stderr, (args, result.stderr)


async def test_every_command_works_on_postgresql(server: RunningServer, tmp_path: Path, postgres_url: str) -> None:
    expected = make_run(tmp_path / "run")
    cli = await host(server, tmp_path / "home", "ingest-1", postgres_url)
    up = await cli.run("--json", "upload", str(tmp_path / "run"))
    await assert_uploaded(server, up, expected)
    ids = [f["id"] for f in up.json()["files"]]

    down = await cli.run("--json", "download", *ids, "-o", str(tmp_path / "out"))
    assert down.code == 0, down.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == expected

    jobs = await cli.run("--json", "jobs", "--all")
    assert jobs.code == 0, jobs.stderr
    rows = jobs.json()["transfers"]
    assert sorted(r["kind"] for r in rows) == ["download", "upload"]
    assert {r["host"] for r in rows} == {"ingest-1"}
    table = await cli.run("jobs", "--all")
    assert "host" in table.stdout.splitlines()[0] and "ingest-1" in table.stdout

    upload_id = next(r["transfer_id"] for r in rows if r["kind"] == "upload")
    shown = await cli.run("--json", "show", upload_id[:8])
    assert shown.code == 0 and shown.json()["host"] == "ingest-1"
    assert len(shown.json()["files"]) == len(expected)
    assert "host ingest-1" in (await cli.run("show", upload_id)).stdout

    again = await cli.run("--json", "resume")
    assert again.code == 0 and again.json() == {"transfers": [], "running_elsewhere": []}
    # The same upload again: everything is known to the shared journal, nothing is sent.
    repeat = await cli.run("--json", "upload", str(tmp_path / "run"))
    assert repeat.code == 0 and repeat.json()["bytes_transferred"] == 0


async def test_doctor_checks_the_database_and_never_shows_its_password(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    secret_url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")
    cli = await host(server, tmp_path / "home", "ingest-1", secret_url)
    ok = await cli.run("--json", "doctor", "-o", str(tmp_path))
    checks = {c["name"]: c for c in ok.json()["checks"]}
    assert ok.code == 0, ok.stdout
    assert checks["journal"]["status"] == "ok"
    assert "postgresql" in checks["journal"]["detail"] and "schema version" in checks["journal"]["detail"]
    assert "s3cr3t-pw" not in ok.stdout + ok.stderr and "***" in checks["journal"]["detail"]

    await anyio.to_thread.run_sync(postgres_cluster.stop)
    try:
        down = await cli.run("doctor", "-o", str(tmp_path))
    finally:
        await anyio.to_thread.run_sync(postgres_cluster.start)
    assert down.code == 2, down
    line = next(line for line in down.stdout.splitlines() if "journal" in line)
    assert line.startswith("FAIL") and "unreachable" in line
    assert "s3cr3t-pw" not in down.stdout + down.stderr


async def test_the_library_takes_a_journal_url_and_a_host_id(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "run")
    async with Flowxfer(
        server.base_url, config_dir=tmp_path / "c", journal=postgres_url, host_id="lib-host", token=await _token(server)
    ) as fx:
        report = await fx.upload([tmp_path / "run"])
        journal = await fx.journal()
        assert journal.location.backend == "postgresql"
        (record,) = journal.list_transfers(include_finished=True)
    assert report.status == "completed" and record.host == "lib-host"
    assert await stored(server, {Path(f.path).name: str(f.id) for f in report.files}) == expected


async def _token(srv: RunningServer) -> str:
    async with aiohttp.ClientSession() as session:
        return await login(session, srv.base_url, "alice", srv.users["alice"])
