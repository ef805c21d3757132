"""CPU per 20 ms chunk of the live path's Python, in one process, without sockets or a second process.

Usage::

    .venv/bin/python bench/chunk_cost.py [--streams 256] [--rounds 60] [--part session|worker|both]

- ``session``: what the event loop does per chunk besides I/O, for ``--streams`` sessions of 48 kHz mono
  float32: decode the binary message (``AudioDecoder``) and ``StreamSession.feed`` it, then per job (one
  chunk each) ``take_job``, the batch's ``PackedJobs`` and ``complete`` with the usual empty result.
- ``worker``: what the pool worker does per chunk: unpickle a batch of one-chunk jobs of the capacity
  bench's click tracks (beats off, or ``--beats on``), ``run_batch``, pickle the results.

Prints the best round's CPU time per chunk (``time.process_time``). On a shared machine count instructions
instead, which do not depend on the load: run it twice under ``valgrind --tool=callgrind
--callgrind-out-file=/dev/null`` with two ``--rounds`` (e.g. 6 and 22) and one ``--part``, and divide the
difference of the two "Collected" totals by the difference in chunks (start-up and the worker's batches,
made beforehand, cancel out).
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity_per_core import CHUNK_FRAMES, CLICK_EVERY_S, CLICK_PHASES, click_track
from server.events.hub import LocalHub
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import AudioFormat, Encoding, Event
from server.stream.in_worker import NOTHING_FOUND, Job, PackedJobs, ResidentDetectors, run_batch
from server.stream.session import StreamLinks, StreamSession
from server.stream.settings import StreamSettings

try:
    from server.transport.audio_decode import AudioDecoder
except ImportError:  # a tree from before it (main up to 2026-12-07 02:50), for a comparison
    from server.transport import ws_stream

    class AudioDecoder:  # type: ignore[no-redef]
        def __init__(self, audio_format: AudioFormat) -> None:
            self._format = audio_format

        def __call__(self, data: bytes) -> tuple[np.ndarray, int]:
            decoded: tuple[np.ndarray, int] = ws_stream.decode_audio(data, self._format)  # type: ignore[attr-defined]
            return decoded

SAMPLE_RATE = 48000
WARM_ROUNDS = 3  # rounds left out of the best (first jobs make detectors, caches warm up)
WORKER_CALLS = 25  # worker batches made beforehand (one making the detectors, then 24 of click tracks)


class _Sink:
    def deliver(self, event: Event) -> None:
        pass

    def fault(self, error: ProtocolError) -> None:
        pass


async def session_side(streams: int, rounds: int, per_job: int = 1) -> tuple[float, float]:
    """Best (decode + feed, take_job + PackedJobs + complete) seconds per chunk; ``per_job`` chunks are fed
    to each session before its job is taken."""
    audio_format = AudioFormat(SAMPLE_RATE, 1, Encoding.PCM_F32LE)
    links = StreamLinks(LocalHub(8), lambda session: None, lambda session: None)
    settings = StreamSettings.from_mapping({"beats": False})
    sessions = [StreamSession(f"s{i}", audio_format, settings, max_buffer_s=10.0, sink=_Sink(), links=links)
                for i in range(streams)]
    decoders = [AudioDecoder(audio_format) for _ in sessions]
    chunk = np.random.default_rng(0).uniform(-0.5, 0.5, CHUNK_FRAMES).astype("<f4").tobytes()
    best_feed = best_job = float("inf")
    for round_ in range(rounds):
        t0 = time.process_time()
        for _ in range(per_job):
            for session, decode in zip(sessions, decoders, strict=True):
                samples, _ = decode(chunk)
                session.feed(samples)
        t1 = time.process_time()
        batch = [(session, session.take_job()) for session in sessions]
        jobs = [job for _, job in batch if job is not None]
        pickle.dumps(PackedJobs(jobs), protocol=5, buffer_callback=lambda buffer: None)
        for session, job in batch:
            if job is not None:
                session.complete(job, NOTHING_FOUND)
        t2 = time.process_time()
        if round_ >= WARM_ROUNDS:
            chunks = streams * per_job
            best_feed, best_job = min(best_feed, (t1 - t0) / chunks), min(best_job, (t2 - t1) / chunks)
    return best_feed, best_job


def worker_side(streams: int, rounds: int, per_job: int = 1, beats: bool = False,
                lookahead_ms: float | None = None) -> float:
    """Best seconds per chunk of unpickling a batch, ``run_batch`` and pickling its results (each job
    ``per_job`` chunks; with ``beats`` the rhythm beside each detector too; ``lookahead_ms``: the setting,
    None for the default)."""
    values: dict[str, Any] = {"beats": beats}
    if lookahead_ms is not None:
        values["lookahead_ms"] = lookahead_ms
    settings = StreamSettings.from_mapping(values).detector
    frames = per_job * CHUNK_FRAMES
    total_s = WORKER_CALLS * frames / SAMPLE_RATE + 1.0
    tracks = [click_track(0.137 + k * CLICK_EVERY_S / CLICK_PHASES, total_s, seed=1000 + k)[0]
              for k in range(CLICK_PHASES)]

    def batch(round_: int) -> bytes:
        jobs = [Job(f"s{i}/0", SAMPLE_RATE, 1, "<f4", settings if round_ == 0 else None,
                    tracks[i % CLICK_PHASES][round_ * frames:(round_ + 1) * frames].tobytes(),
                    0.0, round_ == 0) for i in range(streams)]
        return pickle.dumps(PackedJobs(jobs), protocol=5)

    calls = [batch(round_) for round_ in range(WORKER_CALLS)]  # as many whatever the rounds (callgrind)
    resident = ResidentDetectors()
    best = float("inf")
    for round_ in range(rounds):  # the first call makes the detectors; later rounds cycle through the rest
        call = calls[0] if round_ == 0 else calls[1 + (round_ - 1) % (WORKER_CALLS - 1)]
        t0 = time.process_time()
        results: Any = run_batch(pickle.loads(call), (), resident)
        pickle.dumps(results, protocol=5)
        if round_ >= WARM_ROUNDS:
            best = min(best, (time.process_time() - t0) / (streams * per_job))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--part", choices=("session", "worker", "both"), default="both")
    parser.add_argument("--chunks-per-job", type=int, default=1, help="20 ms chunks each job carries")
    parser.add_argument("--beats", choices=("on", "off"), default="off", help="worker: the setting beats")
    parser.add_argument("--lookahead-ms", type=float, default=None, help="worker: the setting lookahead_ms")
    args = parser.parse_args()
    rounds = max(args.rounds, WARM_ROUNDS + 1)
    if args.part in ("session", "both"):
        feed_s, job_s = asyncio.run(session_side(args.streams, rounds, args.chunks_per_job))
        print(f"session side, {args.streams} streams: decode + feed {1e6 * feed_s:.2f} us per chunk, "
              f"take_job + PackedJobs + complete {1e6 * job_s:.2f} us per chunk "
              f"({args.chunks_per_job} chunks a job)")
    if args.part in ("worker", "both"):
        worker_s = worker_side(args.streams, rounds, args.chunks_per_job, args.beats == "on",
                               args.lookahead_ms)
        print(f"worker side, {args.streams} streams: unpickle + run_batch + pickle {1e6 * worker_s:.2f} us "
              f"per chunk ({args.chunks_per_job} chunks a job, beats {args.beats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
