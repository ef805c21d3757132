"""Per-onset drum band: where an onset's attack is strongest, low (kick-like), mid (snare-like) or high
(hat-like).

The evidence is the rise of the low, mid and high band groups around the onset, per frame
(:func:`server.rhythm.features.group_sums`): the largest of each group's summed rise over the frames from
one hop before the onset's frame to ``SPAN_FRAMES`` after it, times a per-group weight (a hat's energy is
small against a drum's), decides. Each group's score is first divided by its running mean over the
stream's past onsets to the power ``NORM_POWER`` (:class:`OnsetBands`): where the attack is strongest
relative to each band's typical level, so a kit whose hats are quiet against its kick still gets "high"
for its hat attacks. Weights, power and the groups' edges were chosen on rhythm-dev (bench/README.md).

Without look-ahead (``lookahead_ms`` 0, the default) the detector decides an onset before the frame centred
on its attack is in. The band then comes from what is in at that moment (:func:`attack_scores`): the
energy of the attack's own samples below 200 Hz, from 200 Hz to 8 kHz and above 8 kHz
(:class:`~server.dsp.onset.AttackEvidence`), each times the decision frame's group rise to the power
``FRAME_POWER``; normalised by their own running means the same way. So the onset is sent with its band
in the block it is decided in (chosen on rhythm-dev with bench/band_decision.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from server.rhythm.features import BAND_NAMES

# Frames after the onset's own frame (the one centred on its attack) whose rise counts. 0: the band is known
# as soon as the detector (10 ms look-ahead) reports the onset. 1-3 made an onset wait 10-30 ms longer for
# the same rhythm-dev figures (bench/README.md).
SPAN_FRAMES = 0
WEIGHTS = (1.0, 1.0, 2.0)  # low, mid, high
NORM_POWER = 0.8  # scores are divided by their running mean to this power
NORM_ONSETS = 32.0  # time constant of the running mean, onsets
FRAME_POWER = 0.25  # weight of the decision frame's group rise beside the attack's energies
RISE_FLOOR = 1e-9  # added to the rise: a frame without any rise still lets the energies decide


def peak_scores(sums: Sequence[float], frame: int, weights: tuple[float, float, float]) -> list[float]:
    """Weighted peak rise of each group, low, mid and high, from one frame before the onset's to
    ``SPAN_FRAMES`` after it, in plain Python (a handful of values: cheaper than numpy calls).

    Parameters
    ----------
    sums : sequence of float
        Group rises (:func:`~server.rhythm.features.group_sums`, non-negative), low, mid and high of each
        frame after those of the frame before.
    frame : int
        The onset's frame (its values are ``sums[3 * frame : 3 * frame + 3]``); frames outside count as no
        rise.
    weights : (float, float, float)
    """
    best = [0.0, 0.0, 0.0]
    start, stop = 3 * max(frame - 1, 0), 3 * max(frame + SPAN_FRAMES + 1, 0)
    for group in range(3):
        values = sums[start + group : stop : 3]
        if values:
            best[group] = max(best[group], max(values))
    return [best[0] * weights[0], best[1] * weights[1], best[2] * weights[2]]


def attack_scores(sums: Sequence[float], frame: int, energies: tuple[float, float, float]) -> list[float]:
    """Scores, low, mid and high, of an onset decided at ``frame`` without look-ahead: its attack's
    ``energies`` (:class:`~server.dsp.onset.AttackEvidence`), each times the group's peak rise over that
    frame and the one before (:func:`peak_scores`, unweighted) to the power ``FRAME_POWER``."""
    rises = peak_scores(sums, frame, (1.0, 1.0, 1.0))
    return [energy * (rise + RISE_FLOOR) ** FRAME_POWER for energy, rise in zip(energies, rises, strict=True)]


def strongest(scores: list[float]) -> str:
    """Band name of one onset's (normalised) scores, low, mid and high: the group with the largest."""
    return BAND_NAMES[scores.index(max(scores))]


class OnsetBands:
    """Per-stream band classifier: keeps the running mean of each group's score over past onsets."""

    def __init__(self) -> None:
        self._means = [0.0, 0.0, 0.0]
        self._count = 0

    def classify_rows(self, scores: list[list[float]]) -> list[str]:
        """Band names of onsets in time order, given their :func:`peak_scores`; updates the running means."""
        names = []
        for row in scores:
            self._count += 1
            rate = max(1.0 / NORM_ONSETS, 1.0 / self._count)
            means = self._means = [m + rate * (v - m) for m, v in zip(self._means, row, strict=True)]
            normed = [v / m**NORM_POWER if m > 0.0 else v for v, m in zip(row, means, strict=True)]
            names.append(strongest(normed))
        return names

    def __getstate__(self) -> tuple[list[float], int]:
        return (list(self._means), self._count)

    def __setstate__(self, state: tuple[list[float], int]) -> None:
        self._means = [float(m) for m in state[0]]
        self._count = state[1]
