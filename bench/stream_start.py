"""How often a stream that starts in the middle of a sound reports an onset before its first attack.

Usage::

    .venv/bin/python bench/stream_start.py [--cuts 40] [--seed 5]

Each generated signal (``testkit.signals``) is cut at ``--cuts`` random points that are not within 30 ms after
an annotated attack; the rest is analysed from the cut as a new stream by every method with default settings.
A cut counts as a false start when its first reported onset lies more than 50 ms before the first annotated
attack after the cut. Also prints whether a drum hit (kick, snare, hat, click) at the first sample and 5 ms in
is reported within 15 ms. Run against another checkout with ``PYTHONPATH=that/checkout``.
"""

from __future__ import annotations

import argparse

import numpy as np

from server.dsp import METHODS, DetectorSettings, detect_onsets
from testkit import signals

SR = 44100
WINDOW_S = 0.05


def false_starts(signal: signals.Signal, method: str, cuts_s: np.ndarray) -> tuple[int, int]:
    bad = count = 0
    for cut_s in cuts_s:
        since = cut_s - signal.onsets_s
        if np.any((since >= 0.0) & (since < 0.03)):
            continue
        later = signal.onsets_s[signal.onsets_s > cut_s]
        if not later.size:
            continue
        count += 1
        found = detect_onsets(signal.samples[round(cut_s * SR) :], SR, DetectorSettings(method=method))
        if found and found[0].time < later[0] - cut_s - WINDOW_S:
            bad += 1
    return bad, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=40, help="random cuts per signal")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    made = [
        signals.music_mix(SR, 8.0, seed=6),
        signals.music_mix(SR, 8.0, seed=12, rt60_s=0.4),
        signals.chords(SR, 6.0),
        signals.plucks(SR, 6.0),
    ]
    total_bad = total = 0
    for signal in made:
        cuts_s = rng.uniform(0.3, len(signal.samples) / SR - 0.5, args.cuts)
        for method in METHODS:
            bad, count = false_starts(signal, method, cuts_s)
            total_bad, total = total_bad + bad, total + count
            print(f"{signal.name:32} {method:10} {bad:3}/{count} false starts")
    print(f"all: {total_bad}/{total} cuts inside sounds give an onset before their first attack")
    for kind in ("kick", "snare", "hat", "click"):
        for lead_s in (0.0, 0.005):
            event = signals.click(SR) if kind == "click" else signals.drum(np.random.default_rng(3), SR, kind)
            samples = np.concatenate([np.zeros(round(lead_s * SR)), 0.8 * event, np.zeros(SR // 2)])
            reported = [
                m for m in METHODS
                if any(abs(o.time - lead_s) <= 0.015 for o in detect_onsets(samples.astype(np.float32), SR,
                                                                           DetectorSettings(method=m)))
            ]
            print(f"{kind} at {lead_s * 1000:g} ms reported by {len(reported)}/{len(METHODS)} methods")


if __name__ == "__main__":
    main()
