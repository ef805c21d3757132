"""Seeded generator of test signals with known onset times.

Every function takes a ``numpy.random.Generator`` (or a seed) and returns a :class:`Signal` whose
``onsets_s`` are the true attack times. Events are placed on a grid with random jitter and never closer than
``MIN_GAP_S`` so the annotations are unambiguous under a ±50 ms evaluation window. Used by the dsp tests and
by ``bench/accuracy.py``'s generated corpus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import scipy.signal

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

MIN_GAP_S = 0.12  # minimum distance between two annotated onsets, seconds


@dataclasses.dataclass(frozen=True)
class Signal:
    """A generated signal and its ground truth.

    Attributes
    ----------
    name : str
    samples : ndarray, shape (n,) or (n, channels), float32 in [-1, 1]
    sample_rate : int
        Samples per second.
    onsets_s : ndarray, shape (n_onsets,), float64
        True attack times, seconds, ascending.
    group : str
        ``"drums"`` for percussive material, ``"pitched"`` for pitched or soft-attack material.
    """

    name: str
    samples: F32
    sample_rate: int
    onsets_s: F64
    group: str


def event_times(rng: np.random.Generator, duration_s: float, mean_gap_s: float, start_s: float = 0.1) -> F64:
    """Random onset times: gaps of ``mean_gap_s`` ±40 %, at least ``MIN_GAP_S``, ending 0.3 s early."""
    times: list[float] = []
    t = start_s + rng.uniform(0.0, 0.05)
    while t < duration_s - 0.3:
        times.append(t)
        t += max(MIN_GAP_S, mean_gap_s * rng.uniform(0.6, 1.4))
    return np.array(times)


FADE_S = 0.03  # every event's tail fades out over this, so no event ends with a click


def _place(out: F64, start: int, event: F64, sr: int) -> None:
    """Add ``event`` into ``out`` at sample ``start`` with a faded tail, cut at the end."""
    fade = min(len(event) // 2, round(FADE_S * sr))
    event = event.copy()
    event[len(event) - fade :] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
    stop = min(len(out), start + len(event))
    if stop > start:
        out[start:stop] += event[: stop - start]


def _time(n: int, sr: int) -> F64:
    return np.arange(n) / sr


# --- single events (float64, peak around 1 before gain) ------------------------------------------------


def click(sr: int) -> F64:
    """A two-sample click."""
    return np.array([1.0, -0.5])


def tone(sr: int, freq_hz: float, dur_s: float, attack_s: float, decay_s: float) -> F64:
    """A harmonic tone: linear attack of ``attack_s``, exponential decay with time constant ``decay_s``."""
    t = _time(round(dur_s * sr), sr)
    wave = np.zeros_like(t)
    for harmonic, gain in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15)):
        if freq_hz * harmonic < 0.45 * sr:
            wave += gain * np.sin(2 * np.pi * freq_hz * harmonic * t)
    envelope = np.minimum(1.0, t / attack_s) if attack_s > 0 else np.ones_like(t)
    envelope *= np.exp(-t / decay_s)
    release = min(len(t), round(0.01 * sr))
    envelope[len(t) - release :] *= np.linspace(1.0, 0.0, release)
    return wave * envelope / 2.0


def drum(rng: np.random.Generator, sr: int, kind: str) -> F64:
    """A drum-like hit: ``kick`` (pitch-swept sine), ``snare`` (noise + tone) or ``hat`` (high noise)."""
    if kind == "kick":
        t = _time(round(0.35 * sr), sr)
        freq = 50.0 + 100.0 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.12)
    if kind == "snare":
        t = _time(round(0.25 * sr), sr)
        noise = rng.standard_normal(len(t)) * np.exp(-t / 0.06) * 0.6
        body = np.sin(2 * np.pi * 190.0 * t) * np.exp(-t / 0.05)
        return noise + body
    t = _time(round(0.08 * sr), sr)
    noise = rng.standard_normal(len(t)) * np.exp(-t / 0.02)
    sos = scipy.signal.butter(4, min(7000.0, 0.4 * sr), btype="highpass", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, noise) * 0.7  # type: ignore[no-any-return]


def pluck(rng: np.random.Generator, sr: int, freq_hz: float, dur_s: float = 0.8) -> F64:
    """A Karplus–Strong plucked string."""
    period = max(2, round(sr / freq_hz))
    n = round(dur_s * sr)
    excitation = np.zeros(n)
    excitation[:period] = rng.uniform(-1.0, 1.0, period)
    a = np.zeros(period + 2)
    a[0], a[period], a[period + 1] = 1.0, -0.498, -0.498
    return scipy.signal.lfilter([1.0], a, excitation)  # type: ignore[no-any-return]


def piano_chord(sr: int, root_hz: float, dur_s: float = 1.0) -> F64:
    """A piano-like chord: three notes with a 3 ms attack and fast-then-slow decay."""
    out = np.zeros(round(dur_s * sr))
    for ratio in (1.0, 1.26, 1.5):
        out += tone(sr, root_hz * ratio, dur_s, 0.003, 0.4)
    return out / 2.0


# --- whole signals ------------------------------------------------------------------------------------


def _finish(name: str, mix: F64, sr: int, onsets: Sequence[float], group: str, gain: float = 0.8) -> Signal:
    peak = float(np.max(np.abs(mix))) or 1.0
    samples = (mix * (gain / peak)).astype(np.float32)
    return Signal(name, samples, sr, np.asarray(sorted(onsets), dtype=np.float64), group)


def clicks(sr: int = 44100, duration_s: float = 4.0, seed: int = 0, gap_s: float = 0.3) -> Signal:
    """Isolated clicks on silence."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, gap_s)
    out = np.zeros(round(duration_s * sr))
    for t in times:
        _place(out, round(t * sr), click(sr), sr)
    return _finish("clicks", out, sr, times, "drums")


def tone_bursts(sr: int = 44100, duration_s: float = 4.0, seed: int = 1) -> Signal:
    """Sharp tone bursts (1 ms attack) of random pitch."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, 0.35)
    out = np.zeros(round(duration_s * sr))
    for t in times:
        _place(out, round(t * sr), tone(sr, rng.uniform(200, 2000), 0.25, 0.001, 0.1), sr)
    return _finish("tone_bursts", out, sr, times, "pitched")


def drums(sr: int = 44100, duration_s: float = 6.0, seed: int = 2, gap_s: float = 0.22) -> Signal:
    """A drum pattern of kicks, snares and hats with random velocities."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, gap_s)
    out = np.zeros(round(duration_s * sr))
    for t in times:
        kind = str(rng.choice(["kick", "snare", "hat"], p=[0.35, 0.3, 0.35]))
        _place(out, round(t * sr), drum(rng, sr, kind) * rng.uniform(0.4, 1.0), sr)
    return _finish("drums", out, sr, times, "drums")


def ghost_notes(sr: int = 44100, duration_s: float = 4.0, seed: int = 9, ghost_db: float = -12.0,
                after_s: Sequence[float] = (0.1, 0.2)) -> Signal:
    """Loud snare hits every 0.5 s, each followed by softer ones (``ghost_db`` below) ``after_s`` later."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * sr))
    times: list[float] = []
    t = 0.2
    while t + max(after_s) < duration_s - 0.3:
        _place(out, round(t * sr), drum(rng, sr, "snare"), sr)
        times.append(t)
        for gap in after_s:
            _place(out, round((t + gap) * sr), drum(rng, sr, "snare") * 10 ** (ghost_db / 20), sr)
            times.append(t + gap)
        t += 0.5
    return _finish("ghost_notes", out, sr, times, "drums")


def plucks(sr: int = 44100, duration_s: float = 6.0, seed: int = 3) -> Signal:
    """A Karplus–Strong melody; notes ring over each other."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, 0.3)
    out = np.zeros(round(duration_s * sr))
    for t in times:
        freq = 110.0 * 2 ** (rng.integers(0, 30) / 12)
        _place(out, round(t * sr), pluck(rng, sr, freq) * rng.uniform(0.5, 1.0), sr)
    return _finish("plucks", out, sr, times, "pitched")


def soft_attacks(sr: int = 44100, duration_s: float = 8.0, seed: int = 4) -> Signal:
    """Pad-like notes with 30–50 ms linear attacks, each ending before the next starts."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, 0.6, start_s=0.2)
    out = np.zeros(round(duration_s * sr))
    for t, nxt in zip(times, [*times[1:], duration_s], strict=True):
        freq = 150.0 * 2 ** (rng.integers(0, 24) / 12)
        note = tone(sr, freq, min(0.5, nxt - t - 0.02), rng.uniform(0.03, 0.05), 1.0)
        _place(out, round(t * sr), note, sr)
    return _finish("soft_attacks", out, sr, times, "pitched")


def chords(sr: int = 44100, duration_s: float = 6.0, seed: int = 5) -> Signal:
    """Piano-like chords over each other's decays."""
    rng = np.random.default_rng(seed)
    times = event_times(rng, duration_s, 0.45)
    out = np.zeros(round(duration_s * sr))
    for t in times:
        _place(out, round(t * sr), piano_chord(sr, 130.0 * 2 ** (rng.integers(0, 12) / 12)), sr)
    return _finish("chords", out, sr, times, "pitched")


def reverb(rng: np.random.Generator, signal: F64, sr: int, rt60_s: float, wet: float) -> F64:
    """Mix ``signal`` with a decaying-noise room response of reverberation time ``rt60_s``."""
    t = _time(round(rt60_s * sr), sr)
    response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s)
    response *= wet / np.sqrt(np.sum(response**2))
    return signal + scipy.signal.fftconvolve(signal, response)[: len(signal)]  # type: ignore[no-any-return]


def music_mix(
    sr: int = 44100,
    duration_s: float = 8.0,
    seed: int = 6,
    *,
    parts: Sequence[str] = ("drums", "plucks", "chords", "pad"),
    rt60_s: float = 0.0,
    noise_db: float = -120.0,
    gain: float = 0.8,
    stereo: bool = False,
) -> Signal:
    """A dense mix of parts on one onset grid (a chord/drum/pluck at each onset, a pad underneath).

    Parameters
    ----------
    parts : sequence of {"drums", "plucks", "chords", "pad"}
        ``pad`` is a sustained soft chord that changes every 2 s (its own onsets count too).
    rt60_s : float
        Reverberation time, seconds (0: dry).
    noise_db : float
        Level of added white noise relative to the mix peak, dB.
    gain : float
        Peak amplitude of the result.
    stereo : bool
        Two channels with different part balance.
    """
    rng = np.random.default_rng(seed)
    n = round(duration_s * sr)
    times = event_times(rng, duration_s, 0.28)
    left, right = np.zeros(n), np.zeros(n)
    onsets: list[float] = []
    players: dict[str, Callable[[], F64]] = {
        "drums": lambda: drum(rng, sr, str(rng.choice(["kick", "snare", "hat"]))),
        "plucks": lambda: pluck(rng, sr, 110.0 * 2 ** (rng.integers(0, 24) / 12)),
        "chords": lambda: piano_chord(sr, 130.0 * 2 ** (rng.integers(0, 12) / 12), 0.8),
    }
    hit_parts = [p for p in parts if p in players]
    for t in times:
        part = hit_parts[int(rng.integers(0, len(hit_parts)))] if hit_parts else None
        if part is None:
            continue
        onsets.append(float(t))
        event = players[part]() * rng.uniform(0.5, 1.0)
        pan = rng.uniform(0.2, 0.8)
        _place(left, round(t * sr), event * pan, sr)
        _place(right, round(t * sr), event * (1 - pan), sr)
    if "pad" in parts:
        for start in np.arange(0.05, duration_s - 0.5, 2.0):
            note = tone(sr, 220.0 * 2 ** (rng.integers(0, 7) / 12), min(2.0, duration_s - start), 0.04, 3.0)
            _place(left, round(start * sr), note * 0.35, sr)
            _place(right, round(start * sr), note * 0.35, sr)
            if not any(abs(start - o) < 0.05 for o in onsets):
                onsets.append(float(start))
    if not hit_parts and "pad" not in parts:
        raise ValueError(f"no known part in {parts!r}")
    if rt60_s > 0:
        left, right = reverb(rng, left, sr, rt60_s, 0.5), reverb(rng, right, sr, rt60_s, 0.5)
    peak = max(float(np.max(np.abs(left))), float(np.max(np.abs(right)))) or 1.0
    noise_amp = peak * 10 ** (noise_db / 20)
    left = left + rng.standard_normal(n) * noise_amp
    right = right + rng.standard_normal(n) * noise_amp
    group = "drums" if list(hit_parts) == ["drums"] else "pitched"
    name = "mix_" + "+".join(parts) + (f"_rt{rt60_s:g}" if rt60_s else "") + ("_stereo" if stereo else "")
    if stereo:
        both = np.stack([left, right], axis=1)
        peak = float(np.max(np.abs(both))) or 1.0
        merged = _merge_close(sorted(onsets))
        return Signal(name, (both * (gain / peak)).astype(np.float32), sr, merged, group)
    mono = (left + right) / 2
    return _finish(name, mono, sr, _merge_close(sorted(onsets)), group, gain)


def _merge_close(onsets: Sequence[float], within_s: float = 0.03) -> F64:
    """Merge annotations closer than ``within_s`` into the first (as the dev set's annotations are)."""
    merged: list[float] = []
    for t in onsets:
        if not merged or t - merged[-1] >= within_s:
            merged.append(t)
    return np.asarray(merged, dtype=np.float64)


def quiet_passage(sr: int = 44100, duration_s: float = 6.0, seed: int = 7, level_db: float = -50.0) -> Signal:
    """Drum hits whose peak level is ``level_db`` dBFS, over noise 40 dB further down."""
    base = drums(sr, duration_s, seed)
    rng = np.random.default_rng(seed + 100)
    amp = 10 ** (level_db / 20)
    quiet = base.samples.astype(np.float64) / 0.8 * amp
    quiet += rng.standard_normal(len(quiet)) * amp * 0.01
    return Signal(f"quiet{level_db:g}dB", quiet.astype(np.float32), sr, base.onsets_s, "drums")


def with_dc_and_clipping(signal: Signal, dc: float = 0.3, drive: float = 3.0) -> Signal:
    """``signal`` driven into hard clipping at ±1 and shifted by a DC offset (then clipped again)."""
    out = np.clip(np.clip(signal.samples.astype(np.float64) * drive, -1.0, 1.0) + dc, -1.0, 1.0)
    return dataclasses.replace(signal, name=signal.name + "_dc_clip", samples=out.astype(np.float32))


def noise(sr: int = 44100, duration_s: float = 4.0, seed: int = 8, level_db: float = -20.0) -> Signal:
    """Stationary white noise with no onsets (after its start)."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(round(duration_s * sr)) * 10 ** (level_db / 20)
    return Signal("noise", out.astype(np.float32), sr, np.zeros(0), "none")


def resampled(signal: Signal, sr: int) -> Signal:
    """``signal`` at another rate (polyphase resampling); onset times unchanged."""
    from fractions import Fraction

    ratio = Fraction(sr, signal.sample_rate).limit_denominator(1000)
    out = scipy.signal.resample_poly(signal.samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return dataclasses.replace(signal, samples=out.astype(np.float32), sample_rate=sr)
