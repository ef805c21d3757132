"""The detector's result type."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Onset:
    """One detected onset.

    Attributes
    ----------
    time : float
        Attack time, seconds since the stream's first sample (a whole number of samples over the rate).
    strength : float
        Peak value of the detection function, in units of the method's calibrated step (dimensionless;
        comparable with ``threshold``).
    attack : AttackEvidence or None
        Without look-ahead and with the row tap on (a rhythm beside the detector): where the attack's
        energy lies, from the samples of the frame the onset was decided at; else None. Not compared.
    """

    time: float
    strength: float
    attack: AttackEvidence | None = dataclasses.field(default=None, compare=False)

    def shifted(self, by_s: float) -> Onset:
        """The same onset on a timeline that starts ``by_s`` seconds later (its evidence's time too)."""
        attack = self.attack
        if attack is not None:
            attack = AttackEvidence(attack.decided_s - by_s, attack.energies)
        return Onset(self.time - by_s, self.strength, attack)


@dataclasses.dataclass(frozen=True)
class AttackEvidence:
    """What an onset decided without look-ahead tells of its attack's spectrum at once.

    Attributes
    ----------
    decided_s : float
        End of the frame the onset was decided at, seconds on the stream's timeline (that frame's index is
        ``round(decided_s / hop_s) - 1``).
    energies : (float, float, float)
        Mean square per sample from the attack to that frame's end below 200 Hz, from 200 Hz to 8 kHz and
        above 8 kHz (:func:`~server.dsp.attack.attack_energies`), full scale 1.
    """

    decided_s: float
    energies: tuple[float, float, float]
