"""The Linux scheduling policy of the event loop and its pool workers (``--sched-policy``).

``normal`` is the default policy (``SCHED_OTHER``). With ``batch`` (``SCHED_BATCH``) the same processes
get the same share of the CPU at the same nice level, but a task the kernel wakes no longer preempts the
task running on its core: it runs when that one blocks or its time slice ends. On a core shared by the
event loop and a worker, every call wakes the worker (which then preempted the loop in the middle of its
iteration), every answer and every arriving chunk wakes the loop (which then preempted the worker in the
middle of a batch); each preemption is two context switches, and each process comes back to caches the
other has refilled. With ``batch`` each runs until it waits: the loop reads its sockets and dispatches, then
the worker runs the whole batch.

``batch`` is the server's default (``Config.sched_policy``): on one core with ``beats`` on, 128 streams, the
worker's involuntary context switches fell from 5-6 to under 1 per 100 chunks and the loop's and worker's
CPU per chunk by 4.5-11 %; 192 streams held in 2 runs of 4, against 0 of 6 with ``normal`` (bench/README.md,
"The hand-off on a shared core"). A woken process that finds its core busy now waits up
to the running one's time slice (a few milliseconds) where it preempted it before: a worker's batch, or
another program on a shared host.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("server.pool")

SCHED_POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH}


def set_policy(tid: int, policy: str) -> None:
    """Give thread ``tid`` (0: the calling thread; a process's pid: its main thread) ``policy`` (a name in
    :data:`SCHED_POLICIES`). A thread that has gone, or a system that refuses, is logged and left as is."""
    with contextlib.suppress(ProcessLookupError):
        try:
            os.sched_setscheduler(tid, SCHED_POLICIES[policy], os.sched_param(0))
        except PermissionError as exc:
            log.warning("could not set the scheduling policy %s: %s", policy, exc)
