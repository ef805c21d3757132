"""Beat, tempo and drum-band accuracy and cost of server.rhythm, beside librosa, aubio and madmom, in one run.

    .venv/bin/python bench/rhythm.py [--data DIR] [--madmom-python /work/madmom-venv/bin/python]
                                     [--no-madmom] [--no-generated] [--no-heldout] [--json PATH]

Corpora: the annotated files of ``../shared/data/rhythm-dev`` (read in place) and generated drum tracks
(``testkit/rhythm_signals.py``, seeds the tests do not use) with tempo changes, swing, rubato, a half/double
trap and a silent gap; and 12 more generated kits (seeds 300-311) never looked at while tuning. Scores:
``mir_eval.beat`` F (±70 ms), CMLt, AMLt on untrimmed beats; tempo error =
``|bpm / ref_bpm - 1|`` with ``ref_bpm`` from the median reference inter-beat interval (ours: the tracker's
own ``bpm`` at each beat from 4 s after the first reference beat on; peers: 60 / median inter-beat interval
of their beats); band F = ``mir_eval.onset.f_measure`` (±50 ms) of our onsets of each band against the
annotated kick, snare and hi-hat hits, beside the share of those hits played alone (see alone_share).
Ours is ``server.rhythm.analyze_rhythm`` in 20 ms blocks, the live path; its cost is bench/rhythm_cost.py's.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.rhythm import analyze_rhythm  # noqa: E402
from testkit.rhythm_signals import beat_times, drum_track  # noqa: E402

BLOCK_S = 0.02
CLASSES = (("low", "KD"), ("mid", "SD"), ("high", "HH"))
DEFAULT_DATA = Path("/work/shared/data/rhythm-dev")  # ../shared/data/rhythm-dev of the main checkout


def ours(audio: np.ndarray, rate: int) -> dict[str, Any]:
    """``server.rhythm.analyze_rhythm``: the detector, its rows and the rhythm fed in 20 ms blocks, as a live
    stream (its cost beside the detector: bench/rhythm_cost.py)."""
    result = analyze_rhythm(audio, rate, block_s=BLOCK_S)
    return {
        "beats": np.array([b.time for b in result.beats]),
        "bpm": np.array([b.bpm for b in result.beats]),
        "onsets": np.array([b.onset.time for b in result.onsets]),
        "bands": np.array([b.band for b in result.onsets]),
    }


def librosa_beats(path: str) -> np.ndarray:
    import librosa

    y, sr = librosa.load(path, sr=22050, mono=True)
    _, frames = librosa.beat.beat_track(y=y, sr=sr)
    return np.asarray(librosa.frames_to_time(frames, sr=sr))


def aubio_beats(path: str) -> np.ndarray:
    import aubio

    source = aubio.source(path, 0, 512)
    tempo = aubio.tempo("default", 1024, 512, source.samplerate)
    beats = []
    while True:
        samples, read = source()
        if tempo(samples)[0]:
            beats.append(tempo.get_last_s())
        if read < 512:
            break
    return np.array(beats)


def madmom_beats(python: str, paths: list[str]) -> dict[str, Any]:
    helper = Path(__file__).resolve().parent / "madmom_peer.py"
    done = subprocess.run(
        [python, str(helper), *paths], capture_output=True, text=True, check=True, timeout=3600
    )
    return json.loads(done.stdout)


def beat_scores(ref: np.ndarray, est: np.ndarray) -> tuple[float, float, float]:
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = mir_eval.beat.f_measure(ref, est)
        _, cmlt, _, amlt = mir_eval.beat.continuity(ref, est)
    return float(f), float(cmlt), float(amlt)


def tempo_error(ref: np.ndarray, est: np.ndarray) -> float:
    if len(est) < 2:
        return float("nan")
    return abs(np.median(np.diff(ref)) / np.median(np.diff(est)) - 1.0)


def local_bpm(ref: np.ndarray, times: np.ndarray, half_window: int = 4) -> np.ndarray:
    """Reference tempo at each time: 60 / the median of the reference's inter-beat intervals within
    ``half_window`` beats of it (annotations rounded to 10 ms make single intervals jitter by ~2 %)."""
    intervals = np.diff(ref)
    out = np.empty(len(times))
    for i, t in enumerate(times):
        at = int(np.clip(np.searchsorted(ref, t) - 1, 0, len(intervals) - 1))
        out[i] = 60.0 / np.median(intervals[max(0, at - half_window) : at + half_window + 1])
    return out


def own_tempo(ref: np.ndarray, result: dict[str, Any], after_s: float = 4.0) -> tuple[float, float]:
    """Median tempo error of our beats from ``after_s`` after the first reference beat; share within 4 %."""
    late = (result["beats"] >= ref[0] + after_s) & (result["beats"] <= ref[-1] + 0.07)
    if not late.any():
        return float("nan"), float("nan")
    errors = np.abs(result["bpm"][late] / local_bpm(ref, result["beats"][late]) - 1.0)
    return float(np.median(errors)), float(np.mean(errors <= 0.04))


def band_f(result: dict[str, Any], hits: dict[str, np.ndarray]) -> dict[str, float]:
    import mir_eval

    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for band, cls in CLASSES:
            if len(hits.get(cls, [])):
                scores[band] = mir_eval.onset.f_measure(
                    hits[cls], result["onsets"][result["bands"] == band], window=0.05
                )[0]
    return scores


def alone_share(hits: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of each class's annotated hits with no hit of the two other classes within 50 ms.

    With one band per onset, a hit played together with another drum gets one band for both: a hi-hat on
    a kick counts for "low" or "high", not both. So this share bounds the recall of a class whose partner
    hits keep their own band (e.g. of "high" when every kick and snare is named "low" and "mid").
    """
    out = {}
    for band, cls in CLASSES:
        own = hits.get(cls, np.zeros(0))
        if not len(own):
            continue
        others = np.concatenate([hits.get(c, np.zeros(0)) for _, c in CLASSES if c != cls])
        alone = [t for t in own if not len(others) or np.min(np.abs(others - t)) > 0.05]
        out[band] = len(alone) / len(own)
    return out


def generated_cases(directory: str) -> list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]]:
    """(name, wav path, reference beats, reference hits) of the generated drum tracks."""
    rng = np.random.default_rng(2026)
    rubato = beat_times([(105, 24)])
    rubato = rubato + np.cumsum(rng.normal(0.0, 0.008, len(rubato)))
    specs: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("steady 70", beat_times([(70, 20)]), {}),
        ("steady 100", beat_times([(100, 16)]), {}),
        ("steady 128", beat_times([(128, 16)]), {}),
        ("steady 160", beat_times([(160, 16)]), {}),
        ("steady 190", beat_times([(190, 16)]), {}),
        ("change 100>125", beat_times([(100, 12), (125, 12)]), {}),
        ("change 140>110", beat_times([(140, 12), (110, 12)]), {}),
        ("ramp 90>130", beat_times([(90 + 2.5 * k, 1.5) for k in range(17)]), {}),
        ("swing 100", beat_times([(100, 16)]), {"swing": 2 / 3}),
        ("rubato 105", rubato, {}),
        ("waltz 3/4 120", beat_times([(120, 16)]), {"meter": 3}),
        ("no hats 85", beat_times([(85, 16)]), {"hats": False}),
        ("gap 120 (4 s silent)", beat_times([(120, 20)]), {"gaps": [(8.0, 12.0)]}),
    ]
    cases = []
    for seed, (name, beats, options) in enumerate(specs, start=100):
        track = drum_track(beats, seed=seed, **options)
        path = os.path.join(directory, f"gen{seed}.wav")
        sf.write(path, track.audio, track.sample_rate, subtype="PCM_16")  # aubio reads PCM only
        hits = {"KD": track.hits["kick"], "SD": track.hits["snare"], "HH": track.hits["hat"]}
        cases.append((name, path, track.beats, hits))
    return cases


def heldout_cases(directory: str) -> list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]]:
    """Twelve more generated kits (seeds 300-311, 75-175 BPM), never looked at while tuning the bands."""
    specs: list[tuple[float, dict[str, Any]]] = [
        (75, {}), (88, {}), (96, {"swing": 2 / 3}), (104, {}), (112, {"meter": 3}), (120, {}), (132, {}),
        (144, {"swing": 2 / 3}), (150, {}), (163, {}), (175, {}), (92, {"hats": False}),
    ]
    cases = []
    for seed, (bpm, options) in enumerate(specs, start=300):
        track = drum_track(beat_times([(bpm, 14.0)]), seed=seed, **options)
        path = os.path.join(directory, f"held{seed}.wav")
        sf.write(path, track.audio, track.sample_rate, subtype="PCM_16")
        hits = {"KD": track.hits["kick"], "SD": track.hits["snare"], "HH": track.hits["hat"]}
        name = f"held-out {bpm:g}" + (" " + ",".join(options) if options else "")
        cases.append((name, path, track.beats, hits))
    return cases


def follow_beats(ref: np.ndarray, result: dict[str, Any]) -> float:
    """Beats after the largest tempo change until every later beat is matched (±70 ms) with bpm within 4 %."""
    intervals = np.diff(ref)
    change = int(np.argmax(np.abs(np.diff(intervals)))) + 1
    t_change = ref[change]
    ref_bpm = local_bpm(ref, result["beats"], half_window=1)
    good = np.array([np.min(np.abs(ref - b)) <= 0.07 for b in result["beats"]]) & (
        np.abs(result["bpm"] / ref_bpm - 1) <= 0.04
    )
    # Beats after the music's last beat (the tracker holds the beat into the silence) do not count.
    after = np.flatnonzero((result["beats"] > t_change) & (result["beats"] <= ref[-1] + 0.07))
    bad = [i for i in after if not good[i]]
    return float(bad[-1] - after[0] + 1) if bad else 0.0


def load_dev(directory: str) -> list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]]:
    """(name, wav path, reference beats, reference hits by class) of the annotated files."""
    cases = []
    for wav in sorted(glob.glob(os.path.join(directory, "*.wav"))):
        ref = np.loadtxt(wav[:-4] + ".beats", ndmin=2)[:, 0]
        hits: dict[str, list[float]] = {}
        with open(wav[:-4] + ".drums") as lines:
            for line in lines:
                t, cls = line.split()
                hits.setdefault(cls, []).append(float(t))
        name = Path(wav).stem.removeprefix("mdbdrums_")
        cases.append((name, wav, ref, {k: np.array(v) for k, v in hits.items()}))
    return cases


def run_case(
    name: str, path: str, ref: np.ndarray, hits: dict[str, np.ndarray], madmom: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every tracker on one file; print its lines, return its rows."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    result = ours(audio.mean(axis=1).astype(np.float32), rate)
    median_err, share = own_tempo(ref, result)
    extra = f"own bpm from 4 s: median err {100 * median_err:.1f} %, {100 * share:.0f} % of beats within 4 %"
    if "change" in name or "ramp" in name:
        extra += f"; follows the change in {follow_beats(ref, result):.0f} beats"
    peers = {"ours (online)": result["beats"]}
    if madmom:
        peers["madmom online"] = np.array(madmom[path]["online"])
        peers["madmom offline"] = np.array(madmom[path]["offline"])
    peers["librosa (offline)"] = librosa_beats(path)
    peers["aubio (online)"] = aubio_beats(path)
    rows = []
    for tracker, est in peers.items():
        f, cmlt, amlt = beat_scores(ref, est)
        err = median_err if tracker.startswith("ours") else tempo_error(ref, est)
        rows.append({"file": name, "tracker": tracker, "F": f, "CMLt": cmlt, "AMLt": amlt, "tempo_err": err})
        note = extra if tracker.startswith("ours") else ""
        print(f"{name:22s} {tracker:17s} {f:6.3f} {cmlt:6.3f} {amlt:6.3f} {100 * err:8.1f} %  {note}")
    bands = band_f(result, hits)
    alone = alone_share(hits)
    rows[0].update(bands=bands, alone=alone)
    scores = ", ".join(f"{b} {v:.3f} ({100 * alone[b]:.0f} % alone)" for b, v in bands.items())
    print(f"{'':22s} bands F {scores}")
    return rows


def summarise(corpus: str, rows: list[dict[str, Any]], n_files: int) -> None:
    print(f"\n{corpus}: mean over {n_files} files")
    for tracker in dict.fromkeys(r["tracker"] for r in rows):
        mine = [r for r in rows if r["tracker"] == tracker]
        f, cmlt, amlt = (np.mean([r[k] for r in mine]) for k in ("F", "CMLt", "AMLt"))
        err = 100 * np.nanmean([r["tempo_err"] for r in mine])
        print(f"  {tracker:17s} F {f:.3f}  CMLt {cmlt:.3f}  AMLt {amlt:.3f}  tempo err {err:.1f} %")
    own = [r for r in rows if r["tracker"].startswith("ours")]
    for band, _ in CLASSES:
        values = [r["bands"][band] for r in own if band in r["bands"]]
        alone = [r["alone"][band] for r in own if band in r["alone"]]
        if values:
            print(
                f"  band {band:4s} F {np.mean(values):.3f} over {len(values)} files "
                f"({100 * np.mean(alone):.0f} % of the hits have no other class within 50 ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("TRANSIENT_RHYTHM_DEV", str(DEFAULT_DATA)))
    parser.add_argument("--madmom-python", default="/work/madmom-venv/bin/python")
    parser.add_argument("--no-madmom", action="store_true")
    parser.add_argument("--no-generated", action="store_true")
    parser.add_argument("--no-heldout", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = [("rhythm-dev (tuned on it)", load_dev(args.data))]
        if not args.no_generated:
            corpora.append(("generated", generated_cases(tmp)))
        if not args.no_heldout:
            corpora.append(("generated, never tuned on", heldout_cases(tmp)))
        madmom = {}
        if not args.no_madmom:
            madmom = madmom_beats(args.madmom_python, [c[1] for _, cases in corpora for c in cases])
        for corpus, cases in corpora:
            print(f"\n## {corpus}")
            print(f"{'file':22s} {'tracker':17s} {'F':>6s} {'CMLt':>6s} {'AMLt':>6s} {'tempo err':>10s}")
            rows = []
            for name, path, ref, hits in cases:
                rows += run_case(name, path, ref, hits, madmom)
            summarise(corpus, rows, len(cases))
            report[corpus] = rows
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
