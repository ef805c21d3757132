"""Where a method's CPU goes through ``process_many`` (default ``neural``): a pass's stages, per stream hop.

Usage::

    .venv/bin/python bench/neural_profile.py [--streams 64,256] [--seconds 10] [--rate 44100]
                                             [--method neural]

N streams of 20 ms blocks in lockstep, as ``bench/dsp_speed.py`` feeds them (its audio, offsets and
``take_odf()`` after each block), once to warm up, then once timed with a CPU-time (``time.process_time``)
wrapper around each stage's function: the batched maths of a pass (``batch._analyse_frames``), in it the
FFT, the frame power, a classical method's comparison (its streams' compression floors, past rows and
ODF), the log bands, the neural step (the rise features, the states and the network), in
that the network, its dilated layers, its products and its sigmoid; and the per-stream Python outside the
batched maths (adding blocks to a pass, ``finish_pass``, peak picking, ``take_odf``). Nested stages are
included in their parents. The wrappers cost about 1 us per hop, so the total is a little above
``dsp_speed.py``'s; compare the shares. One core (thread pools limited to one thread before numpy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dsp_speed  # noqa: E402

from server.dsp import DetectorSettings, OnsetDetector, batch, neural, nn  # noqa: E402
from server.dsp.neural_features import network_grid  # noqa: E402

# (module, function name, stage label); a stage whose function a module lacks is skipped.
STAGES: tuple[tuple[Any, str, str], ...] = (
    (batch, "_analyse_frames", "batched maths of the pass (all below)"),
    (batch, "spectrum", "  FFT"),
    (batch, "frame_power", "  frame power"),
    (batch, "_compare_classical", "  classical ODF: compression floors, past rows, comparison"),
    (neural, "log_band_rows", "  log bands"),
    (neural, "step_with", "  neural step (rise features, states, network)"),
    (nn, "forward", "    network"),
    (nn, "run_many", "    network"),
    (nn, "_layers_regular", "      dilated layers, all streams alike (products included)"),
    (nn, "_layers_any", "      dilated layers, streams unlike (products included)"),
    (nn, "dense", "      products with bias (input, dilated and output layers)"),
    (nn, "sigmoid", "      sigmoid"),
)


def timed(function: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    """``function``, adding the CPU seconds of each call to ``spent[label]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.process_time() - start

    return wrapper


def profile(streams: int, seconds: float, rate: int, method: str) -> None:
    samples = dsp_speed.audio(rate, max(seconds, 4.0))
    blocks = dsp_speed.stream_blocks(samples, rate, streams, 20.0, seconds)
    settings = DetectorSettings(method=method)

    def run() -> None:
        detectors = [OnsetDetector(rate, 1, settings) for _ in range(streams)]
        for step in blocks:
            batch.process_many(list(zip(detectors, step, strict=True)))
            for detector in detectors:
                detector.take_odf()

    run()  # warm-up: plans, FFT plans, the products' check, the gathers' indices
    spent: dict[str, float] = {}
    originals = []
    for module, name, label in STAGES:
        if hasattr(module, name):
            originals.append((module, name, getattr(module, name)))
            setattr(module, name, timed(getattr(module, name), label, spent))
    try:
        start = time.process_time()
        run()
        total = time.process_time() - start
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
    hops = len(blocks) * streams * len(blocks[0][0]) // network_grid(rate).hop
    audio_s = len(blocks) * streams * len(blocks[0][0]) / rate
    print(f"{streams} streams, {method}, {rate} Hz: {audio_s / total:.0f}x real time with the timers, "
          f"{total / hops * 1e6:.2f} us per stream hop")
    outside = total - spent.get(STAGES[0][2], 0.0)
    for _, _, label in STAGES:
        if label in spent:
            print(f"  {label:<62s} {spent[label] / hops * 1e6:6.2f} us  {100 * spent[label] / total:5.1f} %")
            del spent[label]  # a label shared by two functions prints once
    print(f"  {'per-stream Python outside the batched maths':<62s} {outside / hops * 1e6:6.2f} us  "
          f"{100 * outside / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", default="64,256", help="comma-separated stream counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream, seconds")
    parser.add_argument("--rate", type=int, default=44100, help="sample rate, Hz")
    parser.add_argument("--method", default="neural")
    args = parser.parse_args()
    for streams in [int(n) for n in args.streams.split(",")]:
        profile(streams, args.seconds, args.rate, args.method)


if __name__ == "__main__":
    main()
