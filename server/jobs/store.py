"""What the job runner and the endpoints need from a job store.

The embedded server uses :class:`~server.jobs.sqlite_store.SQLiteJobStore`; a shared store (e.g. Redis)
for workers on other machines implements the same protocol. Every method is a coroutine so an
implementation can do its I/O off the event loop.
"""

from __future__ import annotations

from typing import Protocol

from server.jobs.model import Job, JobError


class JobStore(Protocol):
    async def open(self) -> None:
        """Connect / create the schema."""

    async def close(self) -> None: ...

    async def add(self, job: Job) -> None:
        """Insert a new job (``task_id`` is unique)."""

    async def get(self, task_id: str) -> Job | None: ...

    async def count_waiting(self) -> int:
        """Jobs in ``pending`` (uploading or queued): what ``max_queued_jobs`` limits."""

    async def start(self, task_id: str) -> Job | None:
        """``pending`` → ``processing`` with progress 0 and one more attempt; ``None`` if not pending."""

    async def set_progress(self, task_id: str, progress: float) -> None: ...

    async def succeed(self, task_id: str, result_json: str) -> None:
        """→ ``success`` with progress 1 and the result (JSON text)."""

    async def fail(self, task_id: str, error: JobError) -> None:
        """→ ``failed`` with ``error`` (from any unfinished state)."""

    async def requeue(self, task_id: str) -> None:
        """→ ``pending`` with progress 0 (a job cut short, to run again from scratch)."""

    async def unfinished(self) -> list[Job]:
        """Jobs in ``pending`` or ``processing``, oldest first."""

    async def delete_finished_before(self, before_s: float) -> list[Job]:
        """Delete finished jobs last updated before ``before_s`` (Unix seconds); return them."""
