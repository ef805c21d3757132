"""Is the start of a stream an attack? A pure judgement of its first samples (the opening).

A detector assumes silence before a stream's first sample, so a stream that starts in the middle of a
sound (a reconnect, a file cut from a recording) would see a rise from that silence in its first frames
and report an onset at t ≈ 0. The opening counts as an attack, and that assumed silence is kept, when

- it rises from silence: its first ``EDGE_S`` are below ``silence_db`` or at least ``RISE_DB`` below its
  loudest ``EDGE_S``; or
- it starts with a percussive hit: its first ``HEAD_S`` are at least ``DECAY_DB`` louder than the
  stretch from ``BODY_START_S`` to ``OPENING_S``.

Otherwise the detector decides no onset in its first frames (those that see the assumed silence); their
detection function stays in the past of the next frames. See docs/protocol.md
("Start of stream").
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

OPENING_S = 0.1  # the opening judged, seconds
EDGE_S = 0.002  # the first stretch of the opening compared with its loudest stretch, seconds
RISE_DB = 20.0  # the first EDGE_S this far below the loudest: the audio rises from silence
HEAD_S = 0.01  # the head of a percussive hit, seconds
BODY_START_S = 0.04  # its body runs from here to OPENING_S, seconds
DECAY_DB = 3.0  # the head this much louder than the body: the stream starts on a hit


def level_db(samples: npt.NDArray[np.float32]) -> float:
    """Mean-square level of ``samples`` in dBFS (full-scale square 0 dB); ``-inf`` for none or silence."""
    if len(samples) == 0:
        return -math.inf
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    return 10.0 * math.log10(power) if power > 0.0 else -math.inf


def opening_is_attack(samples: npt.NDArray[np.float32], sample_rate: int, silence_db: float) -> bool:
    """Whether a stream that starts with ``samples`` starts at silence or on an attack.

    Parameters
    ----------
    samples : ndarray, shape (n,), float32
        The stream's first samples, mono: ``OPENING_S`` of them, fewer if the stream is shorter.
    sample_rate : int
        Samples per second.
    silence_db : float
        The detector's ``silence_db`` setting, dBFS.

    Returns
    -------
    bool
        True when the silence assumed before the stream may count (see the module's docstring).
    """
    edge = max(1, round(EDGE_S * sample_rate))
    first_db = level_db(samples[:edge])
    if first_db < silence_db:
        return True
    loudest_db = max(level_db(samples[start : start + edge]) for start in range(0, len(samples), edge))
    if first_db <= loudest_db - RISE_DB:
        return True
    head_db = level_db(samples[: round(HEAD_S * sample_rate)])
    body_db = level_db(samples[round(BODY_START_S * sample_rate) : round(OPENING_S * sample_rate)])
    return head_db >= body_db + DECAY_DB
