"""The blocks a download stream writes: large while its span goes on, small in its last ``block_size`` bytes.

A block is written once all its bytes came, so a span's last block is
written after its last byte; streams that end together queued 4 MiB each on
the disk at the very end (issue 20). Within a span's last ``block_size``
bytes blocks are :data:`TAIL_BLOCK` at most; everywhere a block starts
aligned from its chunk's start (written past the page cache).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer import _download_streams
from flowxfer.transfer._chunks import Chunk
from flowxfer.transfer._download_streams import TAIL_BLOCK, block_end
from flowxfer.transfer.events import BytesMoved
from tests.support.faultproxy import Bandwidth
from tests.support.rig import rig

from .conftest import client, write_random
from .test_faults import CHUNK, SIZE, MiB, done, download_through, engine, upload_direct

BLOCK = 4 * TAIL_BLOCK


def _blocks(chunk: Chunk, start: int, span_end: int, block_size: int) -> list[tuple[int, int]]:
    blocks = []
    while start < span_end:
        end = block_end(chunk, start, span_end, block_size)
        blocks.append((start, end))
        start = end
    return blocks


def test_a_span_s_last_block_is_small_and_the_others_are_not() -> None:
    chunk = Chunk(0, 0, 16 * MiB)
    assert _blocks(chunk, 0, 10 * MiB, BLOCK) == [
        (0, 4 * MiB),
        (4 * MiB, 8 * MiB),  # 2 MiB more after it: more than a block left when it began
        (8 * MiB, 9 * MiB),
        (9 * MiB, 10 * MiB),
    ]


@given(
    chunk_blocks=st.integers(1, 8),
    start=st.integers(0, 64 * MiB),
    length=st.integers(1, 64 * MiB),
    block_tails=st.sampled_from([1, 2, 4]),
)
def test_blocks_tile_the_span_aligned_never_past_their_chunk(
    chunk_blocks: int, start: int, length: int, block_tails: int
) -> None:
    block_size = block_tails * TAIL_BLOCK
    chunk = Chunk(0, 0, chunk_blocks * block_size)
    start = min(start, chunk.size - 1)
    span_end = min(chunk.end, start + length)
    blocks = _blocks(chunk, start, span_end, block_size)
    assert blocks[0][0] == start and blocks[-1][1] == span_end
    assert all(a < b <= a + block_size for a, b in blocks)
    # Every block but the span's first starts on a tail-block boundary of its chunk (aligned on disk).
    assert all(a % TAIL_BLOCK == 0 for a, _ in blocks[1:])
    # What is left to write once the span's last byte came: one tail block at most.
    assert blocks[-1][1] - blocks[-1][0] <= TAIL_BLOCK
    # Far from the span's end the blocks are full ones (every block_size boundary, no smaller).
    assert all(b - a == block_size for a, b in blocks[1:] if span_end - a > block_size)


async def test_a_download_writes_its_last_bytes_in_small_blocks(tmp_path: Path) -> None:
    """6 MiB in one stream, 4 MiB blocks: the describing answer's 1 MiB head, a 3 MiB block to the
    4 MiB boundary, then the last 2 MiB in two blocks of 1 MiB (one of 2 MiB before)."""
    events: list[object] = []
    async with rig(tmp_path, True) as r:
        src = write_random(tmp_path / "src" / "reads.bin", 6 * MiB, 7)
        async with client(r.server, tmp_path / "uploader", chunk_size=8 * MiB) as fx:
            (item,) = done(await fx.upload([src])).files
        assert item.id
        config = {"segments": 1, "block_size": BLOCK, "download_chunk_size": 8 * MiB, "min_segment_size": 8 * MiB}
        async with client(r.via_proxy, tmp_path / "home", events=events, **config) as fx:
            done(await fx.download([item.id], output_dir=tmp_path / "out"))
        assert (tmp_path / "out" / "reads.bin").read_bytes() == src.read_bytes()
    written = [e.nbytes for e in events if isinstance(e, BytesMoved)]
    assert written == [MiB, 3 * MiB, MiB, MiB], written


def _part_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``fdatasync`` of a ``.part`` file from now on (the call itself still made)."""
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            synced.append(str(fd))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return synced


@pytest.mark.parametrize("hold", [0.0, 1e9], ids=["none", "all"])
async def test_a_file_s_last_chunks_are_acknowledged_with_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float
) -> None:
    """Chunks within ACK_HOLD of the file's end wait for its final flush, not a flush each: here a hold
    covering the whole download syncs the ``.part`` file once, at the end; none syncs it as chunks
    come (the journal flushes every 50 ms, the download takes ~1 s). Stopped or not, every chunk
    received is recorded (tests/transfer/test_stop_resume.py)."""
    monkeypatch.setattr(_download_streams, "ACK_HOLD", hold)
    synced = _part_syncs(monkeypatch)
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(Bandwidth(SIZE, direction="down"))
        report, data = await download_through(r, tmp_path, data_id, segments=1)
        done(report)
        assert data == source
    if hold:
        assert len(synced) == 1, synced
    else:
        assert len(synced) > 3, synced


@pytest.mark.parametrize("extensions", [False], ids=["hosted-flow"])
async def test_held_chunks_are_recorded_when_the_download_stops(tmp_path: Path, extensions: bool) -> None:
    """Stopped halfway with every chunk held (no chunk map: nothing to check a chunk on disk against
    when resuming), the chunks received are recorded all the same: the resume fetches only the rest."""
    import anyio

    size = 4 * MiB
    moved: list[int] = []
    halfway = anyio.Event()

    def progress(event: object) -> None:
        if isinstance(event, BytesMoved):
            moved.append(event.nbytes)
            if sum(moved) >= size // 2:
                halfway.set()

    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=size)
        r.proxy.add(Bandwidth(size, direction="down"))  # a second
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_download_streams, "ACK_HOLD", 1e9)
            async with engine(r, tmp_path / "home", segments=1, progress=progress) as fx:
                async with anyio.create_task_group() as group:
                    group.start_soon(partial(fx.download, [data_id], output_dir=tmp_path / "out"))
                    await halfway.wait()
                    fx.stop("test")
        received = sum(moved)
        assert received < size
        before = r.download_bytes()
        report, data = await download_through(r, tmp_path, data_id, segments=1)
        done(report)
        assert data == source
        # Only what was not received, from the last chunk boundary: a chunk more at most, and the
        # bytes in the proxy's and the socket's buffers when it stopped (none of them written).
        assert r.download_bytes() - before <= size - received + CHUNK + 512 * 1024
