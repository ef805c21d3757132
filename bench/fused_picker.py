"""Weights, gate and peak-picking rule of the ``fused`` method, swept on stored detection functions.

Usage::

    .venv/bin/python bench/fused_picker.py --split tune [--combine sum,geo] [--weight 0.3,0.5,0.7]
        [--gate-db 0,40,50] [--threshold 0.8,1,1.2] [--mean-factor 1,1.25] [--baseline mean,median]
        [--mask-ratio 0,0.6] [--mask-ms 1000]

Each clip's two detection functions are the served detectors' own, streamed in 20 ms blocks with the
padding :meth:`~server.dsp.OnsetDetector.flush` adds: ``neural`` (cached as ``bench/neural_picker.py``
does) and ``superflux`` at the same grid (40 ms frames, 10 ms hops), whose tapped log-filterbank rows also
give each frame's loudest band and so the level gate's reference (the loudest band over the last
``FLOOR_WINDOW_S``, :func:`server.dsp.odf.compression_floors`). Both are in threshold units (1 = a clear
onset). They are combined frame by frame:

- ``sum``: ``weight * neural + (1 - weight) * superflux``;
- ``geo``: ``neural ** weight * superflux ** (1 - weight)``;
- ``sumclip``: ``sum`` with superflux no larger than the network's largest value (activation 1);
- ``max``: ``max(weight * neural, (1 - weight) * superflux) * 2``;

SuperFlux's term here is the ``superflux`` method's own (``fused.HOLD_DB`` 0); ``bench/pitched_picker.py``
sweeps the held reference ``fused`` serves, and checks the served rule.

with the neural part set to 0 where the frame's loudest band is more than ``gate_db`` below the recent
loudest (0: no gate). The detector's picker (as ``bench/neural_picker.py``, with the median or mean
baseline) then runs on the result. Mean F (±50 ms) over clips by family, pooled precision and recall.
Never run it on ``valid`` to choose.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import Clip  # noqa: E402
from learned import FAMILIES  # noqa: E402
from neural_picker import (  # noqa: E402
    BLOCK_MS,
    add_clip_arguments,
    cached_odfs,
    clips_of,
    f_of,
    floats,
    report_agreement,
    sliding_max,
)

from server.dsp import DetectorSettings, OnsetDetector, fused  # noqa: E402
from server.dsp.neural import UNIT as NEURAL_UNIT  # noqa: E402
from server.dsp.opening import opening_is_attack  # noqa: E402
from server.dsp.peaks import mask_decay, mask_levels, merge_close, peak_shift  # noqa: E402
from server.dsp.plan import plan_for  # noqa: E402

F64 = npt.NDArray[np.float64]
PRE_MAX: int | None = None  # the picker's pre_max, frames, instead of the plan's (bench/pitched_picker.py)


def superflux_of(clip: Clip) -> tuple[F64, F64]:
    """The ``superflux`` detector's detection function of a streamed clip and each frame's loudest band."""
    channels = 1 if clip.samples.ndim == 1 else clip.samples.shape[1]
    detector = OnsetDetector(clip.sample_rate, channels, DetectorSettings(method="superflux"))
    detector.tap_rows()
    grid = detector.plan.frames.grid
    block = max(1, round(BLOCK_MS / 1000 * clip.sample_rate))
    shape = (grid.frame_len + grid.hop, *clip.samples.shape[1:])
    samples = np.concatenate([clip.samples, np.zeros(shape, dtype=np.float32)])
    values, peaks = [], []
    for start in range(0, len(samples), block):
        detector.process(samples[start : start + block])
        values.append(detector.take_odf())
        peaks += [rows.max(axis=1) for rows in detector.take_rows()]
    return np.concatenate(values).astype(np.float64), np.concatenate(peaks).astype(np.float64)


def cached_superflux(clips: list[Clip], cache: Path) -> list[tuple[F64, F64]]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for clip in clips:
        path = cache / f"{clip.name}.superflux-peaks.npz"
        if not path.exists():
            odf, peaks = superflux_of(clip)
            np.savez(path, odf=odf, peaks=peaks)
        data = np.load(path)
        out.append((data["odf"], data["peaks"]))
    return out


def gate_open(peaks: F64, gate_db: float, width: int) -> npt.NDArray[np.bool_]:
    """Frames whose loudest band is within ``gate_db`` of the loudest over the last ``width`` frames."""
    if gate_db <= 0.0:
        return np.ones(len(peaks), dtype=bool)
    recent = sliding_max(peaks, width, 0)
    return peaks >= recent * 10.0 ** (-gate_db / 20.0)


def combine(kind: str, weight: float, neural: F64, superflux: F64) -> F64:
    if kind == "sum":
        return weight * neural + (1.0 - weight) * superflux
    if kind == "geo":
        return np.power(neural, weight) * np.power(superflux, 1.0 - weight)
    if kind == "sumclip":  # superflux no larger than the network's largest value (activation 1)
        return weight * neural + (1.0 - weight) * np.minimum(superflux, 1.0 / NEURAL_UNIT)
    if kind == "max":
        return 2.0 * np.maximum(weight * neural, (1.0 - weight) * superflux)
    raise ValueError(kind)


def sliding_median(values: F64, before: int) -> F64:
    padded = np.concatenate([np.zeros(before), values])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, before + 1), axis=1)


def picked(clip: Clip, odf: F64, levels: F64, *, threshold: float, mean_factor: float, baseline: str,
           mask_ratio: float, mask_ms: float, pre_avg: int = 10, min_interval_s: float = 0.03) -> F64:
    """Onset times of the detector's picker on ``odf`` (``neural_picker.picked_times``, either baseline)."""
    plan = plan_for(clip.sample_rate, DetectorSettings(method="neural", threshold=threshold))
    hop = plan.frames.grid.hop
    lead = max(plan.context, pre_avg)
    padded = np.concatenate([np.zeros(lead), odf])
    values = padded.tolist()
    is_max = padded >= sliding_max(padded, plan.pre_max if PRE_MAX is None else PRE_MAX, plan.lookahead)
    if baseline == "mean":
        base = np.convolve(padded, np.ones(pre_avg + 1) / (pre_avg + 1))[: len(padded)]
    else:
        base = sliding_median(padded, pre_avg)
    loud = np.concatenate([np.zeros(lead), levels]) >= plan.min_power
    ok = is_max & loud & (padded >= threshold) & (padded > 0) & (padded >= mean_factor * base + threshold)
    if mask_ratio > 0.0:
        decay = mask_decay(mask_ms / 1000.0 / (hop / clip.sample_rate))
        ok &= padded >= mask_ratio * np.array(mask_levels(values, 0, len(values), 0.0, decay)[:-1])
    ok[:lead] = False
    ok[len(padded) - plan.lookahead :] = False
    mono = clip.mono()
    if not opening_is_attack(mono[: plan.opening_len], clip.sample_rate, plan.silence_db):
        ok[: lead + plan.opening_frames] = False
    rate = clip.sample_rate
    times = [
        max(0, round((p - lead + 1 + peak_shift(values, int(p))) * hop - plan.attack_offset)) / rate
        for p in np.flatnonzero(ok)
    ]
    end_s = len(mono) / rate
    kept, _ = merge_close(times, -np.inf, min_interval_s)
    return np.array([times[k] for k in kept if times[k] < end_s - 0.01])


def served_times(clip: Clip, n_odf: F64, levels: F64, s_odf: F64, peaks: F64) -> F64:
    """Onsets of the served ``fused`` rule (``server/dsp/fused.py``'s constants) by this script's numpy,
    but for SuperFlux's held reference (``fused.HOLD_DB``: ``bench/pitched_picker.py --check`` has it)."""
    count = min(len(n_odf), len(s_odf))
    net = n_odf[:count] * gate_open(peaks[:count], fused.GATE_DB, 200)
    decay = mask_decay(fused.NET_MASK_MS / 10.0)
    net = net * (net >= fused.NET_MASK_RATIO * np.array(mask_levels(net.tolist(), 0, count, 0.0, decay)[:-1]))
    odf = combine("sum", fused.NEURAL_WEIGHT, net, s_odf[:count])
    return picked(clip, odf, levels[:count], threshold=fused.UNIT, mean_factor=fused.MEAN_FACTOR,
                  baseline=fused.BASELINE, mask_ratio=fused.MASK_RATIO, mask_ms=fused.MASK_MS)


def check(clips: list[Clip], neural: list[tuple[F64, F64]], superflux: list[tuple[F64, F64]]) -> None:
    """The served rule by this script against the ``fused`` detector's own onsets, clip by clip."""
    from accuracy import streamed

    if fused.HOLD_DB > 0.0:
        print("fused.HOLD_DB > 0: this script's SuperFlux term is the plain one; run bench/pitched_picker.py "
              "--check")
        return
    run = streamed(DetectorSettings(method="fused"), BLOCK_MS)
    report_agreement((clip, served_times(clip, n_odf, levels, s_odf, peaks), run(clip))
                     for clip, (n_odf, levels), (s_odf, peaks) in zip(clips, neural, superflux, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_clip_arguments(parser, Path("/tmp/neural_picker_cache"))
    parser.add_argument("--combine", default="sum")
    parser.add_argument("--weight", default="0.5")
    parser.add_argument("--gate-db", default="0")
    parser.add_argument("--net-mask", default="0", help="ratios of a forward mask on the network's term")
    parser.add_argument("--net-mask-ms", default="1000", help="its time constants")
    parser.add_argument("--threshold", default="1")
    parser.add_argument("--mean-factor", default="1")
    parser.add_argument("--baseline", default="mean")
    parser.add_argument("--mask-ratio", default="0")
    parser.add_argument("--mask-ms", default="1000")
    parser.add_argument("--check", action="store_true", help="the served rule against the detector")
    args = parser.parse_args()
    clips = clips_of(args)
    neural = cached_odfs(clips, args.cache)
    superflux = cached_superflux(clips, args.cache)
    print(f"{len(clips)} clips, {sum(c.duration_s for c in clips) / 60:.1f} min", flush=True)
    if args.check:
        check(clips, neural, superflux)
        return
    groups = [f for f in FAMILIES if any(c.group == f for c in clips)] or sorted({c.group for c in clips})
    print("combine weight gate_db net_mask net_ms threshold mean_factor baseline mask_ratio mask_ms | "
          + " ".join(groups) + " | all P R")
    for kind, weight, gate_db, net_mask, net_ms in itertools.product(
        args.combine.split(","), floats(args.weight), floats(args.gate_db), floats(args.net_mask),
        floats(args.net_mask_ms)
    ):
        combined = []
        decay = mask_decay(net_ms / 10.0)
        for (n_odf, levels), (s_odf, peaks) in zip(neural, superflux, strict=True):
            count = min(len(n_odf), len(s_odf))
            gate = gate_open(peaks[:count], gate_db, 200)
            net = n_odf[:count] * gate
            if net_mask > 0.0:
                net = net * (net >= net_mask * np.array(mask_levels(net.tolist(), 0, count, 0.0, decay)[:-1]))
            combined.append((combine(kind, weight, net, s_odf[:count]), levels[:count]))
        for threshold, mean_factor, baseline, ratio, mask_ms in itertools.product(
            floats(args.threshold), floats(args.mean_factor), args.baseline.split(","),
            floats(args.mask_ratio), floats(args.mask_ms)
        ):
            if ratio == 0.0 and mask_ms != floats(args.mask_ms)[0]:
                continue
            by_family: dict[str, list[float]] = {}
            matched = found = refs = 0
            for clip, (odf, levels) in zip(clips, combined, strict=True):
                times = picked(clip, odf, levels, threshold=threshold, mean_factor=mean_factor,
                               baseline=baseline, mask_ratio=ratio, mask_ms=mask_ms)
                f, m, n = f_of(clip, times)
                by_family.setdefault(clip.group, []).append(f)
                matched, found, refs = matched + m, found + n, refs + len(clip.onsets_s)
            means = [np.mean(by_family[g]) for g in groups]
            total = np.mean([f for values in by_family.values() for f in values])
            print(
                f"{kind:7} {weight:6g} {gate_db:7g} {net_mask:4g} {net_ms:5g} {threshold:9g} "
                f"{mean_factor:11g} {baseline:8} {ratio:10g} "
                f"{mask_ms:7g} | " + " ".join(f"{m:.3f}" for m in means)
                + f" | {total:.4f} {matched / max(found, 1):.2f} {matched / max(refs, 1):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
