"""Settings of the beat tracker: one frozen, validated dataclass, every field with its unit."""

from __future__ import annotations

import dataclasses

from server.dsp.settings import check_ranges
from server.exceptions import SettingsError

# name -> (low, high) inclusive ranges, in the field's own unit.
RANGES: dict[str, tuple[float, float]] = {
    "frame_s": (0.004, 0.05),
    "min_bpm": (20.0, 300.0),
    "max_bpm": (30.0, 400.0),
    "change_lambda": (1.0, 1000.0),
    "prior_bpm": (30.0, 300.0),
    "prior_octaves": (0.05, 10.0),
    "prior_weight": (0.0, 20.0),
    "beat_width": (0.0, 0.5),
    "jump": (0.0, 1.0),
    "norm_s": (0.1, 60.0),
    "reference": (0.1, 100.0),
    "floor": (1e-6, 10.0),
    "sharpness": (0.0, 4.0),
    "cap": (1.0, 100.0),
    "activity": (0.0, 1000.0),
    "hold_s": (0.0, 60.0),
    "reset_s": (0.0, 600.0),
    "min_confidence": (0.0, 1.0),
}


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    """How :class:`~server.rhythm.tracker.BeatTracker` turns onset strength into beats.

    Attributes
    ----------
    frame_s : float
        Frame period of the tracker's grid, seconds; the input is reduced to it by taking the maximum of
        each run of input values (10 ms input and 20 ms frames: pairs).
    min_bpm, max_bpm : float
        Tempo range, beats per minute.
    change_lambda : float
        Tempo-change steepness, dimensionless: an interval ``s`` is followed by ``t`` with the density
        ``exp(-change_lambda * |t / s - 1|)``, integrated over the frames of both
        (:func:`~server.rhythm.statespace.change_probabilities`).
    prior_bpm, prior_octaves : float
        Log-Gaussian tempo prior: centre, BPM, and standard deviation, octaves.
    prior_weight : float
        Exponent of the prior paid at every beat, 0–20: a tempo twice as fast pays it twice as often.
    beat_width : float
        Fraction of the beat interval around each beat whose states (other than the beat's own) take the
        square root of a frame's likelihood ratio: timing slack that does not punish silence around a click.
    jump : float
        Probability weight, at each beat, of a jump to any tempo (drawn from the prior), beside the local
        change: how the tracker reaches a new tempo far from the old one.
    norm_s : float
        Time constant of the exponential moving mean of the onset strength, seconds.
    reference : float
        Onset strength is divided by ``reference`` times its moving mean: a frame that reaches this is as
        likely on a beat as off it, a weaker one (an off-beat hat) counts against a beat there.
    floor : float
        Likelihood ratio of a beat state where the normalised strength is 0 is ``floor / (1 + floor)``
        (before ``sharpness``); dimensionless.
    sharpness : float
        Exponent of the likelihood ratio, dimensionless.
    cap : float
        Normalised strength above this counts as this.
    activity : float
        Onset strength (the detector's unit) that counts as sound for the silence gate.
    hold_s : float
        No beat is reported when nothing reached ``activity`` for this long, seconds.
    reset_s : float
        After this long without ``activity``, seconds, the tracker forgets tempo and phase.
    min_confidence : float
        A beat is reported only when the tracker's confidence reaches this, 0–1.
    """

    frame_s: float = 0.02
    min_bpm: float = 55.0
    max_bpm: float = 215.0
    change_lambda: float = 700.0
    prior_bpm: float = 120.0
    prior_octaves: float = 1.0
    prior_weight: float = 3.0
    beat_width: float = 0.12
    jump: float = 1e-6
    norm_s: float = 3.0
    reference: float = 1.0
    floor: float = 0.1
    sharpness: float = 2.0
    cap: float = 50.0
    activity: float = 1.0
    hold_s: float = 1.5
    reset_s: float = 3.0
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        check_ranges(self, RANGES)
        if self.min_bpm >= self.max_bpm:
            raise SettingsError("min_bpm", self.min_bpm, f"must be below max_bpm ({self.max_bpm:g})")
