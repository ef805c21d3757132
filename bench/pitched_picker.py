"""Precision of ``fused`` on sustained pitched material: variants of its two terms, swept on stored rows.

Usage::

    .venv/bin/python bench/pitched_picker.py --split tune [--hold 1,2,4] [--width 1,2] [--sf-gate 0,0.2]
        [--weight 0.4] [--net-mask 0.8] [--net-mask-ms 1000,2000] [--threshold 0.6,0.7]
        [--min-interval-ms 30,60] [--pre-avg-ms 100]

Each clip's ``neural`` detection function (the served detector's own, as ``bench/neural_picker.py``) and
the ``superflux`` detector's tapped log-filterbank rows on the same grid (40 ms frames, 10 ms hops) are
computed once and cached in ``--cache``. The ``superflux`` term is then rebuilt from the rows in numpy, as
:func:`server.dsp.odf.superflux_rise` does, with two variants of its reference:

- ``--hold K``: the reference of frame ``t`` is the largest of the (frequency max-filtered) rows ``t - 1``
  to ``t - K``, not row ``t - 1`` alone (1: the served term), each row older than ``t - 1`` lowered by
  ``--hold-db`` per hop of age: a band that only comes back to a level it had in the last hops (vibrato,
  tremolo, a bow's wobble) does not rise; ``--hold 0``: every earlier row so lowered (a decaying peak
  hold per band, one recursion);
- ``--width W``: the maximum filter across frequency spans ``2 W + 1`` bands (1: the served 3).

The network's term is gated by level and masked as ``fused`` does (``--gate-db``, ``--net-mask``,
``--net-mask-ms``) and, with ``--sf-gate G``, counts only in frames whose (variant) SuperFlux term reaches
``G`` (its own unit: 1 a clear onset): both must rise. Then ``weight * neural + (1 - weight) * superflux``
and the detector's picker (``bench/fused_picker.py``'s numpy, median baseline of ``--pre-avg-ms``, the
minimum interval ``--min-interval-ms``, the baseline's factor ``--mean-factor``, optionally a forward
mask on the sum, ``--mask-ratio`` and ``--mask-ms``). Mean F (±50 ms) by family with pooled precision
and recall. ``--hold 1 --width 1 --sf-gate 0`` and the served constants are the served ``fused`` rule.
Choose on ``--split tune`` only.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fused_picker  # noqa: E402
from corpus import Clip  # noqa: E402
from fused_picker import BLOCK_MS, gate_open, picked  # noqa: E402
from learned import FAMILIES  # noqa: E402
from neural_picker import (  # noqa: E402
    add_clip_arguments,
    cached_odfs,
    clips_of,
    f_of,
    floats,
    report_agreement,
    sliding_max,
)

from server.dsp import DetectorSettings, OnsetDetector, fused, odf  # noqa: E402
from server.dsp.peaks import mask_decay, mask_levels  # noqa: E402

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def superflux_rows(clip: Clip, method: str = "superflux") -> tuple[F64, F32]:
    """The ``superflux`` (or ``method``) detector's detection function of a streamed clip, tapped rows."""
    channels = 1 if clip.samples.ndim == 1 else clip.samples.shape[1]
    detector = OnsetDetector(clip.sample_rate, channels, DetectorSettings(method=method))
    detector.tap_rows()
    grid = detector.plan.frames.grid
    block = max(1, round(BLOCK_MS / 1000 * clip.sample_rate))
    shape = (grid.frame_len + grid.hop, *clip.samples.shape[1:])
    samples = np.concatenate([clip.samples, np.zeros(shape, dtype=np.float32)])
    values, rows = [], []
    for start in range(0, len(samples), block):
        detector.process(samples[start : start + block])
        values.append(detector.take_odf())
        rows += detector.take_rows()
    return np.concatenate(values).astype(np.float64), np.concatenate(rows)


def cached_rows(clips: list[Clip], cache: Path) -> list[tuple[F64, F32]]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for clip in clips:
        path = cache / f"{clip.name}.superflux-rows.npz"
        if not path.exists():
            values, rows = superflux_rows(clip)
            np.savez(path, odf=values, rows=rows)
        data = np.load(path)
        out.append((data["odf"], data["rows"]))
    return out


def wide_max(bands: F32, width: int) -> F32:
    """Maximum over each band and its ``width`` neighbours on either side."""
    out = bands.copy()
    for shift in range(1, width + 1):
        np.maximum(out[:, shift:], bands[:, :-shift], out=out[:, shift:])
        np.maximum(out[:, :-shift], bands[:, shift:], out=out[:, :-shift])
    return out


def superflux_term(rows: F32, hold: int, width: int, hold_db: float = 0.0, band_db: float = 0.0,
                   gain_cap_db: float = 0.0, active_db: float = 20.0) -> F64:
    """SuperFlux of ``rows`` against the largest of the ``hold`` previous max-filtered rows, in its unit,
    each row older than the last lowered by ``hold_db`` per extra hop; each band's rise counts only above
    ``band_db``."""
    floor = np.maximum(sliding_max(rows.max(axis=1).astype(np.float64), 200, 0) * 1e-3, 1e-6)
    filtered = wide_max(rows, width)
    if hold == 0:  # every earlier row, lowered by hold_db per hop of age: a recursion per band
        reference = np.zeros_like(filtered)
        level = np.zeros(rows.shape[1], dtype=np.float32)
        factor = np.float32(10.0 ** (-hold_db / 20.0))
        for t in range(1, len(filtered)):
            level = np.maximum(filtered[t - 1], level * factor)
            reference[t] = level
    else:
        padded = np.concatenate([np.zeros((hold, rows.shape[1]), dtype=np.float32), filtered])
        reference = padded[hold - 1 : -1].copy()
        for k in range(2, hold + 1):
            older = padded[hold - k : len(padded) - k] * np.float32(10.0 ** (-hold_db * (k - 1) / 20.0))
            np.maximum(reference, older, out=reference)
    floor32 = floor.astype(np.float32)[:, None]
    if band_db > 0.0:  # log10((floor + row) / ((floor + reference) * k)): the rise less band_db
        reference = (floor32 + reference) * np.float32(10.0 ** (band_db / 20.0)) - floor32
    if gain_cap_db > 0.0:  # less the common rise of the bands that were already sounding, at most the cap
        change = np.log10((floor32 + rows) / (floor32 + reference))
        active = reference >= floor32 * np.float32(10.0 ** (active_db / 20.0))
        masked = np.where(active, change, np.nan)
        enough = active.sum(axis=1) >= 8
        common = np.zeros(len(rows), dtype=np.float32)
        if enough.any():
            common[enough] = np.nanmedian(masked[enough], axis=1)
        common = np.clip(common, 0.0, gain_cap_db / 20.0)[:, None]
        return np.maximum(change - common, 0.0).sum(axis=1, dtype=np.float64) / (
            rows.shape[1] * fused.SUPERFLUX_UNIT)
    rise = odf.log_rise(rows, reference, floor32)
    return rise.sum(axis=1, dtype=np.float64) / (rise.shape[1] * fused.SUPERFLUX_UNIT)


# Options swept: name, default, meaning (each takes comma-separated values; every combination is scored).
OPTIONS = (
    ("hold", f"{0 if fused.HOLD_DB > 0 else 1}", "SuperFlux's reference: the last K rows (0: every row)"),
    ("width", "1", "its max filter across frequency: 2 W + 1 bands"),
    ("hold_db", f"{fused.HOLD_DB:g}", "older reference rows lowered by this, dB per hop of age"),
    ("band_db", "0", "each band's rise counts only above this, dB"),
    ("gain_cap_db", "0", "less the common rise of the sounding bands, at most this, dB"),
    ("active_db", "20", "sounding: this far above the compression floor, dB"),
    ("sf_gate", "0", "the network's term counts only where SuperFlux's reaches this"),
    ("sf_mask", "0", "ratio of a forward mask on SuperFlux's term"),
    ("sf_mask_ms", "500", "its time constant, ms"),
    ("weight", f"{fused.NEURAL_WEIGHT:g}", "the network's share of the sum"),
    ("gate_db", f"{fused.GATE_DB:g}", "the network's level gate, dB (0: none)"),
    ("net_mask", f"{fused.NET_MASK_RATIO:g}", "ratio of the network term's forward mask"),
    ("net_mask_ms", f"{fused.NET_MASK_MS:g}", "its time constant, ms"),
    ("pre_max_ms", "30", "a peak is the largest of this long a past, ms"),
    ("threshold", f"{fused.UNIT:g}", "the sum's margin over the baseline (the method's unit)"),
    ("min_interval_ms", "30", "the minimum interval, ms"),
    ("pre_avg_ms", "100", "the baseline's window, ms"),
    ("mean_factor", f"{fused.MEAN_FACTOR:g}", "the baseline's factor"),
    ("mask_ratio", f"{fused.MASK_RATIO:g}", "a forward mask on the sum (0: none)"),
    ("mask_ms", f"{fused.MASK_MS:g}", "its time constant, ms"),
)
TERM = ("hold", "width", "hold_db", "band_db", "gain_cap_db", "active_db")
SUM = (*TERM, "sf_gate", "sf_mask", "sf_mask_ms", "weight", "gate_db", "net_mask", "net_mask_ms")


def fused_odf(n_odf: F64, rows: F32, flux: F64, p: dict[str, float], soft_gate: bool = False) -> F64:
    """The fused detection function of one clip from the network's and the (variant) SuperFlux terms."""
    count = min(len(n_odf), len(flux))
    net = n_odf[:count] * gate_open(rows[:count].max(axis=1).astype(np.float64), p["gate_db"], 200)
    if p["net_mask"] > 0.0:
        levels = mask_levels(net.tolist(), 0, count, 0.0, mask_decay(p["net_mask_ms"] / 10.0))[:-1]
        net = net * (net >= p["net_mask"] * np.array(levels))
    flux = flux[:count]
    if p["sf_gate"] > 0.0:
        net = net * (np.minimum(1.0, flux / p["sf_gate"]) if soft_gate else flux >= p["sf_gate"])
    if p["sf_mask"] > 0.0:
        levels = mask_levels(flux.tolist(), 0, count, 0.0, mask_decay(p["sf_mask_ms"] / 10.0))[:-1]
        flux = flux * (flux >= p["sf_mask"] * np.array(levels))
    return np.asarray(p["weight"] * net + (1.0 - p["weight"]) * flux)


def times_of(clip: Clip, values: F64, levels: F64, p: dict[str, float]) -> F64:
    fused_picker.PRE_MAX = round(p["pre_max_ms"] / 10)
    return picked(clip, values, levels[: len(values)], threshold=p["threshold"], mean_factor=p["mean_factor"],
                  baseline=fused.BASELINE, mask_ratio=p["mask_ratio"], mask_ms=p["mask_ms"],
                  pre_avg=round(p["pre_avg_ms"] / 10), min_interval_s=p["min_interval_ms"] / 1000)


def term_of(rows: F32, p: dict[str, float]) -> F64:
    return superflux_term(rows, int(p["hold"]), int(p["width"]), p["hold_db"], p["band_db"],
                          p["gain_cap_db"], p["active_db"])


def check(clips: list[Clip], neural: list[tuple[F64, F64]], superflux: list[tuple[F64, F32]]) -> None:
    """The served rule (the defaults, ``server/dsp/fused.py``'s constants) by this script's numpy against
    the ``fused`` detector's own detection function and onsets, clip by clip."""
    from accuracy import streamed

    served = {name: float(default) for name, default, _ in OPTIONS}
    run = streamed(DetectorSettings(method="fused"), BLOCK_MS)
    gaps: list[F64] = []

    def pairs() -> Iterator[tuple[Clip, F64, F64]]:
        for clip, (n_odf, levels), (_, rows) in zip(clips, neural, superflux, strict=True):
            values = fused_odf(n_odf, rows, term_of(rows, served), served)
            detector = superflux_rows(clip, "fused")[0] * fused.UNIT
            count = min(len(values), len(detector))
            gaps.append(np.abs(values[:count] - detector[:count]))
            yield clip, times_of(clip, values, levels, served), run(clip)

    report_agreement(pairs())
    every = np.concatenate(gaps) if gaps else np.zeros(0)
    print(f"detection function (sum units): {int((every > 1e-4).sum())} of {len(every)} frames more than "
          f"1e-4 apart (a term at a gate's or mask's edge in float32 against float64), largest "
          f"{float(every.max(initial=0.0)):.2e}")

def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_clip_arguments(parser, Path("/tmp/pitched_picker_cache"))
    parser.add_argument("--family", help="only clips of this family")
    parser.add_argument("--soft-gate", action="store_true", help="scale the network by min(1, sf / sf_gate)")
    parser.add_argument("--check", action="store_true", help="the served rule against the detector")
    for name, default, meaning in OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), default=default, help=meaning)
    args = parser.parse_args()
    clips = clips_of(args)
    neural = cached_odfs(clips, args.cache)
    superflux = cached_rows(clips, args.cache)
    print(f"{len(clips)} clips, {sum(c.duration_s for c in clips) / 60:.1f} min", flush=True)
    if args.check:
        check(clips, neural, superflux)
        return
    groups = [f for f in FAMILIES if any(c.group == f for c in clips)] or sorted({c.group for c in clips})
    names = [name for name, _, _ in OPTIONS]
    print(" ".join(names) + " | " + " ".join(f"{g}(F/P/R)" for g in groups) + " | all F P R")
    terms: dict[tuple[float, ...], list[F64]] = {}
    sums: dict[tuple[float, ...], list[F64]] = {}
    for values in itertools.product(*(floats(getattr(args, name)) for name in names)):
        p = dict(zip(names, values, strict=True))
        term_key, sum_key = tuple(p[k] for k in TERM), tuple(p[k] for k in SUM)
        if term_key not in terms:
            terms[term_key] = [term_of(rows, p) for _, rows in superflux]
        if sum_key not in sums:
            sums.clear()
            sums[sum_key] = [fused_odf(n_odf, rows, flux, p, args.soft_gate)
                             for (n_odf, _), (_, rows), flux in zip(neural, superflux, terms[term_key],
                                                                   strict=True)]
        cells: dict[str, list[tuple[float, int, int, int]]] = {}
        for clip, (_, levels), odf_values in zip(clips, neural, sums[sum_key], strict=True):
            f, m, n = f_of(clip, times_of(clip, odf_values, levels, p))
            cells.setdefault(clip.group, []).append((f, m, n, len(clip.onsets_s)))

        def cell(items: list[tuple[float, int, int, int]]) -> str:
            m, n, r = (sum(i[k] for i in items) for k in (1, 2, 3))
            return f"{np.mean([i[0] for i in items]):.3f}/{m / max(n, 1):.2f}/{m / max(r, 1):.2f}"

        every = [i for g in groups for i in cells[g]]
        print(" ".join(f"{v:g}" for v in values) + " | " + " ".join(cell(cells[g]) for g in groups)
              + f" | {cell(every).replace('/', ' ')}", flush=True)


if __name__ == "__main__":
    main()
