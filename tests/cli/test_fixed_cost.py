"""A small command's fixed cost (issue 20): the requests before its first byte, the modules it loads.

Through a WAN path every request before the first byte is a round trip and
every module loaded at start-up is CPU time before the first request. The
requests are read from a recording proxy in front of the real server; the
modules from the real console script in a subprocess. No wall-clock
assertion: ``benchmarks/bench_wan.py --tasks fixed`` measures the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowxfer.cli import _exits
from flowxfer.journal import Journal
from tests.cli.conftest import Cli
from tests.support.faultproxy import FaultProxy, Record
from tests.support.server import running_server
from tests.transfer.conftest import write_random

KiB = 1024


def _exchanges(log: Record) -> list[str]:
    return [f"{e.method} {e.path.split('?', 1)[0]}" for e in log.entries]


async def _small_command_requests(tmp_path: Path, extensions: bool) -> tuple[list[str], list[str], str]:
    """The requests a second upload and then a download of a 4 KiB file send, and the file's id.

    The capabilities come from the previous command's answer, the token is
    fresh (no refresh), a one-chunk file needs no chunk map; each command
    uses one connection.
    """
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 1)
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            cli = Cli(proxy.url, tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            first = await cli.run("--json", "upload", str(probe))
            assert first.code == 0, first.stderr
            data_id = first.json()["files"][0]["id"]

            log.clear()
            again = await cli.run("--json", "upload", "--force", str(probe))
            assert again.code == 0, again.stderr
            upload = _exchanges(log)

            log.clear()
            down = await cli.run("download", data_id, "-o", str(tmp_path / "out"))
            assert down.code == 0, down.stderr
            download = _exchanges(log)
            assert len({e.connection for e in log.entries}) == 1, "a second connection: a second handshake"
    assert (tmp_path / "out" / "probe.bin").read_bytes() == probe.read_bytes()
    return upload, download, data_id


async def test_a_small_upload_and_download_send_one_request_each(tmp_path: Path) -> None:
    """Our server: the chunk's POST alone; the bytes by id alone ([ext] ``download_by_id``)."""
    upload, download, data_id = await _small_command_requests(tmp_path, extensions=True)
    assert upload == ["POST /upload"]
    assert download == [f"GET /downloads/{data_id}"]


async def test_against_hosted_flow_a_small_download_asks_the_description_then_the_bytes(tmp_path: Path) -> None:
    """Without extensions (hosted Flow's protocol) the bytes' URL needs the name ``/data`` gives."""
    upload, download, data_id = await _small_command_requests(tmp_path, extensions=False)
    assert upload == ["POST /upload"]
    assert download == [f"GET /data/{data_id}", f"GET /downloads/{data_id}/probe.bin"]


_LOADED = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv[0] = "flowxfer"
from flowxfer.cli import run
run()
"""

#: What a plain download or upload has no use for, and once paid for at start-up.
_NOT_FOR_A_TRANSFER = {
    "sqlite_utils",  # the journal reads through sqlite3 (0.25-0.37 s)
    "numpy",
    "pandas",
    "psycopg",  # only for a postgresql:// journal
    "jwt",  # a token's claims are read with the standard library
    "rich",
    "openpyxl",  # the server's annotation templates
    "tarfile",
    "zipfile",
    "flowxfer.server",
    "flowxfer.transfer._sync",
    "flowxfer.transfer._bulk",
    "flowxfer.transfer._samples",
    "flowxfer.transfer._archives",
    "flowxfer.transfer._extract",
    "flowxfer.transfer._tarpack",
    "flowxfer.cli._samples",
    "flowxfer.cli._bulk_sync",
    "flowxfer.cli._serve",
    "flowxfer.transfer._job_events",  # the events of jobs, executions and samples (~1 ms a class)
    "flowxfer.journal._sample_records",  # the journal's sample rows
    "flowxfer.journal._pack_records",  # sync --pack-small's tars
    "flowxfer.cli._display",  # the display model: --no-progress draws none
}
#: What a download alone has no use for: the upload modules, exact arithmetic for sizes it does not parse.
_NOT_FOR_A_DOWNLOAD = {"flowxfer.transfer._upload", "flowxfer.transfer._payloads", "fractions", "decimal"}
#: What an upload alone has no use for: the download modules (their streams, spans, the part file).
_NOT_FOR_AN_UPLOAD = {
    "flowxfer.transfer._download",
    "flowxfer.transfer._download_streams",
    "flowxfer.transfer._partfile",
}


async def _loaded_by(cli: Cli, *args: str) -> set[str]:
    """The modules the console script had loaded when ``flowxfer ARGS`` ended (the server answers meanwhile)."""
    done = await anyio.run_process([sys.executable, "-c", _LOADED, "--no-progress", *args], env=cli.env(), check=False)
    assert done.returncode == 0, done.stderr.decode()
    return set(json.loads(done.stderr.decode().strip().splitlines()[-1]))


async def test_a_download_and_an_upload_load_nothing_they_do_not_need(tmp_path: Path) -> None:
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 2)
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        up = await cli.run("--json", "upload", str(probe))
        data_id = up.json()["files"][0]["id"]
        for args in (("upload", "--force", str(probe)), ("download", "--force", data_id, "-o", str(tmp_path / "o"))):
            loaded = await _loaded_by(cli, *args)
            assert "aiohttp" in loaded and "flowxfer.journal._sqlite" in loaded  # it did run
            assert not loaded & _NOT_FOR_A_TRANSFER, (args[0], sorted(loaded & _NOT_FOR_A_TRANSFER))
            if args[0] == "download":
                assert not loaded & _NOT_FOR_A_DOWNLOAD, sorted(loaded & _NOT_FOR_A_DOWNLOAD)
            else:
                assert not loaded & _NOT_FOR_AN_UPLOAD, sorted(loaded & _NOT_FOR_AN_UPLOAD)


#: The console script's own way out (``flowxfer.cli.run``), with what a test needs to see of its process.
_CONSOLE = """
import atexit, gc, json, sys
collections = []
atexit.register(lambda: print(json.dumps({"collections": collections, "collecting": gc.isenabled(),
                                           "frozen": gc.get_freeze_count()}), file=sys.stderr))
sys.argv[0] = "flowxfer"
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
from flowxfer.cli import run
run()
"""


async def _console(env: dict[str, str], *args: str) -> tuple[int, str, dict[str, Any], str]:
    """``flowxfer ARGS`` through the console script: exit code, stdout, what :data:`_CONSOLE` saw, stderr."""
    done = await anyio.run_process([sys.executable, "-c", _CONSOLE, *args], env=env, check=False)
    err = done.stderr.decode().strip().splitlines()
    return done.returncode, done.stdout.decode(), json.loads(err[-1]), "\n".join(err[:-1])


async def test_version_loads_no_aiohttp_and_collects_nothing(tmp_path: Path) -> None:
    """``--version`` never reaches a command: no aiohttp, no engine, and no collection from the package's import on."""
    cli = Cli("http://127.0.0.1:9", tmp_path / "home")
    loaded = await _loaded_by(cli, "--version")
    assert not {"aiohttp", "flowxfer.transfer._client", "flowxfer.journal._sqlite"} & loaded
    code, out, seen, _ = await _console(cli.env(), "--version")
    assert code == 0 and out.startswith("flowxfer, version ")
    # Only young ones, while the package's module is made, before its first line can pause them
    # (unpaused, ~60 young and several older collections).
    assert max(seen["collections"], default=0) == 0 and len(seen["collections"]) < 10, seen["collections"]


async def test_the_console_script_exits_as_the_command_says(tmp_path: Path) -> None:
    """It ends without the interpreter's teardown: codes, stdout and stderr as ``main`` gives them.

    Once its command is loaded, collections are back on and what start-up
    loaded is out of their way (frozen).
    """
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 3)
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        code, out, seen, _ = await _console(cli.env(), "--json", "upload", str(probe))
        assert code == _exits.OK and json.loads(out)["status"] == "completed"
        assert seen["collecting"] and seen["frozen"] > 10_000
        code, out, seen, err = await _console(cli.env(), "download", "123456789", "-o", str(tmp_path / "o"))
        assert code == _exits.NOT_FOUND and "no readable data with id 123456789" in err
        code, out, seen, err = await _console(cli.env(), "download", "--no-such-flag")
        assert code == _exits.USAGE and "No such option" in err


#: The console script, counting the collections that start while the engine runs (``run_engine`` on the stack).
_DURING_TRANSFER = """
import atexit, gc, json, sys
during = []

def started(phase, info):
    if phase != "start":
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run_engine" and frame.f_code.co_filename.endswith("_common.py"):
            during.append(info["generation"])
            return
        frame = frame.f_back

atexit.register(lambda: print(json.dumps({"during": during}), file=sys.stderr))
sys.argv[0] = "flowxfer"
gc.callbacks.append(started)
from flowxfer.cli import run
run()
"""


async def test_collections_resume_before_the_transfer_runs(tmp_path: Path) -> None:
    """Start-up pauses the collector; the transfer itself runs with it on (memory stays flat)."""
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 5)
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        done = await anyio.run_process(
            [sys.executable, "-c", _DURING_TRANSFER, "--no-progress", "upload", str(probe)], env=cli.env(), check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    during = json.loads(done.stderr.decode().strip().splitlines()[-1])["during"]
    assert during, "no collection while the engine ran: the collector was still paused"


_LEAVE = """
import sys, threading, time
from flowxfer.cli import _leave

class Teardown:
    def __del__(self):
        print(" teardown", flush=True)  # only the interpreter's own exit releases module globals

witness = Teardown()
if sys.argv[1] != "none":
    seconds = float(sys.argv[1])
    threading.Thread(target=lambda: (time.sleep(seconds), print("the thread ended", flush=True))).start()
sys.stdout.write("buffered")
_leave(None if sys.argv[2] == "None" else int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
"""


@pytest.mark.parametrize(
    ("thread", "code", "status", "out", "err"),
    [
        ("none", "None", 0, "buffered", ""),
        ("none", "3", 3, "buffered", ""),
        ("none", "a message", 1, "buffered", "a message"),
        # A thread that ends within the grace is waited for, and the teardown still skipped
        # (anyio's worker threads, told to stop as the event loop ended).
        ("0.3", "5", 5, "bufferedthe thread ended", ""),
        # One that outlasts the grace is the interpreter's to wait for: it tears down too.
        ("1.6", "5", 5, "bufferedthe thread ended teardown", ""),
    ],
)
async def test_leaving_flushes_and_waits_for_a_thread_as_interpreter_shutdown_does(
    thread: str, code: str, status: int, out: str, err: str
) -> None:
    """:func:`flowxfer.cli._leave`: what shutdown does that a caller can see, minus the teardown."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout stays buffered
    done = await anyio.run_process([sys.executable, "-c", _LEAVE, thread, code], env=env, check=False)
    assert (done.returncode, done.stdout.decode().replace("\n", ""), done.stderr.decode().strip()) == (
        status,
        out,
        err,
    )


def test_opening_an_up_to_date_journal_writes_nothing(tmp_path: Path) -> None:
    """Every command opens the journal: once it is current, opening it only reads (no migration, no commit)."""
    path = tmp_path / "journal.db"
    Journal.open(path).close()
    before = path.read_bytes()
    with Journal.open(path):
        pass
    assert path.read_bytes() == before
    assert not path.with_name("journal.db-wal").exists()


async def test_the_console_script_keeps_the_journal_wal_between_commands(tmp_path: Path) -> None:
    """Its journal's WAL is synced and kept at the end, not checkpointed and deleted (issue 20).

    Deleting it cost a checkpoint (two syncs, two unlinks) at every
    command's end and its re-creation two more syncs at the next one's
    start. The same WAL file serves the next command, and what each command
    recorded is there for a process that opens the journal afterwards.
    """
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 4)
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        wal = cli.journal.with_name(cli.journal.name + "-wal")
        code, out, _, err = await _console(cli.env(), "--json", "upload", str(probe))
        assert code == _exits.OK, err
        first = json.loads(out)["transfer_id"]
        assert wal.exists()
        inode = wal.stat().st_ino
        code, out, _, err = await _console(cli.env(), "--json", "upload", "--force", str(probe))
        assert code == _exits.OK, err
        second = json.loads(out)["transfer_id"]
        assert wal.stat().st_ino == inode, "the WAL was deleted and made again"
    with Journal.open(cli.journal) as journal:
        for transfer_id in (first, second):
            record = journal.get_transfer(transfer_id)
            assert record is not None and record.status == "completed", record


def test_a_journal_left_at_the_process_end_is_whole_for_the_next_process(tmp_path: Path) -> None:
    """:attr:`Journal.process_ends_at_close`: closing leaves the connection and the WAL; another process reads all.

    A second journal of the same file left in the same process replaces the
    first one left (one connection kept per file, however many commands a
    process runs).
    """
    path = tmp_path / "journal.db"
    script = f"""
import sqlite3
from flowxfer.journal import Journal, NewFile
from flowxfer.journal import _sqlite
Journal.process_ends_at_close = True
left = []
for name in ("a", "b"):
    journal = Journal.open({str(path)!r})
    record, _, _ = journal.begin_transfer("upload", "http://x", "alice", {{}}, name)
    journal.add_files(record.id, [NewFile("/" + name, size=1)])
    journal.close()
    left += _sqlite._LEFT_OPEN.values()
assert len(_sqlite._LEFT_OPEN) == 1 and left[1] in _sqlite._LEFT_OPEN.values(), (_sqlite._LEFT_OPEN, left)
left[1].execute("SELECT 1")  # the one left last is open
try:
    left[0].execute("SELECT 1")
except sqlite3.ProgrammingError:
    pass  # the one left before is closed
else:
    raise AssertionError("the first connection left is still open")
import os
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert path.with_name("journal.db-wal").stat().st_size > 0
    with Journal.open(path) as journal:
        transfers = journal.list_transfers(include_finished=True)
        assert len(transfers) == 2
        assert sorted(f.local_path for t in transfers for f in journal.iter_files(t.id)) == ["/a", "/b"]
