"""Every exit code of ``cli.md`` through the real command, and never a traceback.

| 0 | done | 1 | some files failed | 2 | usage, configuration, local input | 3 | authentication |
| 4 | not found | 5 | rejected by the server | 75 | try again later | 130 / 143 | SIGINT / SIGTERM |

Each command runs as a subprocess against the in-process local server (or a
stand-in that answers HTML); :class:`tests.cli.conftest.Cli` fails any test
whose command printed a Python traceback.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from tests.support.faultproxy import FaultProxy, Match, RespondWith, StallMidBody
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import write_random

from .conftest import Cli, KiB, Result, server_bytes


@asynccontextmanager
async def logged_in(tmp_path: Path, **server: object) -> AsyncIterator[tuple[RunningServer, Cli]]:
    async with running_server(tmp_path / "root", **server) as srv:  # type: ignore[arg-type]
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        yield srv, cli


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""


async def jobs(cli: Cli) -> list[dict[str, object]]:
    result = await cli.run("--json", "jobs", "--all")
    assert result.code == 0, result
    return list(result.json()["transfers"])


async def start_up(cli: Cli) -> float:
    """Seconds a command takes to start, import the engine, open the journal and end (``jobs``)."""
    started = time.monotonic()
    assert (await cli.run("jobs")).code == 0
    return time.monotonic() - started


# --- 0 ------------------------------------------------------------------------------------------


async def test_0_done_and_0_again_when_already_done(tmp_path: Path) -> None:
    src = write_random(tmp_path / "run" / "a.fastq", 5000, 1)
    async with logged_in(tmp_path) as (srv, cli):
        first = await cli.run("--json", "upload", str(src))
        assert first.code == 0 and first.json()["status"] == "completed"
        (item,) = first.json()["files"]
        again = await cli.run("upload", str(src))
        assert again.code == 0 and f"skipped {src} (unchanged, {item['id']})" in again.stdout
        down = await cli.run("download", item["id"], "-o", str(tmp_path / "out"))
        assert down.code == 0 and (tmp_path / "out" / "a.fastq").read_bytes() == src.read_bytes()


# --- 1 ------------------------------------------------------------------------------------------


async def test_1_when_some_files_fail_and_resume_finishes_them(tmp_path: Path) -> None:
    """One file keeps meeting 503s (a proxy in front of the server answers them to every request
    big enough to be its chunk), the others go through: exit 1, ``partial``, and the journal
    keeps the failed file for ``resume``.

    (Not ``chmod 000``: tests may run as root, who reads such files anyway. A server that keeps
    failing for one file is a real failure in any case.)
    """
    small = [write_random(tmp_path / "run" / f"s{i}.fastq", 1000, i) for i in range(2)]
    big = write_random(tmp_path / "run" / "big.fastq", 60 * KiB, 9)
    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            refuse = proxy.add(
                RespondWith.html_error(
                    503,
                    match=Match("POST", r"^/upload$", where=lambda h: int(h.header("Content-Length") or 0) > 40_000),
                    times=None,
                )
            )
            cli = Cli(proxy.url, tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            result = await cli.run("--max-attempts", "2", "--json", "upload", str(tmp_path / "run"))
            assert result.code == 1, result
            document = result.json()
            assert document["status"] == "partial"
            outcome = {Path(f["path"]).name: (f["status"], f["error"]) for f in document["files"]}
            assert outcome["big.fastq"][0] == "failed" and "503" in outcome["big.fastq"][1]
            assert all(outcome[p.name] == ("done", None) for p in small)
            assert refuse.hits >= 2

            proxy.remove(refuse)
            resumed = await cli.run("--json", "resume")
            assert resumed.code == 0, resumed
            (report,) = resumed.json()["transfers"]
            assert report["transfer_id"] == document["transfer_id"] and report["status"] == "completed"
            ids = {Path(f["path"]).name: f["id"] for f in report["files"]}
        assert await server_bytes(srv.base_url, srv.users["alice"], ids["big.fastq"], "big.fastq") == big.read_bytes()


# --- 2 ------------------------------------------------------------------------------------------


async def test_2_for_usage_configuration_and_local_input_errors(tmp_path: Path) -> None:
    good = write_random(tmp_path / "a.fastq", 100, 1)
    write_random(tmp_path / "named" / "bad name.fastq", 100, 2)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00this is not sqlite" * 300)
    negative = tmp_path / "negative.db"
    with sqlite3.connect(negative) as db:
        db.execute("PRAGMA user_version = -5")
    not_utf8 = tmp_path / "names" / "bad\udcff\udcfe.fastq"  # bytes 0xff 0xfe in the name on disk
    not_utf8.parent.mkdir()
    not_utf8.write_bytes(b"x")  # os.fsencode turns the surrogates back into the bytes 0xff 0xfe
    escapes = write_random(tmp_path / "escapes" / "red\x1b[31mtext.fastq", 10, 3)  # a name that paints the terminal
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("PRAGMA user_version = 999")
    async with logged_in(tmp_path) as (_, cli):
        cases: list[tuple[list[str], str]] = [
            (["upload", str(tmp_path / "missing.fastq")], "no such file"),
            (["upload", str(tmp_path / "named")], "Spaces in filename"),
            (["upload", str(good), "--chunk-size", "0"], "--chunk-size"),
            (["upload", str(good), "--chunk-size", "lots"], "--chunk-size"),
            (["upload", str(good), "--bwlimit", "fast"], "bandwidth"),
            (["upload", str(good), "--max-wait", "forever"], "--max-wait"),
            (["--journal", str(corrupt), "upload", str(good)], "not a usable flowxfer journal"),
            (["--journal", str(corrupt), "jobs"], "not a usable flowxfer journal"),
            (["--journal", str(newer), "upload", str(good)], "newer than this flowxfer"),
            (["--journal", str(negative), "jobs"], "damaged"),
            (["--journal", str(negative), "upload", str(good)], "damaged"),
            (["upload", str(not_utf8.parent)], "bad\\xff\\xfe.fastq: Filename is not valid UTF-8"),
            (["upload", str(escapes.parent)], "red\\x1b[31mtext.fastq: Control characters"),
            (["--journal", str(newer), "resume"], "newer than this flowxfer"),
            (["--base-url", "http://flow.example.org", "upload", str(good)], "plain http://"),
            (["--base-url", "ftp://flow.example.org", "upload", str(good)], "bad server URL"),
            (["--base-url", "http://[::1", "upload", str(good)], "bad server URL"),
            (["--base-url", "http://127.0.0.1:99999", "upload", str(good)], "bad server URL"),
            (["--token", "eyJ.a\nX-Injected: 1", "upload", str(good)], "control characters"),
            (["download", "-o", str(tmp_path / "out")], "name data ids"),
            (["resume", "0123456789"], "no transfer"),
            (["show", "0123456789"], "no such transfer"),
            (["no-such-command"], "No such command"),
        ]
        results: dict[int, Result] = {}
        limit = anyio.CapacityLimiter(4)  # independent commands: run a few at once (Python's start-up dominates)

        async def run(index: int, args: list[str]) -> None:
            async with limit:
                results[index] = await cli.run(*args)

        async with anyio.create_task_group() as group:
            for index, (args, _) in enumerate(cases):
                group.start_soon(run, index, args)
        for index, (args, message) in enumerate(cases):
            result = results[index]
            assert result.code == 2, (args, result)
            assert message in result.stderr, (args, result.stderr)
            assert "\x1b" not in result.stderr, (args, result.stderr)  # shown escaped, never obeyed
        # The journal that was not one is left alone, never silently replaced.
        assert corrupt.read_bytes().startswith(b"\x00this is not sqlite")


async def test_json_gives_one_document_even_when_the_command_fails(tmp_path: Path) -> None:
    async with logged_in(tmp_path) as (_, cli):
        for args, code in (
            (["upload", str(tmp_path / "missing.fastq")], 2),
            (["download", "999999999"], 4),
            (["show", "0123456789"], 2),
        ):
            result = await cli.run("--json", *args)
            assert result.code == code, (args, result)
            document = result.json()  # stdout is exactly one JSON document
            assert document["status"] == "failed" and document["exit_code"] == code, document
            assert document["error"] and document["error"] in result.stderr, (document, result.stderr)


# --- 3 ------------------------------------------------------------------------------------------


async def test_3_for_authentication_failures(tmp_path: Path) -> None:
    src = write_random(tmp_path / "a.fastq", 100, 1)
    async with running_server(tmp_path / "root", access_ttl=1, refresh_ttl=2) as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        wrong = await cli.run("login", "-u", "alice", "--password-stdin", stdin="not-her-password\n")
        assert wrong.code == 3 and "login failed for 'alice'" in wrong.stderr
        nobody = await cli.run("upload", str(src))
        assert nobody.code == 3 and "not logged in" in nobody.stderr
        await cli.login("alice", srv.users["alice"])
        await anyio.sleep(3.1)  # the refresh token (2 s, exp rounded up: at most 3 s) has expired too
        expired = await cli.run("upload", str(src))
        assert expired.code == 3 and "login expired" in expired.stderr and "flowxfer login" in expired.stderr
        token = await cli.run("--token", "not.a.jwt", "upload", str(src))
        assert token.code == 3 and "cannot be refreshed" in token.stderr


# --- 4 ------------------------------------------------------------------------------------------


async def test_4_for_unknown_ids(tmp_path: Path) -> None:
    src = write_random(tmp_path / "a.fastq", 100, 1)
    async with logged_in(tmp_path) as (_, cli):
        known = (await cli.run("--json", "upload", str(src))).json()["files"][0]["id"]
        unknown = await cli.run("download", "404404404", "-o", str(tmp_path / "out"))
        assert unknown.code == 4 and "404404404" in unknown.stderr
        mixed = await cli.run("download", known, "505505505", "-o", str(tmp_path / "out"))
        assert mixed.code == 4 and "505505505" in mixed.stderr and known not in error_line(mixed)
        assert not (tmp_path / "out" / "a.fastq").exists()  # nothing is downloaded when an id is wrong


# --- 5 ------------------------------------------------------------------------------------------


async def test_5_when_the_server_rejects(tmp_path: Path) -> None:
    src = write_random(tmp_path / "a.fastq", 300 * KiB, 1)
    # Hosted Flow's behaviour (no advertised chunk limit), with a small one: our chunk is too big.
    async with logged_in(tmp_path, extensions=False, max_chunk_size=100 * KiB) as (_, cli):
        too_big = await cli.run("--json", "upload", str(src), "--chunk-size", "200k")
        assert too_big.code == 5, too_big
        (item,) = too_big.json()["files"]
        assert item["status"] == "failed" and "larger than the chunk limit" in item["error"]
        bad_type = await cli.run("upload", str(src), "--chunk-size", "64k", "--data-type", "x" * 300)
        assert bad_type.code == 5 and "data_type" in bad_type.stdout


# --- 75 -----------------------------------------------------------------------------------------


async def test_75_when_the_same_command_already_runs(tmp_path: Path) -> None:
    src = write_random(tmp_path / "run" / "a.fastq", 512 * KiB, 1)  # ~4 s at 128k: still running when frozen
    async with logged_in(tmp_path) as (srv, cli):
        command = ["--log-format", "json", "upload", str(tmp_path / "run"), "--chunk-size", "64k", "--bwlimit", "128k"]
        async with cli.start(*command) as first:
            await first.until_moved(64 * KiB)
            # Frozen, the first run holds the lease however slowly the second starts on a busy
            # machine; a second run that waited for the holder would wait for ever (within says so).
            first.signal(signal.SIGSTOP)
            try:
                before = await start_up(cli)
                started = time.monotonic()
                second = await cli.run(*command, within=30)
                elapsed = time.monotonic() - started
                after = await start_up(cli)
            finally:
                first.signal(signal.SIGCONT)
            assert second.code == 75, second
            # At once: about as long as a command that opens the journal takes, measured just before
            # and after (the machine's load changes); twice that and a second is the margin.
            assert elapsed < 2 * max(before, after) + 1.0, (elapsed, before, after)
            assert first.process.returncode is None  # it says who holds it:
            message = second.stderr
            assert "already running" in message and f"pid {first.process.pid}" in message
            assert socket.gethostname() in message
            assert await first.wait() == 0
        (job,) = await jobs(cli)
        assert job["status"] == "completed"
        data_id = json.loads((await cli.run("--json", "upload", str(src))).stdout)["files"][0]["id"]
        assert await server_bytes(srv.base_url, srv.users["alice"], data_id, "a.fastq") == src.read_bytes()


async def test_75_when_the_rate_limit_budget_runs_out_then_the_next_run_finishes(tmp_path: Path) -> None:
    for i in range(4):
        write_random(tmp_path / "run" / f"f{i}.fastq", 100, i)
    async with logged_in(tmp_path, rate_limits="upload=2/3s") as (_, cli):
        first = await cli.run("--json", "upload", str(tmp_path / "run"), "--max-wait", "1s")
        spent = time.monotonic()  # its two uploads were made before it ended
        assert first.code == 75, first
        document = first.json()
        assert document["status"] == "interrupted" and document["stop_reason"] == "budget"
        assert "rate-limit budget" in first.stderr and "--max-wait" in first.stderr
        assert sorted(f["status"] for f in document["files"]) == ["done", "done", "pending", "pending"]
        # The journal says the same, read by another process.
        (job,) = await jobs(cli)
        assert job["status"] == "interrupted" and job["files_done"] == 2 and job["files_total"] == 4
        # The window (3 s) is over for those two uploads: counted from the first run's end, not
        # from after the jobs command, whose start-up already spent a second or more of it.
        await anyio.sleep(max(0.0, spent + 3 - time.monotonic()))
        second = await cli.run("--json", "upload", str(tmp_path / "run"), "--max-wait", "1s")
        assert second.code == 0, second
        assert second.json()["transfer_id"] == document["transfer_id"]
        assert second.json()["requests"]["upload"] == 2


# --- 130 / 143 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_130_143_after_a_signal_and_resume_finishes(tmp_path: Path, signum: signal.Signals) -> None:
    files = [write_random(tmp_path / "run" / f"r{i}.fastq", 384 * KiB, i) for i in range(2)]
    async with logged_in(tmp_path) as (srv, cli):
        command = [
            "--log-format",
            "json",
            "upload",
            str(tmp_path / "run"),
            "--chunk-size",
            "64k",
            "--bwlimit",
            "512k",
            "--concurrency",
            "2",
        ]
        async with cli.start(*command) as first:
            await first.until_moved(200 * KiB)
            first.signal(signum)
            code = await first.wait(within=15)
        assert code == 128 + signum, first.stderr
        assert signal.Signals(signum).name in first.stderr  # it said what it is doing
        (job,) = await jobs(cli)
        assert job["status"] == "interrupted" and 0 < int(job["bytes_done"]) < 768 * KiB  # type: ignore[call-overload]

        resumed = await cli.run("--json", "resume")
        assert resumed.code == 0, resumed
        (report,) = resumed.json()["transfers"]
        assert report["transfer_id"] == first.transfer_id() and report["status"] == "completed"
        # Nothing acknowledged before the signal went again (one chunk per file may have).
        assert report["bytes_transferred"] <= 768 * KiB - int(job["bytes_done"]) + 2 * 64 * KiB  # type: ignore[call-overload]
        ids = {Path(f["path"]).name: f["id"] for f in report["files"]}
        for f in files:
            assert await server_bytes(srv.base_url, srv.users["alice"], ids[f.name], f.name) == f.read_bytes()


async def test_a_second_sigint_stops_at_once_and_still_saves_the_journal(tmp_path: Path) -> None:
    """The answer to the second chunk hangs (a proxy stalls it): after the first SIGINT the CLI
    would wait the whole grace period (10 s) for it; the second SIGINT ends the run at once, and
    the journal still holds the first chunk."""
    src = write_random(tmp_path / "run" / "big.fastq", 768 * KiB + 5, 1)
    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            stall = proxy.add(StallMidBody(Match("POST", r"^/upload$", nth=2), direction="down", seconds=60))
            cli = Cli(proxy.url, tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            # One stream: the stall is on the strict order's second chunk (on a loaded machine the
            # loopback's measured round trip could otherwise ask for parallel chunks).
            command = [
                "--log-format",
                "json",
                "upload",
                str(tmp_path / "run"),
                "--chunk-size",
                "256k",
                "--streams",
                "1",
            ]
            async with cli.start(*command) as first:
                await first.until_moved(512 * KiB)  # the second chunk sent, its answer stalled
                first.signal(signal.SIGINT)
                await first.until(lambda r: "send again to stop at once" in r.stderr)
                await anyio.sleep(0.5)
                assert first.process.returncode is None  # still waiting for the stalled answer
                started = time.monotonic()
                first.signal(signal.SIGINT)
                code = await first.wait(within=15)
                elapsed = time.monotonic() - started
            assert code == 130, first.stderr
            assert elapsed < 5, elapsed  # not the 10 s grace period
            assert "stopping now" in first.stderr and stall.hits == 1
            (job,) = await jobs(cli)
            assert job["status"] == "interrupted" and int(job["bytes_done"]) >= 256 * KiB  # type: ignore[call-overload]
            proxy.remove(stall)
            resumed = await cli.run("--json", "resume")
            assert resumed.code == 0, resumed
            (report,) = resumed.json()["transfers"]
            assert report["status"] == "completed"
            assert report["bytes_transferred"] <= 512 * KiB + 5  # the first chunk was not sent again
            data_id = report["files"][0]["id"]
        assert await server_bytes(srv.base_url, srv.users["alice"], data_id, "big.fastq") == src.read_bytes()


async def test_sigint_while_waiting_for_rate_limit_budget_exits_at_once(tmp_path: Path) -> None:
    """Nothing is in flight while the engine waits out a 429's Retry-After (here about 30 s):
    a SIGINT ends the wait at once instead of sitting it out, then the grace period."""
    for i in range(3):
        write_random(tmp_path / "run" / f"f{i}.fastq", 100, i)
    async with logged_in(tmp_path, rate_limits="upload=1/30s") as (_, cli):
        async with cli.start("--log-format", "json", "upload", str(tmp_path / "run")) as first:
            await first.until(lambda r: any(e["event"] in ("waiting", "retrying") for e in r.events()))
            started = time.monotonic()
            first.signal(signal.SIGINT)
            code = await first.wait(within=15)
            elapsed = time.monotonic() - started
        assert code == 130, first.stderr
        assert elapsed < 6, elapsed  # not the ~30 s wait, nor the 10 s grace period
        (job,) = await jobs(cli)
        assert job["status"] == "interrupted" and job["files_done"] == 1 and job["files_total"] == 3


# --- a server that answers HTML -----------------------------------------------------------------------


@asynccontextmanager
async def html_server(status: int) -> AsyncIterator[str]:
    """A stand-in that answers every request with an HTML page (a wrong URL, a broken proxy)."""

    async def page(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=status,
            content_type="text/html",
            text="<html><head><title>Oops</title></head><body><h1>Bad Gateway</h1></body></html>",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_server_that_does_not_implement_the_method_is_not_asked_again(tmp_path: Path) -> None:
    """501 is an answer, not an outage (a plain web server, not Flow): one request, a message, exit 5."""
    async with html_server(501) as url:
        cli = Cli(url, tmp_path / "home")
        started = time.monotonic()
        login = await cli.run("login", "-u", "alice", "--password-stdin", stdin="pw\n")
        assert login.code == 5, login
        assert "HTTP 501" in login.stderr and "<html" not in login.stderr
        assert time.monotonic() - started < 10  # retried with backoff, 8 attempts take about a minute


@pytest.mark.parametrize("status", [200, 502])
async def test_a_server_that_answers_html_gets_a_message_and_exit_1(tmp_path: Path, status: int) -> None:
    src = write_random(tmp_path / "a.fastq", 100, 1)
    async with html_server(status) as url:
        cli = Cli(url, tmp_path / "home")
        login = await cli.run("--max-attempts", "2", "login", "-u", "alice", "--password-stdin", stdin="pw\n")
        assert login.code == 1, login
        expected = "instead of JSON" if status == 200 else "HTTP 502 Bad Gateway"
        assert expected in login.stderr and "<html" not in login.stderr
        if status == 200:
            assert "is the server URL right?" in login.stderr
        for args in (["upload", str(src)], ["download", "123", "-o", str(tmp_path / "out")]):
            result = await cli.run("--max-attempts", "2", "--token", "a.b.c", *args)
            assert result.code == 1, (args, result)
            assert expected in result.stderr + result.stdout and "<html" not in result.stderr + result.stdout
