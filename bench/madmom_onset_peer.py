"""madmom's three onset detectors as a bench peer, run by bench/accuracy.py in its own venv (never imported).

Usage: ``/work/madmom-venv/bin/python bench/madmom_onset_peer.py OUT.json FILE.wav ...`` writes one JSON
object: ``{path: {"superflux": [onset times, s], "online_rnn": [...], "cnn": [...],
"cpu_s": {detector: s}}}``.

Each detector is built from madmom's processors with the defaults its own program sets (read from
``SuperFlux -v``, ``OnsetDetectorLL -v`` and ``CNNOnsetDetector -v`` of madmom 0.17):

- ``superflux``: the ``SuperFlux`` program (offline): 200 fps, 2048-sample frames, 24 log bands per octave
  30 Hz–17 kHz, log10(1 + S), max filter over 3 bins, peak picking threshold 1.1, pre_avg 0.15 s,
  pre_max 0.01 s, post_max 0.05 s, combine 0.03 s; at the file's own sample rate.
- ``online_rnn``: the ``OnsetDetectorLL`` program (online, causal): ``RNNOnsetProcessor(online=True)``,
  frames placed as its ``single`` mode places them (``origin='online'``: each frame ends at its time), and
  ``OnsetPeakPickingProcessor(online=True, fps=100)`` with threshold 0.23, pre_max 0.01 s, combine 0.03 s.
- ``cnn``: the ``CNNOnsetDetector`` program (offline): ``CNNOnsetProcessor`` and
  ``OnsetPeakPickingProcessor(fps=100)`` with threshold 0.54, smooth 0.05 s, pre_max = post_max = 0.01 s,
  combine 0.03 s.

The networks take 44.1 kHz only; madmom would resample other rates through ffmpeg, which is not installed
here, so this script resamples them (``scipy.signal.resample_poly``, back to 16 bits) before the networks.
``cpu_s`` is ``time.process_time`` from the WAV path to the onsets (reading, resampling, detection), one
thread (the ensembles run their networks in turn, where the programs start two processes).
madmom's code and models are CC BY-NC-SA: compared against, never copied; see bench/README.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from math import gcd
from typing import Any

NETWORK_RATE_HZ = 44100


def detectors() -> dict[str, Callable[[str], Any]]:
    """Each detector as a function from a WAV path to onset times, seconds."""
    import numpy as np
    from madmom.audio.filters import LogarithmicFilterbank
    from madmom.features.onsets import (
        CNNOnsetProcessor,
        OnsetPeakPickingProcessor,
        RNNOnsetProcessor,
        SpectralOnsetProcessor,
    )
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    superflux = SpectralOnsetProcessor(
        onset_method="superflux", num_channels=1, norm=False, gain=0, frame_size=2048, fps=200,
        filterbank=LogarithmicFilterbank, num_bands=24, fmin=30, fmax=17000, norm_filters=False,
        log=np.log10, mul=1, add=1, diff_ratio=0.5, diff_frames=None, positive_diffs=True, diff_max_bins=3,
    )
    superflux_peaks = OnsetPeakPickingProcessor(
        threshold=1.1, pre_avg=0.15, post_avg=0, pre_max=0.01, post_max=0.05, combine=0.03, delay=0, fps=200
    )
    rnn = RNNOnsetProcessor(online=True, num_threads=1)
    cnn = CNNOnsetProcessor()

    def at_network_rate(path: str) -> Any:
        rate, samples = wavfile.read(path)
        if rate == NETWORK_RATE_HZ:
            return samples
        common = gcd(NETWORK_RATE_HZ, rate)
        resampled = resample_poly(samples.astype(np.float64), NETWORK_RATE_HZ // common, rate // common)
        return np.clip(np.round(resampled), -32768, 32767).astype(np.int16)

    def run_superflux(path: str) -> Any:
        return superflux_peaks(superflux(path))

    def run_online_rnn(path: str) -> Any:
        peaks = OnsetPeakPickingProcessor(
            threshold=0.23, pre_max=0.01, post_max=0, post_avg=0, combine=0.03, delay=0.0, online=True,
            fps=100,
        )
        return peaks(rnn(at_network_rate(path), origin="online"))

    def run_cnn(path: str) -> Any:
        peaks = OnsetPeakPickingProcessor(
            threshold=0.54, smooth=0.05, pre_max=0.01, post_max=0.01, combine=0.03, delay=0.0, fps=100
        )
        return peaks(cnn(at_network_rate(path)))

    return {"superflux": run_superflux, "online_rnn": run_online_rnn, "cnn": run_cnn}


def main(out_path: str, paths: list[str]) -> None:
    runners = detectors()
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        result: dict[str, Any] = {}
        cpu: dict[str, float] = {}
        for name, run in runners.items():
            start = time.process_time()
            onsets = run(path)
            cpu[name] = time.process_time() - start
            result[name] = [float(t) for t in onsets]
        result["cpu_s"] = cpu
        out[path] = result
    with open(out_path, "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
