"""Every Redis key and channel name, derived from one prefix so deployments can share a Redis."""

from __future__ import annotations

from dataclasses import dataclass

JOB_GROUP = "workers"  # the consumer group every file-analysis worker reads the job stream through


@dataclass(frozen=True, slots=True)
class Keys:
    """Names under ``prefix`` (``--redis-prefix``)."""

    prefix: str

    # --- live streams --------------------------------------------------------------------------------

    @property
    def streams(self) -> str:
        """Sorted set: live stream id -> expiry (Redis server time, ms)."""
        return f"{self.prefix}:streams"

    def stream(self, stream_id: str) -> str:
        """String (JSON listing entry) with a TTL, refreshed by the instance running the stream."""
        return f"{self.prefix}:stream:{stream_id}"

    def subscribers(self, stream_id: str) -> str:
        """Sorted set: subscriber (instance:serial) -> expiry (ms); counts subscribers on every instance."""
        return f"{self.prefix}:stream:{stream_id}:subs"

    def events(self, stream_id: str) -> str:
        """Pub/sub channel of the stream's events."""
        return f"{self.prefix}:stream:{stream_id}:events"

    def stream_id_of(self, channel: str) -> str | None:
        """The stream id of an events channel name (``None`` for any other channel)."""
        head, tail = f"{self.prefix}:stream:", ":events"
        if channel.startswith(head) and channel.endswith(tail):
            return channel[len(head) : -len(tail)]
        return None

    # --- file jobs -----------------------------------------------------------------------------------

    def job(self, task_id: str) -> str:
        """Hash: one job's record (expires ``retention_s`` after its last change)."""
        return f"{self.prefix}:job:{task_id}"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    @property
    def pending(self) -> str:
        """Sorted set: pending task ids -> created (ms); what ``max_queued_jobs`` counts."""
        return f"{self.prefix}:jobs:pending"

    @property
    def unfinished(self) -> str:
        """Sorted set: pending or processing task ids -> created (ms)."""
        return f"{self.prefix}:jobs:unfinished"

    @property
    def queue(self) -> str:
        """Stream of task ids waiting for (or held by) a worker; entries are deleted once acknowledged."""
        return f"{self.prefix}:jobs:queue"

    @property
    def job_changes(self) -> str:
        """Pub/sub channel: a task id each time its job changes (wakes WebSocket uploads that follow it)."""
        return f"{self.prefix}:jobs:changes"
