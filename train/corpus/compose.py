"""Seeded composition of one clip per family: rhythms, pitches, dynamics, articulation and expression."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from train.corpus import instruments as gm
from train.corpus.score import Control, Part, Score

Rng = np.random.Generator

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "chromatic": tuple(range(12)),
}
DYNAMICS = {"pp": 30, "p": 48, "mp": 64, "mf": 80, "f": 98, "ff": 118}  # MIDI velocity per marking


def _scale_pitches(rng: Rng, low: int, high: int) -> list[int]:
    name = str(rng.choice(list(SCALES), p=[0.3, 0.3, 0.2, 0.15, 0.05]))
    root = int(rng.integers(0, 12))
    return [p for p in range(low, high + 1) if (p - root) % 12 in SCALES[name]]


def _velocity_curve(rng: Rng, duration_ms: int) -> Callable[[float], float]:
    """Base velocity over time: a steady marking or a crescendo/diminuendo between two."""
    a = float(rng.choice(list(DYNAMICS.values())))
    b = a if rng.random() < 0.6 else float(rng.choice(list(DYNAMICS.values())))
    return lambda t_ms: a + (b - a) * t_ms / duration_ms


def _rhythm(rng: Rng, start_ms: float, end_ms: float, beat_ms: float, sub: int, rest_p: float,
            steps: Sequence[int] = (1, 1, 1, 2, 2, 3, 4)) -> list[tuple[float, float]]:
    """Onset times and inter-onset intervals on a grid of ``beat_ms / sub``."""
    step_ms = beat_ms / sub
    out: list[tuple[float, float]] = []
    t = start_ms
    while t < end_ms:
        ioi = step_ms * int(rng.choice(steps))
        if rng.random() >= rest_p:
            out.append((t, ioi))
        t += ioi
    return out


def _articulation(rng: Rng, sustained: bool) -> tuple[str, float, float]:
    """(name, min, max) of note length over inter-onset interval."""
    options = [("legato", 1.05, 1.6), ("normal", 0.7, 0.95), ("staccato", 0.15, 0.45)]
    p = [0.45, 0.35, 0.2] if sustained else [0.25, 0.45, 0.3]
    i = int(rng.choice(3, p=p))
    return options[i]


def _subdivision(rng: Rng, beat_ms: float, dense: bool) -> int:
    subs = [s for s in (1, 2, 3, 4, 6) if beat_ms / s >= (65 if dense else 110)]
    return int(rng.choice(subs or [1]))


def _add_expression(rng: Rng, score: Score, part: Part, onsets_ms: list[float]) -> None:
    """Vibrato (pitch-wheel LFO, or the modulation wheel) and soft attacks (an expression swell per note)."""
    ch = part.channel
    if rng.random() < 0.5:
        depth_cents = rng.uniform(15, 60)
        rate_hz = rng.uniform(4.5, 6.8)
        delay_ms = rng.uniform(80, 300)
        score.style.append(f"vib{depth_cents:.0f}c")
        starts = sorted(onsets_ms)
        for t in range(0, score.duration_ms - 100, 15):
            prev = [s for s in starts if s <= t]
            since = t - prev[-1] if prev else 1e9
            ramp = min(1.0, max(0.0, (since - delay_ms) / 250.0))
            cents = depth_cents * ramp * np.sin(2 * np.pi * rate_hz * t / 1000.0)
            score.controls.append(Control(t, ch, "bend", 0, round(cents / 200.0 * 8191)))
    elif rng.random() < 0.4:
        value = int(rng.integers(20, 90))
        score.style.append("modwheel")
        score.controls.append(Control(0, ch, "cc", 1, value))
    if rng.random() < 0.4:
        rise_ms = rng.uniform(60, 400)
        floor = int(rng.integers(20, 70))
        score.style.append(f"swell{rise_ms:.0f}ms")
        for onset in sorted(set(round(o) for o in onsets_ms)):
            for k in range(6):
                t = onset + round(rise_ms * k / 5)
                score.controls.append(Control(max(0, t - (1 if k == 0 else 0)), ch, "cc", 11,
                                              int(floor + (127 - floor) * k / 5)))


def melodic_part(rng: Rng, score: Score, part: Part, inst: gm.Instrument, style: str, start_ms: float,
                 *, dense: bool = False, strum: bool = False) -> None:
    """Notes of one melodic part in ``style`` (``line``, ``chords``, ``poly``, ``arp`` or ``pad``)."""
    beat_ms = 60000.0 / score.tempo_bpm
    end_ms = score.duration_ms - 300.0
    pitches = _scale_pitches(rng, inst.low, inst.high)
    vel = _velocity_curve(rng, score.duration_ms)
    art, lo, hi = _articulation(rng, inst.sustained)
    score.style.append(f"{style}:{art}")
    onsets: list[float] = []
    jitter_ms = rng.uniform(0, 12)

    def note(t: float, ioi: float, pitch: int, accent: float = 0.0) -> None:
        t = t + rng.normal(0, jitter_ms / 2) if t > 0 else t
        v = vel(t) + accent + rng.normal(0, 6)
        score.add_note(t, ioi * rng.uniform(lo, hi), pitch, round(v), part.channel)
        onsets.append(t)

    if style in ("line", "arp"):
        sub = _subdivision(rng, beat_ms, dense or style == "arp")
        rest_p = 0.0 if style == "arp" else rng.uniform(0.0, 0.25)
        steps = (1,) if style == "arp" else (1, 1, 1, 2, 2, 3, 4)
        i = len(pitches) // 2
        repeat_p = rng.uniform(0.05, 0.35)
        for t, ioi in _rhythm(rng, start_ms, end_ms, beat_ms, sub, rest_p, steps):
            if rng.random() >= repeat_p:
                i = int(np.clip(i + rng.choice([-3, -2, -1, -1, 1, 1, 2, 3, 4, -4]), 0, len(pitches) - 1))
            accent = 10.0 if abs((t - start_ms) % beat_ms) < 1 else 0.0
            note(t, ioi, pitches[i], accent)
    elif style in ("chords", "pad"):
        per_beats = rng.choice([0.5, 1, 2]) if style == "chords" else rng.choice([2, 4, 8])
        spread_ms = rng.uniform(8, 35) if strum else 0.0
        size = int(rng.integers(2, 6))
        for t, ioi in _rhythm(rng, start_ms, end_ms, beat_ms / per_beats, 1, 0.1, (1, 1, 2)):
            root = int(rng.integers(0, max(1, len(pitches) - 2 * size)))
            chord = [pitches[min(len(pitches) - 1, root + 2 * k)] for k in range(size)]
            if strum and rng.random() < 0.5:
                chord = chord[::-1]
            for k, p in enumerate(chord):
                note(t + k * spread_ms, ioi, p)
    else:  # poly: two or three independent voices in registers of their own
        voices = int(rng.integers(2, 4))
        for v in range(voices):
            band = pitches[v * len(pitches) // voices:(v + 1) * len(pitches) // voices] or pitches
            sub = _subdivision(rng, beat_ms, dense)
            i = len(band) // 2
            for t, ioi in _rhythm(rng, start_ms, end_ms, beat_ms, sub, rng.uniform(0, 0.3)):
                i = int(np.clip(i + rng.integers(-2, 3), 0, len(band) - 1))
                note(t, ioi, band[i])
    if inst.sustained and style != "arp":
        _add_expression(rng, score, part, onsets)


def drum_part(rng: Rng, score: Score, part: Part, start_ms: float) -> None:
    """A kit groove with backbeat, hats or ride, optional ghost notes, and fast fills every few bars."""
    beat_ms = 60000.0 / score.tempo_bpm
    triplet = rng.random() < 0.2
    sub = 3 if triplet else 4
    step_ms = beat_ms / sub
    bar_steps = 4 * sub
    kick = [s for s in range(bar_steps) if s % (2 * sub) == 0 or rng.random() < 0.15]
    snare_at = [sub, 3 * sub] if rng.random() < 0.8 else [2 * sub]
    hat_every = int(rng.choice([1, 2] if step_ms >= 90 else [2, 2, 4]))
    cymbal = int(rng.choice(gm.CLOSED_HAT + gm.RIDE[:1]))
    ghosts = rng.random() < 0.5
    phrase = int(rng.choice([2, 4]))
    vel = _velocity_curve(rng, score.duration_ms)
    jitter_ms = rng.uniform(0, 5)
    extra = int(rng.choice(gm.EXTRA_PERC)) if rng.random() < 0.3 else None
    score.style.append(f"groove{'3' if triplet else '4'}{'+ghost' if ghosts else ''}")

    def hit(t: float, key: int, v: float) -> None:
        score.add_note(t + rng.normal(0, jitter_ms / 2), 80, key, round(v + rng.normal(0, 5)), part.channel)

    bar = 0
    t_bar = start_ms
    while t_bar < score.duration_ms - 300:
        base = vel(t_bar)
        if bar % phrase == phrase - 1 and rng.random() < 0.8:  # fill: last beat or two, fast notes over toms
            fill_from = bar_steps - sub * int(rng.choice([1, 2]))
            fast = int(rng.choice([1, 2, 2, 3]))  # notes per grid step: 16ths, 32nds, 48ths
            for s in range(fill_from):
                if s in kick:
                    hit(t_bar + s * step_ms, gm.KICK[0], base)
            toms = sorted(gm.TOMS, reverse=True)
            n_fill = (bar_steps - fill_from) * fast
            for k in range(n_fill):
                key = toms[k * len(toms) // n_fill] if rng.random() < 0.7 else gm.SNARE[0]
                hit(t_bar + fill_from * step_ms + k * step_ms / fast, key, base * rng.uniform(0.7, 1.1))
        else:
            for s in range(bar_steps):
                t = t_bar + s * step_ms
                if s in kick:
                    hit(t, int(rng.choice(gm.KICK)), base)
                if s in snare_at:
                    hit(t, gm.SNARE[0] if rng.random() < 0.9 else gm.SNARE[2], base + 8)
                elif ghosts and rng.random() < 0.25:
                    hit(t, gm.SNARE[0], rng.uniform(18, 42))
                if s % hat_every == 0:
                    key = gm.OPEN_HAT[0] if cymbal != gm.RIDE[0] and rng.random() < 0.08 else cymbal
                    hit(t, key, base * (0.9 if s % sub == 0 else 0.65))
                if extra is not None and s % sub == sub // 2 and rng.random() < 0.5:
                    hit(t, extra, base * 0.7)
        if bar % phrase == 0 and bar > 0:
            hit(t_bar, int(rng.choice(gm.CRASH)), base + 5)
        bar += 1
        t_bar += bar_steps * step_ms


def _pick(rng: Rng, table: Sequence[gm.Instrument]) -> gm.Instrument:
    return table[int(rng.integers(0, len(table)))]


class _Arranger:
    """Adds parts to one score: melodic parts on free channels, or the drum kit."""

    def __init__(self, rng: Rng, score: Score) -> None:
        self.rng = rng
        self.score = score
        self.start_ms = float(rng.uniform(0, 600))
        self.channels = [c for c in range(16) if c != gm.DRUM_CHANNEL]

    def melodic(self, table: Sequence[gm.Instrument], styles: Sequence[str], **kw: bool) -> None:
        """One part of a random instrument from ``table`` in one of ``styles``."""
        rng, score = self.rng, self.score
        inst = _pick(rng, table)
        part = Part(self.channels.pop(0), inst.program, str(rng.choice(list(styles))))
        score.parts.append(part)
        melodic_part(rng, score, part, inst, part.role,
                     self.start_ms + rng.uniform(0, 400) * len(score.parts), **kw)

    def kit(self) -> None:
        """A drum kit part."""
        part = Part(gm.DRUM_CHANNEL, int(self.rng.choice(gm.DRUM_KITS)), "kit")
        self.score.parts.append(part)
        drum_part(self.rng, self.score, part, self.start_ms)


def _drums(a: _Arranger) -> None:
    a.kit()


def _plucked(a: _Arranger) -> None:
    a.melodic(gm.PLUCKED, ["line", "chords", "arp", "poly"], strum=bool(a.rng.random() < 0.5),
              dense=bool(a.rng.random() < 0.4))
    if a.rng.random() < 0.4:
        a.melodic(gm.PLUCKED, ["line", "arp"])


def _bowed_blown(a: _Arranger) -> None:
    a.melodic(gm.BOWED_BLOWN, ["line", "line", "chords", "poly"], dense=bool(a.rng.random() < 0.3))
    if a.rng.random() < 0.3:
        a.melodic(gm.BOWED_BLOWN, ["line", "chords"])


def _piano(a: _Arranger) -> None:
    a.melodic(gm.PIANO, ["line", "chords", "poly", "arp"], dense=bool(a.rng.random() < 0.5))
    if a.rng.random() < 0.3:
        a.melodic(gm.PIANO, ["line", "chords"])


def _voice(a: _Arranger) -> None:
    a.melodic(gm.VOICE, ["line", "line", "chords", "poly"])


def _pads(a: _Arranger) -> None:
    a.melodic(gm.PADS, ["pad", "pad", "chords", "line"])
    if a.rng.random() < 0.3:
        a.melodic(gm.PADS + gm.VOICE, ["pad", "line"])


def _mixes(a: _Arranger) -> None:
    if a.rng.random() < 0.75:
        a.kit()
    a.melodic([i for i in gm.PLUCKED if i.high <= 60], ["line"])  # bass
    a.melodic(gm.PIANO + gm.PLUCKED + gm.PADS, ["chords", "arp", "pad"], strum=bool(a.rng.random() < 0.3))
    a.melodic(gm.BOWED_BLOWN + gm.VOICE + gm.PLUCKED + gm.PIANO, ["line"])


# The families, in the order clip indices cycle through them, and how each is arranged.
COMPOSERS: dict[str, Callable[[_Arranger], None]] = {
    "drums": _drums, "plucked": _plucked, "bowed_blown": _bowed_blown, "piano": _piano, "voice": _voice,
    "pads": _pads, "mixes": _mixes,
}
FAMILIES = tuple(COMPOSERS)


def compose(family: str, rng: Rng, duration_ms: int, tempo_bpm: float) -> Score:
    """The score of one clip of ``family`` (one of ``FAMILIES``)."""
    score = Score(duration_ms, tempo_bpm)
    COMPOSERS[family](_Arranger(rng, score))
    return score
