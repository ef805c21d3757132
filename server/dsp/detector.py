"""The streaming onset detector: one small stateful object per stream.

State is an absolute frame counter, the samples not yet framed, the last few feature rows, the recent
detection function and the time of the last reported onset; everything derived from the settings (window,
filterbank) is rebuilt after unpickling, so the pickled object stays small.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import odf as odf_mod
from server.dsp.filterbank import Filterbank, log_filterbank
from server.dsp.onset import Onset
from server.dsp.peaks import PRE_AVG_S, PRE_MAX_S, merge_close, pick_peaks
from server.dsp.settings import GRID_SETTINGS, DetectorSettings
from server.dsp.spectrum import FrameGrid, analysis_window, frame_power, frame_view, level_norm, spectrum
from server.exceptions import AudioFormatError, SettingsError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 192000
MAX_CHANNELS = 64
CHUNK_HOPS = 128  # long blocks are analysed this many hops at a time
END_GUARD_S = 0.01  # the abrupt end of a stream looks like an attack: flush() drops onsets this close to it
ODF_KEEP_S = 10.0  # take_odf() returns at most this much of the most recent detection function


class OnsetDetector:
    """Streaming onset detector for one audio stream.

    Parameters
    ----------
    sample_rate : int
        Samples per second per channel, 8000–192000.
    channels : int
        Interleaved channels per block, 1–64; they are averaged to mono.
    settings : DetectorSettings, optional
        Defaults when omitted.

    Raises
    ------
    AudioFormatError
        For a sample rate or channel count out of range.
    """

    _buf: F32
    _feats: Any  # last feature rows (None: prime from the next frame)
    _peaks: F32  # loudest feature value of each recent frame, for the compression floor
    _odf: F64
    _levels: F64  # frame powers, linear
    _odf_out: list[F32]  # detection function not yet taken, in pieces
    _odf_out_len: int

    def __init__(self, sample_rate: int, channels: int = 1, settings: DetectorSettings | None = None) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise AudioFormatError(f"sample_rate must be an integer, got {sample_rate!r}")
        if not MIN_RATE_HZ <= sample_rate <= MAX_RATE_HZ:
            raise AudioFormatError(f"sample_rate {sample_rate} Hz is outside {MIN_RATE_HZ}–{MAX_RATE_HZ} Hz")
        if isinstance(channels, bool) or not isinstance(channels, int | np.integer):
            raise AudioFormatError(f"channels must be an integer, got {channels!r}")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioFormatError(f"channels {channels} is outside 1–{MAX_CHANNELS}")
        self._rate = int(sample_rate)
        self._channels = int(channels)
        self._settings = settings or DetectorSettings()
        self._derive()
        self._reset_stream()

    # ----------------------------------------------------------------------------------------------
    # Public API

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def settings(self) -> DetectorSettings:
        return self._settings

    @property
    def hop_s(self) -> float:
        """Distance between analysis frames, seconds (a whole number of samples)."""
        return self._grid.hop / self._rate

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: the peak picker's look-ahead plus one hop, seconds."""
        return (self._lookahead + 1) * self._grid.hop / self._rate

    @property
    def samples_in(self) -> int:
        """Samples per channel consumed since the stream started."""
        return self._samples_in

    def process(self, block: npt.ArrayLike) -> list[Onset]:
        """Feed the next block; return the onsets that became certain.

        Parameters
        ----------
        block : ndarray, shape (n,) or (n, channels)
            float32/float64 in [-1, 1] or int16 (scaled by 1/32768); any ``n >= 0``.

        Raises
        ------
        AudioFormatError
            Wrong shape or dtype, or NaN/Inf samples; the detector's state is then unchanged.
        """
        mono = to_mono(block, self._channels)
        self._samples_in += len(mono)
        # Long blocks go through in pieces that stay in cache; the result is the same by construction.
        step = CHUNK_HOPS * self._grid.hop
        if len(mono) <= step:
            return self._consume(mono, final=False)
        onsets: list[Onset] = []
        for start in range(0, len(mono), step):
            onsets += self._consume(mono[start : start + step], final=False)
        return onsets

    def flush(self) -> list[Onset]:
        """End the stream: analyse the remaining samples and return the remaining onsets.

        Afterwards the detector starts a new stream (time 0, same settings).
        """
        end_s = self._samples_in / self._rate
        padding = np.zeros(self._grid.frame_len + self._grid.hop, dtype=np.float32)
        onsets = [o for o in self._consume(padding, final=True) if o.time < end_s - END_GUARD_S]
        self._reset_stream()
        return onsets

    def configure(self, settings: DetectorSettings) -> None:
        """Use ``settings`` from the next block on, keeping the stream's state.

        Raises
        ------
        SettingsError
            If ``settings`` changes ``frame_ms`` or ``hop_ms``, which are fixed for a stream.
        """
        for name in GRID_SETTINGS:
            old, new = getattr(self._settings, name), getattr(settings, name)
            if old != new:
                raise SettingsError(name, new, f"cannot change during a stream (it is {old:g})")
        method_changed = settings.method != self._settings.method
        self._settings = settings
        self._derive()
        if method_changed:
            self._feats = None  # primed from the next frame: the new method starts without a jump
            self._peaks = np.zeros_like(self._peaks)  # peaks of another method are in another unit

    def take_odf(self) -> F32:
        """Detection function values produced since the last call, one per hop, float32.

        At most the latest ``ODF_KEEP_S`` (10 s) of values are kept between calls.
        """
        self._trim_odf_out()
        out = self._odf_out[0] if self._odf_out else np.zeros(0, dtype=np.float32)
        self._odf_out = []
        self._odf_out_len = 0
        return out

    def _trim_odf_out(self) -> None:
        if self._odf_out:
            joined = np.concatenate(self._odf_out)[-self._odf_keep :]
            self._odf_out = [joined]
            self._odf_out_len = len(joined)

    # ----------------------------------------------------------------------------------------------
    # Pickling: derived arrays are rebuilt, not stored.

    def __getstate__(self) -> dict[str, Any]:
        derived = {
            "_window",
            "_level_norm",
            "_bank",
            "_spec",
            "_lookahead",
            "_pre_max",
            "_pre_avg",
            "_context",
            "_grid",
        }
        return {key: value for key, value in self.__dict__.items() if key not in derived}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._derive()

    # ----------------------------------------------------------------------------------------------

    def _derive(self) -> None:
        s = self._settings
        self._grid = FrameGrid.from_seconds(self._rate, s.frame_ms / 1000.0, s.hop_ms / 1000.0)
        hop_s = self._grid.hop / self._rate
        self._window = analysis_window(self._grid.frame_len)
        self._level_norm = level_norm(self._window)
        self._bank: Filterbank = log_filterbank(self._rate, self._grid.fft_size)
        self._spec = odf_mod.spec_for(s.method, self._grid.frame_len, self._grid.hop)
        self._lookahead = round(s.lookahead_ms / 1000.0 / hop_s)
        self._pre_max = max(1, round(PRE_MAX_S / hop_s))
        self._pre_avg = max(1, round(PRE_AVG_S / hop_s))
        self._context = max(self._pre_max, self._pre_avg)
        self._odf_keep = round(ODF_KEEP_S / hop_s)

    def _reset_stream(self) -> None:
        grid = self._grid
        self._samples_in = 0
        self._buf = np.zeros(grid.frame_len - grid.hop, dtype=np.float32)
        silent = np.zeros((self._spec.history, grid.frame_len), dtype=np.float32)
        self._feats = self._features(silent)
        self._peaks = np.zeros(round(odf_mod.FLOOR_WINDOW_S * self._rate / grid.hop), dtype=np.float32)
        self._odf = np.zeros(self._context, dtype=np.float64)
        self._levels = np.zeros(self._context, dtype=np.float64)
        self._odf_base = -self._context  # absolute frame index of self._odf[0]
        self._next_frame = 0  # first frame not yet decided
        self._last_onset_s = -math.inf
        self._odf_out = []
        self._odf_out_len = 0

    def _features(self, windowed: F32) -> Any:
        spectra = spectrum(windowed, self._grid.fft_size)
        return odf_mod.features(self._settings.method, spectra, self._bank, self._grid.bin_hz)

    def _consume(self, mono: F32, *, final: bool) -> list[Onset]:
        grid = self._grid
        buf = np.concatenate([self._buf, mono]) if len(mono) else self._buf
        frames = frame_view(buf, grid.frame_len, grid.hop)
        n_frames = len(frames)
        if n_frames:
            windowed = frames * self._window
            feats = self._features(windowed)
            history = self._spec.history
            priming = self._feats is None
            if priming:
                self._feats = np.repeat(feats[:1], history, axis=0)
            stacked = np.concatenate([self._feats, feats])
            peaks = odf_mod.frame_peaks(self._settings.method, feats)
            recent = odf_mod.running_max(self._peaks, peaks)
            self._peaks = np.concatenate([self._peaks, peaks])[len(peaks) :]
            floor = odf_mod.compression_floor(self._settings.method, recent)
            values = odf_mod.odf(self._settings.method, stacked, history, self._spec.unit, floor)
            if priming:
                values[:history] = 0.0  # the new method's first frames have no real past to compare with
            self._feats = stacked[len(stacked) - history :].copy()
            self._odf = np.concatenate([self._odf, values])
            self._levels = np.concatenate([self._levels, frame_power(windowed, self._level_norm)])
            self._odf_out.append(values.astype(np.float32))
            self._odf_out_len += len(values)
            if self._odf_out_len > 2 * self._odf_keep:
                self._trim_odf_out()
            buf = buf[n_frames * grid.hop :]
        self._buf = buf.copy() if buf.base is not None else buf
        return self._decide(final=final)

    def _decide(self, *, final: bool) -> list[Onset]:
        odf, levels, lookahead = self._odf, self._levels, self._lookahead
        if final:
            odf = np.concatenate([odf, np.full(lookahead, -math.inf)])
            levels = np.concatenate([levels, np.zeros(lookahead)])
        first = self._next_frame - self._odf_base
        s = self._settings
        picked = pick_peaks(
            odf,
            levels,
            first=first,
            pre_max=self._pre_max,
            lookahead=lookahead,
            pre_avg=self._pre_avg,
            delta=s.threshold,
            min_power=10.0 ** (s.silence_db / 10.0),
            mean_factor=self._spec.mean_factor,
        )
        stop = max(first, len(odf) - lookahead)
        self._next_frame = self._odf_base + stop
        onsets: list[Onset] = []
        if len(picked):
            grid = self._grid
            offset = self._spec.attack_offset * grid.frame_len
            shifts = peak_shifts(odf, picked)
            ends = (self._odf_base + picked + 1 + shifts) * grid.hop
            times = [max(0, round(end - offset)) / self._rate for end in ends]
            kept, self._last_onset_s = merge_close(times, self._last_onset_s, s.min_interval_ms / 1000.0)
            onsets = [Onset(time=times[k], strength=float(odf[picked[k]])) for k in kept]
        # Keep only the past the next decisions need.
        drop = max(0, self._next_frame - self._context - self._odf_base)
        if drop:
            self._odf = self._odf[drop:].copy()
            self._levels = self._levels[drop:].copy()
            self._odf_base += drop
        return onsets


def peak_shifts(odf: F64, peaks: npt.NDArray[np.int64]) -> F64:
    """Sub-frame position of each peak by a parabola through it and its two neighbours, frames in [-0.5, 0.5].

    A neighbour that is missing or not finite (end of stream) gives shift 0.
    """
    shifts = np.zeros(len(peaks))
    for k, p in enumerate(peaks):
        if 0 < p < len(odf) - 1:
            a, b, c = odf[p - 1], odf[p], odf[p + 1]
            curvature = a - 2.0 * b + c
            if math.isfinite(a) and math.isfinite(c) and curvature < 0:
                shifts[k] = min(0.5, max(-0.5, 0.5 * (a - c) / curvature))
    return shifts


def to_mono(block: npt.ArrayLike, channels: int) -> F32:
    """Validate one block and return it as contiguous mono float32.

    Parameters
    ----------
    block : array_like, shape (n,) or (n, channels)
        float32/float64 in [-1, 1], or int16 scaled by 1/32768.
    channels : int
        Expected channel count; a 1-D block is accepted only when it is 1.

    Returns
    -------
    ndarray, shape (n,), float32
        Channel mean, computed channel by channel so each sample's value never depends on the block.

    Raises
    ------
    AudioFormatError
        Wrong shape or dtype, or a NaN/Inf sample.
    """
    array = np.asarray(block)
    if array.dtype == np.int16:
        scaled = array.astype(np.float32) * np.float32(1.0 / 32768.0)
    elif array.dtype in (np.float32, np.float64):
        # One sum catches NaN/Inf (they propagate); only a non-finite sum needs the element-wise check.
        if not math.isfinite(float(np.sum(array))) and not np.all(np.isfinite(array)):
            raise AudioFormatError("audio contains NaN or Inf samples")
        scaled = array.astype(np.float32, copy=False)
    else:
        raise AudioFormatError(f"audio dtype {array.dtype} is not float32, float64 or int16")
    if scaled.ndim == 1:
        if channels != 1:
            raise AudioFormatError(f"a 1-D block is mono but the stream has {channels} channels")
        return np.ascontiguousarray(scaled)
    if scaled.ndim != 2 or scaled.shape[1] != channels:
        raise AudioFormatError(f"block shape {array.shape} does not match (n, {channels})")
    if channels == 1:
        return np.ascontiguousarray(scaled[:, 0])
    total = scaled[:, 0].copy()
    for channel in range(1, channels):
        total += scaled[:, channel]
    return total * np.float32(1.0 / channels)
