"""Peak-picking rules for the ``neural`` method, swept on stored detection functions (choose on ``tune``).

Usage::

    .venv/bin/python bench/neural_picker.py --split tune [--cache DIR] [--threshold 0.8,1,1.2]
        [--mask-ratio 0,0.3,0.5] [--mask-ms 100,200] [--min-interval-ms 30,50] [--pre-avg-ms 100,300]
    .venv/bin/python bench/neural_picker.py --split tune --after-hits      # where the unmatched onsets lie

The detection function of each clip is the served detector's own (streamed in 20 ms blocks, then the
padding :meth:`~server.dsp.OnsetDetector.flush` adds), computed once per weights file and cached. The picker
is then re-run in numpy for each rule: the detector's (:func:`server.dsp.peaks.pick_peaks`: maximum of the
last ``pre_max`` frames and the look-ahead, above ``mean_factor`` x the moving mean of the last ``pre_avg``
frames plus the threshold; sub-frame shift; minimum interval), plus a **forward mask**: a candidate must
also reach ``mask_ratio`` times the largest earlier detection-function value, each decayed by
``exp(-age / mask_ms)`` (:func:`server.dsp.peaks.mask_levels`, the detector's own). ``--check`` compares
the numpy picker with the detector's onsets for the served rule (the ``neural`` row at the default
settings; they must agree).

Mean F (±50 ms) over clips by family, as ``bench/learned.py``. Never run it on ``valid`` to choose.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from pathlib import Path  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import Clip  # noqa: E402
from learned import FAMILIES, corpus_clips, dev_clips  # noqa: E402

from server.dsp import (  # noqa: E402
    DetectorSettings,
    OnsetDetector,
    neural,
    nn,
)
from server.dsp import neural_features as nf  # noqa: E402
from server.dsp.methods import METHOD_TABLE, OnsetMethod  # noqa: E402
from server.dsp.opening import opening_is_attack  # noqa: E402
from server.dsp.peaks import PRE_AVG_S, mask_decay, mask_levels, merge_close, peak_shift  # noqa: E402
from server.dsp.plan import plan_for  # noqa: E402

F64 = npt.NDArray[np.float64]
BLOCK_MS = 20.0


def neural_row(weights: Path | None) -> OnsetMethod:
    """The ``neural`` row of the method table, serving ``weights`` instead of the committed file if given."""
    row = METHOD_TABLE["neural"]
    if weights is None:
        return row
    net = nn.load_net(str(weights))
    return dataclasses.replace(row, constants=functools.partial(neural.constants, net=net))


def odf_of(clip: Clip, settings: DetectorSettings, row: OnsetMethod) -> F64:
    """The detector's detection function of a streamed clip, one value per hop from the stream's start."""
    channels = 1 if clip.samples.ndim == 1 else clip.samples.shape[1]
    detector = OnsetDetector(clip.sample_rate, channels, settings, methods={"neural": row})
    grid = detector.plan.frames.grid
    block = max(1, round(BLOCK_MS / 1000 * clip.sample_rate))
    shape = (grid.frame_len + grid.hop, *clip.samples.shape[1:])
    samples = np.concatenate([clip.samples, np.zeros(shape, dtype=np.float32)])
    values = []
    for start in range(0, len(samples), block):
        detector.process(samples[start : start + block])
        values.append(detector.take_odf())
    return np.concatenate(values).astype(np.float64)


def frame_levels(clip: Clip, frames: int) -> F64:
    """Mean-square level of each frame of the network's grid (the detector's ``silence_db`` test)."""
    grid = nf.network_grid(clip.sample_rate)
    mono = np.concatenate([clip.mono(), np.zeros(grid.frame_len + grid.hop, dtype=np.float32)])
    power = nf.file_rows(clip.sample_rate, mono)[1].astype(np.float64)
    return np.concatenate([power, np.zeros(max(0, frames - len(power)))])[:frames]


def cached_odfs(clips: list[Clip], cache: Path, weights: Path | None = None) -> list[tuple[F64, F64]]:
    """Each clip's detection function (of ``weights``, the committed network if None) and frame levels,
    from ``cache`` (keyed by the weights file and clip) or computed."""
    path = neural.WEIGHTS_FILE if weights is None else weights
    tag = hashlib.sha1(path.read_bytes()).hexdigest()[:10] + f"-u{neural.UNIT:g}"
    row = neural_row(weights)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    settings = DetectorSettings(method="neural")
    for clip in clips:
        path = cache / f"{clip.name}.{tag}.npy"
        if not path.exists():
            np.save(path, odf_of(clip, settings, row))
        odf = np.load(path)
        out.append((odf, frame_levels(clip, len(odf))))
    return out


def sliding_max(values: F64, before: int, after: int) -> F64:
    """``max(values[i - before : i + after + 1])`` for every ``i`` (missing values count as -inf)."""
    padded = np.concatenate([np.full(before, -np.inf), values, np.full(after, -np.inf)])
    return np.lib.stride_tricks.sliding_window_view(padded, before + after + 1).max(axis=1)


def picked_times(
    clip: Clip,
    odf: F64,
    levels: F64,
    *,
    threshold: float,
    mean_factor: float,
    pre_avg: int,
    min_interval_s: float,
    mask_ratio: float,
    mask_ms: float,
) -> F64:
    """Onset times of the detector's picker on ``odf`` with a forward mask (``mask_ratio`` 0: none)."""
    settings = DetectorSettings(method="neural", threshold=threshold)
    plan = plan_for(clip.sample_rate, settings)
    hop = plan.frames.grid.hop
    padded = np.concatenate([np.zeros(max(plan.context, pre_avg)), odf])
    values = padded.tolist()
    lead = len(padded) - len(odf)
    is_max = padded >= sliding_max(padded, plan.pre_max, plan.lookahead)
    kernel = np.ones(pre_avg + 1) / (pre_avg + 1)
    mean = np.convolve(padded, kernel)[: len(padded)]
    loud = np.concatenate([np.zeros(lead), levels]) >= plan.min_power
    ok = is_max & loud & (padded >= threshold) & (padded > 0) & (padded >= mean_factor * mean + threshold)
    if mask_ratio > 0.0:
        decay = mask_decay(mask_ms / 1000.0 / (hop / clip.sample_rate))
        ok &= padded >= mask_ratio * np.array(mask_levels(values, 0, len(values), 0.0, decay)[:-1])
    ok[:lead] = False
    ok[len(padded) - plan.lookahead :] = False
    mono = clip.mono()
    if not opening_is_attack(mono[: plan.opening_len], clip.sample_rate, plan.silence_db):
        ok[: lead + plan.opening_frames] = False
    peaks = np.flatnonzero(ok)
    rate = clip.sample_rate
    times = [
        max(0, round((p - lead + 1 + peak_shift(values, int(p))) * hop - plan.attack_offset)) / rate
        for p in peaks
    ]
    end_s = len(mono) / clip.sample_rate
    kept, _ = merge_close(times, -np.inf, min_interval_s)
    return np.array([times[k] for k in kept if times[k] < end_s - 0.01])


def served() -> dict[str, float]:
    """The served rule: the ``neural`` row of the method table at the default settings."""
    row, settings = METHOD_TABLE["neural"], DetectorSettings(method="neural")
    return {
        "threshold": settings.threshold,
        "mean_factor": row.mean_factor,
        "pre_avg": round(PRE_AVG_S / nf.HOP_S),
        "min_interval_s": settings.min_interval_ms / 1000.0,
        "mask_ratio": row.mask_ratio,
        "mask_ms": row.mask_ms,
    }


def f_of(clip: Clip, found: F64) -> tuple[float, int, int]:
    """F, matched and found counts."""
    if len(clip.onsets_s) == 0:
        return (1.0 if len(found) == 0 else 0.0), 0, len(found)
    if len(found) == 0:
        return 0.0, 0, 0
    matched = len(mir_eval.util.match_events(clip.onsets_s, found, 0.05))
    return float(mir_eval.onset.f_measure(clip.onsets_s, found, window=0.05)[0]), matched, len(found)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def after_hits(clips: list[Clip], odfs: list[tuple[F64, F64]]) -> None:
    """Where the unmatched onsets of the served rule lie after the reference onset before them, and how
    strong they are against the detection function's peak at that reference onset."""
    lags, ratios, strengths, matched_strengths = [], [], [], []
    for clip, (odf, levels) in zip(clips, odfs, strict=True):
        found = picked_times(clip, odf, levels, **served())
        if len(found) == 0 or len(clip.onsets_s) == 0:
            continue
        pairs = mir_eval.util.match_events(clip.onsets_s, found, 0.05)
        matched = {est for _, est in pairs}
        frame_of = np.clip(np.round((found + 0.015) / 0.01).astype(int), 0, len(odf) - 1)
        for index, t in enumerate(found):
            strength = odf[max(0, frame_of[index] - 1) : frame_of[index] + 2].max()
            if index in matched:
                matched_strengths.append(strength)
                continue
            before = clip.onsets_s[clip.onsets_s <= t]
            if len(before) == 0:
                continue
            lags.append(1000 * (t - before[-1]))
            ref = int(np.round((before[-1] + 0.015) / 0.01))
            ref_peak = odf[max(0, ref - 1) : ref + 3].max()
            strengths.append(strength)
            ratios.append(strength / max(ref_peak, 1e-9))
    if not lags:
        print("no unmatched onsets after a reference onset")
        return
    q = (10, 25, 50, 75, 90)
    print(f"unmatched onsets after a reference onset: {len(lags)}")
    print("  lag ms (p10 p25 p50 p75 p90):", np.percentile(lags, q).round(0))
    print("  strength / the reference onset's peak:", np.percentile(ratios, q).round(2))
    print("  strength (ODF, unit 1):", np.percentile(strengths, q).round(2))
    print("  matched onsets' strength:", np.percentile(matched_strengths, q).round(2))


def add_clip_arguments(parser: argparse.ArgumentParser, cache: Path | None = None) -> None:
    """The pickers' options for their clips: the corpus and its split, or real annotated clips instead, and,
    for a script that caches the clips' detection functions, the folder (``cache`` by default)."""
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--split", default="tune")
    parser.add_argument("--data", type=Path, help="real annotated clips instead of the corpus")
    if cache is not None:
        parser.add_argument("--cache", type=Path, default=cache)


def clips_of(args: argparse.Namespace) -> list[Clip]:
    """The clips that :func:`add_clip_arguments`' options name, only those of ``args.family`` when a script
    has that option and it is given; a warning when they are the corpus's valid split, which is for
    reporting once, not for choosing."""
    if args.split == "valid" and args.data is None:
        print("warning: valid is for reporting once, not for choosing", file=sys.stderr)
    clips = dev_clips(args.data) if args.data else corpus_clips(args.corpus, args.split)
    family = getattr(args, "family", None)
    return [c for c in clips if c.group == family] if family else clips


def report_agreement(pairs: Iterable[tuple[Clip, F64, F64]]) -> None:
    """A picker's onset times against the detector's, clip by clip (``pairs``: the clip, the picker's times,
    the detector's): each clip whose counts differ, then how many clips agree in count and the largest time
    difference among them."""
    clips = differ = 0
    worst = 0.0
    for clip, ours, real in pairs:
        clips += 1
        if len(ours) != len(real):
            differ += 1
            print(f"{clip.name}: {len(ours)} numpy onsets, {len(real)} detector onsets")
            continue
        worst = max(worst, float(np.abs(ours - real).max(initial=0.0)))
    print(f"{clips - differ} of {clips} clips with as many onsets; "
          f"largest time difference there: {1000 * worst:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_clip_arguments(parser, Path("/tmp/neural_picker_cache"))
    parser.add_argument("--family", help="only this family")
    parser.add_argument("--weights", type=Path, help="a weights file to try instead of the committed one")
    parser.add_argument("--threshold", default="1")
    parser.add_argument("--mean-factor", default="1")
    parser.add_argument("--pre-avg-ms", default="100")
    parser.add_argument("--min-interval-ms", default="30")
    parser.add_argument("--mask-ratio", default="0")
    parser.add_argument("--mask-ms", default="100")
    parser.add_argument("--after-hits", action="store_true")
    parser.add_argument("--check", action="store_true", help="the numpy picker against the detector")
    args = parser.parse_args()
    clips = clips_of(args)
    odfs = cached_odfs(clips, args.cache, args.weights)
    print(f"{len(clips)} clips, {sum(c.duration_s for c in clips) / 60:.1f} min", flush=True)
    if args.check:
        from accuracy import streamed

        if args.weights is not None:
            parser.error("--check compares with the committed network")
        run = streamed(DetectorSettings(method="neural"), BLOCK_MS)
        report_agreement((clip, picked_times(clip, odf, levels, **served()), run(clip))
                         for clip, (odf, levels) in zip(clips, odfs, strict=True))
        return
    if args.after_hits:
        after_hits(clips, odfs)
        return
    groups = [f for f in FAMILIES if any(c.group == f for c in clips)]
    print("threshold mean_factor pre_avg_ms min_ms mask_ratio mask_ms | " + " ".join(groups) + " | all P R")
    grid = itertools.product(
        floats(args.threshold),
        floats(args.mean_factor),
        floats(args.pre_avg_ms),
        floats(args.min_interval_ms),
        floats(args.mask_ratio),
        floats(args.mask_ms),
    )
    for threshold, mean_factor, pre_avg_ms, min_ms, ratio, mask_ms in grid:
        if ratio == 0.0 and mask_ms != floats(args.mask_ms)[0]:
            continue
        by_family: dict[str, list[float]] = {}
        matched = found = refs = 0
        for clip, (odf, levels) in zip(clips, odfs, strict=True):
            times = picked_times(
                clip,
                odf,
                levels,
                threshold=threshold,
                mean_factor=mean_factor,
                pre_avg=round(pre_avg_ms / 10.0),
                min_interval_s=min_ms / 1000.0,
                mask_ratio=ratio,
                mask_ms=mask_ms,
            )
            f, m, n = f_of(clip, times)
            by_family.setdefault(clip.group, []).append(f)
            matched, found, refs = matched + m, found + n, refs + len(clip.onsets_s)
        means = [np.mean(by_family[g]) for g in groups]
        total = np.mean([f for values in by_family.values() for f in values])
        print(
            f"{threshold:9g} {mean_factor:11g} {pre_avg_ms:10g} {min_ms:6g} {ratio:10g} {mask_ms:7g} | "
            + " ".join(f"{m:.3f}" for m in means)
            + f" | {total:.4f} {matched / max(found, 1):.2f} {matched / max(refs, 1):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
