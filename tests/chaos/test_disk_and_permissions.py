"""A full disk, a refused folder, sources that become unreadable: clear messages, consistent journals.

The tests run as root, where ``chmod`` stops nothing, so each uses a real
mechanism and says which:

- **ENOSPC**: a small tmpfs mounted on the output folder (``mount -t tmpfs
  -o size=...``), made larger to "free space". Where mounting is not
  allowed, the CLI runs with ``RLIMIT_FSIZE`` (``EFBIG``: the same path
  through the engine, a different errno), lifted to "free space".
- **EACCES**: the CLI runs as the unprivileged user ``nobody`` (uid 65534),
  for which ``chmod`` is real. Where the process cannot change user, the
  folder is made immutable with ``chattr +i`` (``EPERM``).
- **unreadable sources**, mid-upload: a file made unreadable (as ``nobody``,
  ``chmod 000``; else replaced by a folder), a file deleted, a file
  replaced by a FIFO (opening one blocks for ever unless the engine refuses
  non-regular files).

After the failure the journal is checked with the crash suite's invariant
(acked chunks on disk exactly as journaled); after the fix the same command
finishes and every byte is exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from tests.chaos.test_crash_consistency import Tally, check_downloads, check_uploads
from tests.cli.conftest import Cli, no_traceback
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import client, write_random

KiB = 1024
MiB = 1024 * KiB
NOBODY = 65534


def _can_mount() -> bool:
    probe = tempfile.mkdtemp(prefix="flowxfer-mount-probe-")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True, timeout=30
        )
        if done.returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True, capture_output=True, timeout=30)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.rmdir(probe)


def _can_become_nobody() -> bool:
    if os.geteuid() != 0:
        return False
    code = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534); import flowxfer.cli"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


#: ``FLOWXFER_TEST_FALLBACKS=1`` forces the other mechanisms (to check them on a machine that has both).
_FALLBACKS = bool(os.environ.get("FLOWXFER_TEST_FALLBACKS"))
CAN_MOUNT = not _FALLBACKS and shutil.which("mount") is not None and _can_mount()
CAN_BE_NOBODY = not _FALLBACKS and _can_become_nobody()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def document(self) -> dict[str, object]:
        return json.loads(self.stdout)


async def run_as(cli: Cli, prelude: str, *args: str, within: float = 90) -> Run:
    """Run the CLI after ``prelude`` (Python run first in the child: drop privileges, set limits)."""
    command = [sys.executable, "-c", f"{prelude}\nfrom flowxfer.cli import main; main()", *args]
    with anyio.fail_after(within):
        done = await anyio.run_process(command, check=False, env=cli.env())
    result = Run(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
    no_traceback(result.stderr)
    return result


AS_NOBODY = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)"


@contextlib.contextmanager
def world_dir() -> Iterator[Path]:
    """A folder outside pytest's (root-only) tmp tree, usable by ``nobody``."""
    path = Path(tempfile.mkdtemp(prefix="flowxfer-disk-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        for p in path.rglob("*"):
            with contextlib.suppress(OSError):
                subprocess.run(["chattr", "-i", str(p)], capture_output=True, timeout=30)
                p.chmod(0o700 if p.is_dir() else 0o600)
        shutil.rmtree(path, ignore_errors=True)


async def _uploaded(srv: RunningServer, home: Path, files: dict[str, int]) -> tuple[dict[str, bytes], list[str]]:
    src = {name: write_random(home / "src" / name, size, i) for i, (name, size) in enumerate(files.items())}
    async with client(srv, home / "uploader") as fx:
        report = await fx.upload(list(src.values()))
    assert report.status == "completed"
    return {n: p.read_bytes() for n, p in src.items()}, [f.id or "" for f in report.files]


async def test_download_hits_a_full_disk_then_resumes(tmp_path: Path) -> None:
    files = {"a.bin": MiB, "big.bin": 3 * MiB + 5, "c.bin": 200 * KiB}
    async with running_server(tmp_path / "root") as srv:
        by_name, ids = await _uploaded(srv, tmp_path, files)
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        out = tmp_path / "out"
        out.mkdir()
        command = ["--json", "download", *ids, "-o", str(out), "--concurrency", "1"]
        if CAN_MOUNT:
            mechanism, prelude, errno_text = "tmpfs", "", "No space left on device"
            await anyio.run_process(["mount", "-t", "tmpfs", "-o", "size=2560k", "tmpfs", str(out)])
        else:
            mechanism, errno_text = "RLIMIT_FSIZE", "File too large"
            prelude = (
                "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({2 * MiB}, {2 * MiB}))"
            )
        try:
            full = await run_as(cli, prelude, *command)
            assert full.code == 1, (mechanism, full)
            document = full.document()
            assert document["status"] == "partial"
            failed = {Path(str(f["path"])).name: f["error"] for f in document["files"] if f["status"] == "failed"}
            assert set(failed) == {"big.bin"}, (mechanism, failed)
            message = str(failed["big.bin"])
            assert errno_text in message and "big.bin" in message, message
            assert "run the same command again" in message, message
            done = {Path(str(f["path"])).name for f in document["files"] if f["status"] == "done"}
            assert done == {"a.bin", "c.bin"}
            assert {n: (out / n).read_bytes() for n in done} == {n: by_name[n] for n in done}
            await check_downloads(cli.journal, by_name, Tally())
            # Free the space, run the same command: it finishes, the rest is skipped, not fetched again.
            if CAN_MOUNT:
                await anyio.run_process(["mount", "-o", "remount,size=16m", str(out)])
            again = await run_as(cli, "", *command)
            assert again.code == 0, again
            statuses = {Path(str(f["path"])).name: f["status"] for f in again.document()["files"]}
            assert statuses["big.bin"] == "done"
            assert {p.name: p.read_bytes() for p in out.iterdir()} == by_name
            await check_downloads(cli.journal, by_name, Tally())
        finally:
            if CAN_MOUNT:
                await anyio.run_process(["umount", str(out)], check=False)


async def test_download_into_a_refused_folder_then_resumes(tmp_path: Path) -> None:
    files = {"r1.fastq.gz": 400 * KiB, "r2.fastq.gz": 150 * KiB}
    with world_dir() as world:
        async with running_server(tmp_path / "root") as srv:
            by_name, ids = await _uploaded(srv, tmp_path, files)
            cli = Cli(srv.base_url, world / "home")
            out = world / "out"
            out.mkdir()
            command = ["--json", "download", *ids, "-o", str(out)]
            if CAN_BE_NOBODY:
                mechanism, prelude, errno_text = "nobody", AS_NOBODY, "Permission denied"
                (world / "home").mkdir()
                os.chown(world / "home", NOBODY, NOBODY)
                os.chown(out, NOBODY, NOBODY)
                assert (await run_as(cli, prelude, "login", "-u", "alice", "--password-stdin")).code != 0  # no stdin
                login = await anyio.run_process(
                    [
                        sys.executable,
                        "-c",
                        f"{prelude}\nfrom flowxfer.cli import main; main()",
                        "login",
                        "-u",
                        "alice",
                        "--password-stdin",
                    ],
                    input=b"alice-pw-1\n",
                    env=cli.env(),
                    check=False,
                )
                assert login.returncode == 0, login.stderr
                out.chmod(0o555)
            else:
                mechanism, prelude, errno_text = "chattr +i", "", "Operation not permitted"
                await cli.login("alice", srv.users["alice"])
                await anyio.run_process(["chattr", "+i", str(out)])
            refused = await run_as(cli, prelude, *command)
            assert refused.code == 1, (mechanism, refused)
            errors = [str(f["error"]) for f in refused.document()["files"]]  # type: ignore[union-attr]
            assert all(errno_text in e and str(out) in e and "run the same command again" in e for e in errors), errors
            assert not list(out.iterdir())
            await check_downloads(cli.journal, by_name, Tally())
            # Fix the permission; the same command finishes.
            if CAN_BE_NOBODY:
                out.chmod(0o755)
            else:
                await anyio.run_process(["chattr", "-i", str(out)])
            again = await run_as(cli, prelude, *command)
            assert again.code == 0, again
            assert {p.name: p.read_bytes() for p in out.iterdir()} == by_name
            await check_downloads(cli.journal, by_name, Tally())


async def test_sources_that_become_unreadable_fail_alone(tmp_path: Path) -> None:
    with world_dir() as world:
        src = world / "run"
        names = [f"f{i}.fastq.gz" for i in range(7)]
        paths = [write_random(src / name, 256 * KiB + i, i) for i, name in enumerate(names)]
        for p in [src, *paths]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        async with running_server(tmp_path / "root") as srv:
            cli = Cli(srv.base_url, world / "home")
            prelude = ""
            if CAN_BE_NOBODY:
                prelude = AS_NOBODY
                (world / "home").mkdir()
                os.chown(world / "home", NOBODY, NOBODY)
                login = await anyio.run_process(
                    [
                        sys.executable,
                        "-c",
                        f"{prelude}\nfrom flowxfer.cli import main; main()",
                        "login",
                        "-u",
                        "alice",
                        "--password-stdin",
                    ],
                    input=b"alice-pw-1\n",
                    env=cli.env(),
                    check=False,
                )
                assert login.returncode == 0, login.stderr
            else:
                await cli.login("alice", srv.users["alice"])
            command = [
                sys.executable,
                "-c",
                f"{prelude}\nfrom flowxfer.cli import main; main()",
                "--json",
                "--log-format",
                "json",
                "upload",
                str(src),
                "--concurrency",
                "1",
                "--bwlimit",
                "512k",
                "--chunk-size",
                "64k",
            ]
            process = await anyio.open_process(command, env=cli.env())
            stdout = b""
            stderr = b""
            try:
                assert process.stderr is not None and process.stdout is not None
                with anyio.fail_after(30):
                    async for data in process.stderr:
                        stderr += data
                        if b'"bytes_moved"' in stderr:
                            break
                # f0 is on the wire; now spoil four of the files still waiting.
                if CAN_BE_NOBODY:
                    paths[2].chmod(0o000)  # EACCES for nobody
                else:
                    paths[2].unlink()
                    paths[2].mkdir()  # a folder where the file was
                paths[3].unlink()  # deleted
                paths[4].unlink()
                os.mkfifo(paths[4])  # a FIFO: opening it for reading blocks until someone writes
                paths[5].unlink()
                paths[5].mkdir()
                with anyio.fail_after(90):
                    async with anyio.create_task_group() as tg:

                        async def drain_err() -> None:
                            nonlocal stderr
                            async for data in process.stderr:  # type: ignore[union-attr]
                                stderr += data

                        tg.start_soon(drain_err)
                        async for data in process.stdout:
                            stdout += data
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
            no_traceback(stderr.decode(errors="replace"))
            assert process.returncode == 1, stderr.decode(errors="replace")[-2000:]
            document = json.loads(stdout)
            by_name = {Path(f["path"]).name: f for f in document["files"]}
            assert {n for n, f in by_name.items() if f["status"] == "done"} == {
                "f0.fastq.gz",
                "f1.fastq.gz",
                "f6.fastq.gz",
            }
            failed = {n: f["error"] for n, f in by_name.items() if f["status"] == "failed"}
            assert set(failed) == {"f2.fastq.gz", "f3.fastq.gz", "f4.fastq.gz", "f5.fastq.gz"}, failed
            for name, error in failed.items():
                assert name in error, error
            assert "Permission denied" in failed["f2.fastq.gz"] or "not a regular file" in failed["f2.fastq.gz"]
            assert "disappeared" in failed["f3.fastq.gz"] or "No such file" in failed["f3.fastq.gz"]
            assert "not a regular file" in failed["f4.fastq.gz"], failed["f4.fastq.gz"]
            assert "not a regular file" in failed["f5.fastq.gz"], failed["f5.fastq.gz"]
            await check_uploads(cli.journal, srv.base_url, srv.root, True, Tally())
            assert stat.S_ISFIFO(os.stat(paths[4]).st_mode)
