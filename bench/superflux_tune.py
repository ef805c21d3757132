"""The default ``superflux`` on pitched material: variants of its detection function and peak picker, run
by the served detector itself on the corpus's ``tune`` split and on generated sustained notes.

Usage::

    .venv/bin/python bench/superflux_tune.py --split tune [--width 1,2] [--lag 1,2] [--hold 1,3]
        [--hold-db 0,2] [--range-db 60] [--threshold 0.8,1,1.2] [--mean-factor 1.25] [--pre-avg-ms 100]
        [--pre-max-ms 30] [--min-interval-ms 30] [--baseline median] [--stress-only] [--no-stress]
        [--family voice] [--jobs 2]

Each combination of the options builds a ``--method`` row (``superflux``, the default, or
``superflux_half``) of the method table (``dataclasses.replace``
of the served one, handed to :class:`~server.dsp.OnsetDetector` as its table) and runs the detector on
every clip, whole (its onsets are the same whatever the block size: ``tests/test_dsp_streaming.py``):

- ``--width W``: the maximum filter across frequency spans ``2 W + 1`` bands (the served 1: 3 bands);
- ``--lag L``: the reference row is ``L`` frames back (0: the served row's: ``superflux`` a quarter frame,
  1 frame at 40 ms / 10 ms; ``superflux_half`` half a frame, 2);
- ``--hold K`` and ``--hold-db D``: the reference is the largest of the rows ``L`` to ``L + K - 1`` frames
  back, each older than ``L`` lowered by ``D`` dB per frame of age (``K`` 1: the served single row). A
  band that only comes back to a level it had a few frames ago (vibrato, tremolo) does not rise;
- ``--range-db``: the log compression's floor, this far below the loudest band of the last 2 s;
- the picker's threshold, the baseline's factor, statistic and window, ``pre_max`` and the minimum
  interval.

The clips: the corpus's ``--split`` (choose on ``tune`` only; ``valid`` and the real clips are for
reporting once, with ``bench/accuracy.py``) and a generated stress set (:func:`stress_clips`) of sustained
pitched notes with exact onsets: 5–6 Hz vibrato of 20–60 cents, tremolo, ringing plucked strings, legato
lines, breath noise. Printed per family: mean F (±50 ms), pooled precision and recall; for the stress set
also false onsets per second.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import Clip  # noqa: E402
from learned import FAMILIES  # noqa: E402
from neural_picker import add_clip_arguments, clips_of, floats  # noqa: E402

from server.dsp import DetectorSettings, OnsetDetector, odf, peaks, plan  # noqa: E402
from server.dsp.methods import METHOD_TABLE  # noqa: E402

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SERVED = METHOD_TABLE["superflux"]  # the row varied (--method), set before the pool forks

# Options swept: name, default (the served rule), meaning.
OPTIONS = (
    ("width", "1", "max filter across frequency: 2 W + 1 bands"),
    ("lag", "0", "reference row, frames back (0: the served row's)"),
    ("hold", "1", "the reference: the largest of this many rows from the lag back"),
    ("hold_db", "0", "each older row lowered by this, dB per frame of age"),
    ("slow_lag", "0", "a second, slower reference this many frames back (0: none)"),
    ("slow_weight", "0.5", "the slow rise's share of the detection function"),
    ("band_db", "0", "each band's rise counts only above this, dB"),
    ("range_db", f"{odf.RANGE_DB:g}", "compression floor below the recent loudest band, dB"),
    ("threshold", "1", "the threshold setting"),
    ("mean_factor", f"{SERVED.mean_factor:g}", "the baseline's factor"),
    ("pre_avg_ms", f"{peaks.PRE_AVG_S * 1000:g}", "the baseline's window, ms"),
    ("pre_max_ms", f"{peaks.PRE_MAX_S * 1000:g}", "a peak is the largest of this long a past, ms"),
    ("min_interval_ms", "30", "the minimum interval, ms"),
    ("lookahead_ms", "0", "the look-ahead, ms"),
    ("attack_offset", "-1", "the attack before the end of the peak's frame, frames (-1: the row's)"),
)


# --- Generated sustained notes with exact onsets ------------------------------------------------------------


def _harmonic_note(rng: np.random.Generator, sr: int, f0: float, dur_s: float, attack_s: float,
                   vibrato_cents: float, vibrato_hz: float, tremolo_db: float, bright: float) -> F64:
    """A sustained harmonic note: vibrato and tremolo fade in after 150 ms (as players do), slow or fast
    attack, a short release."""
    n = int(dur_s * sr)
    t = np.arange(n) / sr
    depth = np.clip((t - 0.15) / 0.25, 0.0, 1.0)
    phase0 = rng.uniform(0, 2 * np.pi)
    cents = vibrato_cents * depth * np.sin(2 * np.pi * vibrato_hz * t + phase0)
    freq = f0 * 2.0 ** (cents / 1200.0)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    out = np.zeros(n)
    for h in range(1, 16):
        if f0 * h > 0.45 * sr:
            break
        out += (bright ** (h - 1)) * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    trem = 10.0 ** (tremolo_db * depth * np.sin(2 * np.pi * rng.uniform(4.0, 7.0) * t) / 20.0)
    env = np.minimum(1.0, t / attack_s) * np.minimum(1.0, (dur_s - t) / 0.03).clip(0.0)
    return np.asarray(out * env * trem)


def _string_pluck(rng: np.random.Generator, sr: int, f0: float, dur_s: float) -> F64:
    """A ringing plucked string: slightly inharmonic partials, each decaying at its own rate, beating
    pairs (two slightly detuned strings of a course)."""
    n = int(dur_s * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    b = rng.uniform(1e-4, 6e-4)
    for h in range(1, 25):
        fh = f0 * h * np.sqrt(1 + b * h * h)
        if fh > 0.45 * sr:
            break
        amp = 1.0 / h ** rng.uniform(0.8, 1.4)
        decay = rng.uniform(0.8, 3.0) / (1.0 + 0.15 * h)
        detune = 1.0 + rng.uniform(0.5, 2.0) / fh
        partial = np.sin(2 * np.pi * fh * t) + 0.6 * np.sin(2 * np.pi * fh * detune * t + rng.uniform(0, 6))
        out += amp * np.exp(-t / decay) * partial
    env = np.minimum(1.0, t / 0.002) * np.minimum(1.0, (dur_s - t) / 0.02).clip(0.0)
    return np.asarray(out * env)


def _line(rng: np.random.Generator, sr: int, duration_s: float, kind: str) -> tuple[F64, list[float]]:
    """A monophonic line of one kind with its onset times."""
    out = np.zeros(int(duration_s * sr) + sr)
    onsets: list[float] = []
    t = 0.2
    scale = np.array([0, 2, 3, 5, 7, 8, 10, 12])
    root = rng.uniform(110, 330)
    while t < duration_s - 0.6:
        f0 = root * 2.0 ** (rng.choice(scale) / 12.0)
        level = 10.0 ** (rng.uniform(-18, 0) / 20.0)
        if kind == "pluck":
            dur = rng.uniform(0.8, 2.5)
            note = _string_pluck(rng, sr, f0, dur + 0.5)
            gap = dur
        else:
            dur = rng.uniform(0.8, 2.5)
            attack = rng.uniform(0.01, 0.06) if kind != "swell" else rng.uniform(0.08, 0.2)
            vib = rng.uniform(20, 60) if kind in ("vibrato", "swell", "legato") else 0.0
            trem = rng.uniform(1, 3) if kind in ("tremolo", "swell") else 0.0
            note = _harmonic_note(rng, sr, f0, dur, attack, vib, rng.uniform(5.0, 6.0), trem,
                                  rng.uniform(0.5, 0.8))
            gap = dur if kind == "legato" else dur + rng.uniform(0.05, 0.3)
        start = int(t * sr)
        stop = min(len(out), start + len(note))
        out[start:stop] += level * note[: stop - start]
        onsets.append(t)
        t += gap
    return out[: int(duration_s * sr)], onsets


STRESS_KINDS = ("vibrato", "tremolo", "swell", "legato", "pluck")


def stress_clips(seed: int = 2100, per_kind: int = 3, duration_s: float = 12.0) -> list[Clip]:
    """Sustained-note clips with exact onsets, ``per_kind`` of each of :data:`STRESS_KINDS`, at 44.1 and
    48 kHz, some with breath noise 24 dB under the note and some with a little room."""
    clips = []
    for k, kind in enumerate(STRESS_KINDS):
        for j in range(per_kind):
            rng = np.random.default_rng(seed + 100 * k + j)
            sr = (44100, 48000)[j % 2]
            mix, onsets = _line(rng, sr, duration_s, kind)
            if j % 3 == 1:  # breath or bow noise under the note, following its level
                level = np.sqrt(np.convolve(mix**2, np.ones(sr // 50) / (sr // 50), mode="same"))
                mix += 10.0 ** (-24 / 20) * level * rng.standard_normal(len(mix))
            if j % 3 == 2:  # a short room
                ir_t = np.arange(int(0.3 * sr)) / sr
                ir = rng.standard_normal(len(ir_t)) * np.exp(-ir_t * 6.9 / 0.3)
                ir[0] = 6.0
                mix = np.convolve(mix, ir)[: len(mix)]
            mix = 0.5 * mix / max(1e-9, float(np.max(np.abs(mix))))
            clips.append(Clip(f"stress-{kind}-{j}", mix.astype(np.float32), sr, np.array(onsets),
                              f"s_{kind}"))
    return clips


# --- The variant detector -------------------------------------------------------------------------------


def wide_max(bands: F32, width: int) -> F32:
    """Maximum over each band and its ``width`` neighbours on either side."""
    if width == 1:
        return odf.max_filter_bands(bands)
    out = bands.copy()
    for shift in range(1, width + 1):
        np.maximum(out[:, shift:], bands[:, :-shift], out=out[:, shift:])
        np.maximum(out[:, :-shift], bands[:, shift:], out=out[:, :-shift])
    return out


def variant_row(p: dict[str, float]) -> Any:
    assert SERVED.lags is not None
    width, lag, hold, hold_db = int(p["width"]), int(p["lag"]), int(p["hold"]), p["hold_db"]
    factor = np.float32(10.0 ** (-hold_db / 20.0))

    slow_lag, slow_weight = int(p["slow_lag"]), p["slow_weight"]
    margin = np.float32(10.0 ** (p["band_db"] / 20.0))

    def lags(grid: Any) -> tuple[int, ...]:
        first = lag or SERVED.lags(grid)[0]
        return tuple(range(first, first + hold)) + ((slow_lag,) if slow_lag else ())

    def rise(current: F32, reference: F32, unit: float, floor: F32) -> F64:
        if margin != 1.0:
            reference = (floor + reference) * margin - floor
        return odf.mean_log_rise(current, reference, unit, floor)

    def compare(current: F32, past: tuple[F32, ...], unit: float, floor: F32) -> F64:
        slow = past[-1] if slow_lag else None
        past = past[:-1] if slow_lag else past
        reference = wide_max(past[0], width)
        scale = np.float32(1.0)
        for row in past[1:]:
            scale = scale * factor
            np.maximum(reference, wide_max(row, width) * scale, out=reference)
        if slow is None:
            return rise(current, reference, unit, floor)
        return np.asarray((1.0 - slow_weight) * rise(current, reference, unit, floor)
                          + slow_weight * rise(current, wide_max(slow, width), unit, floor))

    floor = (np.float32(10.0 ** (-p["range_db"] / 20.0)), np.float32(odf.ABS_FLOOR))
    offset = SERVED.attack_offset if p["attack_offset"] < 0 else p["attack_offset"]
    return dataclasses.replace(SERVED, lags=lags, compare=compare, floor=floor, mean_factor=p["mean_factor"],
                               attack_offset=offset)


def run_clip(job: tuple[Clip, dict[str, float]]) -> tuple[str, F64]:
    clip, p = job
    plan.PRE_AVG_S = p["pre_avg_ms"] / 1000.0
    plan.PRE_MAX_S = p["pre_max_ms"] / 1000.0
    plan.plan_for.cache_clear()
    settings = DetectorSettings(threshold=p["threshold"], min_interval_ms=p["min_interval_ms"],
                                lookahead_ms=p["lookahead_ms"])
    channels = 1 if clip.samples.ndim == 1 else clip.samples.shape[1]
    detector = OnsetDetector(clip.sample_rate, channels, settings, methods={"superflux": variant_row(p)})
    found = detector.process(clip.samples) + detector.flush()
    return clip.name, np.array([o.time for o in found])


ERRORS_MS: list[float] = []  # found minus reference of every matched onset of a combination, ms


def score(clip: Clip, found: F64) -> tuple[float, int, int, int]:
    """F, matched, found, reference counts (and each match's timing error into :data:`ERRORS_MS`)."""
    ref = clip.onsets_s
    if len(ref) == 0:
        return (1.0 if len(found) == 0 else 0.0), 0, len(found), 0
    if len(found) == 0:
        return 0.0, 0, 0, len(ref)
    pairs = mir_eval.util.match_events(ref, found, 0.05)
    ERRORS_MS.extend(1000.0 * (found[j] - ref[i]) for i, j in pairs)
    return float(mir_eval.onset.f_measure(ref, found, window=0.05)[0]), len(pairs), len(found), len(ref)


def cell(items: Sequence[tuple[float, int, int, int]]) -> str:
    m, n, r = (sum(i[k] for i in items) for k in (1, 2, 3))
    return f"{np.mean([i[0] for i in items]):.3f}/{m / max(n, 1):.2f}/{m / max(r, 1):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_clip_arguments(parser)
    parser.add_argument("--family", help="only corpus clips of this family")
    parser.add_argument("--no-stress", action="store_true", help="without the generated stress set")
    parser.add_argument("--stress-only", action="store_true", help="only the generated stress set")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--method", default="superflux", help="the served row varied (superflux_half)")
    for name, default, meaning in OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), default=default, help=meaning)
    args = parser.parse_args()
    global SERVED
    SERVED = METHOD_TABLE[args.method]
    clips: list[Clip] = [] if args.stress_only else clips_of(args)
    stress = [] if args.no_stress else stress_clips()
    clips += stress
    groups = [f for f in FAMILIES if any(c.group == f for c in clips)]
    groups += sorted({c.group for c in clips} - set(groups))
    stress_s = sum(c.duration_s for c in stress)
    print(f"{len(clips)} clips, {sum(c.duration_s for c in clips) / 60:.1f} min", flush=True)
    names = [name for name, _, _ in OPTIONS]
    print(" ".join(names) + " | " + " ".join(f"{g}(F/P/R)" for g in groups)
          + " | corpus F P R | stress F P R false/s | error median (p10 / p90)", flush=True)
    by_name = {c.name: c for c in clips}
    with multiprocessing.Pool(args.jobs) as pool:
        for values in itertools.product(*(floats(getattr(args, n)) for n in names)):
            p = dict(zip(names, values, strict=True))
            cells: dict[str, list[tuple[float, int, int, int]]] = {}
            ERRORS_MS.clear()
            for name, found in pool.imap_unordered(run_clip, [(c, p) for c in clips], chunksize=2):
                clip = by_name[name]
                cells.setdefault(clip.group, []).append(score(clip, found))
            corpus = [i for g in groups if not g.startswith("s_") for i in cells[g]]
            gen = [i for g in groups if g.startswith("s_") for i in cells[g]]
            false = sum(i[2] - i[1] for i in gen)
            line = " ".join(f"{v:g}" for v in values) + " | " + " ".join(cell(cells[g]) for g in groups)
            line += f" | {cell(corpus).replace('/', ' ') if corpus else '-'}"
            line += f" | {cell(gen).replace('/', ' ')} {false / max(stress_s, 1e-9):.3f}" if gen else ""
            p10, p50, p90 = np.percentile(ERRORS_MS, [10, 50, 90]) if ERRORS_MS else (np.nan,) * 3
            print(line + f" | error ms {p50:+.1f} ({p10:+.1f} / {p90:+.1f})", flush=True)


if __name__ == "__main__":
    main()
