"""The streaming onset detector: one small stateful object per stream.

State is the samples not yet framed, the last few feature rows, the recent frame peaks (for the compression
floor), the recent detection function and frame levels, and the time of the last reported onset. Everything
derived from the rate and settings (window, filterbank, peak-picking windows) is a shared cached
:class:`~server.dsp.plan.Plan`, so the pickled object stays small and unpickles fast.

The per-frame analysis (FFT, filterbank, ODF) is done by :mod:`server.dsp.batch`, for one detector or for
many at once; this class keeps each stream's state and decides its onsets, in plain Python floats (see
:mod:`server.dsp.peaks`): with a handful of new frames per block that is cheaper than numpy calls.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import batch
from server.dsp.onset import Onset
from server.dsp.peaks import merge_close, peak_shift, pick_peaks
from server.dsp.plan import Plan, plan_for, restore_plan
from server.dsp.settings import GRID_SETTINGS, DetectorSettings, settings_tuple
from server.exceptions import AudioFormatError, SettingsError

F32 = npt.NDArray[np.float32]

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 192000
MAX_CHANNELS = 64
END_GUARD_S = 0.01  # the abrupt end of a stream looks like an attack: flush() drops onsets this close to it
STATE_VERSION = 2  # of the pickled state


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

    _tail: F32  # samples not yet framed, the last frame_len - hop or more of the stream
    _hist: Any  # the last `history` feature rows (None: prime from the next frame after a method switch)
    _prime: int  # frames whose ODF is still forced to 0 after a method switch
    _recent: collections.deque[tuple[int, float]]  # (frame, peak) pairs with decreasing peaks: a window max
    _odf: list[float]  # detection function from frame _odf_base on: past context, then undecided frames
    _levels: list[float]  # frame powers, linear, aligned with _odf
    _odf_out: list[float]  # detection function not yet taken

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
        self._use_settings(settings or DetectorSettings())
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
        return self._plan.frames.grid.hop / self._rate

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: the peak picker's look-ahead plus one hop, seconds."""
        return (self._plan.lookahead + 1) * self._plan.frames.grid.hop / self._rate

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

        See Also
        --------
        server.dsp.batch.process_many : the same for many detectors at once, faster per block.
        """
        return batch.analyse([(self, block)])[0]

    def flush(self) -> list[Onset]:
        """End the stream: analyse the remaining samples and return the remaining onsets.

        Afterwards the detector starts a new stream (time 0, same settings).
        """
        end_s = self._samples_in / self._rate
        grid = self._plan.frames.grid
        padding = np.zeros(grid.frame_len + grid.hop, dtype=np.float32)
        found = batch.analyse_pass(self, padding, final=True)
        self._reset_stream()
        return [o for o in found if o.time < end_s - END_GUARD_S]

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
        self._use_settings(settings)
        if method_changed:
            # Primed from the next frame: the new method starts without a jump, and the frame peaks of
            # another method (in another unit) no longer set the compression floor.
            self._hist = None
            self._prime = self._plan.frames.history
            self._recent.clear()

    def take_odf(self) -> F32:
        """Detection function values produced since the last call, one per hop, float32.

        At most the latest ``ODF_KEEP_S`` (10 s) of values are kept between calls.
        """
        values = self._odf_out
        if len(values) > self._plan.odf_keep:
            values = values[-self._plan.odf_keep :]
        self._odf_out = []
        return np.array(values, dtype=np.float32)

    # ----------------------------------------------------------------------------------------------
    # Pickling: the plan is looked up again, not stored; numbers travel as plain tuples and bytes.

    def __getstate__(self) -> tuple[Any, ...]:
        hist = self._hist
        return (
            STATE_VERSION,
            self._rate,
            self._channels,
            self._settings_values,
            self._samples_in,
            self._tail.tobytes(),
            None if hist is None else hist.tobytes(),
            self._prime,
            tuple(self._recent),
            self._odf,
            self._levels,
            self._odf_base,
            self._next_frame,
            self._last_onset_s,
            self._odf_out,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if state[0] != STATE_VERSION:
            raise ValueError(f"detector state version {state[0]} is not {STATE_VERSION}")
        (
            _,
            self._rate,
            self._channels,
            values,
            self._samples_in,
            tail,
            hist,
            self._prime,
            recent,
            self._odf,
            self._levels,
            self._odf_base,
            self._next_frame,
            self._last_onset_s,
            self._odf_out,
        ) = state
        self._settings, plan = restore_plan(self._rate, values)
        self._settings_values = values
        self._use_plan(plan)
        self._tail = np.frombuffer(tail, dtype=np.float32)
        silent = self._plan.frames.silent_features
        self._hist = None if hist is None else np.frombuffer(hist, dtype=silent.dtype).reshape(silent.shape)
        self._recent = collections.deque(recent)

    # ----------------------------------------------------------------------------------------------
    # Stream state, used by server.dsp.batch

    def _use_settings(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._settings_values = settings_tuple(settings)
        self._use_plan(plan_for(self._rate, settings))

    def _use_plan(self, plan: Plan) -> None:
        self._plan = plan
        self._frames = plan.frames  # what batch.analyse groups detectors by
        self._chunk_len = batch.CHUNK_HOPS * plan.frames.grid.hop  # longest block analysed in one pass

    def _reset_stream(self) -> None:
        plan = self._plan
        grid = plan.frames.grid
        self._samples_in = 0
        self._tail = np.zeros(grid.frame_len - grid.hop, dtype=np.float32)
        self._hist = plan.frames.silent_features
        self._prime = 0
        self._recent = collections.deque()
        self._odf = [0.0] * plan.context
        self._levels = [0.0] * plan.context
        self._odf_base = -plan.context  # absolute frame index of self._odf[0]
        self._next_frame = 0  # first frame not yet decided
        self._last_onset_s = -math.inf
        self._odf_out = []

    def _finish(
        self, tail: F32, hist: Any, values: list[float], levels: list[float], final: bool
    ) -> list[Onset]:
        """Take a pass's results: the samples left unframed, the new history rows (None: no new frames),
        the new frames' detection function and levels; return the onsets now certain."""
        self._tail = tail
        plan = self._plan
        if hist is not None:
            self._hist = hist
            if self._prime:
                primed = min(self._prime, len(values))
                values[:primed] = [0.0] * primed  # no real past to compare the new method's first frames to
                self._prime -= primed
            self._odf += values
            self._levels += levels
            out = self._odf_out
            out += values
            if len(out) > 2 * plan.odf_keep:
                del out[: -plan.odf_keep]
        if final:
            return self._decide(final=True)
        first = self._next_frame - self._odf_base
        stop = len(self._odf) - plan.lookahead
        if stop <= first:
            return []
        for value in self._odf[first:stop]:
            if value >= plan.delta:
                return self._decide(final=False)
        self._advance(stop)  # no frame reaches the threshold: none can be an onset
        return []

    def _decide(self, *, final: bool) -> list[Onset]:
        """Onsets among the frames whose look-ahead is complete (all of them when ``final``)."""
        plan = self._plan
        odf, lookahead = self._odf, plan.lookahead
        if final:
            odf = odf + [-math.inf] * lookahead
        first = self._next_frame - self._odf_base
        stop = len(odf) - lookahead
        if stop <= first:
            return []
        picked = pick_peaks(
            odf,
            self._levels,
            first=first,
            stop=stop,
            pre_max=plan.pre_max,
            lookahead=lookahead,
            pre_avg=plan.pre_avg,
            delta=plan.delta,
            min_power=plan.min_power,
            mean_factor=plan.mean_factor,
        )
        onsets: list[Onset] = []
        if picked:
            hop, base = plan.frames.grid.hop, self._odf_base
            times = [
                max(0, round((base + p + 1 + peak_shift(odf, p)) * hop - plan.attack_offset)) / self._rate
                for p in picked
            ]
            kept, self._last_onset_s = merge_close(times, self._last_onset_s, plan.min_interval_s)
            onsets = [Onset(time=times[k], strength=odf[picked[k]]) for k in kept]
        self._advance(stop)
        return onsets

    def _advance(self, stop: int) -> None:
        """Frames before ``stop`` (an index into ``_odf``) are decided; keep only the past still needed."""
        self._next_frame = self._odf_base + stop
        drop = stop - self._plan.context
        if drop > 0:
            del self._odf[:drop]
            del self._levels[:drop]
            self._odf_base += drop
