"""Onset detection: pure spectral functions and one stateful streaming detector per stream.

>>> from server.dsp import OnsetDetector, DetectorSettings, Onset, detect_onsets, process_many
"""

from __future__ import annotations

import numpy.typing as npt

from server.dsp.batch import process_many
from server.dsp.detector import OnsetDetector
from server.dsp.onset import Onset
from server.dsp.settings import METHODS, DetectorSettings

__all__ = ["METHODS", "DetectorSettings", "Onset", "OnsetDetector", "detect_onsets", "process_many"]


def detect_onsets(
    samples: npt.ArrayLike, sample_rate: int, settings: DetectorSettings | None = None
) -> list[Onset]:
    """All onsets of a whole signal: one detector fed everything at once, then flushed.

    Parameters
    ----------
    samples : array_like, shape (n,) or (n, channels)
        float32/float64 in [-1, 1] or int16.
    sample_rate : int
        Samples per second.
    settings : DetectorSettings, optional

    Returns
    -------
    list of Onset
        In time order; identical to feeding the same samples in any block sizes.
    """
    import numpy as np

    array = np.asarray(samples)
    channels = 1 if array.ndim == 1 else int(array.shape[1])
    detector = OnsetDetector(sample_rate, channels, settings)
    return detector.process(array) + detector.flush()
