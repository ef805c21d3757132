"""Scale-out over Redis: several server instances and file-analysis workers working as one service.

Chosen by ``--redis URL``; without it nothing here is imported and the server runs embedded. The parts:
:class:`~server.scale.hub.RedisHub` (live events over pub/sub, the directory of live streams with TTLs),
:class:`~server.scale.job_store.RedisJobStore` (job records with expiry),
:class:`~server.scale.job_queue.RedisJobQueue` (a Redis Stream read by a consumer group), wired together by
:mod:`server.scale.backend` for a server and :mod:`server.scale.worker` for a worker without HTTP.
See docs/deploy.md for the guarantees and how to deploy.
"""
