"""Uploaded files on disk: written chunk by chunk off the event loop, never held whole in memory.

Layout under the data directory: ``uploads/<task_id>.part`` while bytes arrive, renamed to
``uploads/<task_id>.upload`` once complete; ``work/<task_id>.*`` for a job's temporary files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from server.exceptions import TransientError

FLUSH_BYTES = 1 << 20  # bytes gathered in memory before one write to disk
# A full disk, a full quota, a file larger than the process may write: no room for the upload.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

T = TypeVar("T")


class UploadTooLarge(TransientError):
    """More bytes arrived than the limit allows."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the upload is larger than {limit_bytes} bytes, the most this server accepts")
        self.limit_bytes = limit_bytes


class StorageFull(TransientError):
    """The upload cannot be stored: the disk, a quota or a file-size limit has no room for it."""

    def __init__(self, cause: OSError | str, what: str = "the upload") -> None:
        if isinstance(cause, OSError):
            reason = os.strerror(cause.errno) if cause.errno is not None else str(cause)
        else:
            reason = cause
        super().__init__(f"the server has no room to store {what} ({reason}); try again later")


async def _on_disk(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a thread, with running out of room raised as :class:`StorageFull`."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        if exc.errno in NO_ROOM_ERRNOS:
            raise StorageFull(exc) from exc
        raise


class UploadDir:
    """Paths for uploads and job work files under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.uploads = data_dir / "uploads"
        self.work = data_dir / "work"

    def create(self) -> None:
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def upload_path(self, task_id: str) -> Path:
        return self.uploads / f"{task_id}.upload"

    def part_path(self, task_id: str) -> Path:
        return self.uploads / f"{task_id}.part"

    def work_prefix(self, task_id: str) -> Path:
        return self.work / task_id

    def writer(self, task_id: str, limit_bytes: int) -> UploadWriter:
        return UploadWriter(self.part_path(task_id), self.upload_path(task_id), limit_bytes)

    def remove_job_files(self, task_id: str) -> None:
        """Delete the upload, a partial upload and every work file of ``task_id`` (blocking)."""
        for path in (self.upload_path(task_id), self.part_path(task_id)):
            path.unlink(missing_ok=True)
        self.remove_work_files(task_id)

    def remove_work_files(self, task_id: str) -> None:
        """Delete the work files of ``task_id`` (a decode spool), keeping its upload (blocking)."""
        if self.work.is_dir():
            for path in self.work.glob(f"{task_id}.*"):
                path.unlink(missing_ok=True)

    def remove_all_work_files(self) -> None:
        """Delete every job's work files (blocking): at start-up no job is running."""
        if self.work.is_dir():
            for path in self.work.iterdir():
                path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        """Bytes the server may still write on the data directory's file system (blocking)."""
        stats = os.statvfs(self.uploads if self.uploads.is_dir() else self.uploads.parent)
        return stats.f_bavail * stats.f_frsize

    def orphans(self, keep: set[str]) -> list[Path]:
        """Upload and work files belonging to no task id in ``keep`` (blocking)."""
        found: list[Path] = []
        for folder in (self.uploads, self.work):
            if folder.is_dir():
                found += [path for path in folder.iterdir() if path.name.split(".", 1)[0] not in keep]
        return found


class UploadWriter:
    """Writes one upload: :meth:`write` chunks, then :meth:`commit` or :meth:`discard`.

    Chunks are gathered up to :data:`FLUSH_BYTES` and written in a thread, so the event loop never
    blocks on the disk and memory per upload stays under about twice that.
    """

    def __init__(self, part_path: Path, final_path: Path, limit_bytes: int) -> None:
        self.part_path = part_path
        self.final_path = final_path
        self.limit_bytes = limit_bytes
        self.received_bytes = 0
        self.written_bytes = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        self._file = await _on_disk(open, self.part_path, "wb")

    async def write(self, chunk: bytes) -> None:
        """Add ``chunk``; raises :class:`UploadTooLarge` as soon as the total passes the limit."""
        self.received_bytes += len(chunk)
        if self.received_bytes > self.limit_bytes:
            raise UploadTooLarge(self.limit_bytes)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Write what is gathered; afterwards :attr:`written_bytes` == :attr:`received_bytes`."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        assert self._file is not None
        await _on_disk(self._file.write, data)
        self.written_bytes += len(data)

    async def commit(self) -> Path:
        """Flush, sync and move the file to its final name; returns that path."""
        await self.flush()
        file, self._file = self._file, None
        assert file is not None

        def finish() -> None:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self.part_path, self.final_path)

        try:
            await _on_disk(finish)
        except BaseException:
            self._file = file  # so that discard() still closes it and deletes the part
            raise
        return self.final_path

    async def discard(self) -> None:
        """Drop everything written so far (safe to call more than once)."""
        file, self._file = self._file, None
        self._pending = []

        def remove() -> None:
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
            self.part_path.unlink(missing_ok=True)

        await asyncio.to_thread(remove)
