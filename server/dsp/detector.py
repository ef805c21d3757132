"""The streaming onset detector: one small stateful object per stream.

Its stream's state is one :class:`~server.dsp.state.StreamState` (the samples not yet framed, the last few
feature rows, the recent frame peaks, the recent detection function and frame levels, the time of the last
reported onset, a stateful method's own state). Everything derived from the rate, settings and method
(window, filterbank, peak-picking windows) is a shared cached :class:`~server.dsp.plan.Plan`, so the
pickled object stays small and unpickles fast.

The per-frame analysis (FFT, filterbank, ODF) is done by :mod:`server.dsp.batch`, for one detector or for
many at once; this class keeps each stream's state and decides its onsets, in plain Python floats (see
:mod:`server.dsp.peaks`): with a handful of new frames per block that is cheaper than numpy calls.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import batch
from server.dsp.attack import attack_energies, attack_filters, locate_attack
from server.dsp.methods import METHOD_TABLE, OnsetMethod
from server.dsp.onset import AttackEvidence, Onset
from server.dsp.opening import opening_is_attack
from server.dsp.peaks import mask_levels, merge_close, peak_shift, pick_peaks
from server.dsp.plan import Plan, plan_for, restore_plan
from server.dsp.settings import GRID_SETTINGS, DetectorSettings, settings_tuple
from server.dsp.state import FLOAT32, StreamState, new_state, pack, switch_method, unpack
from server.exceptions import AudioFormatError, SettingsError

F32 = npt.NDArray[np.float32]

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 192000
MAX_CHANNELS = 64
END_GUARD_S = 0.01  # the abrupt end of a stream looks like an attack: flush() drops onsets this close to it
STATE_VERSION = 9  # of the pickled state (6: located attacks; 7: forward mask level; 8: neural's past array;
# 9: frames' samples kept for the attack instead of its located position)


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
    methods : mapping of str to OnsetMethod, optional
        Where ``settings.method`` is looked up: :data:`~server.dsp.methods.METHOD_TABLE` when omitted
        (another table lets a test try a method without registering it).

    Raises
    ------
    AudioFormatError
        For a sample rate or channel count out of range.

    Attributes
    ----------
    plan : Plan
        The shared, read-only plan of the rate, settings and method.
    state : StreamState
        The stream's state, read and written by :mod:`server.dsp.batch`.
    """

    plan: Plan
    state: StreamState

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        settings: DetectorSettings | None = None,
        *,
        methods: Mapping[str, OnsetMethod] | None = None,
    ) -> None:
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
        self._methods = None if methods is None or methods is METHOD_TABLE else methods
        self._use_settings(settings or DetectorSettings())
        self.state = new_state(self.plan)

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
        return self.plan.frames.grid.hop / self._rate

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: the look-ahead (the peak picker's and the method's own ``delay_frames``) plus
        one hop, seconds.

        Except at the start of a stream: no frame is decided before ``Plan.opening_len`` samples (100 ms)
        have arrived and the start has been judged (:mod:`server.dsp.opening`).
        """
        return self.plan.latency_hops * self.plan.frames.grid.hop / self._rate

    @property
    def samples_in(self) -> int:
        """Samples per channel consumed since the stream started."""
        return self.state.samples_in

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
        end_s = self.state.samples_in / self._rate
        grid = self.plan.frames.grid
        padding = np.zeros(grid.frame_len + grid.hop, dtype=np.float32)
        found = batch.analyse_pass(self, padding, final=True)
        tapped = self.state.rows_out is not None
        self.state = new_state(self.plan)
        if tapped:
            self.state.rows_out = []
        return [o for o in found if o.time < end_s - END_GUARD_S]

    def decide_pending(self) -> list[Onset]:
        """Report now, without ending the stream, the onsets of the frames still waiting for look-ahead.

        They are the onsets :meth:`flush` would return if the stream ended here (a copy of the detector is
        flushed), so their times may differ by up to a hop from those the whole stream would give. This
        detector goes on as if nothing happened (its past, look-ahead and undecided frames are kept), except
        that an onset it finds within ``max(min_interval_ms, 2 hops)`` after the last one reported here is
        not reported again.
        """
        found = pickle.loads(pickle.dumps(self)).flush()
        if found:
            state, plan = self.state, self.plan
            hold_s = max(plan.min_interval_s, 2 * plan.frames.grid.hop / self._rate)
            state.last_onset_s = max(state.last_onset_s, found[-1].time)
            state.hold_until_s = max(state.hold_until_s, found[-1].time + hold_s)
        return found

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
            switch_method(self.state, self.plan.frames)

    def take_odf(self) -> F32:
        """Detection function values produced since the last call, one per hop, float32.

        At most the latest ``ODF_KEEP_S`` (10 s) of values are kept between calls.
        """
        state = self.state
        values = state.odf_out
        if len(values) > self.plan.odf_keep:
            values = values[-self.plan.odf_keep :]
        state.odf_out = []
        return np.asarray(values, FLOAT32)  # a dtype object: a little faster than the type

    def drop_odf(self) -> None:
        """Forget the detection function values produced since :meth:`take_odf` was last called."""
        self.state.odf_out = []

    def tap_rows(self, on: bool = True) -> None:
        """From the next block on, keep each new frame's log-filterbank magnitudes for :meth:`take_rows`
        (``on``), or stop keeping them and drop those not taken.

        They are the ``superflux`` method's feature rows (the same filterbank whatever the method), computed
        once in the batched pass beside the detection function; :mod:`server.rhythm` reads them instead of
        analysing the audio again.
        """
        if not on:
            self.state.rows_out = None
        elif self.state.rows_out is None:
            self.state.rows_out = []

    def take_rows(self) -> list[F32]:
        """The tapped rows produced since the last call: arrays of shape (n_frames, n_bands), float32, in
        frame order, one value of :meth:`take_odf` per row (at least the latest ``ODF_KEEP_S`` of them).

        Raises
        ------
        ValueError
            When the tap is off (see :meth:`tap_rows`).
        """
        state = self.state
        if state.rows_out is None:
            raise ValueError("the row tap is off: call tap_rows() first")
        rows, state.rows_out = state.rows_out, []
        return rows

    # ----------------------------------------------------------------------------------------------
    # Pickling: the plan is looked up again, not stored; the state travels as plain tuples and bytes.

    def __getstate__(self) -> tuple[Any, ...]:
        own = None if self._methods is None else self.plan.frames.method
        return (STATE_VERSION, self._rate, self._channels, self._settings_values, own, *pack(self.state))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if state[0] != STATE_VERSION:
            raise ValueError(f"detector state version {state[0]} is not {STATE_VERSION}")
        _, self._rate, self._channels, values, own = state[:5]
        self._methods = None if own is None else {own.name: own}
        self._settings, self.plan = restore_plan(self._rate, values, own)
        self._settings_values = values
        self.state = unpack(state, 5, self.plan.frames)

    # ----------------------------------------------------------------------------------------------
    # Stream state, used by server.dsp.batch

    def _use_settings(self, settings: DetectorSettings) -> None:
        methods = self._methods
        if methods is None:
            plan = plan_for(self._rate, settings)
        elif settings.method in methods:
            plan = plan_for(self._rate, settings, methods[settings.method])
        else:
            raise SettingsError("method", settings.method, f"must be one of {', '.join(methods)}")
        self._settings = settings
        self._settings_values = settings_tuple(settings)
        self.plan = plan

    def finish_pass(
        self, tail: F32, hist: Any, values: list[float], levels: list[float], final: bool
    ) -> list[Onset]:
        """Take a pass's results: the samples left unframed, the new history rows (None: no new frames),
        the new frames' detection function and levels; return the onsets now certain."""
        state = self.state
        state.tail = tail
        plan = self.plan
        if hist is not None:
            state.history = hist
            if state.prime:
                primed = min(state.prime, len(values))
                values[:primed] = [0.0] * primed  # no real past to compare the new method's first frames to
                state.prime -= primed
            state.odf += values
            state.levels += levels
            out = state.odf_out
            out += values
            if len(out) > 2 * plan.odf_keep:
                del out[: -plan.odf_keep]
        if state.opening is not None:
            if not final and len(state.opening) < plan.opening_len:
                return []  # no frame is decided before the start of the stream is judged
            self._judge_opening()
        if final:
            return self._decide(final=True)
        first = state.next_frame - state.odf_base
        stop = len(state.odf) - plan.lookahead
        if stop <= first:
            return []
        threshold = plan.threshold
        for value in state.odf[first:stop]:
            if value >= threshold:
                return self._decide(final=False)
        self._advance(stop)  # no frame reaches the threshold: none can be an onset
        return []

    def _judge_opening(self) -> None:
        """Judge the start of the stream once, before any frame is decided: unless it is an attack, the
        frames that see the silence assumed before the stream are decided as no onset. Their detection
        function stays in the past of later frames (their moving mean and maximum), so the rise from that
        silence (and a method's memory of it) cannot make a later frame stand out either."""
        state, plan = self.state, self.plan
        assert state.opening is not None
        if not opening_is_attack(state.opening, self._rate, plan.silence_db):
            first = state.next_frame - state.odf_base
            stop = min(len(state.odf), plan.opening_frames - state.odf_base)
            if stop > first:
                self._advance(stop)
        state.opening = None

    def _decide(self, *, final: bool) -> list[Onset]:
        """Onsets among the frames whose look-ahead is complete (all of them when ``final``)."""
        plan, state = self.plan, self.state
        odf, lookahead = state.odf, plan.lookahead
        if final:
            odf = odf + [-math.inf] * lookahead
        first = state.next_frame - state.odf_base
        stop = len(odf) - lookahead
        if stop <= first:
            return []
        masks: list[float] = []
        if plan.mask_decay:
            masks = mask_levels(odf, first, stop, state.mask_level, plan.mask_decay)
        picked = pick_peaks(
            odf,
            state.levels,
            first=first,
            stop=stop,
            pre_max=plan.pre_max,
            lookahead=lookahead,
            pre_avg=plan.pre_avg,
            threshold=plan.threshold,
            min_power=plan.min_power,
            mean_factor=plan.mean_factor,
            baseline=plan.baseline,
            # Without look-ahead a rise is reported at its first frame, not at its peak: no peak to mask.
            mask=[plan.mask_ratio * level for level in masks[:-1]] if lookahead else [],
            rise_once=not lookahead,
        )
        onsets: list[Onset] = []
        if picked:
            hop, base, rate = plan.frames.grid.hop, state.odf_base, self._rate
            attacks: list[int] = []
            if lookahead:
                times = [max(0, round((base + p + 1 + peak_shift(odf, p)) * hop - plan.attack_offset)) / rate
                         for p in picked]
            else:
                # The frame after a peak may or may not be in yet (it depends on the blocks): the attack is
                # placed from the peak frame's own samples instead (kept in its pass, server.dsp.attack), so
                # the times do not depend on how the audio was cut.
                attacks = [self._attack_at(base + p) for p in picked]
                times = [max(0, (base + p + 1) * hop + at) / rate
                         for p, at in zip(picked, attacks, strict=True)]
            if times[0] < state.hold_until_s:  # reported early by decide_pending
                times = [t for t in times if t >= state.hold_until_s]
                picked = picked[len(picked) - len(times) :]
            kept, state.last_onset_s = merge_close(times, state.last_onset_s, plan.min_interval_s)
            if not lookahead and state.rows_out is not None:  # a rhythm beside: what the attack's samples say
                first = len(attacks) - len(picked)  # picked may have lost its first (hold_until_s)
                onsets = [Onset(times[k], odf[picked[k]],
                                self._evidence(base + picked[k], attacks[first + k])) for k in kept]
            else:
                onsets = [Onset(time=times[k], strength=odf[picked[k]]) for k in kept]
        self._advance(stop, masks[-1] if masks else None)
        return onsets

    def _attack_at(self, frame: int) -> int:
        """Without look-ahead: where the attack of an onset decided at ``frame`` (on the stream's frame
        timeline) lies, samples back from the frame's end (not positive), located in the frame's kept samples
        (:func:`~server.dsp.attack.locate_attack`); the method's rise offset without them."""
        plan = self.plan
        window, search = self.state.attack_windows.get(frame), plan.attack_search
        if search is None:
            return -round(plan.attack_offset)
        if window is None:
            return -(search[0] - plan.frames.grid.hop)
        frame_len = len(window)
        at = locate_attack(window, frame_len - search[0], frame_len - search[1], plan.attack_block,
                           plan.attack_past)
        return at - frame_len

    def _evidence(self, frame: int, attack_at: int) -> AttackEvidence | None:
        """The attack evidence of an onset decided at ``frame``, its attack ``attack_at`` samples back from
        the frame's end (:meth:`_attack_at`), from that frame's kept samples; None without them."""
        window = self.state.attack_windows.get(frame)
        if window is None or self.plan.attack_search is None:
            return None
        hop = self.plan.frames.grid.hop
        energies = attack_energies(window, len(window) + attack_at, attack_filters(self._rate),
                                   self.plan.attack_run_in)
        return AttackEvidence((frame + 1) * hop / self._rate, energies)

    def _advance(self, stop: int, mask_level: float | None = None) -> None:
        """Frames before ``stop`` (an index into ``state.odf``) are decided; keep only the past needed.

        The forward mask's level is carried to ``stop`` (``mask_level`` when the caller has it already).
        """
        state, plan = self.state, self.plan
        if not plan.mask_decay:
            state.mask_level = 0.0
        elif mask_level is not None:
            state.mask_level = mask_level
        else:
            first = state.next_frame - state.odf_base
            state.mask_level = mask_levels(state.odf, first, stop, state.mask_level, plan.mask_decay)[-1]
        state.next_frame = state.odf_base + stop
        windows = state.attack_windows
        if windows:  # the samples of frames now decided are not needed any more
            for frame in [frame for frame in windows if frame < state.next_frame]:
                del windows[frame]
        drop = stop - plan.context
        if drop > 0:
            del state.odf[:drop]
            del state.levels[:drop]
            state.odf_base += drop

