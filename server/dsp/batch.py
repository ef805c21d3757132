"""Per-frame analysis of one or many detectors' blocks in shared passes, and :func:`process_many`.

The new frames of the detectors that share a :class:`~server.dsp.plan.FramePlan` (same rate, method and
grid) are stacked into one array: one gather and window, one FFT, one filterbank, one detection-function
pass, whatever the number of streams. Every step works frame by frame (pocketfft per row, the filterbank's
sparse product per column, reductions along each row, no BLAS), so a frame's values are bitwise the same
whichever other frames share its pass; only the small stateful part (frame-peak window, peak picking) runs
per detector, in :class:`~server.dsp.detector.OnsetDetector`.
"""

from __future__ import annotations

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
        "members",
        "pieces",
        "plan",
        "regular",
        "samples",
        "size",
        "starts",
        "tapped",
    )

    def __init__(self, plan: FramePlan) -> None:
        self.plan = plan
        self.frame_len, self.hop = plan.grid.frame_len, plan.grid.hop
        self.members: list[int] = []  # caller's index of each detector
        # Per member: detector, its new frames, its samples in the joined pieces, its new samples.
        self.entries: list[tuple[OnsetDetector, int, int, int]] = []
        self.pieces: list[F32] = []  # each detector's unframed samples, then its new ones
        self.starts: list[int] = []  # offset of each new frame in the joined pieces
        self.frames = 0  # new frames in all
        self.size = 0  # samples in all
        self.regular = True  # every member has new frames and as many samples as the others
        self.tapped = False  # some member keeps its log-filterbank rows (OnsetDetector.tap_rows)
        self.samples: F32 = np.zeros(0, dtype=np.float32)

    def add(self, index: int, detector: OnsetDetector, mono: F32) -> None:
        tail = detector.state.tail
        length = len(tail) + len(mono)
        offset = self.size
        self.size = offset + length
        self.pieces += (tail, mono)
        self.members.append(index)
        if detector.state.rows_out is not None:
            self.tapped = True
        if length >= self.frame_len:
            count = (length - self.frame_len) // self.hop + 1
            self.starts += range(offset, offset + count * self.hop, self.hop)
            self.frames += count
            self.entries.append((detector, count, length, len(mono)))
        else:
            self.entries.append((detector, 0, length, len(mono)))
            self.regular = False
        if length != self.entries[0][2]:  # the number of frames follows from the length
            self.regular = False

    def seal(self) -> None:
        """Join the pieces (nothing changes in the detectors yet)."""
        self.samples = np.concatenate(self.pieces)
        self.pieces = []

    def run(self, *, final: bool) -> list[list[Onset]]:
        """Frames, features and ODF of all members at once, then each member's decisions, in order.

        With ``final`` (end of stream) the new samples are padding: they do not count in ``samples_in``.
        """
        rows = None
        if self.starts:
            values, levels, kept, rows = _analyse_frames(self)
        samples, hop, history = self.samples, self.hop, self.plan.history
        found: list[list[Onset]] = []
        offset = row = framed = 0
        for detector, count, length, new in self.entries:
            tail = samples[offset + count * hop : offset + length]
            offset += length
            if not final:
                state = detector.state
                state.samples_in += new
                opening = state.opening
                if opening is not None and new and len(opening) < detector.plan.opening_len:
                    more = samples[offset - new : offset][: detector.plan.opening_len - len(opening)]
                    state.opening = np.concatenate([opening, more])
            if count:
                stop = row + count
                hist = kept[framed * history : (framed + 1) * history]
                if rows is not None:
                    _keep_rows(detector, rows[row:stop])
                new_values = values[row:stop]
                if detector.plan.attack_search is not None:
                    _keep_attack_windows(detector, samples, self.starts[row:stop], new_values, self.frame_len)
                found.append(detector.finish_pass(tail, hist, new_values, levels[row:stop], final))
                row = stop
                framed += 1
            else:
                found.append(detector.finish_pass(tail, None, [], [], final))
        return found


def _keep_attack_windows(detector: OnsetDetector, samples: F32, starts: list[int], values: list[float],
                         frame_len: int) -> None:
    """Without look-ahead: keep the samples of each new frame whose detection function reaches the threshold
    (only those can be onsets): the onset's attack is located in them once the frame is one
    (:mod:`server.dsp.attack`), so its time does not depend on how the audio was cut."""
    state = detector.state
    threshold, first = detector.plan.threshold, state.odf_base + len(state.odf)  # the first new frame's index
    windows = state.attack_windows
    for k, value in enumerate(values):
        if value >= threshold:
            start = starts[k]
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
    starts, step, frame_len = current.starts, samples.strides[0], grid.frame_len
    # Windowed frames go straight into a zero-padded buffer: the FFT then copies nothing.
    padded = np.empty((len(starts), grid.fft_size), dtype=np.float32)
    padded[:, frame_len:] = 0.0
    count, length = current.entries[0][1:3]
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
        np.multiply(every_start[starts], plan.window, out=padded[:, :frame_len])
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

    Row r of ``table`` is a new frame's features for r < len(starts), then each member's history rows.
    A member's frames in stream order are its history rows, then its new rows: position p of that
    sequence is table row ``row + p - history`` when p >= history, else its history row p (a detector
    priming after a method switch has no history: its first new row stands for all of it).
    """
    plan = current.plan
    method, history, lags = plan.method, plan.history, plan.lags
    assert method.peaks is not None and method.compare is not None
    peaks = method.peaks(feats).tolist()
    hist_parts: list[Any] = []
    past: list[list[int]] = [[] for _ in lags]
    keep: list[int] = []
    floors: list[float] = []
    row = 0
    next_hist = len(current.starts)
    simple = lags == (1,) and history == 1
    width, scale, low = plan.floor_frames, plan.floor_scale, plan.floor_low
    for detector, count, _, _ in current.entries:
        if not count:
            continue
        state = detector.state
        hist = state.history
        if hist is None:
            first, step = row, 0
        else:
            hist_parts.append(hist)
            first, step = next_hist, 1
            next_hist += history
        if simple:
            rows = past[0]
            rows.append(first)
            rows += range(row, row + count - 1)
            keep.append(row + count - 1)
        else:
            for lag, rows in zip(lags, past, strict=True):
                # Frame k compares with position history + k - lag: a history row while k < lag.
                head = lag if lag < count else count
                for k in range(head):
                    rows.append(first + step * (history + k - lag))
                rows += range(row, row + count - head)
            for position in range(count, count + history):
                keep.append(row + position - history if position >= history else first + step * position)
        frame = state.odf_base + len(state.odf)  # the first new frame's index
        floors += odf_mod.compression_floors(state.recent, frame, peaks[row : row + count], width, scale, low)
        row += count

    floor = np.array(floors, dtype=np.float32)[:, None]
    if simple and len(hist_parts) == 1 and len(hist_parts) == len(keep):
        # One member with history (a lone detector's pass): its past is its history, then its new rows.
        references: tuple[Any, ...] = (np.concatenate([hist_parts[0], feats[:-1]]),)
        kept = feats[-1:]
    else:
        table = np.concatenate([feats, *hist_parts]) if hist_parts else feats
        references = tuple(table[rows] for rows in past)
        kept = table[keep]
    values: list[float] = method.compare(feats, references, method.unit, floor).tolist()
    return values, kept


def _step_stateful(current: _Pass, feats: Any) -> list[float]:
    """ODF of a stateful method's new frames: one ``step`` call for every member, states replaced."""
    plan = current.plan
    members = [detector for detector, count, _, _ in current.entries if count]
    rows: list[Any] = []
    row = 0
    for _, count, _, _ in current.entries:
        if count:
            rows.append(feats[row : row + count])
            row += count
    step = plan.method.step
    assert step is not None
    odfs, states = step(plan, rows, [detector.state.method_state for detector in members])
    values: list[float] = []
    for detector, odf, state in zip(members, odfs, states, strict=True):
        detector.state.method_state = state
        values += odf.tolist()
    return values
