"""Peak picking on an onset detection function: pure helpers, causal apart from a bounded look-ahead.

A live stream brings a handful of new frames per block, so these work on plain Python lists of floats:
cheaper than numpy calls at that size, and every value goes through fixed IEEE operations in a fixed
order, so a decision never depends on how the stream was split into blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

PRE_MAX_S = 0.03  # a peak must be the maximum of the last 30 ms (SuperFlux's pre_max)
PRE_AVG_S = 0.10  # the adaptive threshold follows the last 100 ms (SuperFlux's pre_avg)

Baseline = Callable[[Sequence[float]], float]  # the ODF of the frame and its past -> the level it must clear


def window_mean(window: Sequence[float]) -> float:
    """Mean of ``window``, summed from the newest value back (a fixed order: bitwise reproducible)."""
    total = 0.0
    for value in reversed(window):
        total += value
    return total / len(window)


def window_median(window: Sequence[float]) -> float:
    """Median of ``window``: unlike the mean, one loud hit in the window does not raise it, so a soft
    attack soon after a loud one still stands out, while a steady level (noise, a sustained tone) is still
    followed (Bello et al., 2005, adaptive median thresholding)."""
    ordered = sorted(window)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])


# The statistic of the last PRE_AVG_S of the ODF that a method's adaptive threshold scales, by name (the
# method table's ``baseline``; docs/protocol.md, ``detector``).
BASELINES: Mapping[str, Baseline] = MappingProxyType({"mean": window_mean, "median": window_median})


def pick_peaks(
    odf: Sequence[float],
    power: Sequence[float],
    *,
    first: int,
    stop: int,
    pre_max: int,
    lookahead: int,
    pre_avg: int,
    threshold: float,
    min_power: float,
    mean_factor: float = 1.0,
    baseline: Baseline = window_mean,
    mask: Sequence[float] = (),
    rise_once: bool = False,
) -> list[int]:
    """Indices of frames that are onset candidates.

    Frame ``i`` (``first <= i < stop``) is a candidate when ``odf[i] == max(odf[i - pre_max : i +
    lookahead + 1])``, ``odf[i] >= mean_factor * baseline(odf[i - pre_avg : i + 1]) + threshold``,
    ``odf[i] > 0``, ``power[i] >= min_power`` and, with a ``mask``, ``odf[i] >= mask[i - first]``. A NaN
    anywhere in those windows rules the frame out.

    Parameters
    ----------
    odf : sequence of float
        Detection function, oldest first, never negative; pad the end with ``-inf`` to decide the last
        frames of a stream.
    power : sequence of float
        Frame mean-square levels, linear (``10 * log10(power)`` is dBFS).
    first, stop : int
        Frames to decide; needs ``first >= max(pre_max, pre_avg)`` and ``stop + lookahead <= len(odf)``.
    pre_max, lookahead, pre_avg : int
        Window lengths, frames.
    threshold : float
        Margin above the baseline, ODF units (the ``threshold`` setting).
    min_power : float
        Minimum frame power, linear.
    mean_factor : float
        Multiplier of the baseline.
    baseline : callable
        :func:`window_mean` (a moving mean) or :func:`window_median` (:data:`BASELINES`).
    mask : sequence of float
        What each frame from ``first`` on must also reach (a forward mask: ``mask_ratio`` times
        :func:`mask_levels`); empty for none.
    rise_once : bool
        Also rule out a frame whose previous frame is a candidate by the same tests (when its past is in
        ``odf``): it is the same rise. Without look-ahead (``lookahead`` 0) a rise that lasts several frames
        passes the maximum test at each of them, and one that lasts longer than the minimum interval would
        give two onsets; with a look-ahead the maximum test keeps only its top.

    Returns
    -------
    list of int
        Candidate indices into ``odf``, ascending.
    """
    if first < max(pre_max, pre_avg):
        raise ValueError(f"first={first} leaves too little past context")
    picked: list[int] = []
    context = max(pre_max, pre_avg)
    for i in range(first, stop):
        if not _candidate(odf, power, i, pre_max, lookahead, pre_avg, threshold, min_power, mean_factor,
                          baseline):
            continue
        if rise_once and i > context and _candidate(odf, power, i - 1, pre_max, lookahead, pre_avg, threshold,
                                                    min_power, mean_factor, baseline):
            continue
        if mask and not odf[i] >= mask[i - first]:
            continue
        picked.append(i)
    return picked


def mask_decay(decay_frames: float) -> float:
    """Per-frame factor of a forward mask that decays with time constant ``decay_frames``; 0 for none."""
    return math.exp(-1.0 / decay_frames) if decay_frames > 0.0 else 0.0


def mask_levels(odf: Sequence[float], first: int, stop: int, level: float, decay: float) -> list[float]:
    """The forward mask's level at frames ``first`` to ``stop`` (``stop - first + 1`` values).

    The level at frame ``i`` is ``max(odf[i - k] * decay ** k for k >= 1)``: every earlier value of the
    detection function, decayed by its age. It is carried from frame to frame, one step per frame in a fixed
    order (``level(i + 1) = decay * max(odf[i], level(i))``), so it never depends on the block sizes.

    A peak that must also reach ``mask_ratio`` times this level (:func:`pick_peaks`' ``mask``): after a
    strong onset, the ripples of its decay (ringing, a room, a compressor letting go) must be a large enough
    fraction of it, while a new hit of similar strength still passes at once.

    Parameters
    ----------
    odf : sequence of float
    first, stop : int
        Indices into ``odf``.
    level : float
        The level at ``first``.
    decay : float
        :func:`mask_decay`.
    """
    levels = [level]
    for value in odf[first:stop]:
        level = decay * (value if value > level else level)
        levels.append(level)
    return levels


def _candidate(odf: Sequence[float], power: Sequence[float], i: int, pre_max: int, lookahead: int,
               pre_avg: int, threshold: float, min_power: float, mean_factor: float,
               baseline: Baseline) -> bool:
    """Whether frame ``i`` passes :func:`pick_peaks`'s tests (without ``rise_once``)."""
    value = odf[i]
    # Baselines are never negative, so a value below the threshold cannot pass the baseline test.
    if not value >= threshold or not value > 0.0 or not power[i] >= min_power:
        return False
    if not all(other <= value for other in odf[i - pre_max : i + lookahead + 1]):
        return False
    return value >= mean_factor * baseline(odf[i - pre_avg : i + 1]) + threshold


def peak_shift(odf: Sequence[float], peak: int) -> float:
    """Sub-frame position of a peak by a parabola through it and its two neighbours, frames in [-0.5, 0.5].

    A neighbour that is missing or not finite (end of stream) gives 0.
    """
    if not 0 < peak < len(odf) - 1:
        return 0.0
    a, b, c = odf[peak - 1], odf[peak], odf[peak + 1]
    curvature = a - 2.0 * b + c
    if math.isfinite(a) and math.isfinite(c) and curvature < 0:
        return min(0.5, max(-0.5, 0.5 * (a - c) / curvature))
    return 0.0


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
