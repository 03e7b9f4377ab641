"""A takeover through ``--path-map`` where the other host's copy of a file is not the same file.

``tests/fleet/test_takeover.py`` moves the very same files to b's mount. On shared storage
that is the rule; but a mount that lags, or a file rewritten between a's death
and b's takeover, gives b other bytes under the mapped path. Then b must not
finish a's upload with its own bytes after a's acknowledged chunks (a file
that is neither): the server ends with b's file exactly, or the file fails
in one clean line and nothing half is recorded as done.

What guards this is the size-and-mtime check before a file's upload
(``transfer/_workers.py``) and in :class:`FileSource`: with both reduced to the
size, b stored two files of a's first chunks and its own rest, as done: no
later check caught the mix. A
copy with the same size and mtime but other bytes would get through: the
documented limit of trusting stat, as for a single host.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio

from tests.fleet.conftest import FULL_SPEED, SLOW_UPLOAD, make_run
from tests.fleet.test_takeover import (
    _kill_mid_upload,
    _refused_while_live,
    _remaining,
    past_the_ttl,
    two_short_ttl_hosts,
)
from tests.support.rig import stored
from tests.support.server import RunningServer


async def test_a_file_rewritten_before_the_takeover_is_never_half_a_s_half_b_s(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    mnt_a, data = tmp_path / "mnt_a", tmp_path / "data"
    make_run(mnt_a / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    mapping = ("--path-map", f"{mnt_a}={data}")

    killed = await _kill_mid_upload(a, "upload", str(mnt_a / "run1"), *SLOW_UPLOAD)
    mnt_a.rename(data)
    # Every file b sees is rewritten: the same size, other bytes, a later modification time.
    now = {}
    for path in sorted((data / "run1").iterdir()):
        size = path.stat().st_size
        path.write_bytes(os.urandom(size))
        stamp = time.time_ns() + 5_000_000_000
        os.utime(path, ns=(stamp, stamp))
        now[path.name] = path.read_bytes()
    await _refused_while_live(b, killed, "--json", "upload", str(data / "run1"), *SLOW_UPLOAD, *mapping)
    await anyio.to_thread.run_sync(_remaining, postgres_url)
    await past_the_ttl(postgres_url, killed)

    finished = await b.run("--json", "upload", str(data / "run1"), *FULL_SPEED, *mapping)
    files = finished.json()["files"]
    done = {Path(f["path"]).name: f["id"] for f in files if f["status"] in ("done", "skipped") and f["id"]}
    held = await stored(server, done)
    mixed = {name for name, body in held.items() if body != now[name]}
    assert not mixed, f"stored neither a's nor b's bytes, or a's under b's name: {sorted(mixed)}"
    failed = [f for f in files if f["status"] == "failed"]
    assert all(f["error"] and "\n" not in f["error"] for f in failed), failed
    assert finished.code in (0, 1), finished
