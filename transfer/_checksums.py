"""Hashing local bytes with the protocol's checksum: the one loop behind every file and range we verify.

Downloads verify a ``.part`` file whole, uploads rehash a chunk from disk
when no attempt sent it whole, skip decisions hash a local file: each reads
blocks and feeds them to one or more hashers, here (worker threads only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import xxhash

from flowxfer import protocol

__all__ = ["fd_checksum", "hash_range", "local_checksum"]

#: Bytes read at a time when nothing smaller is asked for.
BLOCK = 4 * 1024 * 1024


def hash_range(
    read: Callable[[int, int], bytes | bytearray],
    offset: int,
    size: int | None,
    hashers: Sequence[xxhash.xxh3_128],
    block: int = BLOCK,
) -> int:
    """Feed ``size`` bytes from ``offset`` (None: up to the end) to every hasher, a block at a time.

    :param read: ``read(offset, length)``, returning fewer bytes only at the end.
    :returns: how many bytes were read (fewer than ``size`` when the data ends first).
    """
    position = offset
    end = None if size is None else offset + size
    while end is None or position < end:
        data = read(position, block if end is None else min(block, end - position))
        if not data:
            break
        for hasher in hashers:
            hasher.update(data)
        position += len(data)
    return position - offset


def fd_checksum(fd: int, size: int | None = None) -> str:
    """The protocol checksum of the first ``size`` bytes behind ``fd`` (None: all of them)."""
    hasher = protocol.new_hasher()
    hash_range(lambda offset, length: os.pread(fd, length, offset), 0, size, [hasher])
    return protocol.format_checksum(hasher.hexdigest())


def local_checksum(path: Path | str) -> str:
    """The protocol checksum of a local file (one sequential read; for skip decisions)."""
    with open(path, "rb") as handle:
        return fd_checksum(handle.fileno())
