"""Where an attack lies inside the newest samples of a frame: the time of an onset decided without look-ahead.

With a look-ahead the peak frame's neighbours on both sides are in, and a parabola through the three
detection-function values places the onset within the frame (:func:`~server.dsp.peaks.peak_shift`).
Without one (``lookahead_ms`` 0) the frame after the peak is not in yet, and the frame's end alone dates
the onset only to within a hop: a click came out 0-9 ms early (``complex`` 3-12 ms). The frame's own
samples date it better: the attack is where the high-passed energy (first difference of the samples) of a
short block rises most above the blocks just before it. This uses the frame's samples only, so an onset's
time does not depend on how the stream was cut into blocks.

The same samples say where the attack's energy lies (:func:`attack_energies`): below ``LOW_HZ``, between
``LOW_HZ`` and ``HIGH_HZ``, above ``HIGH_HZ``. A rhythm beside the detector names an onset's drum band from
them as soon as the onset is decided (:mod:`server.rhythm.bands`), without waiting for later frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.signal
from numpy.lib.stride_tricks import as_strided

# lfilter's own routine (scipy.signal._sigtools, private): lfilter(b, a, x) of a recursive filter without
# initial conditions returns _linear_filter(b, a, x, -1) after checks that cost as much as the filtering of
# an onset's frame. Without it (another scipy), lfilter itself.
try:
    from scipy.signal._sigtools import _linear_filter

    _LINEAR_FILTER: Any = _linear_filter
except ImportError:  # pragma: no cover - another scipy
    _LINEAR_FILTER = None
_add_reduce = np.add.reduce  # what ndarray.sum and np.mean sum with

F32 = npt.NDArray[np.float32]

BLOCK_S = 0.001  # energy blocks, seconds
PAST_S = 0.005  # a block's rise is measured against the mean of this much audio before it, seconds
FLOOR = 1e-20  # added to every block's energy: digital silence before an attack is a finite rise
LOW_HZ = 200.0  # the low filter's corner and the middle band's lower edge (chosen on rhythm-dev)
HIGH_HZ = 8000.0  # the middle band's upper edge and the high filter's corner

Coefficients = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (b, a) of scipy.signal.lfilter
AttackFilters = tuple[Coefficients, Coefficients, Coefficients]


def locate_attack(window: F32, first: int, stop: int, block: int, past_blocks: int) -> int:
    """The attack's position in ``window`` (one frame's samples): the centre of the block of ``block``
    samples, among the blocks that tile ``[first, stop)`` back from ``stop``, whose energy of the first
    difference rises most over the mean of the ``past_blocks`` blocks before it (the first such block on a
    tie).

    The region is shrunk from its start so that the blocks and their past fit in ``window``; with no whole
    block left, ``stop`` is returned.

    Parameters
    ----------
    window : ndarray of float32
        The frame's samples, oldest first (not windowed).
    first, stop : int
        Where the attack is sought, sample indices into ``window``.
    block, past_blocks : int
        Block length, samples (at least 1), and how many blocks before a block it is compared with.
    """
    stop = min(stop, len(window))
    past_blocks = max(1, past_blocks)
    block = max(1, block)
    candidates = (stop - max(first, 1 + past_blocks * block)) // block  # sample 0 only feeds the difference
    if candidates <= 0:
        return stop
    total = candidates + past_blocks
    start = stop - total * block
    # np.diff, ndarray.sum and sliding_window_view's operations without their Python wrappers (the same
    # ufunc calls on the same views: the same values; about half the time of an onset's location)
    samples = window[start - 1 : stop].astype(np.float64)
    rise = samples[1:] - samples[:-1]
    energy = _add_reduce(np.square(rise).reshape(total, block), axis=1) + FLOOR
    before = energy[:-1]
    step = before.strides[0]
    past = _add_reduce(as_strided(before, (total - past_blocks, past_blocks), (step, step)), axis=1)
    best = int(np.argmax(energy[past_blocks:] / past))
    return start + (past_blocks + best) * block + block // 2


def attack_filters(sample_rate: int) -> AttackFilters:
    """Coefficients ``(b, a)`` of :func:`attack_energies`' filters at ``sample_rate`` Hz: 2nd-order
    Butterworth low-pass at ``LOW_HZ``, band-pass ``LOW_HZ``-``HIGH_HZ`` and high-pass at ``HIGH_HZ``
    (where ``HIGH_HZ`` is above 0.95 of the Nyquist frequency the band-pass ends there and the high filter
    passes nothing: a high band that cannot hold energy)."""
    top_hz = min(HIGH_HZ, 0.95 * sample_rate / 2.0)
    low = scipy.signal.butter(2, LOW_HZ, "lowpass", fs=sample_rate)
    mid = scipy.signal.butter(2, [LOW_HZ, top_hz], "bandpass", fs=sample_rate)
    if top_hz == HIGH_HZ:
        high = scipy.signal.butter(2, HIGH_HZ, "highpass", fs=sample_rate)
    else:
        high = (np.zeros(1), np.ones(1))
    return (low[0], low[1]), (mid[0], mid[1]), (high[0], high[1])


def attack_energies(window: F32, at: int, filters: AttackFilters) -> tuple[float, float, float]:
    """Mean square per sample of ``window`` (one frame's samples, oldest first) through each of ``filters``
    (:func:`attack_filters`), from sample ``at`` (the attack, :func:`locate_attack`) to the window's end.

    The filters start from rest at the window's first sample, so the result depends on the frame's samples
    alone, not on how the stream was cut.
    """
    samples = window.astype(np.float64)
    at = min(max(at, 0), len(samples) - 1)
    count = len(samples) - at
    low, mid, high = (float(_add_reduce(np.square(_filtered(b, a, samples)[at:])) / count)
                      for b, a in filters)
    return low, mid, high


def _filtered(b: npt.NDArray[np.float64], a: npt.NDArray[np.float64],
              samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``scipy.signal.lfilter(b, a, samples)`` for float64 ``samples`` of one dimension: for a recursive
    filter the routine it calls, without its checks (a third of an onset's attack energies)."""
    if _LINEAR_FILTER is None or len(a) == 1:
        return np.asarray(scipy.signal.lfilter(b, a, samples), dtype=np.float64)
    return np.asarray(_LINEAR_FILTER(b, a, samples, -1), dtype=np.float64)
