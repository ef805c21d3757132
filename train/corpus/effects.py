"""Processing after rendering, as pure functions of (audio, rate, parameters): none moves an onset.

Room reverb adds a decayed copy after the dry signal (the direct path stays at lag 0); EQ is a cascade of
RBJ-cookbook biquads (minimum phase, well under a millisecond of delay at onsets); noise, gain and the final
resampling (``resample_poly``, whose linear-phase filter delay it compensates) keep the time axis.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import signal

Audio = npt.NDArray[np.float32]


def room_ir(rng: np.random.Generator, rate_hz: int, rt60_s: float, channels: int) -> Audio:
    """Synthetic room response: exponentially decaying noise (-60 dB at ``rt60_s``), 0-15 ms pre-delay,
    darker as it decays. Shape (n, channels), unit energy."""
    n = int(rate_hz * min(3.0, rt60_s * 1.2))
    t = np.arange(n) / rate_hz
    noise = rng.standard_normal((n, channels))
    env = 10 ** (-3.0 * t / rt60_s)
    ir = noise * env[:, None]
    b, a = signal.butter(1, min(0.99, 6000 / (rate_hz / 2)))
    ir = 0.5 * ir + 0.5 * signal.lfilter(b, a, ir, axis=0)
    pre = int(rng.uniform(0.0, 0.015) * rate_hz)
    ir = np.concatenate([np.zeros((pre, channels)), ir])
    return (ir / np.sqrt(np.sum(ir**2) / channels)).astype(np.float32)


def reverb(x: Audio, ir: Audio, wet_db: float) -> Audio:
    """Dry plus the room at ``wet_db`` relative to the dry energy."""
    wet = signal.fftconvolve(x, ir[:, : x.shape[1]], axes=0)[: len(x)]
    gain = 10 ** (wet_db / 20) * np.sqrt(np.mean(x**2) / max(np.mean(wet**2), 1e-20))
    return (x + gain * wet).astype(np.float32)


def biquad(kind: str, f0_hz: float, gain_db: float, q: float, rate_hz: int) -> npt.NDArray[np.float64]:
    """RBJ audio-EQ-cookbook biquad as one second-order section (``kind``: low, high or peak)."""
    a_lin = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0_hz / rate_hz
    cw, sw = np.cos(w0), np.sin(w0)
    alpha = sw / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a_lin, -2 * cw, 1 - alpha * a_lin]
        a = [1 + alpha / a_lin, -2 * cw, 1 - alpha / a_lin]
    else:
        sq = 2 * np.sqrt(a_lin) * alpha
        sgn = 1 if kind == "low" else -1
        b = [a_lin * ((a_lin + 1) - sgn * (a_lin - 1) * cw + sq),
             sgn * 2 * a_lin * ((a_lin - 1) - sgn * (a_lin + 1) * cw),
             a_lin * ((a_lin + 1) - sgn * (a_lin - 1) * cw - sq)]
        a = [(a_lin + 1) + sgn * (a_lin - 1) * cw + sq,
             -sgn * 2 * ((a_lin - 1) + sgn * (a_lin + 1) * cw),
             (a_lin + 1) + sgn * (a_lin - 1) * cw - sq]
    return np.concatenate([np.array(b) / a[0], np.array(a) / a[0]])[None, :]


def equalise(x: Audio, sections: list[npt.NDArray[np.float64]]) -> Audio:
    """Apply the biquads in turn."""
    if not sections:
        return x
    return signal.sosfilt(np.concatenate(sections), x, axis=0).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, channels: int, colour: str) -> Audio:
    """White, pink (1/f power) or brown (1/f^2) Gaussian noise, unit RMS, shape (n, channels)."""
    white = rng.standard_normal((n, channels))
    if colour == "white":
        out = white
    else:
        spec = np.fft.rfft(white, axis=0)
        f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
        spec *= (f ** (-0.5 if colour == "pink" else -1.0))[:, None]
        out = np.fft.irfft(spec, n, axis=0)
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def add_noise(x: Audio, noise: Audio, snr_db: float) -> Audio:
    """Noise at ``snr_db`` below the signal's RMS over its active (above -60 dB of peak) part."""
    return (x + active_rms(x) * 10 ** (-snr_db / 20) * noise).astype(np.float32)


def active_rms(x: Audio) -> float:
    """RMS over frames whose level is within 60 dB of the peak (silence excluded)."""
    e = np.mean(x.astype(np.float64) ** 2, axis=1)
    peak = float(e.max()) if len(e) else 0.0
    active = e[e >= peak * 1e-6] if peak > 0 else e
    return float(np.sqrt(np.mean(active))) if len(active) else 0.0


def to_peak(x: Audio, peak_dbfs: float) -> Audio:
    """Scale so that the largest sample is at ``peak_dbfs``."""
    peak = float(np.abs(x).max())
    return x if peak == 0 else (x * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def resample(x: Audio, from_hz: int, to_hz: int) -> Audio:
    """Polyphase resampling; the time axis (sample k at k / rate) is kept."""
    if from_hz == to_hz:
        return x
    g = np.gcd(from_hz, to_hz)
    return signal.resample_poly(x, to_hz // g, from_hz // g, axis=0).astype(np.float32)
