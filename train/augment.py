"""Band-domain augmentations for the learned onset detector: what real recordings add to the dry renders.

Every function maps a crop's log band rows (frames, bands), ``log10(1 + LOG_GAIN * band)`` as
:func:`server.dsp.neural_features.log_band_rows` gives them, to new rows; the training script rebuilds the
rise features from them. They work on the linear band magnitudes ``band = (10 ** row - 1) / LOG_GAIN``
(a weighted mean of FFT magnitudes; a sine of amplitude A reads about A in its band) and add components by
power: ``sqrt(band ** 2 + extra ** 2)``, the expected magnitude of a sum of uncorrelated signals.

- **Room tail** (:func:`room_tail`): each band's power smeared by an exponential decay (RT60 per band,
  shorter at the top: darkening), at a wet level relative to the dry power, and modulated frame by frame by
  the band's power fluctuation in white noise as the server's own features see it: a diffuse tail is
  decaying noise. Its ripples are rises with no onset, as in the decay of a real kit in a room.
- **Compressor** (:func:`compress`): a broadband feed-forward compressor on the frame level (instant attack,
  exponential release 40-400 ms, ratio 2-10): after each loud hit the gain comes back up over the release,
  so a decaying sound swells again, as on compressed real drum stems.
- **EQ tilt** (:func:`tilt`): a gain linear in log frequency, ±6 dB from the lowest to the highest band.
- **Noise** (:func:`noise`): white noise's band magnitudes through the server's features (so their
  fluctuation per band and their correlation between overlapping frames are exact), shaped from white to
  brown, at 15-50 dB below the crop's loudest frame.
- **Low end** (:func:`low_end`): a DC offset (a constant leaks through the Hann window into the bands up to
  ~150 Hz) and/or rumble (white noise low-passed at 20 Hz), 10-40 dB below the loudest frame.

Levels "under the peak" are band levels: the RMS over bands of one frame's magnitudes, against the crop's
loudest frame. The bands above the crop's last non-zero band (those above 95 % of the clip's Nyquist) stay 0.
The nuisance tables are computed once per process at 48 kHz by :func:`server.dsp.neural_features.file_rows`
from seeded signals.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt
import scipy.signal

from server.dsp import neural_features as nf

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

TABLE_RATE = 48000
TABLE_SECONDS = 30.0
HOP_S = nf.HOP_S


@dataclasses.dataclass(frozen=True)
class Nuisance:
    """Linear band magnitudes of the added signals, at unit RMS (DC: value 1).

    Attributes
    ----------
    white : ndarray, shape (frames, bands)
        White noise, RMS 1.
    rumble : ndarray, shape (frames, bands)
        White noise low-passed at 20 Hz (4th-order Butterworth), RMS 1.
    dc : ndarray, shape (bands,)
        A constant 1.0, a steady frame.
    centres_hz : ndarray, shape (bands,)
    """

    white: F64
    rumble: F64
    dc: F64
    centres_hz: F64


def linear(rows: npt.NDArray[np.floating]) -> F64:
    """Linear band magnitudes of log band rows."""
    return (10.0 ** np.asarray(rows, dtype=np.float64) - 1.0) / nf.LOG_GAIN


def log_rows(bands: F64) -> F32:
    """Log band rows of linear band magnitudes."""
    return np.log10(1.0 + nf.LOG_GAIN * np.maximum(bands, 0.0)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def nuisance(seed: int = 0) -> Nuisance:
    """The nuisance tables (seeded; about a second to compute, once per process)."""
    rng = np.random.default_rng(seed)
    count = int(TABLE_RATE * TABLE_SECONDS)
    white = rng.standard_normal(count)
    sos = scipy.signal.butter(4, 20.0, btype="low", fs=TABLE_RATE, output="sos")
    rumble = scipy.signal.sosfilt(sos, rng.standard_normal(count))
    rumble /= np.sqrt(np.mean(rumble[TABLE_RATE:] ** 2))
    skip = 10  # frames whose window reaches before the signal's start
    white_rows = linear(nf.file_rows(TABLE_RATE, white.astype(np.float32))[0])[skip:]
    rumble_rows = linear(nf.file_rows(TABLE_RATE, rumble.astype(np.float32))[0])[skip:]
    dc_rows = linear(nf.file_rows(TABLE_RATE, np.ones(TABLE_RATE // 2, dtype=np.float32))[0])
    count_bands = nf.n_bands(nf.BANDS_PER_OCTAVE)
    centres = nf.FMIN_HZ * 2.0 ** (np.arange(count_bands) / nf.BANDS_PER_OCTAVE)
    return Nuisance(white_rows, rumble_rows, dc_rows[skip], centres)


def segment(table: F64, frames: int, rng: np.random.Generator) -> F64:
    """A random run of ``frames`` rows of a nuisance table (tables are longer than any crop)."""
    start = int(rng.integers(0, len(table) - frames))
    return table[start : start + frames]


def frame_level(bands: F64) -> F64:
    """Each frame's level: the RMS of its band magnitudes."""
    return np.sqrt(np.mean(bands**2, axis=1))


def room_tail(bands: F64, rng: np.random.Generator, rt60_s: float, wet_db: float, darkening: float) -> F64:
    """Bands plus a diffuse room tail (see the module docstring).

    Parameters
    ----------
    rt60_s : float
        Decay time of the lowest band, seconds (60 dB of power).
    wet_db : float
        The tail's steady power relative to a steady dry sound's, dB.
    darkening : float
        0..1: the top band's RT60 is ``rt60_s * (1 - 0.7 * darkening)``.
    """
    frames, count = bands.shape
    position = np.arange(count) / max(1, count - 1)
    rt60 = rt60_s * (1.0 - 0.7 * darkening * position)
    lags = np.arange(1, int(np.ceil(rt60_s / HOP_S)) + 1)[:, None]
    kernel = 10.0 ** (-6.0 * lags * HOP_S / rt60[None, :])  # power decay per band
    kernel *= 10.0 ** (wet_db / 10.0) / kernel.sum(axis=0)
    kernel = np.concatenate([np.zeros((1, count)), kernel])  # the tail starts one frame after the sound
    tail = scipy.signal.fftconvolve(bands**2, kernel, axes=0)[:frames]
    tail[tail < 1e-9 * tail.max(initial=0.0)] = 0.0  # the FFT's round-off, not a tail
    ripple = segment(nuisance().white, frames, rng)[:, :count] ** 2
    ripple /= np.mean(nuisance().white[:, :count] ** 2, axis=0)
    return np.sqrt(bands**2 + tail * ripple)


def compress(bands: F64, threshold_db: float, ratio: float, release_s: float) -> F64:
    """A broadband compressor on the frame level: instant attack, exponential release.

    ``threshold_db`` is relative to the crop's loudest frame; above it the level is divided by ``ratio``
    (in dB). The gain reduction follows rises at once and recovers by ``release_s`` per 8.7 dB (e-fold).
    """
    level_db = 20.0 * np.log10(frame_level(bands) + 1e-12)
    threshold = level_db.max() + threshold_db
    wanted = np.minimum(0.0, (threshold - level_db) * (1.0 - 1.0 / ratio))  # gain reduction, dB (<= 0)
    keep = float(np.exp(-HOP_S / release_s))
    gain = np.empty_like(wanted)
    current = 0.0
    for index, target in enumerate(wanted.tolist()):
        current = target if target < current else target + (current - target) * keep
        gain[index] = current
    return bands * 10.0 ** (gain[:, None] / 20.0)


def tilt(bands: F64, total_db: float) -> F64:
    """A gain linear in log frequency: ``-total_db / 2`` at the lowest band, ``+total_db / 2`` at the top."""
    count = bands.shape[1]
    position = np.arange(count) / max(1, count - 1) - 0.5
    return bands * 10.0 ** (total_db * position / 20.0)[None, :]


def noise(bands: F64, rng: np.random.Generator, below_peak_db: float, slope: float) -> F64:
    """Bands plus noise ``below_peak_db`` under the loudest frame's level, power slope ``f ** -slope``.

    ``slope`` 0 is white, 1 pink, 2 brown (band magnitudes of white noise are flat: bands are weighted means).
    """
    frames, count = bands.shape
    table = nuisance()
    shape = (table.centres_hz[:count] / 1000.0) ** (-slope / 2.0)
    extra = segment(table.white, frames, rng)[:, :count] * shape[None, :]
    wanted = frame_level(bands).max() * 10.0 ** (-below_peak_db / 20.0)
    extra *= wanted / max(1e-12, float(frame_level(extra).mean()))
    return np.sqrt(bands**2 + extra**2)


def low_end(bands: F64, rng: np.random.Generator, dc_db: float | None, rumble_db: float | None) -> F64:
    """Bands plus a DC offset and/or rumble at these levels under the loudest frame's (None: not added).

    The DC offset's value is ``10 ** (-dc_db / 20)`` times the loudest frame's level; the rumble's RMS too.
    """
    frames, count = bands.shape
    table = nuisance()
    peak = frame_level(bands).max()
    extra = np.zeros_like(bands)
    if dc_db is not None:
        extra += (peak * 10.0 ** (-dc_db / 20.0) * table.dc[:count]) ** 2
    if rumble_db is not None:
        extra += (peak * 10.0 ** (-rumble_db / 20.0) * segment(table.rumble, frames, rng)[:, :count]) ** 2
    return np.sqrt(bands**2 + extra)


def recording(rows: F32, rng: np.random.Generator) -> F32:
    """A crop's log band rows through a random recording chain (each step drawn independently, seeded).

    In this order: EQ tilt (50 %), room tail (30 %: RT60 0.1-1.2 s, wet -20..-4 dB, darkening 0-1),
    compressor (25 %: threshold -6..-30 dB, ratio 2-10, release 40-400 ms), noise (25 %: 15-50 dB under the
    peak, slope 0-2), low end (15 %: DC and/or rumble 10-40 dB under the peak). A silent crop is unchanged.
    """
    bands = linear(rows)
    live = np.flatnonzero(bands.max(axis=0) > 0.0)
    if len(live) == 0:
        return rows
    top = int(live[-1]) + 1  # bands above 95 % of the clip's Nyquist read nothing and keep reading nothing
    work = bands[:, :top]
    if rng.random() < 0.5:
        work = tilt(work, float(rng.uniform(-6.0, 6.0)))
    if rng.random() < 0.3:
        work = room_tail(
            work, rng, float(rng.uniform(0.1, 1.2)), float(rng.uniform(-20.0, -4.0)), float(rng.random())
        )
    if rng.random() < 0.25:
        threshold_db, ratio = float(rng.uniform(-30.0, -6.0)), float(rng.uniform(2.0, 10.0))
        work = compress(work, threshold_db, ratio, float(rng.uniform(0.04, 0.4)))
    if rng.random() < 0.25:
        work = noise(work, rng, float(rng.uniform(15.0, 50.0)), float(rng.uniform(0.0, 2.0)))
    if rng.random() < 0.15:
        choice = int(rng.integers(0, 3))
        dc = float(rng.uniform(10.0, 40.0)) if choice != 1 else None
        rumble = float(rng.uniform(10.0, 40.0)) if choice != 0 else None
        work = low_end(work, rng, dc, rumble)
    out = np.zeros_like(bands)
    out[:, :top] = work
    return log_rows(out)
