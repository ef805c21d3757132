"""Onset accuracy and speed of our detector's methods next to librosa and aubio, in one run.

Usage::

    .venv/bin/python bench/accuracy.py [--data DIR] [--block-ms 20] [--json bench/results/accuracy.json]

Scores are mir_eval F-measures (±50 ms) averaged over clips, per group (drums / pitched-soft / all), on the
real annotated clips in ``--data`` (default ``$TRANSIENT_ONSETS_DEV`` or ``../shared/data/onsets-dev``)
and on a generated music-like corpus. Speed is audio duration over CPU time of one process limited to one
thread, so a multiple of real time on one core. Our detector is fed in streaming blocks of ``--block-ms``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core for the speed figures; must precede the numpy import

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import Clip, data_dir, generated_clips, real_clips  # noqa: E402

from server.dsp import METHODS, DetectorSettings, OnsetDetector, process_many  # noqa: E402

Runner = Callable[[Clip], npt.NDArray[np.float64]]
MANY_STREAMS = 64  # concurrent streams for the process_many speed figure


def ours(method: str, block_ms: float, overrides: dict[str, object]) -> Runner:
    """Our detector, fed in blocks of ``block_ms`` as a live stream would be."""
    settings = DetectorSettings.from_mapping({"method": method, **overrides})

    def run(clip: Clip) -> npt.NDArray[np.float64]:
        channels = 1 if clip.samples.ndim == 1 else clip.samples.shape[1]
        detector = OnsetDetector(clip.sample_rate, channels, settings)
        block = max(1, round(block_ms / 1000 * clip.sample_rate))
        found = []
        for start in range(0, len(clip.samples), block):
            found += detector.process(clip.samples[start : start + block])
        found += detector.flush()
        return np.array([o.time for o in found])

    return run


def librosa_default(clip: Clip) -> npt.NDArray[np.float64]:
    import librosa

    return librosa.onset.onset_detect(y=clip.mono(), sr=clip.sample_rate, units="time")  # type: ignore[no-any-return]


def aubio_method(method: str, buf: int = 512, hop: int = 256) -> Runner:
    """aubio's streaming onset detector with its default threshold and minimum inter-onset interval."""

    def run(clip: Clip) -> npt.NDArray[np.float64]:
        import aubio

        detector = aubio.onset(method, buf, hop, clip.sample_rate)
        mono = clip.mono()
        padded = np.concatenate([mono, np.zeros(-len(mono) % hop + buf, dtype=np.float32)])
        found = []
        for start in range(0, len(padded), hop):
            if detector(padded[start : start + hop]):
                found.append(detector.get_last_s())
        return np.array(found)

    return run


def score(runner: Runner, clips: list[Clip]) -> tuple[dict[str, float], float]:
    """Mean F per group and the speed (audio seconds per CPU second)."""
    by_group: dict[str, list[float]] = {"drums": [], "pitched": []}
    cpu_s = 0.0
    audio_s = 0.0
    for clip in clips:
        start = time.process_time()
        estimated = runner(clip)
        cpu_s += time.process_time() - start
        audio_s += clip.duration_s
        f, _, _ = mir_eval.onset.f_measure(clip.onsets_s, np.sort(estimated), window=0.05)
        by_group[clip.group].append(f)
    result = {g: float(np.mean(v)) for g, v in by_group.items() if v}
    result["all"] = float(np.mean([f for v in by_group.values() for f in v]))
    return result, audio_s / max(cpu_s, 1e-9)


def block_speeds(clips: list[Clip]) -> dict[str, float]:
    """Speed of the default detector on the clips downmixed to mono, by streaming block size."""
    mono = [Clip(c.name, c.mono(), c.sample_rate, c.onsets_s, c.group) for c in clips]
    print("\nour default detector, mono, by block size (multiple of real time, one core):")
    speeds = {}
    for block_ms in (10.0, 20.0, 100.0, 1000.0, 1e9):
        _, speed = score(ours("superflux", block_ms, {}), mono)
        label = "whole file" if block_ms >= 1e9 else f"{block_ms:g} ms"
        speeds[label] = speed
        print(f"  {label:>12}: {speed:8.0f}x", flush=True)
    label = f"20 ms, {MANY_STREAMS} streams, process_many"
    speeds[label] = many_streams_speed(mono, MANY_STREAMS, 20.0)
    print(f"  {label}: {speeds[label]:8.0f}x (aggregate)", flush=True)
    return speeds


def many_streams_speed(clips: list[Clip], streams: int, block_ms: float) -> float:
    """Aggregate speed of ``streams`` live streams fed in lockstep through ``process_many``.

    Stream ``i`` plays clip ``i % len(clips)`` from its own offset (wrapping), so many streams share a pass.
    """
    feeds = []
    for i in range(streams):
        clip = clips[i % len(clips)]
        start = (i // len(clips)) * len(clip.samples) // (streams // len(clips) + 1)
        feeds.append((clip, np.concatenate([clip.samples[start:], clip.samples[:start]])))
    detectors = [OnsetDetector(clip.sample_rate) for clip, _ in feeds]
    blocks = [max(1, round(block_ms / 1000 * clip.sample_rate)) for clip, _ in feeds]
    steps = min(len(samples) // block for (_, samples), block in zip(feeds, blocks, strict=True))
    start_s = time.process_time()
    for step in range(steps):
        pairs = [
            (d, samples[step * block : (step + 1) * block])
            for d, (_, samples), block in zip(detectors, feeds, blocks, strict=True)
        ]
        process_many(pairs)
    cpu_s = time.process_time() - start_s
    audio_s = sum(steps * block / clip.sample_rate for (clip, _), block in zip(feeds, blocks, strict=True))
    return audio_s / max(cpu_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="folder of the real annotated clips (default: $TRANSIENT_ONSETS_DEV)")
    parser.add_argument("--block-ms", type=float, default=20.0, help="streaming block for our detector, ms")
    parser.add_argument("--json", type=Path, help="also write the results here (e.g. bench/results/x.json)")
    parser.add_argument("--ours-only", action="store_true", help="skip librosa and aubio")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one of our settings (repeatable), e.g. --set threshold=1.2",
    )
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = value if name == "method" else float(value)

    corpora = {"real": real_clips(data_dir(args.data)), "generated": generated_clips()}
    if not corpora["real"]:
        print(f"no annotated clips found in {data_dir(args.data)}; set --data or ${'TRANSIENT_ONSETS_DEV'}")
    runners: dict[str, Runner] = {f"ours {m}": ours(m, args.block_ms, overrides) for m in METHODS}
    if not args.ours_only:
        runners["librosa onset_detect"] = librosa_default
        for method in ("hfc", "specflux", "complex"):
            runners[f"aubio {method}"] = aubio_method(method)

    header = f"{'detector':<22}" + "".join(
        f"{c + ' ' + g:>16}" for c in corpora for g in ("drums", "pitched", "all")
    )
    print(f"mean F-measure (mir_eval, ±50 ms); ours streamed in {args.block_ms:g} ms blocks")
    print(header + f"{'speed x RT':>12}")
    results: dict[str, dict[str, object]] = {}
    warnings.simplefilter("ignore")
    for name, runner in runners.items():
        row: dict[str, object] = {}
        speeds = {}
        for corpus_name, clips in corpora.items():
            if clips:
                row[corpus_name], speeds[corpus_name] = score(runner, clips)
        # Speed on the real clips (44.1 kHz) when there are any.
        row["speed_x_realtime"] = speeds.get("real", speeds.get("generated", float("nan")))
        results[name] = row
        cells = "".join(
            f"{row.get(c, {}).get(g, float('nan')):>16.3f}"  # type: ignore[attr-defined]
            for c in corpora
            for g in ("drums", "pitched", "all")
        )
        print(f"{name:<22}{cells}{row['speed_x_realtime']:>12.0f}", flush=True)
    results["streaming speed, ours superflux"] = block_speeds(corpora["real"] or corpora["generated"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"block_ms": args.block_ms, "overrides": overrides, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
