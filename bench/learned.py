"""The learned onset detector next to our superflux, aubio and librosa: F by family on both validation sets.

Usage::

    .venv/bin/python bench/learned.py [--corpus /work/corpus] [--split valid] [--data DIR]
                                      [--methods neural,superflux,aubio,librosa] [--set threshold=0.8 ...]
                                      [--sweep threshold=0.6,0.8,1,1.2] [--no-speed] [--json PATH]

Scores are mir_eval F-measures (±50 ms) averaged over clips, per family, on the rendered corpus's ``--split``
(``valid`` for reporting; ``tune`` only to choose settings) and on the real annotated clips of ``--data``
(default ``$TRANSIENT_ONSETS_DEV`` or ``../shared/data/onsets-dev``). Ours are fed in 20 ms streaming blocks
and flushed. Speed is audio seconds per CPU second on one core (44.1 kHz): whole files through
``detect_onsets``, and 64 streams in 20 ms blocks through ``process_many``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core for the speed figures; must precede the numpy import

import argparse  # noqa: E402
import csv  # noqa: E402
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

from accuracy import aubio_method, librosa_default, streamed  # noqa: E402
from corpus import Clip, data_dir, real_clips  # noqa: E402

from server.dsp import DetectorSettings, OnsetDetector, detect_onsets, process_many  # noqa: E402

Runner = Callable[[Clip], npt.NDArray[np.float64]]
FAMILIES = ("drums", "plucked", "bowed_blown", "piano", "voice", "pads", "mixes")
BLOCK_MS = 20.0
# Family of each real dev clip, from its MANIFEST.tsv "content" column.
REAL_FAMILY = {
    "drums/percussive": "drums",
    "soft/pitched": "voice",
    "pitched piano": "piano",
    "mixed/pitched": "mixes",
}


def corpus_clips(corpus: Path, split: str) -> list[Clip]:
    """The rendered clips of one split, their family as ``group``."""
    import soundfile

    clips = []
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["split"] == split]
    for row in rows:
        audio, labels = corpus / split / f"{row['clip_id']}.flac", corpus / split / f"{row['clip_id']}.onsets"
        if not (audio.exists() and labels.exists()):
            continue
        samples, rate = soundfile.read(str(audio), dtype="float32", always_2d=False)
        onsets = (
            np.atleast_1d(np.loadtxt(labels, ndmin=1, usecols=0)) if labels.stat().st_size else np.zeros(0)
        )
        clips.append(Clip(row["clip_id"], samples, int(rate), np.sort(onsets), row["family"]))
    return clips


def dev_clips(folder: Path) -> list[Clip]:
    """The real clips, their family (drums, voice, piano, mixes) as ``group``."""
    families = {}
    manifest = folder / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                content = row["content"].split(" (")[0]
                families[Path(row["file"]).stem] = REAL_FAMILY.get(content, content)
    return [
        Clip(c.name, c.samples, c.sample_rate, c.onsets_s, families.get(c.name, c.group))
        for c in real_clips(folder)
    ]


def f_measure(clip: Clip, estimated: npt.NDArray[np.float64]) -> float:
    if len(clip.onsets_s) == 0:
        return 1.0 if len(estimated) == 0 else 0.0
    return float(mir_eval.onset.f_measure(clip.onsets_s, np.sort(estimated), window=0.05)[0])


def score(runner: Runner, clips: list[Clip]) -> tuple[dict[str, float], float]:
    """Mean F per family and over all clips, the median signed timing error of matched onsets
    (``error_ms``, found minus reference), and audio seconds per CPU second."""
    by_family: dict[str, list[float]] = {}
    errors: list[float] = []
    cpu_s = audio_s = 0.0
    for clip in clips:
        start = time.process_time()
        estimated = np.sort(runner(clip))
        cpu_s += time.process_time() - start
        audio_s += clip.duration_s
        by_family.setdefault(clip.group, []).append(f_measure(clip, estimated))
        if len(clip.onsets_s) and len(estimated):
            for ref, est in mir_eval.util.match_events(clip.onsets_s, estimated, 0.05):
                errors.append(float(estimated[est] - clip.onsets_s[ref]))
    result = {family: float(np.mean(values)) for family, values in by_family.items()}
    result["all"] = float(np.mean([f for values in by_family.values() for f in values]))
    result["error_ms"] = 1000.0 * float(np.median(errors)) if errors else float("nan")
    return result, audio_s / max(cpu_s, 1e-9)


def speeds(method: str, clips: list[Clip]) -> dict[str, float]:
    """Whole-file and 64-stream speed of one of our methods on mono 44.1 kHz clips."""
    mono = [
        Clip(c.name, c.mono(), c.sample_rate, c.onsets_s, c.group) for c in clips if c.sample_rate == 44100
    ]
    settings = DetectorSettings(method=method)  # type: ignore[arg-type]
    start = time.process_time()
    for clip in mono:
        detect_onsets(clip.samples, clip.sample_rate, settings)
    whole = sum(c.duration_s for c in mono) / max(time.process_time() - start, 1e-9)
    many = many_streams_speed(mono, 64, BLOCK_MS, settings)
    return {"whole file": whole, "64 streams, 20 ms, process_many": many}


def many_streams_speed(clips: list[Clip], streams: int, block_ms: float, settings: DetectorSettings) -> float:
    """Aggregate speed of ``streams`` live streams in lockstep through ``process_many``, each playing a clip
    from its own offset (as ``bench/accuracy.py`` does for the default method)."""
    feeds = []
    for i in range(streams):
        clip = clips[i % len(clips)]
        start = (i // len(clips)) * len(clip.samples) // (streams // len(clips) + 1)
        feeds.append((clip, np.concatenate([clip.samples[start:], clip.samples[:start]])))
    detectors = [OnsetDetector(clip.sample_rate, 1, settings) for clip, _ in feeds]
    blocks = [max(1, round(block_ms / 1000 * clip.sample_rate)) for clip, _ in feeds]
    steps = min(len(samples) // block for (_, samples), block in zip(feeds, blocks, strict=True))
    start_s = time.process_time()
    for step in range(steps):
        process_many(
            [
                (d, samples[step * block : (step + 1) * block])
                for d, (_, samples), block in zip(detectors, feeds, blocks, strict=True)
            ]
        )
    cpu_s = time.process_time() - start_s
    audio_s = sum(steps * block / clip.sample_rate for (clip, _), block in zip(feeds, blocks, strict=True))
    return audio_s / max(cpu_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--split", default="valid", help="corpus split: valid (report) or tune (choose)")
    parser.add_argument("--data", help="folder of the real annotated clips (default: $TRANSIENT_ONSETS_DEV)")
    parser.add_argument("--no-real", action="store_true", help="skip the real clips (e.g. when tuning)")
    parser.add_argument("--methods", default="neural,superflux,aubio,librosa")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="for our neural method"
    )
    parser.add_argument("--sweep", help="NAME=V1,V2,...: score our neural method at each value")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    overrides = {name: float(value) for name, _, value in (item.partition("=") for item in args.set)}

    sets = {f"corpus {args.split}": corpus_clips(args.corpus, args.split)}
    if not args.no_real:
        sets["onsets-dev"] = dev_clips(data_dir(args.data))
    runners: dict[str, Runner] = {}
    for method in args.methods.split(","):
        if method == "aubio":
            runners["aubio hfc"] = aubio_method("hfc")
        elif method == "librosa":
            runners["librosa"] = librosa_default
        elif method == "neural" and args.sweep:
            name, _, values = args.sweep.partition("=")
            for value in values.split(","):
                settings = DetectorSettings.from_mapping(
                    {"method": "neural", **overrides, name: float(value)}
                )
                runners[f"neural {name}={value}"] = streamed(settings, BLOCK_MS)
        else:
            extra = overrides if method == "neural" else {}
            runners[f"ours {method}"] = streamed(DetectorSettings.from_mapping({"method": method, **extra}),
                                                BLOCK_MS)

    warnings.simplefilter("ignore")
    results: dict[str, object] = {}
    for set_name, clips in sets.items():
        families = [f for f in FAMILIES if any(c.group == f for c in clips)]
        audio_min = sum(c.duration_s for c in clips) / 60
        print(f"\n{set_name}: {len(clips)} clips, {audio_min:.1f} min; mean F (±50 ms) by family")
        print(
            f"{'detector':<26}" + "".join(f"{f:>12}" for f in [*families, "all", "error_ms"]) + f"{'x RT':>8}"
        )
        table: dict[str, object] = {}
        for name, runner in runners.items():
            row, speed = score(runner, clips)
            table[name] = {"f": row, "speed_x_realtime": speed}
            cells = "".join(f"{row.get(f, float('nan')):>12.3f}" for f in [*families, "all"])
            cells += f"{row['error_ms']:>12.1f}"
            print(f"{name:<26}{cells}{speed:>8.0f}", flush=True)
        results[set_name] = table
    if not args.no_speed:
        clips = sets.get("onsets-dev") or next(iter(sets.values()))
        print("\nspeed at 44.1 kHz, one core, multiple of real time:")
        for method in ("neural", "superflux"):
            figures = speeds(method, clips)
            results[f"speed {method}"] = figures
            print(f"  {method:<10}" + "  ".join(f"{k}: {v:.0f}x" for k, v in figures.items()), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"overrides": overrides, "results": results}, indent=2))


if __name__ == "__main__":
    main()
