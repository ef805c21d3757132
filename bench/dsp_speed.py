"""Speed of the streaming detector at small blocks: one stream through ``process()``, many through
``process_many()``, and the pickle round trip each file-analysis step adds; one core, CPU time.

Usage::

    .venv/bin/python bench/dsp_speed.py [--seconds 10] [--rates 44100,48000] [--streams 64,256]
                                        [--method superflux[,fused,...]] [--repeat 3] [--json PATH]
                                        [--many-only]

Figures are multiples of real time on one core (audio seconds, summed over streams, per CPU second of this
process, ``time.process_time``) and CPU microseconds per call; each is the best of ``--repeat`` runs, as
other processes on a shared machine only ever slow a run down (they share its caches and cores). Thread
pools are limited to one thread before numpy is imported. The audio is a generated music-like mix
(``testkit/signals.py``); stream ``i`` of ``N`` starts at its own offset into it. Every stream's
``take_odf()`` is called after each block, as a live stream's pool job does. ``--many-only`` measures only
``process_many`` (no single stream, no loop of ``process()`` calls, no pickle round trip): a few minutes
less per method, for back-to-back runs of two versions.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.dsp import DetectorSettings, OnsetDetector, process_many  # noqa: E402
from testkit import signals  # noqa: E402

F32 = npt.NDArray[np.float32]


def audio(rate: int, seconds: float) -> F32:
    """A mono music-like mix (drums, plucks, chords, pad) of ``seconds``."""
    return signals.music_mix(rate, seconds, seed=2024).samples


def cpu_s(run: Callable[[], None], repeat: int) -> float:
    """Least CPU seconds of ``repeat`` runs of ``run()`` (each on fresh state from ``run`` itself)."""
    best = math.inf
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def one_stream(
    samples: F32, rate: int, block_ms: float, settings: DetectorSettings, repeat: int
) -> dict[str, float]:
    """One detector fed ``samples`` in blocks of ``block_ms`` through ``process()`` (plus take_odf)."""
    block = round(block_ms / 1000 * rate)
    blocks = [samples[i : i + block] for i in range(0, len(samples) - block + 1, block)]

    def run() -> None:
        detector = OnsetDetector(rate, 1, settings)
        for b in blocks:
            detector.process(b)
            detector.take_odf()

    seconds = cpu_s(run, repeat)
    return {"us_per_call": seconds / len(blocks) * 1e6, "x_realtime": len(blocks) * block / rate / seconds}


def stream_blocks(samples: F32, rate: int, streams: int, block_ms: float, seconds: float) -> list[list[F32]]:
    """``blocks[t][i]``: stream ``i``'s block at step ``t``, each stream from its own offset (wrapping)."""
    block = round(block_ms / 1000 * rate)
    steps = int(seconds * rate) // block
    looped = np.concatenate([samples, samples])
    stride = len(samples) // streams
    return [
        [looped[i * stride + t * block : i * stride + (t + 1) * block] for i in range(streams)]
        for t in range(steps)
    ]


def many_streams(
    samples: F32,
    rate: int,
    streams: int,
    block_ms: float,
    seconds: float,
    settings: DetectorSettings,
    repeat: int,
    ways: tuple[str, ...] = ("process_many", "process loop"),
) -> dict[str, float]:
    """``streams`` detectors fed blocks of ``block_ms`` in lockstep: by ``process_many`` and by a loop."""
    blocks = stream_blocks(samples, rate, streams, block_ms, seconds)
    audio_s = len(blocks) * streams * len(blocks[0][0]) / rate
    result: dict[str, float] = {}
    for name in ways:

        def run(name: str = name) -> None:
            detectors = [OnsetDetector(rate, 1, settings) for _ in range(streams)]
            for step in blocks:
                if name == "process_many":
                    process_many(list(zip(detectors, step, strict=True)))
                else:
                    for detector, block in zip(detectors, step, strict=True):
                        detector.process(block)
                for detector in detectors:
                    detector.take_odf()

        seconds_cpu = cpu_s(run, repeat)
        result[f"{name} x_realtime"] = audio_s / seconds_cpu
        result[f"{name} us_per_block"] = seconds_cpu / (len(blocks) * streams) * 1e6
    return result


def pickle_round_trip(samples: F32, rate: int, settings: DetectorSettings, repeat: int) -> float:
    """CPU microseconds to pickle and unpickle a mid-stream detector (what each file-analysis step adds;
    a live stream's detector stays in its worker)."""
    detector = OnsetDetector(rate, 1, settings)
    detector.process(samples[: rate * 3 + 123])
    detector.take_odf()  # as a live stream's job does before handing the state back
    count = 2000

    def run() -> None:
        for _ in range(count):
            pickle.loads(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))

    return cpu_s(run, repeat) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream, seconds")
    parser.add_argument("--rates", default="44100,48000", help="comma-separated sample rates, Hz")
    parser.add_argument("--streams", default="64,256", help="comma-separated stream counts for process_many")
    parser.add_argument("--method", default="superflux")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--many-only", action="store_true", help="measure process_many only")
    args = parser.parse_args()
    ways = ("process_many",) if args.many_only else ("process_many", "process loop")
    results: dict[str, object] = {}
    methods = args.method.split(",")
    for method, rate in [(m, int(r)) for r in args.rates.split(",") for m in methods]:
        settings = DetectorSettings(method=method)
        samples = audio(rate, max(args.seconds, 4.0))
        print(f"{rate} Hz mono, {method}, one core")
        out: dict[str, object] = results
        if len(methods) > 1:  # one entry per method
            out = results.setdefault(method, {})  # type: ignore[assignment]
        for block_ms in () if args.many_only else (10.0, 20.0, 100.0):
            row = one_stream(samples, rate, block_ms, settings, args.repeat)
            out[f"{rate} 1 stream {block_ms:g} ms"] = row
            print(
                f"  1 stream, {block_ms:5g} ms blocks, process():      "
                f"{row['us_per_call']:7.1f} us/call {row['x_realtime']:7.0f}x real time",
                flush=True,
            )
        for streams in [int(n) for n in args.streams.split(",")]:
            row = many_streams(samples, rate, streams, 20.0, args.seconds, settings, args.repeat, ways)
            out[f"{rate} {streams} streams 20 ms"] = row
            for name in ways:
                per_block, speed = row[f"{name} us_per_block"], row[f"{name} x_realtime"]
                print(
                    f"  {streams:3d} streams, 20 ms blocks, {name + ':':15s} "
                    f"{per_block:7.1f} us/block {speed:6.0f}x real time",
                    flush=True,
                )
        if args.many_only:
            continue
        round_trip = pickle_round_trip(samples, rate, settings, args.repeat)
        out[f"{rate} pickle round trip us"] = round_trip
        print(f"  pickle.dumps + pickle.loads of a detector mid-stream: {round_trip:.1f} us", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
