"""The shared job queue: a Redis Stream of task ids read by one consumer group, ``workers``.

Delivery is at least once. A worker reads a new entry with ``XREADGROUP`` (it then sits in the worker's
pending list) and keeps its claim while it works by re-claiming the entry every ``claim_idle_s / 4``
(``XCLAIM ... JUSTID``: resets the idle time without counting a delivery, and only while the entry is
still its own). An entry idle for ``claim_idle_s`` — its worker died, hung, or lost Redis — is taken over
by another worker with ``XAUTOCLAIM`` and the job runs again from the start; each take-over counts a
delivery, and a job delivered more than ``max_deliveries`` times fails with ``worker_lost``. Finishing a
job acknowledges and deletes its entry in the same script that stores the outcome
(:mod:`server.scale.job_store`); a delivery of a job that already finished is only acknowledged, so
handling is idempotent by task id.

While Redis cannot be reached (see :mod:`server.scale.availability`) ``put`` raises
:class:`~server.exceptions.StorageUnavailable`; a runner's ``get`` waits for Redis to answer again, and a
job whose delivery could not be settled is taken over later like a dead worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from server.exceptions import StorageUnavailable
from server.scale.availability import Availability
from server.scale.client import Redis
from server.scale.keys import JOB_GROUP, Keys

log = logging.getLogger(__name__)

WORKER_LOST = "worker_lost"  # error code of a job delivered more than max_deliveries times
LOST_MESSAGE = ("the job was handed to a worker %d times and none finished it (each stopped answering "
                "for longer than the claim time); the limit is {limit} deliveries")
MAX_BLOCK_S = 1.0  # longest blocking read, so reclaiming stays on schedule
RETRY_S = 1.0  # pause after Redis failed
LOG_INTERVAL_S = 30.0

# KEYS: queue, job. ARGV: task id. Returns the entry id.
PUT = """
local id = redis.call('XADD', KEYS[1], '*', 'task', ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'entry', id) end
return id
"""

# Decide what a delivery (new or taken over) means. KEYS: queue, job, pending, unfinished.
# ARGV: group, entry id, task id, max deliveries, ttl ms, changes channel, now s, lost message format.
# Returns {verdict, deliveries}: 'run', 'skip' (finished or gone: acknowledged) or 'failed' (too many).
CLAIMED = """
local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local deliveries = 1
if info[1] then deliveries = tonumber(info[1][4]) end
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'pending' and status ~= 'processing' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return {'skip', deliveries}
end
if deliveries > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error_code', 'worker_lost',
             'error_msg', string.format(ARGV[8], deliveries), 'updated_s', ARGV[7])
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PUBLISH', ARGV[6], ARGV[3])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return {'failed', deliveries}
end
if status == 'processing' then
  if deliveries == 1 then  -- a second entry for a job in hand elsewhere (a resent XADD): drop it
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    redis.call('XDEL', KEYS[1], ARGV[2])
    return {'skip', deliveries}
  end
  redis.call('HSET', KEYS[2], 'status', 'pending', 'progress', '0', 'updated_s', ARGV[7])
  redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[2], 'created_s'), ARGV[3])
  redis.call('PUBLISH', ARGV[6], ARGV[3])
end
redis.call('HSET', KEYS[2], 'entry', ARGV[2])
return {'run', deliveries}
"""

# KEYS: queue. ARGV: group, consumer, entry ids. Re-claims the entries still ours; for each entry returns
# '' (kept), the consumer that took it over, or '-' (acknowledged meanwhile).
KEEP = """
local out = {}
for i = 3, #ARGV do
  local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if not info[1] then
    out[#out + 1] = '-'
  elseif info[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out + 1] = ''
  else
    out[#out + 1] = info[1][2]
  end
end
return out
"""

# The runner is done with a delivery. KEYS: queue, job. ARGV: group, entry id, task id.
# Finished (or gone): acknowledge. Pending again (requeued at shutdown): a fresh entry replaces this one.
# Processing (the outcome could not be stored): leave it for another worker to take over.
SETTLE = """
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'processing' then return 'left' end
if status == 'pending' then
  local id = redis.call('XADD', KEYS[1], '*', 'task', ARGV[3])
  redis.call('HSET', KEYS[2], 'entry', id)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if status == 'pending' then return 'requeued' end
return 'acked'
"""

# KEYS: queue. ARGV: group, consumer. Removes the consumer from the group if it holds nothing.
RETIRE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisJobQueue:
    """:class:`~server.jobs.queue.JobQueue` on a Redis Stream. ``put`` from any instance; ``get`` and
    ``done`` from a runner (a worker), which must :meth:`close` it when it stops."""

    def __init__(self, client: Redis, keys: Keys, *, consumer: str, claim_idle_s: float, max_deliveries: int,
                 retention_s: float, on_failed: Callable[[str], Awaitable[None]] | None = None,
                 availability: Availability | None = None) -> None:
        if claim_idle_s <= 0 or max_deliveries < 1:
            raise ValueError("claim_idle_s must be > 0 and max_deliveries >= 1")
        self.client = client
        self.availability = availability or Availability(client)
        self.keys = keys
        self.consumer = consumer
        self.claim_idle_s = claim_idle_s
        self.max_deliveries = max_deliveries
        self.ttl_ms = max(1, round(retention_s * 1000))
        self.on_failed = on_failed
        self.taken_over = 0  # deliveries this consumer took over from another (XAUTOCLAIM)
        self._put = client.register_script(PUT)
        self._claimed = client.register_script(CLAIMED)
        self._keep = client.register_script(KEEP)
        self._settle = client.register_script(SETTLE)
        self._retire = client.register_script(RETIRE)
        self._held: dict[str, str] = {}  # task id -> entry id, while a runner works on it
        self._ready: deque[tuple[str, str]] = deque()  # (entry id, task id) to hand out
        self._group_ready = False
        self._cursor = "0-0"
        self._next_reclaim_s = 0.0
        self._keeper: asyncio.Task[None] | None = None
        self._logged_at_s = -LOG_INTERVAL_S

    @property
    def held(self) -> dict[str, str]:
        return dict(self._held)

    async def close(self) -> None:
        """Stop keeping claims; leave the group if nothing is held (else other workers take it over)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._group_ready:
            with contextlib.suppress(RedisError, StorageUnavailable), self.availability.guard():
                await self._retire(keys=[self.keys.queue], args=[JOB_GROUP, self.consumer])

    # --- the submitting side ----------------------------------------------------------------------------

    async def put(self, task_id: str) -> None:
        with self.availability.guard():
            await self._put(keys=[self.keys.queue, self.keys.job(task_id)], args=[task_id])

    # --- the runner's side ------------------------------------------------------------------------------

    async def get(self) -> str:
        """The next task to run, waiting until there is one. Rides out Redis outages (logged)."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_claims(), name="job-claims")
        while True:
            if self._ready:
                entry_id, task_id = self._ready.popleft()
                self._held[task_id] = entry_id
                return task_id
            try:
                with self.availability.guard():
                    await self._fill()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._group_ready = False  # Redis lost the group (restarted without persistence)
                else:
                    raise
            except StorageUnavailable:
                await asyncio.sleep(RETRY_S)  # the outage is logged once, by the availability
            except RedisError as exc:
                self._log(f"cannot read the job queue, retrying: {exc}")
                await asyncio.sleep(RETRY_S)

    async def done(self, task_id: str) -> None:
        entry_id = self._held.pop(task_id, None)
        if entry_id is None:
            return
        try:
            with self.availability.guard():
                await self._settle(keys=[self.keys.queue, self.keys.job(task_id)],
                                   args=[JOB_GROUP, entry_id, task_id])
        except StorageUnavailable:
            log.debug("job %s not settled (Redis unavailable); a worker takes it over later", task_id)
        except RedisError as exc:
            self._log(f"could not settle job {task_id}; another worker will take it over: {exc}")

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.keys.queue, JOB_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _fill(self) -> None:
        await self._ensure_group()
        now_s = time.monotonic()
        if now_s >= self._next_reclaim_s:
            self._next_reclaim_s = now_s + self.claim_idle_s / 2
            await self._reclaim()
            if self._ready:
                return
        block_s = min(MAX_BLOCK_S, max(0.0, self._next_reclaim_s - time.monotonic()))
        answer: Any = await self.client.xreadgroup(JOB_GROUP, self.consumer, {self.keys.queue: ">"}, count=1,
                                              block=max(1, round(block_s * 1000)))
        for _stream, entries in answer or ():
            for entry_id, fields in entries:
                await self._deliver(_text(entry_id), fields)

    async def _reclaim(self) -> None:
        """Take over one entry idle for ``claim_idle_s`` (its worker is gone), if there is one."""
        while True:
            idle_ms = round(self.claim_idle_s * 1000)
            claimed: Any = await self.client.xautoclaim(
                self.keys.queue, JOB_GROUP, self.consumer, idle_ms, self._cursor, count=1)
            cursor, entries = claimed[0], claimed[1]
            self._cursor = _text(cursor)
            for entry_id, fields in entries:
                self.taken_over += 1
                log.info("took over job queue entry %s (its worker stopped answering)", _text(entry_id))
                await self._deliver(_text(entry_id), fields)
            if self._ready or self._cursor == "0-0" or not entries:
                return

    async def _deliver(self, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        task_id = _text((fields or {}).get(b"task", b""))
        keys = self.keys
        if not task_id:  # not an entry we wrote; drop it
            await self.client.xack(keys.queue, JOB_GROUP, entry_id)
            return
        message = LOST_MESSAGE.format(limit=self.max_deliveries)
        verdict, deliveries = await self._claimed(
            keys=[keys.queue, keys.job(task_id), keys.pending, keys.unfinished],
            args=[JOB_GROUP, entry_id, task_id, self.max_deliveries, self.ttl_ms, keys.job_changes,
                  repr(time.time()), message])
        verdict = _text(verdict)
        if verdict == "run":
            self._ready.append((entry_id, task_id))
        elif verdict == "failed":
            log.warning("job %s failed: delivered %s times without finishing", task_id, deliveries)
            if self.on_failed is not None:
                await self.on_failed(task_id)

    async def _keep_claims(self) -> None:
        interval_s = self.claim_idle_s / 4
        while True:
            await asyncio.sleep(interval_s)
            held = dict(self._held)
            if not held:
                continue
            try:
                with self.availability.guard():
                    owners = await self._keep(keys=[self.keys.queue],
                                              args=[JOB_GROUP, self.consumer, *held.values()])
            except StorageUnavailable:
                continue
            except RedisError as exc:
                self._log(f"cannot renew job claims: {exc}")
                continue
            for (task_id, _entry_id), raw in zip(held.items(), owners, strict=True):
                owner = _text(raw)
                if owner not in ("", "-"):
                    log.warning("job %s: worker %s took it over (this one was silent too long)", task_id,
                                owner)

    def _log(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self._logged_at_s >= LOG_INTERVAL_S:
            self._logged_at_s = now_s
            log.warning("job queue: %s", text)
