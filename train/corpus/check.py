"""Listen-free checks of the corpus labels: ``python -m train.corpus.check /work/corpus``.

1. Offsets: isolated notes at keys and velocities that were not measured, rendered through each soundfont;
   the label (note-on plus the calibrated offset of the nearest measured key and velocity) against where the
   audio starts (-50 dB of the note's peak). Reports median, 95th percentile and max error in ms.
2. Onset strength: for each labelled onset, the time of the largest rise of the short-time log energy
   (2 ms frames) within +-40 ms; reports the median lag per family (positive: the energy rises after the
   label).
3. The project's detector (``server.dsp.detect_onsets``, default settings) scored with ``mir_eval`` at +-50 ms
   over a sample of clips per family: a sanity figure, not a target.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from train.corpus import instruments as gm
from train.corpus import manifest, synth
from train.corpus.compose import FAMILIES
from train.corpus.score import Control, Part, Score


def offset_errors_ms(soundfont: str, programs: list[tuple[int, bool]], rng: np.random.Generator,
                     cache: Path, per_program: int = 6) -> list[float]:
    """Label minus audio start (ms) of isolated notes at random keys and velocities."""
    errors = []
    for program, drums in programs:
        cal = synth.calibration(cache, soundfont, program, drums)
        channel = gm.DRUM_CHANNEL if drums else 0
        keys = cal.keys
        notes = []
        for _ in range(per_program):
            key = int(rng.choice(keys)) if drums else int(rng.integers(min(keys), max(keys) + 1))
            notes.append((key, int(rng.integers(25, 128))))
        score = Score(500 + 1200 * len(notes) + 500, 120.0, [Part(channel, program, "check")])
        for i, (k, v) in enumerate(notes):
            score.add_note(500 + 1200 * i, 400, k, v, channel)
            score.controls.append(Control(500 + 1200 * i + 1000, channel, "cc", 120, 0))
        with tempfile.TemporaryDirectory() as tmp:
            audio = synth.render(score, soundfont, Path(tmp))
        env = np.abs(audio).max(axis=1)
        rate = synth.RENDER_RATE_HZ
        for i, (k, v) in enumerate(notes):
            start = (500 + 1200 * i) * rate // 1000
            seg = env[start: start + rate]
            offset, _ = cal.lookup(k, v)
            if seg.max() < synth.SILENT_PEAK or offset is None:
                continue
            first = int(np.argmax(seg >= seg.max() * 10 ** (synth.ONSET_THRESHOLD_DB / 20)))
            errors.append(offset - 1000.0 * first / rate)
    return errors


def energy_rise_lags_ms(x: npt.NDArray[np.float64], rate: int,
                        onsets: npt.NDArray[np.float64]) -> list[float]:
    """Per onset: time (ms, relative to the label) of the largest rise in 2 ms log energy within +-40 ms."""
    mono = x.mean(axis=1) if x.ndim == 2 else x
    mono = np.diff(mono, prepend=0.0)  # pre-emphasis: attacks over sustained low notes
    hop = max(1, int(0.002 * rate))
    n = len(mono) // hop
    energy = np.log10(1e-10 + np.square(mono[: n * hop]).reshape(n, hop).mean(axis=1))
    rise = np.diff(energy, prepend=energy[0])
    lags = []
    for t in onsets:
        c = int(t * rate / hop)
        lo, hi = c - 20, c + 21
        if lo < 1 or hi > n:
            continue
        lags.append((lo + int(np.argmax(rise[lo:hi])) - c) * hop / rate * 1000.0)
    return lags


def detector_scores(corpus: Path, rows: list[dict[str, str]]) -> dict[str, list[tuple[float, float, float]]]:
    """(F, precision, recall) of ``detect_onsets`` per clip, by family."""
    import mir_eval

    from server.dsp import detect_onsets

    out: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    for r in rows:
        base = corpus / r["split"] / r["clip_id"]
        x, rate = soundfile.read(f"{base}.flac", dtype="float32")
        ref = np.loadtxt(f"{base}.onsets", ndmin=1)
        est = np.array([o.time for o in detect_onsets(x, rate)])
        out[r["family"]].append(mir_eval.onset.f_measure(ref, est, window=0.05))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the three checks and print their figures."""
    parser = argparse.ArgumentParser(prog="python -m train.corpus.check", description=__doc__)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--per-family", type=int, default=8, help="clips per family for checks 2 and 3")
    parser.add_argument("--offset-programs", type=int, default=6, help="programs per soundfont for check 1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-offsets", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    if not args.skip_offsets:
        print("## 1. calibrated offset vs audio start, isolated notes at unmeasured keys/velocities (ms)")
        melodic = [i.program for t in (gm.PLUCKED, gm.BOWED_BLOWN, gm.PIANO, gm.VOICE, gm.PADS) for i in t]
        for sf in synth.SOUNDFONTS:
            progs = [(int(p), False) for p in rng.choice(melodic, args.offset_programs, replace=False)]
            progs.append((int(rng.choice(gm.DRUM_KITS)), True))
            err = np.abs(offset_errors_ms(sf, progs, rng, args.corpus / ".calib"))
            print(f"{sf}: {len(err)} notes, |error| median {np.median(err):.2f}, "
                  f"p95 {np.percentile(err, 95):.2f}, max {err.max():.2f}; "
                  f"over 5 ms: {int(np.sum(err > 5))}")

    rows = manifest.read(args.corpus)
    sample: list[dict[str, str]] = []
    for fam in FAMILIES:
        mine = [r for r in rows if r["family"] == fam]
        idx = rng.permutation(len(mine))[: args.per_family]
        sample += [mine[i] for i in sorted(idx)]

    print("\n## 2. largest 2 ms log-energy rise near each label (ms after the label)")
    lags: dict[str, list[float]] = collections.defaultdict(list)
    for r in sample:
        base = args.corpus / r["split"] / r["clip_id"]
        x, rate = soundfile.read(f"{base}.flac")
        lags[r["family"]] += energy_rise_lags_ms(x, rate, np.loadtxt(f"{base}.onsets", ndmin=1))
    for fam in FAMILIES:
        a = np.array(lags[fam])
        if len(a):
            print(f"{fam}: {len(a)} labels, median {np.median(a):+.1f}, "
                  f"within -5..+15 ms: {np.mean((a >= -5) & (a <= 15)):.2f}")

    print("\n## 3. server.dsp.detect_onsets (defaults), mir_eval +-50 ms, mean over clips")
    scores = detector_scores(args.corpus, sample)
    print("| family | clips | F | P | R |\n|---|---|---|---|---|")
    for fam in FAMILIES:
        s = np.array(scores.get(fam, []))
        if len(s):
            print(f"| {fam} | {len(s)} | " + " | ".join(f"{v:.3f}" for v in s.mean(axis=0)) + " |")
    allf = np.array([v for s in scores.values() for v in s])
    print(f"| all | {len(allf)} | " + " | ".join(f"{v:.3f}" for v in allf.mean(axis=0)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
