"""Can an onset's drum band be decided when the detector decides the onset, without look-ahead?

    .venv/bin/python bench/band_decision.py [--data DIR] [--waits-ms 5 10 12 15] [--heldout] [--json PATH]

Today an onset with ``beats`` on waits for its band: the rise of the frame centred on its attack
(:mod:`server.rhythm.bands`), which ends about 20 ms after the attack, so with ``lookahead_ms`` 0 it still
comes a chunk later (bench/README.md, "Branch `latency`", and "Branch `band0`"). This measures band
evidence that uses only what is there when the detector decides the onset at look-ahead 0: the frame it
was decided at (the first whose newest hop holds the attack, or the one after) and the frames before it,
and the attack's own samples up to that frame's end (the attack located as :mod:`server.dsp.attack` does).

The detector (``lookahead_ms`` 0, defaults otherwise) is fed one hop per block, so the end of the block an
onset comes out of is its decision time (the same onsets as any other cut). Each evidence gives three
scores per onset, low / mid / high, named by :class:`server.rhythm.bands.OnsetBands` (running mean over the
stream's onsets, power 0.8, as served). Evidence (a table of callables, ``EVIDENCE``):

- ``wait (today)``: the served rule, the group rises of the frame centred on the attack and the one before
  (:func:`server.rhythm.bands.peak_scores`); waits for that frame.
- ``wait, 6 ms later``: the same, from the frame centred ``LATER_S`` after the attack (at look-ahead 0 the
  attack is placed from the frame's samples, earlier than the 10 ms look-ahead's parabola places it).
- ``decision frame``: the same rule at the decision frame (the one of the reverted ``Onset.decided_s``).
- ``attack samples``: the energy per sample from the attack to the decision frame's end of the frame's own
  samples through a 2nd-order Butterworth low-pass at ``LOW_HZ``, band-pass ``LOW_HZ``-``HIGH_HZ`` and
  high-pass at ``HIGH_HZ`` (started at the frame's first sample, so cut-independent), times the decision
  frame's group rise to the power ``FRAME_POWER``.
- ``attack samples, X ms``: the same at the first frame ending at least X ms after the attack (the decision
  frame if later): what waiting for X ms of the attack would give, and the mean wait it costs.

When each onset could be sent with its band: the audio time from each annotated hit (kick, snare, hi-hat;
with an onset within 50 ms) to the end of the 20 ms chunk (counted from the stream's start) that holds the
frame its nearest onset's band is decided at, for each evidence and for the served rule at the default
10 ms look-ahead (analysed the same way), p50 / p90: the algorithm's share of the latency, without the
server's.

Also the kick's separability: the area under the ROC curve of each onset's running-normalised low
evidence for "a kick is annotated within 50 ms" on rhythm-dev, by how much audio after the attack the
decision frame holds.

Scores: ``mir_eval.onset.f_measure`` (±50 ms) of each band's onsets against the annotated kick, snare and
hi-hat hits (bench/rhythm.py's band_f), mean over files. Corpora: rhythm-dev and bench/rhythm.py's
generated kits (seeds 100-112), both tuned on; ``--heldout``: its 12 kits never tuned on (seeds 300-311).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.signal as signal  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rhythm as rhythm_bench  # noqa: E402

from server.dsp import DetectorSettings, OnsetDetector  # noqa: E402
from server.rhythm.bands import WEIGHTS, OnsetBands, peak_scores  # noqa: E402
from server.rhythm.features import grid_for, rise_totals  # noqa: E402

LOW_HZ = 200.0  # the low-pass's corner and the band-pass's lower edge (chosen on the tuned corpora)
HIGH_HZ = 8000.0  # the band-pass's upper edge and the high-pass's corner
FRAME_POWER = 0.25  # weight of the decision frame's group rise beside the attack's samples
KICK_WINDOW_S = 0.05  # "a kick is annotated within 50 ms" (the band score's window)
LENGTH_BINS_MS = (0.0, 6.0, 9.0, 12.0, 15.0, 1000.0)
LATER_S = 0.006  # at look-ahead 0 the located attack lies ~6 ms before the 10 ms look-ahead's onset time
DEFAULT_LOOKAHEAD_MS = 10.0  # the detector's default, for the comparison of when an onset could be sent
CHUNK_S = 0.02  # a live client's chunk (capacity_per_core.py's), for the time an onset could be sent


@dataclasses.dataclass
class FileData:
    """One file analysed at look-ahead 0: its audio, the detector's filterbank rows (frame k ends at
    ``(k + 1) * hop`` samples), each onset's time and decision time (seconds), and the annotated hits."""

    name: str
    audio: np.ndarray
    rate: int
    rows: np.ndarray
    times: np.ndarray
    decided: np.ndarray
    hits: dict[str, np.ndarray]

    @functools.cached_property
    def grid(self) -> tuple[int, int]:
        grid, _, _ = grid_for(self.rate)
        return grid.hop, grid.frame_len

    @functools.cached_property
    def sums(self) -> list[float]:
        """Group rises (low, mid, high) of every frame, flat, as a live rhythm session keeps them."""
        _, _, groups = grid_for(self.rate)
        stacked = np.concatenate((np.zeros((1, self.rows.shape[1]), dtype=np.float32), self.rows))
        return [float(v) for v in rise_totals(stacked, groups)[1].reshape(-1)]

    def centred_frame(self, i: int, later_s: float = 0.0) -> int:
        """The frame centred on onset ``i``'s attack (the served band's), or on ``later_s`` after it."""
        hop, frame_len = self.grid
        return round(((self.times[i] + later_s) * self.rate - (hop - frame_len / 2)) / hop)

    def decision_frame(self, i: int) -> int:
        hop, _ = self.grid
        return round(self.decided[i] * self.rate / hop) - 1

    def frame_after(self, i: int, wait_s: float) -> int:
        """The first frame ending at least ``wait_s`` after onset ``i``'s attack, or its decision frame."""
        hop, _ = self.grid
        return max(self.decision_frame(i), int(np.ceil((self.times[i] + wait_s) * self.rate / hop)) - 1)

    def post_attack_s(self, i: int) -> float:
        """Audio after the attack in the decision frame, seconds."""
        return float(self.decided[i] - self.times[i])


def analyse(case: Any, lookahead_ms: float = 0.0) -> FileData:
    """Onsets at ``lookahead_ms``, fed one hop per block: an onset's decision time is its block's end."""
    audio, rate = sf.read(case.path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32)
    detector = OnsetDetector(rate, 1, DetectorSettings(lookahead_ms=lookahead_ms))
    detector.tap_rows()
    hop = grid_for(rate)[0].hop
    times, decided, rows = [], [], []
    for start in range(0, len(mono), hop):
        for onset in detector.process(mono[start : start + hop]):
            times.append(onset.time)
            decided.append(min(start + hop, len(mono)) / rate)
        detector.take_odf()
        rows += detector.take_rows()
    for onset in detector.flush():
        times.append(onset.time)
        decided.append(len(mono) / rate)
    return FileData(case.name, mono, rate, np.concatenate(rows), np.array(times), np.array(decided),
                    case.hits)


@functools.lru_cache(maxsize=8)
def filters(rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second-order sections of the low-pass, band-pass and high-pass at ``rate``."""
    return (signal.butter(2, LOW_HZ, "lowpass", fs=rate, output="sos"),
            signal.butter(2, [LOW_HZ, HIGH_HZ], "bandpass", fs=rate, output="sos"),
            signal.butter(2, HIGH_HZ, "highpass", fs=rate, output="sos"))


def attack_energies(data: FileData, i: int, frame: int) -> np.ndarray:
    """Energy per sample of each filter's output from onset ``i``'s attack to the end of ``frame``, the
    filters run over that frame's samples only."""
    hop, frame_len = data.grid
    end = (frame + 1) * hop
    start = max(0, end - frame_len)
    window = data.audio[start:end].astype(np.float64)
    at = min(max(round(data.times[i] * data.rate) - start, 0), len(window) - 1)
    return np.array([np.mean(np.square(signal.sosfilt(sos, window)[at:])) for sos in filters(data.rate)])


def frame_rule(data: FileData, frame: int) -> np.ndarray:
    """The served evidence (:func:`~server.rhythm.bands.peak_scores`) with ``frame`` as the onset's."""
    return np.array(peak_scores(data.sums, frame, WEIGHTS))


def samples_rule(data: FileData, i: int, frame: int) -> np.ndarray:
    rise = np.array(peak_scores(data.sums, frame, (1.0, 1.0, 1.0)))
    return attack_energies(data, i, frame) * (rise + 1e-9) ** FRAME_POWER


Evidence = Callable[[FileData, int], tuple[np.ndarray, int]]  # scores, and the frame decided at


def waiting(later_s: float) -> Evidence:
    """The served rule at the frame centred ``later_s`` after the attack (decided once that frame is in)."""
    def evidence(d: FileData, i: int) -> tuple[np.ndarray, int]:
        frame = d.centred_frame(i, later_s)
        return frame_rule(d, frame), max(frame, d.decision_frame(i))
    return evidence


def evidence_table(waits_ms: list[float]) -> dict[str, Evidence]:
    table: dict[str, Evidence] = {
        "wait (today)": waiting(0.0),
        f"wait, {1000 * LATER_S:g} ms later": waiting(LATER_S),
        "decision frame": lambda d, i: (frame_rule(d, min(d.centred_frame(i), d.decision_frame(i))),
                                        d.decision_frame(i)),
        "attack samples": lambda d, i: (samples_rule(d, i, d.decision_frame(i)), d.decision_frame(i)),
    }
    for wait in waits_ms:
        def waited(d: FileData, i: int, wait_s: float = wait / 1000) -> tuple[np.ndarray, int]:
            frame = d.frame_after(i, wait_s)
            return samples_rule(d, i, frame), frame
        table[f"attack samples, {wait:g} ms"] = waited
    return table


def score(files: list[FileData], evidence: Evidence
          ) -> tuple[dict[str, float], float, list[float], list[list[int]]]:
    """Mean band F over ``files``, the mean wait after the decision frame (ms), and each onset's audio time
    from its attack to the end of the ``CHUNK_S`` chunk (counted from the stream's start) that holds the
    end of the frame its band is decided at (ms): when a stream sending such chunks could have it; and
    each file's frames the bands are decided at."""
    per: dict[str, list[float]] = {}
    waits, latencies, frames = [], [], []
    for data in files:
        rows, names = [], []
        frames.append([])
        chunk = round(CHUNK_S * data.rate)
        for i in range(len(data.times)):
            scores, frame = evidence(data, i)
            rows.append([float(v) for v in scores])
            frames[-1].append(frame)
            waits.append((frame - data.decision_frame(i)) * data.grid[0] / data.rate * 1000)
            end = (frame + 1) * data.grid[0]
            latencies.append(1000 * (-(-end // chunk) * chunk / data.rate - data.times[i]))
        names = OnsetBands().classify_rows(rows) if rows else []
        result = {"onsets": data.times, "bands": np.array(names)}
        for band, value in rhythm_bench.band_f(result, data.hits).items():
            per.setdefault(band, []).append(value)
    bands = {band: float(np.mean(v)) for band, v in per.items()}
    return bands, float(np.mean(waits)) if waits else 0.0, latencies, frames


def hit_delays(files: list[FileData], frames: list[list[int]]) -> list[float]:
    """For each annotated hit (kick, snare, hi-hat) with an onset within ``KICK_WINDOW_S``, the audio time
    from the hit to the end of the ``CHUNK_S`` chunk that holds the end of the frame its nearest onset's
    band is decided at, ms: the same reference whatever the look-ahead."""
    out = []
    for data, decided in zip(files, frames, strict=True):
        if not len(data.times):
            continue
        chunk, hop = round(CHUNK_S * data.rate), data.grid[0]
        for hits in data.hits.values():
            for hit in hits:
                i = int(np.argmin(np.abs(data.times - hit)))
                if abs(data.times[i] - hit) <= KICK_WINDOW_S:
                    end = (decided[i] + 1) * hop
                    out.append(1000 * (-(-end // chunk) * chunk / data.rate - hit))
    return out


def auc(positive: np.ndarray, values: np.ndarray) -> float:
    """Area under the ROC curve of ``values`` for ``positive`` (Mann-Whitney, ties counted half)."""
    pos, neg = values[positive], values[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def normalised(values: list[float]) -> np.ndarray:
    """Each value over the running mean (``OnsetBands``' time constant) of the values up to it."""
    mean, out = 0.0, []
    for count, value in enumerate(values, 1):
        mean += max(1 / 32.0, 1 / count) * (value - mean)
        out.append(value / mean if mean > 0 else 0.0)
    return np.array(out)


def kick_separability(files: list[FileData]) -> list[dict[str, Any]]:
    """AUC of the low evidence for "a kick within 50 ms", by the audio after the attack at decision."""
    kick, length, low_now, low_wait = [], [], [], []
    for data in files:
        hits = data.hits.get("KD", np.zeros(0))
        for i in range(len(data.times)):
            kick.append(bool(len(hits)) and float(np.min(np.abs(hits - data.times[i]))) <= KICK_WINDOW_S)
            length.append(1000 * data.post_attack_s(i))
        low_now += list(normalised([attack_energies(data, i, data.decision_frame(i))[0]
                                    for i in range(len(data.times))]))
        low_wait += list(normalised([peak_scores(data.sums, data.centred_frame(i), WEIGHTS)[0]
                                     for i in range(len(data.times))]))
    k, n, a, b = np.array(kick), np.array(length), np.array(low_now), np.array(low_wait)
    out = []
    for lo, hi in [(LENGTH_BINS_MS[0], LENGTH_BINS_MS[-1]), *itertools.pairwise(LENGTH_BINS_MS)]:
        m = (n >= lo) & (n < hi)
        out.append({"from_ms": lo, "to_ms": hi, "onsets": int(m.sum()), "kicks": int(k[m].sum()),
                    "auc_attack_samples": auc(k[m], a[m]), "auc_centred_frame": auc(k[m], b[m])})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data",
                        default=os.environ.get("TRANSIENT_RHYTHM_DEV", str(rhythm_bench.DEFAULT_DATA)))
    parser.add_argument("--waits-ms", type=float, nargs="*", default=[5.0, 10.0, 12.0, 15.0])
    parser.add_argument("--heldout", action="store_true",
                        help="also the 12 generated kits never tuned on (seeds 300-311): score them once")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = [("rhythm-dev (tuned on)", rhythm_bench.load_dev(args.data)),
                   ("generated (tuned on)", rhythm_bench.generated_cases(tmp))]
        if args.heldout:
            corpora.append(("generated, never tuned on", rhythm_bench.heldout_cases(tmp)))
        analysed = {corpus: [analyse(case) for case in cases] for corpus, cases in corpora}
        default = {corpus: [analyse(case, DEFAULT_LOOKAHEAD_MS) for case in cases]
                   for corpus, cases in corpora}
    table = evidence_table(args.waits_ms)
    for corpus, files in analysed.items():
        lengths = np.array([1000 * d.post_attack_s(i) for d in files for i in range(len(d.times))])
        print(f"\n## {corpus}: {len(files)} files, {len(lengths)} onsets at look-ahead 0; audio after the "
              f"attack at decision p10 / p50 / p90 {np.percentile(lengths, 10):.1f} / "
              f"{np.percentile(lengths, 50):.1f} / {np.percentile(lengths, 90):.1f} ms")
        print(f"{'evidence':28s} {'low':>6s} {'mid':>6s} {'high':>6s}  mean wait after the decision frame; "
              f"attack -> end of its band's {1000 * CHUNK_S:g} ms chunk p50 / p90")
        rows = {}
        delays: dict[str, list[float]] = {}
        for name, evidence in table.items():
            bands, wait, latency, frames = score(files, evidence)
            delays[name] = hit_delays(files, frames)
            p50, p90 = np.percentile(latency, 50), np.percentile(latency, 90)
            rows[name] = {"bands": bands, "wait_ms": wait, "chunk_end_p50_ms": p50, "chunk_end_p90_ms": p90}
            scores = " ".join(f"{bands.get(b, float('nan')):6.3f}" for b in ("low", "mid", "high"))
            print(f"{name:28s} {scores}  {wait:5.1f} ms; {p50:5.1f} / {p90:5.1f} ms")
        served = score(default[corpus], waiting(0.0))
        name = f"served at look-ahead {DEFAULT_LOOKAHEAD_MS:g} ms (the default)"
        delays[name] = hit_delays(default[corpus], served[3])
        scores = " / ".join(f"{served[0].get(b, float('nan')):.3f}" for b in ("low", "mid", "high"))
        print(f"annotated hit -> end of the {1000 * CHUNK_S:g} ms chunk holding its onset's band frame, "
              f"p50 / p90 (bands at look-ahead {DEFAULT_LOOKAHEAD_MS:g} ms, served: {scores})")
        for name, values in delays.items():
            print(f"  {name:44s} {np.percentile(values, 50):5.1f} / {np.percentile(values, 90):5.1f} ms "
                  f"({len(values)} hits)")
        report[corpus] = {"bands": rows, "hit_to_chunk_end_ms": {
            name: {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)), "hits": len(v)}
            for name, v in delays.items()}}
        if corpus.startswith("rhythm-dev"):
            report[corpus]["kick_auc"] = sep = kick_separability(files)
            print("kick within 50 ms: AUC of the running-normalised low evidence, by audio after the attack "
                  "at decision")
            for row in sep:
                print(f"  {row['from_ms']:4.0f}-{row['to_ms']:<4.0f} ms  {row['onsets']:4d} onsets "
                      f"({row['kicks']:3d} kicks)  attack samples {row['auc_attack_samples']:.3f}  "
                      f"frame centred on the attack (waiting) {row['auc_centred_frame']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
