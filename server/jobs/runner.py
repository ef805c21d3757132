"""The job runner: takes task ids from the queue and runs each job as bounded steps in the detection pool.

Independent of HTTP: it needs a store, a queue, the upload directory and a pool. Up to ``max_active`` jobs
run at once; their turns (pool calls of steps in a row, :func:`~server.jobs.work.analyse_turn`, at most
``TURN_S`` each) share ``pool_slots`` concurrent pool calls, granted in turn (a FIFO semaphore), so jobs
progress side by side and a pool of ``n`` workers keeps one of them free of detector turns for live
streams (rhythm turns may use it, below). With one worker, a turn ends after its current step (a few
milliseconds) once a live stream's call waits for that worker, so streams and files interleave.

When file turns leave workers to live streams (``pool_slots`` below the pool's size: two workers or more
in a server), a job with ``beats`` has its rhythm run beside its detector (:class:`BeatChain`,
:mod:`server.jobs.beat_work`): each detector turn hands its blocks over (onset strength, filterbank rows,
onsets), and turns of the rhythm session on them (band features, beat tracker, bar positions, onset bands)
run in the pool while the next detector turn runs, so a file's wall time comes near its detector's alone.
Those turns take the pool's remaining workers (at most ``workers - pool_slots`` of them at once, over all
jobs), and yield like any turn: each ends after its current block (a few milliseconds) once another call
waits for its worker. A job's detector turns, and its rhythm turns, each stay in one worker while that
worker is no busier than the others (:meth:`~server.pool.DetectionPool.least_busy`): turns hopping between
two workers each time cost the 10-min test file about 0.1 s more CPU (both processes' caches had to be
filled again).

With a shared store that becomes unreachable (:class:`~server.exceptions.StorageUnavailable`) progress
updates are skipped and the job goes on; if its start or outcome cannot be stored the run is given up,
logged once, and the queue hands the job out again later (at least once).

A disk with no room (:class:`~server.jobs.uploads.StorageFull`) never leaves a job ``processing``: its work
files and upload are deleted first, and an outcome the store cannot take yet is handed to a
:class:`~server.jobs.settle.Settler`, which records it once there is room. A job that cannot even be
started for lack of room is offered to the queue again a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import numpy as np

from server.dsp import DetectorSettings
from server.exceptions import PoolRestarted, SettingsError, StorageUnavailable
from server.jobs.beat_work import Block, RhythmTurnOutcome, rhythm_turn
from server.jobs.model import ErrorCode, Job, JobError
from server.jobs.queue import JobQueue
from server.jobs.result import ResultPieces, result_text
from server.jobs.settle import Settler
from server.jobs.store import JobStore
from server.jobs.uploads import StorageFull, UploadDir
from server.jobs.watch import JobWatch
from server.jobs.work import TURN_S, FileAnalysis, TurnOutcome, analyse_turn
from server.pool import DetectionPool
from server.rhythm import RhythmSession

log = logging.getLogger(__name__)

# A detector turn's blocks for its job's rhythm: onset strength and filterbank rows of every frame (None:
# no frames), (frames, onsets) per block, and whether the file is done
Handed = tuple[np.ndarray, np.ndarray | None, list[Block], bool]

MAX_POOL_RESTARTS = 2  # a job whose steps kill a worker this often more fails with decoder_crashed
ROOM = (StorageFull,)  # what the runner leaves to its settler; an unreachable shared store ends the run
PROGRESS_INTERVAL_S = 0.25  # least time between stored progress updates of one job
# Detector turns of a job whose rhythm runs beside it (BeatChain) are shorter, so that the rhythm starts
# sooner, has less left after the last one, and each turn's rows (~50 s of audio, ~3 MB) hold less memory
# (10-min WAV: peak RSS of the server 130 MB and of its workers 63 and 73 MB, against 145, 83 and 73 MB with
# turns of 0.1 s; 118, 47 and 61 MB on main, one worker doing both): s
SPLIT_TURN_S = 0.05
# A job's detector waits before its next turn while its rhythm has more than this many frames (10 ms hops)
# still to take in (their rows: 564 bytes a frame at 44.1 kHz, ~17 MB here): the rhythm's worker may be
# busy with live streams, and the rows must not pile up in the server. Normally the rhythm keeps up (its
# part is about half the detector's) and the backlog stays within a turn or two (~5,000 frames each).
MAX_BACKLOG_FRAMES = 30_000


class JobRunner:
    def __init__(self, store: JobStore, queue: JobQueue, uploads: UploadDir, pool: DetectionPool,
                 watch: JobWatch, *, pool_slots: int, max_active: int,
                 settler: Settler | None = None, split_beats: bool | None = None) -> None:
        self.store = store
        self.queue = queue
        self.uploads = uploads
        self.pool = pool
        self.watch = watch
        self._own_settler = settler is None
        self.settler = Settler(watch) if settler is None else settler
        self._slots = asyncio.Semaphore(max(1, pool_slots))
        # The rhythm beside the detector (BeatChain), by default when the pool has workers that file turns
        # leave to live streams: its turns may use those (yielding to any waiting call).
        spare = pool.workers - max(1, pool_slots)
        self.split_beats = spare > 0 if split_beats is None else split_beats
        self._beat_slots = asyncio.Semaphore(max(1, spare))
        self._active = asyncio.Semaphore(max(1, max_active))
        self._jobs: set[asyncio.Task[None]] = set()
        self.steps = 0
        # Observers of each job this runner finishes: (status "success" or "failed", its run time in s
        # (``None`` for a failure), the audio it analysed in s).
        self.on_finished: list[Callable[[str, float | None, float], None]] = []

    async def run(self) -> None:
        """Take jobs from the queue until cancelled; cancelling requeues the jobs in progress."""
        try:
            while True:
                await self._active.acquire()
                try:
                    task_id = await self.queue.get()
                except BaseException:
                    self._active.release()
                    raise
                job = asyncio.create_task(self._guarded(task_id), name=f"job-{task_id}")
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
        finally:
            jobs = list(self._jobs)
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            if self._own_settler:
                await self.settler.close()

    async def _guarded(self, task_id: str) -> None:
        try:
            await self._run_job(task_id)
        except asyncio.CancelledError:
            # then the queue hands it out again later (a full disk: re-queued at the next start)
            with contextlib.suppress(StorageUnavailable, StorageFull):
                await self.store.requeue(task_id)
            raise
        except StorageUnavailable:
            log.warning("job %s: its state cannot be stored now (storage unreachable); it will be run again",
                        task_id, extra={"task_id": task_id})
        except StorageFull as exc:  # from store.start(): the job is still pending; offer it again later
            self.settler.later(task_id, lambda: self.queue.put(task_id), exc)
        except Exception as exc:
            log.exception("job %s failed in the runner", task_id, extra={"task_id": task_id})
            with contextlib.suppress(StorageUnavailable):
                await self._finish_failed(task_id, JobError(ErrorCode.INTERNAL.value,
                                                            f"server fault: {exc!r}"))
        finally:
            self._active.release()
            await self.queue.done(task_id)

    async def _run_job(self, task_id: str) -> None:
        job = await self.store.start(task_id)
        if job is None:
            return  # not pending any more (finished, failed, or taken by another runner)
        started_s = time.monotonic()
        self.watch.notify(task_id)
        try:
            settings = DetectorSettings.from_mapping(job.settings)
        except SettingsError as exc:
            await self._finish_failed(task_id, JobError(ErrorCode.BAD_SETTINGS.value, str(exc)))
            return
        restarts = 0
        while True:
            try:
                state, pieces = await self._analyse(job, settings)
                break
            except PoolRestarted:
                restarts += 1
                if restarts > MAX_POOL_RESTARTS:
                    await self._finish_failed(task_id, JobError(
                        ErrorCode.DECODER_CRASHED.value,
                        f"analysing this file crashed a worker process {restarts} times"))
                    return
                log.warning("job %s: a pool worker died (%d of %d allowed); restarting the job from scratch",
                            task_id, restarts, MAX_POOL_RESTARTS, extra={"task_id": task_id})
                await asyncio.to_thread(self.uploads.remove_work_files, task_id)
                await self._progress(task_id, 0.0)
        if isinstance(state, JobError):
            await self._finish_failed(task_id, state)
            return
        result = result_text(state, pieces)
        await asyncio.to_thread(self.uploads.remove_work_files, task_id)  # room for the record
        await self.settler.now_or_later(task_id, lambda: self.store.succeed(task_id, result), ROOM)
        audio_s = state.frames_done / state.source.sample_rate if state.source is not None else 0.0
        self._finished("success", time.monotonic() - started_s, audio_s)
        await asyncio.to_thread(self.uploads.remove_job_files, task_id)

    def _finished(self, status: str, duration_s: float | None, audio_s: float) -> None:
        for observer in self.on_finished:
            observer(status, duration_s, audio_s)

    async def _analyse(self, job: Job, settings: DetectorSettings
                       ) -> tuple[FileAnalysis | JobError, ResultPieces]:
        """Run every turn of ``job``; the final state, or the error that ended it, and what it found."""
        state = FileAnalysis(job.upload_path, str(self.uploads.work_prefix(job.task_id)) + ".spool", settings,
                             split_beats=self.split_beats)
        pieces = ResultPieces()
        reported_at = time.monotonic()
        chain: BeatChain | None = None
        lane: int | None = None  # of the last turn: a job's turns stay in one worker while it is free
        turn_s = SPLIT_TURN_S if state.split_beats and settings.beats else TURN_S
        try:
            while not state.finished:
                async with self._slots:
                    lane = self.pool.least_busy(prefer=lane)
                    outcome: TurnOutcome = await self.pool.run_on(lane, analyse_turn, state, turn_s)
                self.steps += 1
                if outcome.error is not None:
                    if outcome.trace:
                        log.error("job %s: unexpected analysis failure\n%s", job.task_id, outcome.trace,
                                  extra={"task_id": job.task_id})
                    return outcome.error, pieces
                state = outcome.state
                pieces.add(outcome.onsets_json, outcome.beats_json, outcome.beat_times_s)
                if outcome.beat_side is not None:
                    chain = BeatChain(self.pool, self._beat_slots, outcome.beat_side, pieces)
                if chain is not None:
                    error = chain.check()  # a failure there ends the job now, not after the detector
                    if error is not None:
                        return error, pieces
                    chain.feed(outcome)
                    await chain.drained_to(MAX_BACKLOG_FRAMES)
                now = time.monotonic()
                if not state.finished and now - reported_at >= PROGRESS_INTERVAL_S:
                    reported_at = now
                    await self._progress(job.task_id, state.progress)
                    self.watch.notify(job.task_id)
            if chain is not None:
                error = await chain.finish()
                if error is not None:
                    return error, pieces
        finally:
            if chain is not None:
                await chain.stop()
        return state, pieces

    async def _progress(self, task_id: str, progress: float) -> None:
        """Store the job's progress if the store answers (it is only informative)."""
        with contextlib.suppress(StorageUnavailable, StorageFull):
            await self.store.set_progress(task_id, progress)

    async def _finish_failed(self, task_id: str, error: JobError) -> None:
        """Log the failure, delete the job's files (making room for the record), then record it."""
        log.warning("job %s failed: %s: %s", task_id, error.code, error.message, extra={"task_id": task_id})
        await asyncio.to_thread(self.uploads.remove_job_files, task_id)
        await self.settler.now_or_later(task_id, lambda: self.store.fail(task_id, error), ROOM)
        self._finished("failed", None, 0.0)


class BeatChain:
    """One job's rhythm (:mod:`server.jobs.beat_work`): turns of :func:`rhythm_turn` in the pool on the blocks
    its detector turns hand over (:meth:`feed`), one turn at a time, in order, each holding one of ``slots``
    while it runs. Onsets (with their bands) and beats go to ``pieces`` as they come."""

    def __init__(self, pool: DetectionPool, slots: asyncio.Semaphore, session: RhythmSession,
                 pieces: ResultPieces) -> None:
        self._pool = pool
        self._slots = slots
        self._session = session
        self._pieces = pieces
        self._waiting: list[Handed] = []  # detector turns' blocks not fed yet, in order
        self._more = asyncio.Event()
        self._fed = asyncio.Event()  # set after each rhythm turn (and when the chain ends)
        self.backlog_frames = 0  # frames handed over and not taken in yet
        self._closed = False
        self._lane: int | None = None  # of the last turn (see JobRunner._analyse)
        self._task = asyncio.create_task(self._run(), name="rhythm-chain")

    def feed(self, turn: TurnOutcome) -> None:
        """A detector turn's blocks (its ``odf``, ``rows``, ``blocks`` and ``final``)."""
        if turn.blocks:
            odf = turn.odf if turn.odf is not None else np.zeros(0, dtype=np.float32)
            self._waiting.append((odf, turn.rows, turn.blocks, turn.final))
            self.backlog_frames += len(odf)
            self._more.set()

    async def drained_to(self, most_frames: int) -> None:
        """Wait while more than ``most_frames`` frames wait for the rhythm (and the chain runs)."""
        while self.backlog_frames > most_frames and not self._task.done():
            self._fed.clear()
            await self._fed.wait()

    def check(self) -> JobError | None:
        """What ended the chain early: the rhythm's error, returned; an exception (a worker died:
        :class:`~server.exceptions.PoolRestarted`), raised. None while it goes on."""
        if self._task.done() and not self._task.cancelled():
            return self._task.result()
        return None

    async def finish(self) -> JobError | None:
        """Wait until every block fed is in; the error that stopped it, if any."""
        self._closed = True
        self._more.set()
        return await self._task

    async def stop(self) -> None:
        """Cancel what is left (the job ended otherwise) and wait for it."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def _joined(self) -> Handed:
        """Everything waiting, as one piece."""
        waiting, self._waiting = self._waiting, []
        if len(waiting) == 1:
            return waiting[0]
        odf = np.concatenate([odf for odf, _, _, _ in waiting])
        rows = [rows for _, rows, _, _ in waiting if rows is not None]
        blocks = [block for _, _, each, _ in waiting for block in each]
        return odf, np.concatenate(rows) if rows else None, blocks, waiting[-1][3]

    async def _run(self) -> JobError | None:
        try:
            return await self._turns()
        finally:
            self._fed.set()

    async def _turns(self) -> JobError | None:
        while True:
            if not self._waiting:
                if self._closed:
                    return None
                self._more.clear()
                await self._more.wait()
                continue
            odf, rows, blocks, final = self._joined()
            async with self._slots:
                self._lane = lane = self._pool.least_busy(prefer=self._lane)
                outcome: RhythmTurnOutcome = await self._pool.run_on(lane, rhythm_turn, self._session, odf,
                                                                     rows, blocks, final)
            if outcome.error is not None:
                if outcome.trace:
                    log.error("unexpected rhythm analysis failure\n%s", outcome.trace)
                return outcome.error
            self._session = outcome.session
            self._pieces.add(outcome.onsets_json, outcome.beats_json, outcome.beat_times_s)
            self.backlog_frames -= outcome.frames_used
            self._fed.set()
            if outcome.blocks_used < len(blocks):  # the rest goes first next time
                used = outcome.frames_used
                self._waiting.insert(0, (odf[used:], None if rows is None else rows[used:],
                                         blocks[outcome.blocks_used :], final))
