"""Seeded drum-kit signals with known beats, bar positions and classed hits, for rhythm tests and benches.

A kit of three synthetic drums: a kick (a pitch-dropping 55–110 Hz sine with a short click), a snare (a
180 Hz body plus band-limited noise) and a closed hi-hat (noise above ~6 kHz, 40 ms). Patterns are laid on
an explicit list of beat times, so tempo changes, rubato and swing are just other beat lists.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import scipy.signal

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class DrumTrack:
    """A rendered drum track and its answers.

    Attributes
    ----------
    audio : ndarray, shape (n,), float32
    sample_rate : int
    beats : ndarray, shape (n_beats,)
        Beat times, seconds.
    bar_positions : ndarray of int, shape (n_beats,)
        1 = downbeat.
    hits : dict of str to ndarray
        Hit times, seconds, per class ``"kick"``, ``"snare"``, ``"hat"``.
    """

    audio: npt.NDArray[np.float32]
    sample_rate: int
    beats: F64
    bar_positions: npt.NDArray[np.int64]
    hits: dict[str, F64]


def kick(rate: int, rng: np.random.Generator) -> F64:
    t = np.arange(int(0.25 * rate)) / rate
    freq = 55.0 + 60.0 * np.exp(-t / 0.03)
    body = np.sin(2 * np.pi * np.cumsum(freq) / rate) * np.exp(-t / 0.12)
    click = rng.standard_normal(len(t)) * np.exp(-t / 0.002) * 0.3
    return 0.9 * body + click


def snare(rate: int, rng: np.random.Generator) -> F64:
    t = np.arange(int(0.2 * rate)) / rate
    body = np.sin(2 * np.pi * 180.0 * t) * np.exp(-t / 0.05) * 0.5
    sos = scipy.signal.butter(2, [1000.0, 8000.0], btype="band", fs=rate, output="sos")
    noise = scipy.signal.sosfilt(sos, rng.standard_normal(len(t))) * np.exp(-t / 0.06) * 1.2
    return body + noise


def hat(rate: int, rng: np.random.Generator) -> F64:
    t = np.arange(int(0.04 * rate)) / rate
    sos = scipy.signal.butter(4, 6000.0, btype="high", fs=rate, output="sos")
    return scipy.signal.sosfilt(sos, rng.standard_normal(len(t))) * np.exp(-t / 0.012) * 0.5


def beat_times(segments: list[tuple[float, float]], start_s: float = 0.5) -> F64:
    """Beat times for ``(bpm, seconds)`` segments played one after another, seconds."""
    times = []
    t = start_s
    for bpm, seconds in segments:
        end = t + seconds
        while t < end - 1e-9:
            times.append(t)
            t += 60.0 / bpm
    return np.array(times)


def drum_track(
    beats: F64,
    *,
    sample_rate: int = 44100,
    meter: int = 4,
    swing: float = 0.5,
    hats: bool = True,
    seed: int = 0,
    noise_db: float = -70.0,
    gaps: list[tuple[float, float]] | None = None,
    kinds: tuple[str, ...] = ("kick", "snare", "hat"),
) -> DrumTrack:
    """A rock pattern on ``beats``: kick on 1 and 3, snare on 2 and 4 (in 3: kick on 1, snare on 2, 3).

    Parameters
    ----------
    beats : ndarray
        Beat times, seconds.
    meter : int
        Beats per bar.
    swing : float
        Where the off-beat hat falls between two beats (0.5 straight, 2/3 triplet swing).
    hats : bool
        Eighth-note hats.
    gaps : list of (start_s, stop_s), optional
        Spans left silent (no hits; the beats inside them are dropped from the answers).
    noise_db : float
        Level of a white noise floor under everything, dBFS (RMS).
    kinds : tuple of str
        Which drums play (the others' hits are left out).
    """
    rng = np.random.default_rng(seed)
    gaps = gaps or []
    duration = float(beats[-1]) + 1.0
    audio = np.zeros(int(duration * sample_rate) + 1)
    hits: dict[str, list[float]] = {"kick": [], "snare": [], "hat": []}
    makers = {"kick": kick, "snare": snare, "hat": hat}

    def place(kind: str, time_s: float, gain: float) -> None:
        if kind not in kinds or any(start <= time_s < stop for start, stop in gaps):
            return
        sound = makers[kind](sample_rate, rng) * gain
        start = round(time_s * sample_rate)
        stop = min(len(audio), start + len(sound))
        audio[start:stop] += sound[: stop - start]
        hits[kind].append(start / sample_rate)

    positions = np.arange(len(beats)) % meter + 1
    for i, (t, position) in enumerate(zip(beats, positions, strict=True)):
        accent = 1.0 if position == 1 else 0.8
        if position == 1 or (meter == 4 and position == 3):
            place("kick", t, accent)
        else:
            place("snare", t, accent)
        if hats:
            place("hat", t, 0.6)
            if i + 1 < len(beats):
                place("hat", t + swing * (beats[i + 1] - t), 0.4)
    audio += rng.standard_normal(len(audio)) * 10.0 ** (noise_db / 20.0)
    audio *= 0.5 / max(1e-9, np.abs(audio).max())
    kept = np.array([not any(start <= t < stop for start, stop in gaps) for t in beats], dtype=bool)
    return DrumTrack(
        audio=audio.astype(np.float32),
        sample_rate=sample_rate,
        beats=np.asarray(beats)[kept],
        bar_positions=positions[kept],
        hits={k: np.sort(np.array(v)) for k, v in hits.items()},
    )


def bar_position_score(ref_times: F64, ref_positions: npt.ArrayLike, est_times: npt.ArrayLike,
                       est_positions: list[int | None], window_s: float = 0.07) -> tuple[int, int, int]:
    """How many estimated beats carry a bar position, how many of those lie within ``window_s`` of a
    reference beat, and how many of those have the reference's position:
    ``(positioned, matched, correct)``."""
    ref = np.asarray(ref_times, dtype=np.float64)
    ref_pos = np.asarray(ref_positions)
    positioned = matched = correct = 0
    for time_s, position in zip(np.asarray(est_times, dtype=np.float64), est_positions, strict=True):
        if position is None:
            continue
        positioned += 1
        i = int(np.argmin(np.abs(ref - time_s)))
        if abs(ref[i] - time_s) <= window_s:
            matched += 1
            correct += int(ref_pos[i] == position)
    return positioned, matched, correct
