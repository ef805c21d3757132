"""Peak picking on an onset detection function: pure helpers, causal apart from a bounded look-ahead."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PRE_MAX_S = 0.03  # a peak must be the maximum of the last 30 ms (SuperFlux's pre_max)
PRE_AVG_S = 0.10  # the adaptive threshold is the mean of the last 100 ms (SuperFlux's pre_avg)


def pick_peaks(
    odf: F64,
    power: npt.NDArray[np.floating[Any]],
    *,
    first: int,
    pre_max: int,
    lookahead: int,
    pre_avg: int,
    delta: float,
    min_power: float,
    mean_factor: float = 1.0,
) -> I64:
    """Indices of frames that are onset candidates.

    Frame ``i`` (``first <= i < len(odf) - lookahead``) is a candidate when
    ``odf[i] == max(odf[i - pre_max : i + lookahead + 1])``,
    ``odf[i] >= mean_factor * mean(odf[i - pre_avg : i + 1]) + delta``, ``odf[i] > 0`` and
    ``power[i] >= min_power``. Each decision uses only that window of values, so it does not depend on
    how the ODF was split into blocks.

    Parameters
    ----------
    odf : ndarray, shape (n,), float64
        Detection function, oldest first; pad the end with ``-inf`` to decide the last frames of a stream.
    power : ndarray, shape (n,)
        Frame mean-square levels, linear (``10 * log10(power)`` is dBFS).
    first : int
        First index to decide; needs ``first >= max(pre_max, pre_avg)``.
    pre_max, lookahead, pre_avg : int
        Window lengths, frames.
    delta : float
        Margin above the moving mean, ODF units.
    mean_factor : float
        Multiplier of the moving mean.
    min_power : float
        Minimum frame power, linear.

    Returns
    -------
    ndarray of int64
        Candidate indices into ``odf``, ascending.
    """
    stop = len(odf) - lookahead
    if stop <= first:
        return np.zeros(0, dtype=np.int64)
    if first < max(pre_max, pre_avg):
        raise ValueError(f"first={first} leaves too little past context")
    values = odf[first:stop]
    if not np.any(values >= delta):  # the ODF is never negative, so no frame below delta can pass
        return np.zeros(0, dtype=np.int64)
    maxima = odf[first - pre_max : stop - pre_max].copy()
    for shift in range(1 - pre_max, lookahead + 1):
        np.maximum(maxima, odf[first + shift : stop + shift], out=maxima)
    # Summed shift by shift (not a reduction numpy may reorder), so each mean is bitwise reproducible.
    sums = np.zeros(stop - first, dtype=np.float64)
    for shift in range(pre_avg + 1):
        sums += odf[first - shift : stop - shift]
    means = sums / (pre_avg + 1)
    loud = power[first:stop] >= min_power
    keep = (values >= maxima) & (values >= mean_factor * means + delta) & (values > 0) & loud
    return np.flatnonzero(keep).astype(np.int64) + first


def merge_close(times_s: list[float], last_s: float, min_interval_s: float) -> tuple[list[int], float]:
    """Drop onsets closer than ``min_interval_s`` to the previous kept one.

    Parameters
    ----------
    times_s : list of float
        Candidate times in ascending order, seconds.
    last_s : float
        Time of the last onset already reported, seconds (``-inf`` if none).
    min_interval_s : float
        Minimum gap, seconds.

    Returns
    -------
    kept : list of int
        Positions in ``times_s`` that survive.
    last_s : float
        Time of the last kept onset.
    """
    kept: list[int] = []
    for index, time_s in enumerate(times_s):
        if time_s - last_s >= min_interval_s:
            kept.append(index)
            last_s = time_s
    return kept, last_s
