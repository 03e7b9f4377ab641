"""The blocks a download stream writes: large while its span goes on, small in its last ``block_size`` bytes.

A block is written once all its bytes came, so a span's last block is
written after its last byte; streams that end together queued 4 MiB each on
the disk at the very end (issue 20). Within a span's last ``block_size``
bytes blocks are :data:`TAIL_BLOCK` at most; everywhere a block starts
aligned from its chunk's start (written past the page cache).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._chunks import Chunk
from flowxfer.transfer._download_streams import TAIL_BLOCK, block_end
from flowxfer.transfer.events import BytesMoved
from tests.support.rig import rig

from .conftest import client, write_random
from .test_faults import MiB, done

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
