"""Seeing (or failing) the ``fsync`` of one folder: for tests of what must be durable before what."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def on_folder_fsync(monkeypatch: pytest.MonkeyPatch, folder: Path, action: Callable[[], None]) -> None:
    """Run ``action`` each time ``folder`` itself is ``fsync``ed, before the flush (it may raise to fail it).

    Only the standard library's ``os.fsync`` is wrapped; every other flush goes through unchanged.
    """
    wanted = folder.stat()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (wanted.st_dev, wanted.st_ino):
            action()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
