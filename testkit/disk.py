"""A full disk for the tests and benchmarks that need one (on a tmpfs they mount themselves)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fill(folder: Path, name: str = "filler", block_bytes: int = 1 << 20) -> Path:
    """Fill the file system of ``folder`` to its last byte with one file, ``folder / name``; return it.

    Written in blocks of ``block_bytes``, then 4096 bytes, then single bytes, each until the system
    refuses (ENOSPC), so not one byte is left.
    """
    filler = folder / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (block_bytes, 4096, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler
