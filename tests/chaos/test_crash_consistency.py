"""``kill -9`` at random instants, the invariant checked after every kill, the result exact at the end.

**The client.** The real ``flowxfer`` command (a subprocess) runs an upload,
a download, a bulk job or a sync, slowed with ``--bwlimit`` so that it lasts
a few seconds, and is killed with SIGKILL after a seeded random delay (some
kills land in start-up, planning or job polling, most mid-transfer). After
each kill, before anything else runs, the journal it left is opened (read
only use of :class:`flowxfer.journal.Journal`) and checked directly:

- uploads (and sync, one by one or ``--pack-small``, whose tars go in
  several chunks so that most kills land mid-tar): for every file, the bytes the journal says were
  acknowledged -- its ``bytes_done`` and its acked chunks -- are no more than
  the server holds for that upload (``GET /upload/<id>`` with extensions;
  as hosted Flow exposes nothing of the kind, the server's own record of
  the upload is read from its database), and a finished file's data is on
  the server whole;
- downloads (and bulk archives): every chunk the journal calls acked is in
  the ``.part`` file (or the finished file) with exactly the checksum the
  journal recorded, and those bytes are the source's.

Then the same command runs again (and may be killed again). When the kills
are over it runs to the end: exit 0 and exact bytes everywhere.

**The server.** ``flowxfer serve`` (a subprocess) is killed at random
instants while the engine uploads through it and while it builds archives,
and restarted on the same root and port. After each restart: nothing a
client saw acknowledged is lost (the client's journal claims no more than
``GET /upload/<id>`` holds), and nothing half-written is visible (every
data item listed is whole and exact; every archive a job calls completed is
a whole, exact zip).

CI kills a few times per case; ``pytest -m long`` kills
``FLOWXFER_CRASH_KILLS`` times (default 50) per case, hundreds in all; each
cycle of work runs until its transfer completes, then fresh work starts.
"""

from __future__ import annotations

import io
import os
import random
import sqlite3
import tarfile
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from flowxfer import protocol
from flowxfer.journal import ChunkState, FileState, Journal
from flowxfer.transfer import FlowxferError
from flowxfer.transfer._download import part_path
from tests.chaos.figures import record
from tests.cli.conftest import Cli
from tests.support.rig import stored
from tests.support.runfolder import make_run_folder
from tests.support.server import RunningServer, ServerProcess, login, running_server
from tests.transfer.conftest import client, write_random

KiB = 1024
MiB = 1024 * KiB
LONG_KILLS = int(os.environ.get("FLOWXFER_CRASH_KILLS", "50"))
ACKED = (ChunkState.ACKED, ChunkState.VERIFIED)


def sources(root: Path, seed: int) -> dict[str, Path]:
    sizes = {
        "big_R1.fastq.gz": MiB + 123,
        "big_R2.fastq.gz": 700 * KiB,
        "empty.txt": 0,
        "one.txt": 1,
        "sheet.csv": 9_000,
        "chunky.bin": 64 * KiB,
        "tail.bin": 64 * KiB + 1,
    }
    return {name: write_random(root / name, size, seed + i) for i, (name, size) in enumerate(sizes.items())}


# --- the invariants -----------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    checks: int = 0
    acked_files: int = 0
    finished_early: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _journal_rows(path: Path, kinds: tuple[str, ...]) -> list[tuple[Any, list[Any]]]:
    """Every file of the given transfer kinds, with its chunks (read straight from the journal)."""
    if not path.exists():
        return []
    journal = Journal.open(path)
    try:
        rows = []
        for transfer in journal.list_transfers(include_finished=True):
            if transfer.kind in kinds:
                for f in journal.iter_files(transfer.id):
                    rows.append((f, journal.chunks(f.id)))
        return rows
    finally:
        journal.close()


async def server_holds(
    srv_url: str, root: Path, extensions: bool, data_id: str, token: str, session: aiohttp.ClientSession
) -> tuple[int, bool]:
    """``(bytes held, ready)`` for an upload: the API where it exists, else the server's own record."""
    if extensions:
        async with session.get(f"{srv_url}/upload/{data_id}", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, (data_id, r.status)
            body = await r.json()
            return int(body["size"]), bool(body["is_ready"])

    def read() -> tuple[int, bool]:
        db = sqlite3.connect(f"file:{root / 'flowxfer-server.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT size, state FROM data WHERE id = ?", (data_id,)).fetchone()
        finally:
            db.close()
        assert row is not None, f"the server has never heard of upload {data_id}"
        return int(row[0]), row[1] == "ready"

    return await anyio.to_thread.run_sync(read)


async def check_uploads(
    journal: Path, srv_url: str, root: Path, extensions: bool, tally: Tally, kinds: tuple[str, ...] = ("upload",)
) -> None:
    """The journal claims no more than the server holds, file by file."""
    rows = await anyio.to_thread.run_sync(_journal_rows, journal, kinds)
    async with aiohttp.ClientSession() as session:
        token = await login(session, srv_url, "alice", "alice-pw-1")
        for f, chunks in rows:
            acked = sum(c.size for c in chunks if c.state in ACKED)
            if f.status is FileState.SKIPPED:
                continue
            if not f.data_id:
                assert acked == 0 and f.bytes_done == 0, f"{f.local_path}: acked bytes without an upload id"
                continue
            held, ready = await server_holds(srv_url, root, extensions, f.data_id, token, session)
            claimed = f.size if f.status is FileState.DONE else max(acked, f.bytes_done)
            assert claimed <= held, f"{f.local_path}: the journal claims {claimed} bytes, the server holds {held}"
            if f.status is FileState.DONE:
                assert ready and held == f.size, f.local_path
            tally.checks += 1
            tally.acked_files += acked > 0


def _check_part_files(rows: list[tuple[Any, list[Any]]], expected: Callable[[Any], bytes | None]) -> int:
    checked = 0
    for f, chunks in rows:
        target = Path(f.local_path)
        source = expected(f)
        if f.status is FileState.DONE:
            assert target.exists(), f"{target}: done, but not there"
            if source is not None:
                assert target.read_bytes() == source, f"{target}: done, but not the source's bytes"
            checked += 1
            continue
        acked = [c for c in chunks if c.state in ACKED]
        if not acked:
            continue
        held = part_path(target)
        if not held.exists():
            # The engine renames a verified .part into place first and tells the journal "done"
            # after (the other order could record a file that is not there): a kill between the
            # two leaves every chunk acked, no .part, and the file in place with those bytes.
            assert len(acked) == len(chunks) and target.exists(), (
                f"{held}: the journal acks {len(acked)} of {len(chunks)} chunks of a file that is not there"
            )
            held = target
        with open(held, "rb") as handle:
            for c in acked:
                data = os.pread(handle.fileno(), c.size, c.offset)
                assert len(data) == c.size and protocol.checksum_of(data) == c.checksum, (
                    f"{held}: acked chunk at {c.offset} is not on disk as journaled"
                )
                if source is not None:
                    assert data == source[c.offset : c.offset + c.size], f"{held}: chunk at {c.offset} differs"
        checked += 1
    return checked


async def check_downloads(
    journal: Path, by_name: dict[str, bytes], tally: Tally, kinds: tuple[str, ...] = ("download",)
) -> None:
    """Every chunk the journal acks is on disk, with the journaled checksum, and is the source's."""
    rows = await anyio.to_thread.run_sync(_journal_rows, journal, kinds)
    tally.checks += await anyio.to_thread.run_sync(
        _check_part_files, rows, lambda f: by_name.get(Path(f.local_path).name)
    )


# --- the client kill loop -------------------------------------------------------------------


async def kill_loop(
    cli: Cli,
    command: list[str],
    kills: int,
    seed: int,
    check: Callable[[], Awaitable[None]],
    tally: Tally,
    spread: tuple[float, float],
) -> None:
    """Run ``command``, SIGKILL it after a random delay, check, repeat; then run it to the end."""
    rng = random.Random(seed)
    for _ in range(kills):
        async with cli.start(*command) as running:
            with anyio.move_on_after(rng.uniform(*spread)):
                await running.process.wait()
            if running.process.returncode is None:
                await running.kill9()
                tally.kills += 1
            else:
                tally.finished_early += 1
        await check()
        if running.process.returncode == 0:
            break  # the work finished before the kill: nothing left to interrupt
    final = await cli.run(*command, within=180)
    assert final.code == 0, final.stderr[-3000:]
    await check()


async def _cli_rig(srv: RunningServer, tmp_path: Path) -> Cli:
    cli = Cli(srv.base_url, tmp_path / "home")
    await cli.login("alice", srv.users["alice"])
    return cli


async def crash_upload(tmp_path: Path, extensions: bool, kills: int, seed: int) -> Tally:
    src = sources(tmp_path / "run", seed)
    tally = Tally()
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        cli = await _cli_rig(srv, tmp_path)
        command = [
            "--json",
            "upload",
            str(tmp_path / "run"),
            "--chunk-size",
            "64k",
            "--concurrency",
            "2",
            "--bwlimit",
            "700k",
        ]

        async def check() -> None:
            await check_uploads(cli.journal, srv.base_url, srv.root, extensions, tally)

        await kill_loop(cli, command, kills, seed, check, tally, (0.3, 3.5))
        final = await cli.run(*command)
        document = final.json()
        assert document["status"] == "completed"
        ids = {Path(f["path"]).name: f["id"] for f in document["files"]}
        assert await stored(srv, ids) == {n: p.read_bytes() for n, p in src.items()}
    return tally


async def crash_download(tmp_path: Path, extensions: bool, kills: int, seed: int) -> Tally:
    src = sources(tmp_path / "results", seed)
    by_name = {n: p.read_bytes() for n, p in src.items()}
    tally = Tally()
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        async with client(srv, tmp_path / "uploader") as fx:
            ids = [f.id or "" for f in (await fx.upload(list(src.values()))).files]
        cli = await _cli_rig(srv, tmp_path)
        out = tmp_path / "out"
        command = ["download", *ids, "-o", str(out), "--bwlimit", "900k", "--segments", "2", "--concurrency", "2"]

        async def check() -> None:
            await check_downloads(cli.journal, by_name, tally)

        await kill_loop(cli, command, kills, seed, check, tally, (0.3, 3.0))
        assert {p.name: p.read_bytes() for p in out.iterdir()} == by_name
    return tally


async def crash_download_in_place(tmp_path: Path, kills: int, seed: int) -> Tally:
    """A large file as fast as loopback goes: its bodies are received in place (no ``--bwlimit``, which
    keeps a download on aiohttp's path; see ``flowxfer.transfer._recv_into``), killed while blocks arrive."""
    src = {"large.bin": write_random(tmp_path / "results" / "large.bin", 160 * MiB, seed)}
    by_name = {n: p.read_bytes() for n, p in src.items()}
    tally = Tally()
    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "uploader", chunk_size=4 * MiB) as fx:
            ids = [f.id or "" for f in (await fx.upload(list(src.values()))).files]
        cli = await _cli_rig(srv, tmp_path)
        out = tmp_path / "out"
        command = ["download", *ids, "-o", str(out), "--segments", "4"]

        async def check() -> None:
            await check_downloads(cli.journal, by_name, tally)

        await kill_loop(cli, command, kills, seed, check, tally, (0.6, 2.0))
        assert {p.name: p.read_bytes() for p in out.iterdir()} == by_name
    return tally


async def crash_bulk(tmp_path: Path, kills: int, seed: int) -> Tally:
    src = sources(tmp_path / "results", seed)
    # An archive has no chunk map: it is journaled in 8 MiB units (download_chunk_size). A 20 MiB
    # member makes the archive span several, so kills land after some units were acked.
    src["heavy.bin"] = write_random(tmp_path / "results" / "heavy.bin", 20 * MiB, seed)
    by_name = {n: p.read_bytes() for n, p in src.items()}
    tally = Tally()
    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "uploader") as fx:
            ids = [f.id or "" for f in (await fx.upload(list(src.values()))).files]
        cli = await _cli_rig(srv, tmp_path)
        out = tmp_path / "out"
        command = [
            "bulk",
            *ids,
            "--name",
            "all.zip",
            "-o",
            str(out),
            "--extract",
            "--keep-archive",
            "--poll-interval",
            "0.1",
            "--bwlimit",
            "8M",
        ]

        async def check() -> None:
            # The archive is not any source: its acked chunks must match what the journal recorded.
            await check_downloads(cli.journal, {}, tally, kinds=("bulk",))

        await kill_loop(cli, command, kills, seed, check, tally, (0.3, 3.0))
        extracted = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "all.zip"}
        assert extracted == by_name
        with zipfile.ZipFile(out / "all.zip") as zf:
            assert zf.testzip() is None and sorted(zf.namelist()) == sorted(by_name)
    return tally


async def crash_sync(tmp_path: Path, extensions: bool, kills: int, seed: int) -> Tally:
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=2, fastq_size=300 * KiB, small_files=10, seed=seed)
    tally = Tally()
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        cli = await _cli_rig(srv, tmp_path)
        command = ["--json", "sync", str(run), "--name-from-path", "--bwlimit", "700k", "--concurrency", "2"]

        async def check() -> None:
            await check_uploads(cli.journal, srv.base_url, srv.root, extensions, tally, kinds=("sync",))

        await kill_loop(cli, command, kills, seed, check, tally, (0.3, 3.0))
        # Everything of the run is on the server, exactly.
        rows = await anyio.to_thread.run_sync(_journal_rows, cli.journal, ("sync",))
        done = {Path(f.local_path): f for f, _ in rows if f.status is FileState.DONE}
        files = [p for p in run.rglob("*") if p.is_file()]
        assert set(done) == set(files)
        got = await stored(srv, {f.remote_name: f.data_id or "" for f in done.values()})
        assert got == {f.remote_name: p.read_bytes() for p, f in done.items()}
    return tally


async def crash_sync_packed(tmp_path: Path, extensions: bool, kills: int, seed: int) -> Tally:
    """``sync --pack-small``, killed mid-tar: a tar of 1.5 MB goes in 256 KiB chunks, so most kills
    leave some acknowledged; the next run plans again and continues the same tar from them."""
    rng = random.Random(seed)
    run = tmp_path / "runs" / "bcl"
    for folder, count in (("C1.1", 110), ("InterOp", 12)):
        (run / folder).mkdir(parents=True)
        for index in range(count):
            (run / folder / f"s_1_{1101 + index}.bin").write_bytes(rng.randbytes(rng.randint(8 * KiB, 16 * KiB)))
    (run / "S1_R1.fastq.gz").write_bytes(rng.randbytes(300 * KiB))
    tally = Tally()
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        cli = await _cli_rig(srv, tmp_path)
        command = [
            "--json",
            "sync",
            str(run),
            "--pack-small",
            "64k",
            "--chunk-size",
            "256k",
            "--bwlimit",
            "700k",
            "--concurrency",
            "2",
        ]

        async def check() -> None:
            await check_uploads(cli.journal, srv.base_url, srv.root, extensions, tally, kinds=("sync",))

        await kill_loop(cli, command, kills, seed, check, tally, (0.3, 3.0))
        await check_packed_run(cli.journal, srv, run)
    return tally


async def check_packed_run(journal: Path, srv: RunningServer, run: Path) -> None:
    """Every file of ``run`` is on the server exactly, as the sync's done rows say: single files
    as themselves, the small ones inside the tars."""
    rows = await anyio.to_thread.run_sync(_journal_rows, journal, ("sync",))
    done = [f for f, _ in rows if f.status is FileState.DONE]
    got = await stored(srv, {f.remote_name: f.data_id or "" for f in done})
    held: dict[str, bytes] = {}
    for f in done:
        if "pack" not in f.extra:
            held[Path(f.local_path).relative_to(run).as_posix()] = got[f.remote_name]
            continue
        with tarfile.open(fileobj=io.BytesIO(got[f.remote_name])) as tf:
            for member in tf.getmembers():
                data = tf.extractfile(member)
                assert data is not None and member.name not in held, member.name
                held[member.name] = data.read()

    def local() -> dict[str, bytes]:
        return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    assert held == await anyio.to_thread.run_sync(local)


modes = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
KINDS = ["upload", "download", "sync", "sync-packed"]


async def _client_cycle(tmp_path: Path, kind: str, extensions: bool, kills: int, seed: int) -> Tally:
    if kind == "upload":
        return await crash_upload(tmp_path, extensions, kills, seed)
    if kind == "download":
        return await crash_download(tmp_path, extensions, kills, seed)
    if kind == "sync":
        return await crash_sync(tmp_path, extensions, kills, seed)
    if kind == "sync-packed":
        return await crash_sync_packed(tmp_path, extensions, kills, seed)
    if kind == "download-in-place":
        return await crash_download_in_place(tmp_path, kills, seed)
    return await crash_bulk(tmp_path, kills, seed)


async def _client_case(tmp_path: Path, kind: str, extensions: bool, kills: int, seed: int) -> None:
    """Kill ``kills`` times: a cycle of work ends once its transfer completes, then fresh work starts."""
    total = Tally()
    cycle = 0
    while total.kills < kills:
        # A cycle whose first run finished before its kill counts no kill: bounded all the same.
        assert cycle <= 3 * kills, f"{cycle} cycles and only {total.kills} kills: the kills never land"
        tally = await _client_cycle(tmp_path / f"cycle{cycle}", kind, extensions, kills - total.kills, seed + cycle)
        assert tally.checks >= 1, tally
        total.kills += tally.kills
        total.checks += tally.checks
        total.finished_early += tally.finished_early
        cycle += 1
    record(
        "crash-client",
        kind=kind,
        extensions=extensions,
        seed=seed,
        kills=total.kills,
        checks=total.checks,
        cycles=cycle,
        finished_before_kill=total.finished_early,
        bytes_lost=0,
    )


@modes
@pytest.mark.parametrize("kind", KINDS)
async def test_client_kill9(tmp_path: Path, kind: str, extensions: bool) -> None:
    await _client_case(tmp_path, kind, extensions, kills=2, seed=11)


async def test_client_kill9_download_received_in_place(tmp_path: Path) -> None:
    await _client_case(tmp_path, "download-in-place", True, kills=3, seed=13)


async def test_client_kill9_bulk(tmp_path: Path) -> None:
    """Bulk jobs need the archive extension of no kind: the server builds them either way."""
    await _client_case(tmp_path, "bulk", True, kills=3, seed=12)


LONG_CASES = [(kind, ext) for kind in KINDS for ext in (True, False)] + [("bulk", True)]


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("kind", "extensions"), LONG_CASES, ids=[f"{k}-{'ext' if e else 'hosted'}" for k, e in LONG_CASES]
)
async def test_client_kill9_long(tmp_path: Path, kind: str, extensions: bool) -> None:
    await _client_case(tmp_path, kind, extensions, kills=LONG_KILLS, seed=100)


# --- the server kill loop -------------------------------------------------------------------


async def _visible_is_whole(base_url: str, by_name: dict[str, bytes]) -> set[str]:
    """Every data item the server lists is complete and exact; returns the filenames listed.

    A file may be listed twice: when the server dies after storing a file's *first* chunk but
    before its answer, the client never learns the upload's id (Flow gives it in that answer)
    and can only start again. That costs a duplicate, never a byte.
    """
    async with aiohttp.ClientSession() as session:
        token = await login(session, base_url, "alice", "alice-pw-1")
        headers = {"Authorization": f"Bearer {token}"}
        listed: list[dict[str, Any]] = []
        while True:  # every page: a long run lists hundreds
            async with session.get(f"{base_url}/data/owned?limit=100&offset={len(listed)}", headers=headers) as r:
                assert r.status == 200
                page = (await r.json())["data"]
            listed += page
            if len(page) < 100:
                break
        for item in listed:
            async with session.get(f"{base_url}/downloads/{item['id']}/{item['filename']}", headers=headers) as r:
                assert r.status == 200
                body = await r.read()
            assert body == by_name[item["filename"]], f"data {item['id']} ({item['filename']}) is not whole"
        return {item["filename"] for item in listed}


async def _jobs_are_whole(base_url: str, jobs: list[str], by_name: dict[str, bytes]) -> int:
    """Every job the server calls completed serves a whole, exact zip."""
    completed = 0
    async with aiohttp.ClientSession() as session:
        token = await login(session, base_url, "alice", "alice-pw-1")
        headers = {"Authorization": f"Bearer {token}"}
        for job_id in jobs:
            async with session.get(f"{base_url}/downloads/jobs/{job_id}", headers=headers) as r:
                assert r.status == 200, job_id
                job = await r.json()
            if job["status"] != "completed":
                assert job["status"] in ("pending", "running"), job
                continue
            async with session.get(job["download_url"], headers=headers) as r:
                assert r.status == 200
                body = await r.read()
            assert len(body) == job["size"]
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                assert zf.testzip() is None
                assert {n: zf.read(n) for n in zf.namelist()} == by_name
            completed += 1
    return completed


async def server_crash(tmp_path: Path, kills: int, seed: int) -> Tally:
    rng = random.Random(seed)
    by_name: dict[str, bytes] = {}
    tally = Tally()
    server = ServerProcess(tmp_path / "root")
    await server.astart()
    srv = RunningServer(server.base_url, server.root, server.users, config=None)  # type: ignore[arg-type]

    def batch(number: int) -> dict[str, Path]:
        """A fresh set of files (their own names), so that every round has something to upload."""
        files = {f"b{number}_{n}": p for n, p in sources(tmp_path / f"run{number}", seed + 100 * number).items()}
        for name, path in files.items():
            path.rename(path.with_name(name))
        files = {name: path.with_name(name) for name, path in files.items()}
        by_name.update({n: p.read_bytes() for n, p in files.items()})
        return files

    try:
        home = tmp_path / "home"
        number = 0
        src = batch(number)
        # 1. Uploads: the engine keeps going (and resuming) while the server dies under it; when a
        # batch is done, the next one starts, so every kill lands on work in progress.
        for _ in range(kills):
            finished: list[bool] = []

            async def upload(files: dict[str, Path] = src, finished: list[bool] = finished) -> None:
                try:
                    async with client(
                        srv, home, max_attempts=3, backoff_base=0.05, backoff_cap=0.2, bwlimit="1M"
                    ) as fx:
                        report = await fx.upload(list(files.values()))
                    finished.append(report.status == "completed")
                except (FlowxferError, OSError):
                    pass  # the server died under it: the next round resumes

            async with anyio.create_task_group() as tg:
                tg.start_soon(upload)
                await anyio.sleep(rng.uniform(0.05, 1.5))
                await server.akill()
                tally.kills += 1
            await server.arestart()
            await check_uploads(home / "journal.db", server.base_url, server.root, True, tally)
            await _visible_is_whole(server.base_url, by_name)
            if finished and finished[0]:
                number += 1
                src = batch(number)
        async with client(srv, home) as fx:
            report = await fx.upload(list(src.values()))
        assert report.status == "completed", [f.error for f in report.files]
        ids = {f.filename: f.id or "" for f in report.files}
        assert await _visible_is_whole(server.base_url, by_name) == set(by_name)
        tally.extra["batches"] = number + 1
        # A large member, so that archive builds take long enough for kills to land inside them.
        big = write_random(tmp_path / "big" / "archive_weight.bin", 48 * MiB, seed)
        async with client(srv, home, chunk_size=16 * MiB) as fx:
            (weight,) = (await fx.upload([big])).files
        ids[weight.filename] = weight.id or ""
        last = {name: by_name[name] for name in src} | {weight.filename: big.read_bytes()}

        # 2. Archive builds: create jobs, kill mid-build, restart; completed archives are whole.
        jobs: list[str] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(max(1, kills // 2)):
                token = await login(session, server.base_url, "alice", "alice-pw-1")
                async with session.post(
                    f"{server.base_url}/downloads",
                    json={"data_ids": list(ids.values())},
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 202
                    jobs.append((await r.json())["id"])
                await anyio.sleep(rng.uniform(0.0, 0.4))
                await server.akill()
                tally.kills += 1
                await server.arestart()
                if await _jobs_are_whole(server.base_url, jobs, last) < len(jobs):
                    tally.extra["builds_cut"] = tally.extra.get("builds_cut", 0) + 1  # killed mid-build
        for _ in range(300):  # a minute at most: every job the server accepted completes, whole
            if await _jobs_are_whole(server.base_url, jobs, last) == len(jobs):
                break
            await anyio.sleep(0.2)
        else:
            raise AssertionError("archive jobs never completed after the restarts")
        tally.extra["jobs"] = len(jobs)
    finally:
        await server.akill()
    return tally


async def test_server_kill9(tmp_path: Path) -> None:
    tally = await server_crash(tmp_path, kills=3, seed=21)
    assert tally.kills >= 2, tally
    record(
        "crash-server",
        kills=tally.kills,
        checks=tally.checks,
        jobs=tally.extra.get("jobs", 0),
        builds_cut=tally.extra.get("builds_cut", 0),
        batches=tally.extra.get("batches", 0),
        bytes_lost=0,
    )


@pytest.mark.long
@pytest.mark.timeout(3600)
async def test_server_kill9_long(tmp_path: Path) -> None:
    tally = await server_crash(tmp_path, kills=LONG_KILLS, seed=22)
    record(
        "crash-server",
        kills=tally.kills,
        checks=tally.checks,
        jobs=tally.extra.get("jobs", 0),
        builds_cut=tally.extra.get("builds_cut", 0),
        batches=tally.extra.get("batches", 0),
        bytes_lost=0,
    )
