"""Whole-file analysis: jobs, their store and queue, decoding, and the runner that feeds the detection pool.

Transport-independent: the HTTP and WebSocket endpoints (``server.transport.http_analysis``,
``server.transport.ws_upload``) talk to a :class:`~server.jobs.service.JobService`; a worker without HTTP
runs a :class:`~server.jobs.runner.JobRunner` on the same store and queue.
"""
