"""Per-frame analysis of one or many detectors' blocks in shared passes, and :func:`process_many`.

The new frames of the detectors that share a :class:`~server.dsp.plan.FramePlan` (same rate, method and
grid) are stacked into one array: one gather and window, one FFT, one filterbank, one detection-function
pass, whatever the number of streams. Every step works frame by frame (pocketfft per row, the filterbank's
sparse product per column, reductions along each row, no BLAS), so a frame's values are bitwise the same
whichever other frames share its pass; only the small stateful part (frame-peak window, peak picking) runs
per detector, in :class:`~server.dsp.detector.OnsetDetector`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from server.dsp import odf as odf_mod
from server.dsp.blocks import FLOAT32, all_finite, to_mono
from server.dsp.filterbank import log_filterbank
from server.dsp.onset import Onset
from server.dsp.plan import FramePlan
from server.dsp.spectrum import frame_power, frame_view, spectrum
from server.exceptions import AudioFormatError

if TYPE_CHECKING:
    from server.dsp.detector import OnsetDetector

F32 = npt.NDArray[np.float32]

def process_many(pairs: Sequence[tuple[OnsetDetector, npt.ArrayLike]]) -> list[list[Onset]]:
    """Feed each detector its next block, in passes shared by all of them.

    The same as ``[detector.process(block) for detector, block in pairs]``, bitwise, with the fixed cost of
    the numpy and scipy calls paid once per pass (up to ``FramePlan.pass_frames`` frames) instead of once
    per block.

    Parameters
    ----------
    pairs : sequence of (OnsetDetector, ndarray)
        Each block as :meth:`OnsetDetector.process` takes it: shape (n,) or (n, channels), float32/float64
        in [-1, 1] or int16; any ``n >= 0``. Detectors may differ in rate, channels and settings. A
        detector listed more than once gets its blocks in the order listed.

    Returns
    -------
    list of list of Onset
        The onsets of each pair, in the order of ``pairs``.

    Raises
    ------
    AudioFormatError
        If any block is bad (wrong shape or dtype, NaN/Inf); its message starts with ``block <index>:``.
        Every block is checked before any is analysed, so then no detector's state has changed.
    """
    return analyse(pairs, numbered=True)


def analyse(
    pairs: Sequence[tuple[OnsetDetector, npt.ArrayLike]], *, numbered: bool = False
) -> list[list[Onset]]:
    """:func:`process_many`, with error messages prefixed ``block <index>:`` only when ``numbered``.

    Each detector's first block, when at most ``Plan.chunk_len`` samples long, goes into a pass shared with
    other detectors of its plan; longer or repeated blocks follow one by one, in chunks. Every block is
    checked before any state changes: NaN/Inf once per pass, and in the other blocks one by one.
    """
    monos: list[F32] = []
    open_passes: dict[FramePlan, _Pass] = {}
    passes: list[_Pass] = []
    later: list[int] = []
    seen: set[int] | None = None if len({id(d) for d, _ in pairs}) == len(pairs) else set()
    for index, (detector, block) in enumerate(pairs):
        if (  # the common case, mono float32 as it came: what to_mono would return, checked faster
            type(block) is np.ndarray
            and block.dtype is FLOAT32
            and block.ndim == 1
            and block.flags.c_contiguous
            and detector.channels == 1
        ):
            mono: F32 = block
        else:
            try:
                mono = to_mono(block, detector.channels, check=False)
            except AudioFormatError as exc:
                if numbered:
                    raise AudioFormatError(f"block {index}: {exc}") from exc
                raise
        monos.append(mono)
        plan = detector.plan
        if len(mono) > plan.chunk_len or not (seen is None or _first_time(seen, detector)):
            later.append(index)
            continue
        frames = plan.frames
        current = open_passes.get(frames)
        if current is None or current.frames >= frames.pass_frames:
            current = open_passes[frames] = _Pass(frames)
            passes.append(current)
        current.add(index, detector, mono)
    for current in passes:
        current.seal()
        if not all_finite(current.samples):
            _raise_bad(monos, current.members, numbered)
    if later:
        _raise_bad(monos, later, numbered)
    if len(passes) == 1 and not later:
        return passes[0].run(final=False)  # every entry, in order
    results: list[list[Onset]] = [[] for _ in pairs]
    for current in passes:
        for index, onsets in zip(current.members, current.run(final=False), strict=True):
            results[index] = onsets
    for index in later:
        detector, mono = pairs[index][0], monos[index]
        step = detector.plan.chunk_len
        for start in range(0, max(1, len(mono)), step):
            results[index] += analyse_pass(detector, mono[start : start + step], final=False)
    return results


def analyse_pass(detector: OnsetDetector, mono: F32, *, final: bool) -> list[Onset]:
    """Analyse one chunk of one detector without checks.

    With ``final`` the detector decides its last frames and ``mono`` (end-of-stream padding) does not
    count in ``samples_in``.
    """
    current = _Pass(detector.plan.frames)
    current.add(0, detector, mono)
    current.seal()
    return current.run(final=final)[0]


def _first_time(seen: set[int], detector: OnsetDetector) -> bool:
    key = id(detector)
    if key in seen:
        return False
    seen.add(key)
    return True


class _Pass:
    """Detectors whose new frames are analysed together: filled by :meth:`add`, then sealed and run.

    A pass closes once it holds ``plan.pass_frames`` frames, so its arrays stay around half a megabyte:
    larger temporaries are handed back to the system after each use and page-faulted in again, which
    costs more than the per-pass overhead that larger passes would save.
    """

    __slots__ = (
        "entries",
        "frame_len",
        "frames",
        "hop",
        "length",
        "members",
        "pieces",
        "plan",
        "regular",
        "samples",
        "size",
        "tapped",
    )

    def __init__(self, plan: FramePlan) -> None:
        self.plan = plan
        self.frame_len, self.hop = plan.grid.frame_len, plan.grid.hop
        self.members: list[int] = []  # caller's index of each detector
        # Per member: detector, its new frames, its samples in the joined pieces, its new samples, and where
        # its samples start in the joined pieces.
        self.entries: list[tuple[OnsetDetector, int, int, int, int]] = []
        self.pieces: list[F32] = []  # each detector's unframed samples, then its new ones
        self.frames = 0  # new frames in all
        self.size = 0  # samples in all
        self.length = -1  # samples of the first member
        self.regular = True  # every member has new frames and as many samples as the others
        self.tapped = False  # some member keeps its log-filterbank rows (OnsetDetector.tap_rows)
        self.samples: F32 = np.zeros(0, dtype=np.float32)

    def add(self, index: int, detector: OnsetDetector, mono: F32) -> None:
        state = detector.state
        tail = state.tail
        length = len(tail) + len(mono)
        offset = self.size
        self.size = offset + length
        self.pieces += (tail, mono)
        self.members.append(index)
        if state.rows_out is not None:
            self.tapped = True
        if length >= self.frame_len:
            count = (length - self.frame_len) // self.hop + 1
            self.frames += count
        else:
            count = 0
            self.regular = False
        self.entries.append((detector, count, length, len(mono), offset))
        if length != self.length:  # the number of frames follows from the length
            if self.length < 0:
                self.length = length
            else:
                self.regular = False

    def starts(self) -> list[int]:
        """Where each new frame starts in the joined samples, member after member."""
        starts: list[int] = []
        hop = self.hop
        for _, count, _, _, offset in self.entries:
            starts += range(offset, offset + count * hop, hop)
        return starts

    def seal(self) -> None:
        """Join the pieces (nothing changes in the detectors yet)."""
        self.samples = np.concatenate(self.pieces)
        self.pieces = []

    def run(self, *, final: bool) -> list[list[Onset]]:
        """Frames, features and ODF of all members at once, then each member's decisions, in order.

        With ``final`` (end of stream) the new samples are padding: they do not count in ``samples_in``.
        """
        values: list[float] = []
        levels: list[float] = []
        kept: Any = None
        rows = None
        if self.frames:
            values, levels, kept, rows = _analyse_frames(self)
            if self.regular and not final and rows is None:
                return self._run_regular(values, levels, kept)
        samples, hop, history = self.samples, self.hop, self.plan.history
        found: list[list[Onset]] = []
        row = framed = 0
        for detector, count, length, new, offset in self.entries:
            tail = samples[offset + count * hop : offset + length]
            if not final:
                _take_new_samples(detector, samples, offset + length, new)
            if count:
                stop = row + count
                hist = kept[framed * history : (framed + 1) * history]
                if rows is not None:
                    _keep_rows(detector, rows[row:stop])
                new_values = values[row:stop]
                plan = detector.plan
                if plan.attack_search is not None and max(new_values) >= plan.threshold:
                    _keep_attack_windows(detector, samples, offset, new_values, self.frame_len, hop)
                found.append(detector.finish_pass(tail, hist, new_values, levels[row:stop], final))
                row = stop
                framed += 1
            else:
                found.append(detector.finish_pass(tail, None, [], [], final))
        return found

    def _run_regular(self, values: list[float], levels: list[float], kept: Any) -> list[list[Onset]]:
        """:meth:`run` of a regular pass (every member as many samples and new frames), not final, no tap:
        the members' tails and history rows are the rows of one array each."""
        members, length = len(self.entries), self.length
        count = self.entries[0][1]
        samples, frame_len, hop = self.samples, self.frame_len, self.hop
        tails = samples.reshape(members, length)[:, count * hop :]
        hists = kept.reshape(members, self.plan.history, kept.shape[1])
        found: list[list[Onset]] = []
        row = 0
        for (detector, _, _, new, offset), tail, hist in zip(self.entries, tails, hists, strict=True):
            _take_new_samples(detector, samples, offset + length, new)
            plan = detector.plan
            stop = row + count
            new_values = values[row:stop]
            if plan.attack_search is not None and max(new_values) >= plan.threshold:  # else none is kept
                _keep_attack_windows(detector, samples, offset, new_values, frame_len, hop)
            found.append(detector.finish_pass(tail, hist, new_values, levels[row:stop], False))
            row = stop
        return found


def _take_new_samples(detector: OnsetDetector, samples: F32, end: int, new: int) -> None:
    """Count a member's ``new`` samples, which end at ``end`` in the pass's joined ``samples``, and extend its
    opening (the samples judged before its first frame) with them while it is shorter than the plan's."""
    state = detector.state
    state.samples_in += new
    opening, wanted = state.opening, detector.plan.opening_len
    if opening is not None and new and len(opening) < wanted:
        state.opening = np.concatenate([opening, samples[end - new : end][: wanted - len(opening)]])


def _keep_attack_windows(detector: OnsetDetector, samples: F32, offset: int, values: list[float],
                         frame_len: int, hop: int) -> None:
    """Without look-ahead: keep the samples of each new frame whose detection function reaches the threshold
    (only those can be onsets): the onset's attack is located in them once the frame is one
    (:mod:`server.dsp.attack`), so its time does not depend on how the audio was cut. The detector's
    samples start at ``offset`` in ``samples``; ``values`` are its new frames' ODF."""
    state = detector.state
    threshold, first = detector.plan.threshold, state.odf_base + len(state.odf)  # the first new frame's index
    windows = state.attack_windows
    for k, value in enumerate(values):
        if value >= threshold:
            start = offset + k * hop
            windows[first + k] = samples[start : start + frame_len].copy()


def _raise_bad(monos: list[F32], indices: list[int], numbered: bool) -> None:
    """Raise for the first of ``monos[indices]`` with a NaN or Inf sample, if any."""
    for index in indices:
        if not all_finite(monos[index]):
            prefix = f"block {index}: " if numbered else ""
            raise AudioFormatError(f"{prefix}audio contains NaN or Inf samples")


def _keep_rows(detector: OnsetDetector, rows: F32) -> None:
    """Hand a tapped detector its new frames' log-filterbank rows (at most ``odf_keep`` passes kept)."""
    kept = detector.state.rows_out
    if kept is not None:
        kept.append(rows)
        if len(kept) > detector.plan.odf_keep:  # nobody takes them: keep what take_odf would give
            del kept[: -detector.plan.odf_keep]


def tap_rows_of(plan: FramePlan, spectra: Any, feats: Any) -> F32:
    """The log-filterbank magnitude rows of a pass's frames: the features themselves for ``superflux``,
    else the same filterbank applied to the spectra (:func:`~server.dsp.odf.band_magnitudes`)."""
    if plan.method.features is odf_mod.band_magnitudes:
        rows: F32 = feats
        return rows
    grid = plan.grid
    return odf_mod.band_magnitudes(spectra, log_filterbank(grid.sample_rate, grid.fft_size))


def _analyse_frames(current: _Pass) -> tuple[list[float], list[float], Any, F32 | None]:
    """Detection function and level of every new frame of a pass, each member's next history rows, and
    the frames' log-filterbank rows when a member taps them.

    Returns
    -------
    values, levels : list of float
        Per new frame, member after member.
    kept : ndarray, shape (members with new frames * history, n_features)
        Their last ``history`` feature rows, member after member.
    rows : ndarray, shape (new frames, n_bands), or None
        :func:`tap_rows_of` the new frames, when ``current.tapped``.
    """
    plan, samples = current.plan, current.samples
    grid = plan.grid
    step, frame_len = samples.strides[0], grid.frame_len
    # Windowed frames go straight into a zero-padded buffer: the FFT then copies nothing.
    padded = np.empty((current.frames, grid.fft_size), dtype=np.float32)
    padded[:, frame_len:] = 0.0
    count, length = current.entries[0][1], current.length
    if current.regular:  # every member brought as many samples: its frames lie on a regular grid
        frames = np.ndarray(
            (len(current.entries), count, frame_len),
            dtype=np.float32,
            buffer=samples,
            strides=(length * step, grid.hop * step, step),
        )
        np.multiply(
            frames, plan.window, out=padded.reshape(len(current.entries), count, -1)[:, :, :frame_len]
        )
    else:
        every_start = frame_view(samples, frame_len, 1)  # a frame at every sample; pick ours
        np.multiply(every_start[current.starts()], plan.window, out=padded[:, :frame_len])
    windowed = padded[:, :frame_len]
    spectra = spectrum(padded, grid.fft_size)
    levels = frame_power(windowed, plan.level_norm, overwrite=True).tolist()  # padded is free now
    del padded, windowed
    feats = plan.method.features(spectra, plan.constants)
    rows = tap_rows_of(plan, spectra, feats) if current.tapped else None
    if plan.method.step is not None:
        return _step_stateful(current, feats), levels, feats[:0], rows
    values, kept = _compare_classical(current, feats)
    return values, levels, kept, rows


def _compare_classical(current: _Pass, feats: Any) -> tuple[list[float], Any]:
    """ODF of a classical method's new frames (each compared with its ``lags`` past rows) and the rows kept.

    Row r of ``table`` is a new frame's features for r < current.frames, then each member's history rows.
    A member's frames in stream order are its history rows, then its new rows: position p of that
    sequence is table row ``row + p - history`` when p >= history, else its history row p (a detector
    priming after a method switch has no history: its first new row stands for all of it).
    """
    plan = current.plan
    method, history, lags = plan.method, plan.history, plan.lags
    assert method.peaks is not None and method.compare is not None
    counts = [count for _, count, _, _, _ in current.entries if count]
    states = [detector.state for detector, count, _, _, _ in current.entries if count]
    windows = [(s.recent, s.odf_base + len(s.odf), count) for s, count in zip(states, counts, strict=True)]
    recent = odf_mod.recent_peaks_many(windows, method.peaks(feats).tolist(), plan.floor_frames)
    scale, low = plan.floor_scale, plan.floor_low
    floor = np.array(odf_mod.floors_of(recent, scale, low), dtype=np.float32)[:, None]
    hist_parts = [state.history for state in states]
    if current.regular and not any(hist is None for hist in hist_parts):
        if len(hist_parts) == 1 and lags == (1,) and history == 1:
            # One member (a lone detector's pass): its past is its history, then its new rows.
            references: tuple[Any, ...] = (np.concatenate([hist_parts[0], feats[:-1]]),)
            kept = feats[-1:]
        else:  # every member alike: the rows to gather depend on the pass's shape alone
            past_rows, keep = _classical_rows(len(states), counts[0], history, lags)
            table = np.concatenate([feats, *hist_parts])
            references = tuple(table[rows] for rows in past_rows)
            kept = table[keep]
    else:
        hist_parts = [hist for hist in hist_parts if hist is not None]
        past: list[list[int]] = [[] for _ in lags]
        keep_list: list[int] = []
        row = 0
        next_hist = current.frames
        for state, count in zip(states, counts, strict=True):
            if state.history is None:
                first, step = row, 0
            else:
                first, step = next_hist, 1
                next_hist += history
            for lag, rows in zip(lags, past, strict=True):
                # Frame k compares with position history + k - lag: a history row while k < lag.
                head = lag if lag < count else count
                for k in range(head):
                    rows.append(first + step * (history + k - lag))
                rows += range(row, row + count - head)
            for position in range(count, count + history):
                keep_list.append(row + position - history if position >= history else first + step * position)
            row += count
        table = np.concatenate([feats, *hist_parts]) if hist_parts else feats
        references = tuple(table[rows] for rows in past)
        kept = table[keep_list]
    values: list[float] = method.compare(feats, references, method.unit, floor).tolist()
    return values, kept


@functools.lru_cache(maxsize=256)
def _classical_rows(
    members: int, count: int, history: int, lags: tuple[int, ...]
) -> tuple[tuple[Any, ...], Any]:
    """:func:`_compare_classical`'s gathers when each of ``members`` brings ``count`` new rows and has its
    ``history`` rows: per lag, the table row each new frame compares with, and the rows each member keeps
    (member after member). Read-only."""
    new_rows = members * count
    member = np.arange(members, dtype=np.int64)[:, None]
    first = new_rows + history * member  # the member's first history row in the table
    k = np.arange(count, dtype=np.int64)[None, :]
    past = []
    for lag in lags:
        rows = np.where(k < lag, first + history + k - lag, member * count + k - lag).ravel()
        rows.setflags(write=False)
        past.append(rows)
    position = np.arange(count, count + history, dtype=np.int64)[None, :]
    keep = np.where(position >= history, member * count + position - history, first + position).ravel()
    keep.setflags(write=False)
    return tuple(past), keep


def _step_stateful(current: _Pass, feats: Any) -> list[float]:
    """ODF of a stateful method's new frames: one ``step`` call for every member, states replaced."""
    plan = current.plan
    entries = current.entries
    if current.regular:  # every member brings as many rows: the rows of one array
        members = [detector for detector, _, _, _, _ in entries]
        rows: list[Any] = list(feats.reshape(len(members), entries[0][1], -1))
    else:
        members = [detector for detector, count, _, _, _ in entries if count]
        rows = []
        row = 0
        for _, count, _, _, _ in entries:
            if count:
                rows.append(feats[row : row + count])
                row += count
    step = plan.method.step
    assert step is not None
    odfs, states = step(plan, rows, [detector.state.method_state for detector in members])
    for detector, state in zip(members, states, strict=True):
        detector.state.method_state = state
    values: list[float] = np.concatenate(odfs).tolist() if odfs else []
    return values
