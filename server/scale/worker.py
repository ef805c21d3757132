"""A file-analysis worker without HTTP: takes jobs from the Redis queue and runs them in its own pool.

It needs the same Redis (``--redis``, ``--redis-prefix``) as the instances and the same upload storage
(``--data-dir`` naming the shared directory, at the same path as on the instances). Every pool process
takes file steps (no live streams share this pool). SIGTERM or SIGINT stops it cleanly: the jobs in hand
go back to the queue at once; a worker killed outright loses its jobs to another worker after
``redis_claim_idle_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from server.config import Config
from server.jobs.runner import JobRunner
from server.jobs.uploads import UploadDir
from server.jobs.watch import JobWatch
from server.pool import DetectionPool
from server.scale.availability import Availability
from server.scale.client import connect, instance_id, redacted
from server.scale.job_queue import RedisJobQueue
from server.scale.job_store import RedisJobStore
from server.scale.keys import Keys
from server.scale.options import check_scale_options, shared_config

log = logging.getLogger(__name__)

EXTRA_ACTIVE_JOBS = 1  # jobs in hand beyond one per pool process, so the pool never waits between steps


async def run_worker(config: Config, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT (or cancelled); ``ready(consumer name)`` once jobs are being taken."""
    check_scale_options(config)
    config = shared_config(config)
    client = await connect(config.redis)
    keys = Keys(config.redis_prefix)
    consumer = instance_id()
    availability = Availability(client, f"Redis at {redacted(config.redis)}",
                                "no job can be taken or finished until it answers")
    uploads = UploadDir(config.data_dir)
    pool = DetectionPool(config.workers, config.heap_trim_interval_s)

    async def remove_files(task_id: str) -> None:
        await asyncio.to_thread(uploads.remove_job_files, task_id)

    queue = RedisJobQueue(client, keys, consumer=consumer, claim_idle_s=config.redis_claim_idle_s,
                          max_deliveries=config.redis_max_deliveries, retention_s=config.retention_s,
                          on_failed=remove_files, availability=availability)
    store = RedisJobStore(client, keys, config.retention_s, check_uploads=True, holder=f"worker {consumer}",
                          availability=availability)
    runner = JobRunner(store, queue, uploads, pool, JobWatch(),
                       pool_slots=pool.workers, max_active=pool.workers + EXTRA_ACTIVE_JOBS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.to_thread(uploads.create)
        await pool.start()
        running = asyncio.create_task(runner.run(), name="job-runner")
        log.info("worker %s on Redis %s: %d detection processes, uploads in %s", consumer,
                 redacted(config.redis), pool.workers, uploads.uploads)
        if ready is not None:
            ready(consumer)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running  # jobs in hand are requeued and handed back
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await queue.close()
        await pool.close()
        await availability.close()
        await client.aclose()
