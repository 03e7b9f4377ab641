"""An unfinished directory upload's staged unpack holds a descriptor; abandoned ones must not use up the server's.

The staged unpack opens its staging folder before the first member and keeps
it until the finish's flush (Linux reports a failed writeback to ``syncfs``
only through descriptors opened before it). Nothing expires an upload, so a
client that opens directory uploads and never finishes them left one
descriptor each for the server's life: past :data:`STAGED_WATCHES_MAX` an
upload gets no head start, and its finish still unpacks the archive.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

from flowxfer.protocol import checksum_of
from flowxfer.server._unpack import STAGED_WATCHES_MAX
from tests.server.conftest import Api
from tests.server.test_readback_direct import _hashing_ahead_done
from tests.server.test_upload_parallel import CHUNK as PARALLEL_CHUNK
from tests.server.test_upload_parallel import _put
from tests.support.server import RunningServer

KiB = 1024
CHUNK = PARALLEL_CHUNK


def _tar() -> bytes:
    out = io.BytesIO()
    rng = random.Random(3)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(12):
            blob = rng.randbytes(20 * KiB)
            info = tarfile.TarInfo(f"m{i:02}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return out.getvalue()


def _held_under(folder: Path) -> int:
    """This process's (the in-process server's) descriptors on paths under ``folder``."""
    prefix = str(folder.resolve()) + os.sep
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if os.path.realpath(fd).startswith(prefix))


async def test_abandoned_directory_uploads_hold_a_bounded_number_of_descriptors(
    api: Api, server: RunningServer
) -> None:
    data = _tar()
    trees = server.root / "trees"

    async def send(data_id: str, index: int) -> None:
        answer = await _put(api, data_id, data, index * CHUNK)
        assert answer.status == 200, answer.body
        await _hashing_ahead_done()

    ids = []
    for _ in range(STAGED_WATCHES_MAX + 4):  # each started (its first members staged), none finished
        body = {"filename": "p.bin", "size": len(data), "chunk_size": CHUNK, "is_directory": True}
        opened = await api.call("POST", "/upload/parallel", "alice", json=body)
        assert opened.status == 200, opened.body
        ids.append(str(opened.json()["id"]))
        await send(ids[-1], 0)
    assert 0 < _held_under(trees) <= STAGED_WATCHES_MAX

    last = ids[-1]  # past the bound: no head start, and its finish unpacks the archive as before
    for index in range(1, -(-len(data) // CHUNK)):
        await send(last, index)
    finished = await api.call(
        "POST", f"/upload/parallel/{last}/finish", "alice", json={"file_checksum": checksum_of(data)}
    )
    assert finished.status == 200, finished.body
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for member in tf.getmembers():
            assert (server.root / "trees" / last / member.name).read_bytes() == tf.extractfile(member).read()  # type: ignore[union-attr]
