"""The data folder's shared flush on a chunked or parallel upload's finish: ordered, and recoverable when it fails."""

from __future__ import annotations

import os
import sqlite3

import pytest

from flowxfer.protocol import checksum_of
from flowxfer.server._store import DB_NAME
from tests.server.conftest import Api
from tests.server.test_upload_parallel import CHUNK, _finish, _open, _put
from tests.support.flushes import on_folder_fsync
from tests.support.server import RunningServer


def _ready_rows(server: RunningServer) -> set[str]:
    with sqlite3.connect(server.root / DB_NAME) as db:
        return {data_id for (data_id,) in db.execute("SELECT id FROM data WHERE state = 'ready'")}


async def test_a_parallel_upload_is_ready_only_after_its_name_is_flushed(
    api: Api, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parallel finish renames the file into data/, then marks it ready: the folder flushed between."""
    data_folder = server.root / "data"
    data = os.urandom(CHUNK * 3 + 17)
    data_id = await _open(api, len(data))
    for offset in range(0, len(data), CHUNK):
        assert (await _put(api, data_id, data, offset)).status == 200
    flushes: list[tuple[set[str], set[str]]] = []

    def seen() -> None:
        flushes.append((set(os.listdir(data_folder)), _ready_rows(server)))

    on_folder_fsync(monkeypatch, data_folder, seen)
    code, body = await _finish(api, data_id, data)
    assert code == 200 and body["is_ready"], body
    assert any(data_id in files and data_id not in ready for files, ready in flushes), flushes


async def test_a_last_chunk_whose_folder_flush_failed_can_be_sent_again(
    api: Api, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush after the rename fails once: the client is told so (5xx); sending the last chunk again
    (a retry, or the next run's resume) completes the finish at once, not at the server's restart."""
    data_folder = server.root / "data"
    head, tail = os.urandom(4000), os.urandom(3000)
    first = await api.chunk("alice", head, filename="s.fq", extra={"checksum": checksum_of(head)})
    data_id = first.json()["id"]

    def fail() -> None:
        raise OSError(5, "Input/output error")

    last = {
        "filename": "s.fq",
        "offset": len(head),
        "data_id": data_id,
        "is_last": True,
        "extra": {"checksum": checksum_of(tail), "file_checksum": checksum_of(head + tail)},
    }
    with monkeypatch.context() as failing:
        on_folder_fsync(failing, data_folder, fail)
        answer = await api.chunk("alice", tail, **last)
        assert answer.status >= 500, (answer.status, answer.body)
    # The plain route answers a repeat of a complete upload's last chunk with its size, which the
    # client takes as "it arrived" and then waits for the upload to be ready (transfer/_upload.py).
    again = await api.chunk("alice", tail, **last)
    assert again.status == 400 and again.json()["expected_file_size"] == len(head + tail), again.body
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["is_ready"] is True, status  # was: finalizing until the server restarted
    assert data_id in _ready_rows(server)
    assert (data_folder / data_id).read_bytes() == head + tail
    assert (await api.call("GET", f"/downloads/{data_id}/s.fq", "alice")).body == head + tail
