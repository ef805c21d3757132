"""Job records in Redis: one hash per task, every change an atomic script that also announces it.

Any instance answers ``GET /api/v3/analysis/{task_id}`` from here. A record expires ``retention_s`` after
its last change (Redis deletes it; ``delete_finished_before`` has nothing left to do). Each change publishes
the task id on the job-changes channel, so an instance following a WebSocket upload learns of progress made
by a worker elsewhere at once.

Finishing a job (``succeed``, ``fail``) also acknowledges and deletes its entry in the job stream in the
same script: a result is never stored without the delivery being settled, nor settled without the result.
Finishing is idempotent by task id: the first result wins; a late duplicate only settles its delivery.

Every call goes through the process's :class:`~server.scale.availability.Availability`: while Redis cannot
be reached each method raises :class:`~server.exceptions.StorageUnavailable` (at once, once the outage is
known).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from server.jobs.model import ErrorCode, Job, JobError, JobStatus
from server.scale.availability import Availability
from server.scale.client import Redis
from server.scale.keys import JOB_GROUP, Keys

log = logging.getLogger(__name__)

# KEYS: job, pending, unfinished. ARGV: task id, ttl ms, changes channel, created s, field, value, ...
# A record already there with the same creation time is this call's own, sent again after a lost reply.
ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_s') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'pending' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
if status == 'pending' or status == 'processing' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""

# KEYS: job, pending. ARGV: task id, ttl ms, changes channel, now s. Returns the record or nil.
START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return nil end
redis.call('HSET', KEYS[1], 'status', 'processing', 'progress', '0', 'updated_s', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: job. ARGV: task id, ttl ms, changes channel, now s, progress.
PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[5], 'updated_s', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""

# KEYS: job, pending, unfinished, queue. ARGV: task id, ttl ms, changes channel, now s, group, field, value...
# Records the outcome if the job is unfinished; in any case acknowledges and deletes its stream entry.
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
local changed = 0
if status == 'pending' or status == 'processing' then
  redis.call('HSET', KEYS[1], 'updated_s', ARGV[4], unpack(ARGV, 6))
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[1])
  changed = 1
end
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry then
  redis.call('XACK', KEYS[4], ARGV[5], entry)
  redis.call('XDEL', KEYS[4], entry)
end
return changed
"""

# KEYS: job, pending. ARGV: task id, ttl ms, changes channel, now s.
REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'processing' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'progress', '0', 'updated_s', ARGV[4])
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'created_s'), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def job_fields(job: Job) -> dict[str, str]:
    """A job as hash fields (strings; floats in full precision)."""
    fields = {
        "status": job.status.value, "filename": job.filename, "upload_path": job.upload_path,
        "settings": json.dumps(job.settings, separators=(",", ":")), "created_s": repr(job.created_s),
        "updated_s": repr(job.updated_s), "progress": repr(job.progress), "attempts": str(job.attempts),
    }
    if job.result_json is not None:
        fields["result"] = job.result_json
    if job.error is not None:
        fields["error_code"], fields["error_msg"] = job.error.code, job.error.message
    return fields


def job_from_fields(task_id: str, raw: dict[Any, Any]) -> Job:
    """The job in hash fields as :func:`job_fields` writes them (bytes or str keys and values)."""
    fields = {_text(key): _text(value) for key, value in raw.items()}
    error = (JobError(fields["error_code"], fields.get("error_msg", "")) if "error_code" in fields else None)
    return Job(task_id=task_id, status=JobStatus(fields["status"]), filename=fields.get("filename", ""),
               upload_path=fields.get("upload_path", ""), settings=json.loads(fields.get("settings", "{}")),
               created_s=float(fields.get("created_s", 0.0)), updated_s=float(fields.get("updated_s", 0.0)),
               progress=float(fields.get("progress", 0.0)), result_json=fields.get("result"), error=error,
               attempts=int(fields.get("attempts", 0)))


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class RedisJobStore:
    """:class:`~server.jobs.store.JobStore` in Redis. ``open``/``close`` leave the shared client alone.

    With ``check_uploads`` (a process that runs jobs, named ``holder``), :meth:`start` fails a job whose
    upload this process cannot see with ``upload_gone``, naming the path: the upload storage is not shared
    as it must be (docs/deploy.md).
    """

    def __init__(self, client: Redis, keys: Keys, retention_s: float, *, check_uploads: bool = False,
                 holder: str = "", availability: Availability | None = None) -> None:
        self.client = client
        self.availability = availability or Availability(client)
        self.keys = keys
        self.retention_s = retention_s
        self.check_uploads = check_uploads
        self.holder = holder
        self.ttl_ms = max(1, round(retention_s * 1000))
        self._add = client.register_script(ADD)
        self._start = client.register_script(START)
        self._progress = client.register_script(PROGRESS)
        self._finish = client.register_script(FINISH)
        self._requeue = client.register_script(REQUEUE)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _head(self, task_id: str) -> list[Any]:
        return [task_id, self.ttl_ms, self.keys.job_changes, repr(time.time())]

    async def add(self, job: Job) -> None:
        keys = self.keys
        flat = [item for pair in job_fields(job).items() for item in pair]
        with self.availability.guard():
            added = await self._add(keys=[keys.job(job.task_id), keys.pending, keys.unfinished],
                                    args=[job.task_id, self.ttl_ms, keys.job_changes, repr(job.created_s),
                                          *flat])
        if not added:
            raise ValueError(f"task {job.task_id!r} already exists")

    async def get(self, task_id: str) -> Job | None:
        with self.availability.guard():
            raw = await self.client.hgetall(self.keys.job(task_id))
        return job_from_fields(task_id, raw) if raw else None

    async def count_waiting(self) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.zremrangebyscore(self.keys.pending, "-inf", time.time() - self.retention_s)
        pipe.zcard(self.keys.pending)
        with self.availability.guard():
            return int((await pipe.execute())[1])

    async def count_by_status(self) -> dict[str, int]:
        """Unfinished jobs by state (for metrics); finished records are not counted (they just expire)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.keys.pending)
        pipe.zcard(self.keys.unfinished)
        with self.availability.guard():
            pending, unfinished = (int(n) for n in await pipe.execute())
        return {JobStatus.PENDING.value: pending, JobStatus.PROCESSING.value: max(0, unfinished - pending)}

    async def start(self, task_id: str) -> Job | None:
        with self.availability.guard():
            flat = await self._start(keys=[self.keys.job(task_id), self.keys.pending],
                                     args=self._head(task_id))
        job = job_from_fields(task_id, _pairs(flat)) if flat else None
        if job is None or not self.check_uploads:
            return job
        if not await asyncio.to_thread(Path(job.upload_path).is_file):
            log.error("job %s: upload %s not found here; is data_dir the shared directory?", task_id,
                      job.upload_path)
            await self.fail(task_id, JobError(ErrorCode.UPLOAD_GONE.value, (
                f"the upload {job.upload_path} is not on the storage of {self.holder or 'this worker'}: "
                "every instance and worker needs the same shared data_dir")))
            return None
        return job

    async def set_progress(self, task_id: str, progress: float) -> None:
        with self.availability.guard():
            await self._progress(keys=[self.keys.job(task_id)], args=[*self._head(task_id), repr(progress)])

    async def _finish_with(self, task_id: str, fields: dict[str, str]) -> bool:
        keys = self.keys
        flat = [item for pair in fields.items() for item in pair]
        with self.availability.guard():
            changed = await self._finish(keys=[keys.job(task_id), keys.pending, keys.unfinished, keys.queue],
                                         args=[*self._head(task_id), JOB_GROUP, *flat])
        return bool(changed)

    async def succeed(self, task_id: str, result_json: str) -> None:
        await self._finish_with(task_id, {"status": JobStatus.SUCCESS.value, "progress": "1.0",
                                          "result": result_json})

    async def fail(self, task_id: str, error: JobError) -> None:
        await self._finish_with(task_id, {"status": JobStatus.FAILED.value, "error_code": error.code,
                                          "error_msg": error.message})

    async def requeue(self, task_id: str) -> None:
        with self.availability.guard():
            await self._requeue(keys=[self.keys.job(task_id), self.keys.pending], args=self._head(task_id))

    async def unfinished(self) -> list[Job]:
        with self.availability.guard():
            listed: Any = await self.client.zrange(self.keys.unfinished, 0, -1)
        ids = [_text(raw) for raw in listed]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.keys.job(task_id))
        with self.availability.guard():
            records = await pipe.execute()
        jobs = [job_from_fields(task_id, raw) for task_id, raw in zip(ids, records, strict=True) if raw]
        gone = [task_id for task_id, raw in zip(ids, records, strict=True) if not raw]
        if gone:
            with self.availability.guard():
                await self.client.zrem(self.keys.unfinished, *gone)
        return sorted((job for job in jobs if not job.status.finished), key=lambda job: job.created_s)

    async def delete_finished_before(self, before_s: float) -> list[Job]:
        """Nothing to do: Redis deletes each finished record ``retention_s`` after it finished."""
        return []
