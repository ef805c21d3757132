"""Onset accuracy and speed of our detector's methods next to librosa and aubio, in one run.

Usage::

    .venv/bin/python bench/accuracy.py [--data DIR] [--block-ms 20] [--json bench/results/accuracy.json]
                                       [--corpus ../corpus --split valid [--per-family N]]
                                       [--madmom ../madmom-venv/bin/python] [--methods superflux,complex]

Scores are mir_eval F-measures (±50 ms) averaged over clips, per group, on the real annotated clips in
``--data`` (default ``$TRANSIENT_ONSETS_DEV`` or ``../shared/data/onsets-dev``; drums / pitched), on a
generated music-like corpus, and with ``--corpus`` on one split of the rendered corpus (by family). Each
cell shows F, and P/R with ``--pr``. Speed is audio duration over CPU time of one process limited to one
thread, so a multiple of real time on one core. Our detector is fed in streaming blocks of ``--block-ms``.
``--madmom`` runs madmom's three onset detectors at their programs' defaults (SuperFlux, offline; the
online RNN, causal; the CNN, offline) in that Python, a bench-only environment, over the same clips
written as mono 16-bit WAV, through ``bench/madmom_onset_peer.py``; nothing of madmom is imported here.
Their speed is the helper's CPU time per clip from the WAV (one thread), beside ours from decoded audio.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core for the speed figures; must precede the numpy import

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import Clip, data_dir, generated_clips, real_clips, rendered_clips  # noqa: E402

from server.dsp import METHODS, DetectorSettings, OnsetDetector, process_many  # noqa: E402

Runner = Callable[[Clip], npt.NDArray[np.float64]]
MANY_STREAMS = 64  # concurrent streams for the process_many speed figure


def ours(method: str, block_ms: float, overrides: dict[str, object]) -> Runner:
    """Our detector, fed in blocks of ``block_ms`` as a live stream would be."""
    return streamed(DetectorSettings.from_mapping({"method": method, **overrides}), block_ms)


def streamed(settings: DetectorSettings, block_ms: float) -> Runner:
    """Our detector with ``settings``, fed in blocks of ``block_ms`` as a live stream, then flushed."""

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


GROUP_ORDER = ("drums", "pitched", "plucked", "bowed_blown", "piano", "voice", "pads", "mixes")
MADMOM = {"superflux": "madmom SuperFlux", "online_rnn": "madmom online RNN", "cnn": "madmom CNN (offline)"}


class Precomputed:
    """Onsets found beforehand by another process, with the CPU seconds it spent on each clip."""

    def __init__(self, onsets: dict[int, npt.NDArray[np.float64]], cpu_s: dict[int, float]) -> None:
        self.onsets = onsets
        self.cpu_s = cpu_s

    def __call__(self, clip: Clip) -> npt.NDArray[np.float64]:
        return self.onsets[id(clip)]


def madmom_peers(python: str, corpora: dict[str, list[Clip]]) -> dict[str, Precomputed]:
    """madmom's SuperFlux, online RNN and offline CNN at their programs' defaults, run once over every clip
    by ``bench/madmom_onset_peer.py`` in ``python``'s environment, each clip written as a mono 16-bit WAV.

    madmom imports only with a ``madmom`` dist-info on its path: one is written to a temporary folder put
    on ``PYTHONPATH``. The helper times each detector on each clip (CPU seconds, one thread, from the WAV).
    """
    import soundfile

    helper = Path(__file__).resolve().parent / "madmom_onset_peer.py"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = folder / "meta" / "madmom-0.17.dev0.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: madmom\nVersion: 0.17.dev0\n")
        clips = {id(c): c for cs in corpora.values() for c in cs}
        paths = {}
        for key, clip in clips.items():
            path = folder / f"{key}.wav"
            soundfile.write(str(path), np.clip(clip.mono(), -1.0, 1.0), clip.sample_rate, subtype="PCM_16")
            paths[key] = str(path)
        out = folder / "madmom.json"
        env = {**os.environ, "PYTHONPATH": str(folder / "meta")}
        subprocess.run([python, str(helper), str(out), *paths.values()], check=True, env=env)
        found = json.loads(out.read_text())
    return {
        label: Precomputed(
            {key: np.array(found[path][name], dtype=np.float64) for key, path in paths.items()},
            {key: float(found[path]["cpu_s"][name]) for key, path in paths.items()},
        )
        for name, label in MADMOM.items()
    }


def score(runner: Runner, clips: list[Clip]) -> tuple[dict[str, tuple[float, float, float]], float]:
    """Mean (F, P, R) per group and over all clips ("all"), and the speed (audio seconds per CPU second)."""
    by_group: dict[str, list[tuple[float, float, float]]] = {}
    cpu_s = 0.0
    audio_s = 0.0
    for clip in clips:
        start = time.process_time()
        estimated = runner(clip)
        cpu_s += runner.cpu_s[id(clip)] if isinstance(runner, Precomputed) else time.process_time() - start
        audio_s += clip.duration_s
        f, p, r = mir_eval.onset.f_measure(clip.onsets_s, np.sort(estimated), window=0.05)
        by_group.setdefault(clip.group, []).append((f, p, r))
    result = {g: _mean(v) for g, v in sorted(by_group.items())}
    result["all"] = _mean([s for v in by_group.values() for s in v])
    return result, audio_s / max(cpu_s, 1e-9)


def _group_order(group: str) -> tuple[int, str]:
    """Groups in the issue's order (drums first, mixes last), any other after them by name."""
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)


def _mean(scores: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    f, p, r = np.mean(np.array(scores), axis=0)
    return float(f), float(p), float(r)


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
    parser.add_argument("--methods", help="our methods to score, comma-separated (default: all)")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated corpus")
    parser.add_argument("--corpus", type=Path, help="the rendered corpus (MANIFEST.tsv and split folders)")
    parser.add_argument("--split", default="valid", help="its split to score (train, tune or valid)")
    parser.add_argument("--per-family", type=int, help="at most this many rendered clips per family")
    parser.add_argument(
        "--madmom", help="a Python with madmom (bench-only) to run its SuperFlux, online RNN and CNN"
    )
    parser.add_argument("--pr", action="store_true", help="show F/P/R in every cell")
    parser.add_argument("--no-speed", action="store_true", help="skip the streaming speed figures")
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

    corpora = {"real": real_clips(data_dir(args.data))}
    if not args.no_generated:
        corpora["generated"] = generated_clips()
    if args.corpus:
        corpora[f"rendered {args.split}"] = rendered_clips(args.corpus, args.split, args.per_family)
    corpora = {name: clips for name, clips in corpora.items() if clips}
    if "real" not in corpora:
        print(f"no annotated clips found in {data_dir(args.data)}; set --data or ${'TRANSIENT_ONSETS_DEV'}")
    methods = args.methods.split(",") if args.methods else list(METHODS)
    runners: dict[str, Runner] = {f"ours {m}": ours(m, args.block_ms, overrides) for m in methods}
    if not args.ours_only:
        runners["librosa onset_detect"] = librosa_default
        for method in ("hfc", "specflux", "complex"):
            runners[f"aubio {method}"] = aubio_method(method)
    if args.madmom:
        runners.update(madmom_peers(args.madmom, corpora))

    print(f"mean F-measure (mir_eval, ±50 ms){' / P / R' if args.pr else ''}; "
          f"ours streamed in {args.block_ms:g} ms blocks")
    results: dict[str, dict[str, object]] = {name: {} for name in runners}
    speeds: dict[str, dict[str, float]] = {}  # detector -> set -> multiple of real time
    warnings.simplefilter("ignore")
    width = 16 if args.pr else 9
    for corpus_name, clips in corpora.items():
        groups = [*sorted({c.group for c in clips}, key=_group_order), "all"]
        print(f"\n{corpus_name} ({len(clips)} clips)")
        heads = "".join(f"{g[:width - 1]:>{width}}" for g in groups)
        print(f"{'detector':<22}{heads}{'speed x RT':>12}")
        for name, runner in runners.items():
            row, speed = score(runner, clips)
            results[name][corpus_name] = {g: list(v) for g, v in row.items()}
            speeds.setdefault(name, {})[corpus_name] = speed
            cells = "".join(
                f"{'/'.join(f'{x:.2f}' for x in row[g]) if args.pr else f'{row[g][0]:.3f}':>{width}}"
                if g in row else f"{'':>{width}}"
                for g in groups
            )
            print(f"{name:<22}{cells}{speed:>12.0f}", flush=True)
    for name, by_set in speeds.items():
        results[name]["speed_x_realtime"] = by_set
    if not args.no_speed:
        first = next(iter(corpora.values()))
        results["streaming speed, ours superflux"] = block_speeds(corpora.get("real", first))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"block_ms": args.block_ms, "overrides": overrides, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
