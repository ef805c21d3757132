"""Bar-position (downbeat) accuracy of server.rhythm's causal meter tracker, on rhythm-dev and generated
tracks.

    .venv/bin/python bench/downbeats.py [--data DIR] [--no-generated] [--fresh] [--validation]
                                        [--set NAME=VALUE ...] [--json PATH] [--accents]

For each file: ``analyze_rhythm`` (the live path, 20 ms blocks); each of our beats that carries a
``bar_position`` and lies within ±70 ms of an annotated beat is *matched*; it is *correct* when its position
equals the annotation's. Reported per file: beats, positioned (share of our beats with a position), matched,
correct / matched (the downbeat accuracy), the same modulo 2 (right half of the bar: 1 and 3 alike, 2 and 4
alike), and when the first position came (s after the first annotated beat). ``--set`` overrides a constant
of ``server.rhythm.meter`` for exploring (e.g. ``--set SWITCH_MARGIN=0.5``); the figures in bench/README.md
use the defaults. Generated tracks (``testkit/rhythm_signals.py``) use seeds the tests do not use; ``--fresh``
adds bench/rhythm.py's 24 fresh kits (seeds 500-523, tuned on since branch startup), ``--validation`` its 24
validation kits (seeds 600-623). ``--accents`` prints instead, for
rhythm-dev, what tells the annotated bar positions apart (:func:`position_accents`). Cost: CPU
microseconds of one beat through the meter tracker (``beat`` + ``fold``), from 20,000 beats.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.rhythm import analyze_rhythm, meter
from server.rhythm.features import BandFlux
from testkit.rhythm_signals import bar_position_score, beat_times, drum_track

DEFAULT_DATA = Path("/work/shared/data/rhythm-dev")
GENERATED: list[tuple[str, dict[str, Any]]] = [
    ("4/4 120", {"segments": [(120.0, 30.0)]}),
    ("4/4 96", {"segments": [(96.0, 30.0)]}),
    ("4/4 150", {"segments": [(150.0, 30.0)]}),
    ("3/4 132", {"segments": [(132.0, 30.0)], "meter": 3}),
    ("3/4 96", {"segments": [(96.0, 30.0)], "meter": 3}),
    ("4/4 swing 118", {"segments": [(118.0, 30.0)], "swing": 2 / 3}),
    ("4/4 110->140", {"segments": [(110.0, 15.0), (140.0, 15.0)]}),
    ("4/4 no hats 124", {"segments": [(124.0, 30.0)], "hats": False}),
]


def score(name: str, audio: np.ndarray, rate: int, ref_times: np.ndarray,
          ref_pos: np.ndarray) -> dict[str, Any]:
    result = analyze_rhythm(audio, rate)
    times = np.array([b.time for b in result.beats])
    positions = [b.bar_position for b in result.beats]
    positioned, matched, correct = bar_position_score(ref_times, ref_pos, times, positions)
    halves = 0  # right modulo 2
    for t, p in zip(times, positions, strict=True):
        if p is None:
            continue
        i = int(np.argmin(np.abs(ref_times - t)))
        if abs(ref_times[i] - t) <= 0.07:
            halves += int((int(ref_pos[i]) - p) % 2 == 0)
    first = next((float(t) for t, p in zip(times, positions, strict=True) if p is not None), None)
    return {
        "file": name, "beats": len(times), "positioned": positioned, "matched": matched, "correct": correct,
        "accuracy": correct / matched if matched else None,
        "accuracy_mod2": halves / matched if matched else None,
        "first_position_s": None if first is None else round(first - float(ref_times[0]), 2),
    }


def position_accents(audio: np.ndarray, rate: int, ref_times: np.ndarray, ref_pos: np.ndarray) -> str:
    """What tells the annotated bar positions apart: per position, the mean of each beat's largest low,
    mid and high group rise within ±3 frames (30 ms; :class:`~server.rhythm.features.BandFlux`, the same
    rises the meter's accents use) over the mean of all positions, and how many of its beats are among the
    file's top tenth in low and in high rise (a kick stronger than most; a crash)."""
    flux = BandFlux(rate)
    _, sums = flux.process(audio)
    peaks: dict[int, list[np.ndarray]] = {}
    for t, p in zip(ref_times, ref_pos, strict=True):
        frame = round((t - flux.frame_time_offset_s) / flux.hop_s)
        window = sums[max(0, frame - 3): frame + 4]
        if len(window):
            peaks.setdefault(int(p), []).append(window.max(axis=0))
    every = np.concatenate([np.array(v) for v in peaks.values()])
    mean, top = every.mean(axis=0), np.quantile(every, 0.9, axis=0)
    parts = []
    for p in sorted(peaks):
        v = np.array(peaks[p])
        m = v.mean(axis=0) / mean
        parts.append(f"{p}: L {m[0]:.2f} M {m[1]:.2f} H {m[2]:.2f} topL {int((v[:, 0] > top[0]).sum())} "
                     f"topH {int((v[:, 2] > top[2]).sum())}/{len(v)}")
    return " | ".join(parts)


def beat_cost_us(beats: int = 20_000) -> float:
    """CPU microseconds per beat of :class:`~server.rhythm.meter.MeterTracker` (``beat`` then ``fold``)."""
    tracker = meter.MeterTracker()
    rises = np.random.default_rng(0).random(3 * 64).tolist()
    start = time.process_time()
    for i in range(beats):
        tracker.beat(i * 0.5, 120.0, 100 * i + 30)
        tracker.fold(rises, 100 * i)
    return 1e6 * (time.process_time() - start) / beats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-generated", action="store_true")
    parser.add_argument("--fresh", action="store_true",
                        help="also bench/rhythm.py's 24 fresh kits (seeds 500-523)")
    parser.add_argument("--validation", action="store_true",
                        help="also bench/rhythm.py's 24 validation kits (seeds 600-623, never tuned on)")
    parser.add_argument("--accents", action="store_true",
                        help="only print what tells rhythm-dev's bar positions apart (position_accents)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        setattr(meter, name, type(getattr(meter, name))(value))
    if args.accents:
        for path in sorted(glob.glob(str(args.data / "*.wav"))):
            audio, rate = sf.read(path, dtype="float32")
            ref = np.loadtxt(Path(path).with_suffix(".beats"))
            mono = audio.reshape(len(audio), -1).mean(axis=1)
            print(f"{Path(path).stem:32} {position_accents(mono, rate, ref[:, 0], ref[:, 1].astype(int))}")
        return
    rows = []
    for path in sorted(glob.glob(str(args.data / "*.wav"))):
        audio, rate = sf.read(path, dtype="float32")
        ref = np.loadtxt(Path(path).with_suffix(".beats"))
        rows.append(score(Path(path).stem, audio.reshape(len(audio), -1).mean(axis=1), rate, ref[:, 0],
                          ref[:, 1].astype(int)))
    if not args.no_generated:
        for name, kwargs in GENERATED:
            segments = kwargs.pop("segments")
            track = drum_track(beat_times(segments), seed=1001, **kwargs)
            rows.append(score(f"gen {name}", track.audio, track.sample_rate, track.beats,
                              track.bar_positions))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rhythm import fresh_specs, validation_specs

    extra = ((args.fresh, fresh_specs, 500), (args.validation, validation_specs, 600))
    for wanted, specs, first_seed in extra:
        if not wanted:
            continue
        for seed, (name, tempi, options, _) in enumerate(specs(), start=first_seed):
            track = drum_track(beat_times(tempi), seed=seed, **options)
            rows.append(score(name, track.audio, track.sample_rate, track.beats, track.bar_positions))
    print(f"{'file':32} {'beats':>5} {'posd':>5} {'match':>5} {'acc':>6} {'acc%2':>6} {'first s':>7}")
    for row in rows:
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        acc2 = "-" if row["accuracy_mod2"] is None else f"{row['accuracy_mod2']:.3f}"
        first = "-" if row["first_position_s"] is None else row["first_position_s"]
        print(f"{row['file']:32} {row['beats']:5d} {row['positioned']:5d} {row['matched']:5d} {acc:>6} "
              f"{acc2:>6} {first:>7}")
    for group in ("mdbdrums", "gen", "fresh", "valid"):
        part = [r for r in rows if r["file"].startswith(group) and r["matched"]]
        if part:
            total = sum(r["matched"] for r in part)
            print(f"{group}: mean accuracy {np.mean([r['accuracy'] for r in part]):.3f} (pooled "
                  f"{sum(r['correct'] for r in part) / total:.3f} of {total} matched beats), mod 2 "
                  f"{np.mean([r['accuracy_mod2'] for r in part]):.3f}")
    print(f"cost: {beat_cost_us():.1f} us of CPU per beat (meter tracker)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
