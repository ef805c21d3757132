"""Onset labels from the score: corrected by the measured offsets, inaudible notes dropped, merged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from train.corpus.score import Note

MERGE_S = 0.030  # onsets closer than this are one onset (as in ../shared/data/onsets-dev)
QUIET_BELOW_RMS_DB = 40.0  # without noise, a note whose peak is this far below the clip's RMS is dropped

# note -> (offset ms, or None if the note is silent on its own; peak dBFS)
Lookup = Callable[[Note], tuple[float | None, float]]


def merge(times_s: Sequence[float], window_s: float = MERGE_S) -> npt.NDArray[np.float64]:
    """Sorted onsets; one closer than ``window_s`` to the last kept onset is dropped (the earliest stays)."""
    out: list[float] = []
    last = -np.inf
    for t in sorted(times_s):
        if t - last >= window_s:
            out.append(t)
            last = t
    return np.array(out, dtype=np.float64)


def onset_labels(notes: Sequence[Note], lookup: Lookup, dry_rms_dbfs: float, noise_snr_db: float | None,
                 ) -> tuple[npt.NDArray[np.float64], int]:
    """Label times in seconds and the number of notes dropped as inaudible.

    A note is dropped when its isolated peak (measured per soundfont, program, key and velocity, at the same
    synth gain as the clip) lies below the clip's noise RMS (dry active RMS minus the SNR) or, without
    noise, more than ``QUIET_BELOW_RMS_DB`` below the clip's RMS, or when the note was silent on its own.
    """
    floor = dry_rms_dbfs - (noise_snr_db if noise_snr_db is not None else QUIET_BELOW_RMS_DB)
    times: list[float] = []
    dropped = 0
    for n in notes:
        offset_ms, peak_db = lookup(n)
        if offset_ms is None or peak_db < floor:
            dropped += 1
            continue
        times.append((n.onset_ms + offset_ms) / 1000.0)
    return merge(times), dropped
