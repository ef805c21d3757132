"""CPU cost of the setting ``beats`` in the live worker path: ``run_batch`` with and without it; one core.

Usage::

    .venv/bin/python bench/rhythm_cost.py [--seconds 10] [--streams 1,16] [--chunk-ms 20] [--repeat 3]
                                          [--file-s 60]

Each of ``N`` streams (44.1 kHz mono, the generated drum track of ``testkit/rhythm_signals.py`` at its own
offset) sends ``--chunk-ms`` blocks; every block of every stream goes through one
:func:`server.stream.in_worker.run_batch` call, as a lane's worker does. Reported: CPU microseconds per
stream per 10 ms hop (``time.process_time``, best of ``--repeat``), with ``beats`` off and on, and the
ratio of the added cost to the detector's own.

With ``--file-s S``, also a whole file the way a file job feeds it (``server.jobs.work``, without the
decoding and the pool): ``S`` seconds of the track through one :class:`~server.dsp.OnsetDetector` and,
with ``beats``, its :class:`~server.rhythm.RhythmSession`, in blocks of ``server.jobs.work.BLOCK_S`` (6 s).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.dsp import DetectorSettings, OnsetDetector  # noqa: E402
from server.jobs.work import BLOCK_S  # noqa: E402
from server.rhythm import RhythmSession  # noqa: E402
from server.stream.in_worker import Job, ResidentDetectors, run_batch  # noqa: E402
from testkit.rhythm_signals import beat_times, drum_track  # noqa: E402

RATE = 44100


def run(audio: np.ndarray, streams: int, chunk: int, beats: bool, lookahead_ms: float | None = None) -> float:
    """CPU seconds for ``streams`` streams of ``audio`` in ``chunk``-sample blocks (``lookahead_ms`` None: the
    default)."""
    settings = DetectorSettings(beats=beats, lookahead_ms=lookahead_ms)
    resident = ResidentDetectors()
    offsets = [(i * 7919) % (len(audio) // 2) for i in range(streams)]
    length = len(audio) // 2
    started = time.process_time()
    for start in range(0, length, chunk):
        jobs = [Job(f"s{i}/0", RATE, 1, "<f4", settings if start == 0 else None,
                    audio[o + start:o + min(start + chunk, length)].tobytes(), 0.0, fresh=start == 0)
                for i, o in enumerate(offsets)]
        for result in run_batch(jobs, resident=resident):
            assert result.ok, result.error
    return time.process_time() - started


def run_file(audio: np.ndarray, beats: bool) -> float:
    """CPU seconds for ``audio`` as one file job's detector (and rhythm session) sees it."""
    detector = OnsetDetector(RATE, 1, DetectorSettings(beats=beats))
    session = RhythmSession.beside(detector) if beats else None
    block = round(BLOCK_S * RATE)
    started = time.process_time()
    for start in range(0, len(audio), block):
        found = detector.process(audio[start : start + block])
        if session is None:
            detector.take_odf()
        else:
            session.process(detector.take_odf(), detector.take_rows(), found)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--streams", default="1,16")
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--file-s", type=float, default=0.0, help="also a whole file of this many seconds")
    parser.add_argument("--lookahead-ms", type=float, default=None,
                        help="the detector's look-ahead (default: the method's own, 0 for superflux)")
    args = parser.parse_args()
    track = drum_track(beat_times([(124.0, max(2 * args.seconds, args.file_s) + 1.0)]), seed=5)
    audio = track.audio.astype(np.float32)
    chunk = round(args.chunk_ms * RATE / 1000)
    hops = args.seconds * 100  # 10 ms hops per stream
    print(f"{args.seconds:g} s per stream, {args.chunk_ms:g} ms blocks, CPU us per stream per 10 ms hop")
    for streams in (int(s) for s in args.streams.split(",")):
        clip = audio[: 2 * round(args.seconds * RATE)]
        off = min(run(clip, streams, chunk, False, args.lookahead_ms) for _ in range(args.repeat))
        on = min(run(clip, streams, chunk, True, args.lookahead_ms) for _ in range(args.repeat))
        per_off, per_on = off / streams / hops * 1e6, on / streams / hops * 1e6
        print(f"streams {streams:4d}: beats off {per_off:7.1f} us, on {per_on:7.1f} us, "
              f"added {per_on - per_off:7.1f} us = {100 * (per_on - per_off) / per_off:5.1f} % of the "
              "detector")
    if args.file_s:
        clip = audio[: round(args.file_s * RATE)]
        hops = args.file_s * 100
        per_off = min(run_file(clip, False) for _ in range(args.repeat)) / hops * 1e6
        per_on = min(run_file(clip, True) for _ in range(args.repeat)) / hops * 1e6
        print(f"whole file {args.file_s:g} s in {BLOCK_S:g} s blocks: beats off {per_off:7.1f} us, on "
              f"{per_on:7.1f} us, added {per_on - per_off:7.1f} us = "
              f"{100 * (per_on - per_off) / per_off:5.1f} % of the detector")


if __name__ == "__main__":
    main()
