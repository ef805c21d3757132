"""Per-frame analysis of one or many detectors' blocks in one pass, and :func:`process_many`.

The new frames of every detector that shares a :class:`~server.dsp.plan.FramePlan` (same rate, method and
grid) are stacked into one array: one gather and window, one FFT, one filterbank, one detection-function
pass, whatever the number of streams. Every step works row by row (pocketfft per row, no BLAS, reductions
along each row), so a frame's values are bitwise the same whichever other frames share its batch; only the
small stateful part (frame-peak window, peak picking) runs per detector, in
:class:`~server.dsp.detector.OnsetDetector`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.fft

from server.dsp import odf as odf_mod
from server.dsp.onset import Onset
from server.dsp.plan import FramePlan
from server.exceptions import AudioFormatError

if TYPE_CHECKING:
    from server.dsp.detector import OnsetDetector

F32 = npt.NDArray[np.float32]

CHUNK_HOPS = 128  # a detector's samples go through a pass at most this many hops at a time
INT16_SCALE = np.float32(1.0 / 32768.0)


def process_many(pairs: Sequence[tuple[OnsetDetector, npt.ArrayLike]]) -> list[list[Onset]]:
    """Feed each detector its next block, all in shared passes; the same as ``[d.process(b) for d, b in
    pairs]``, bitwise, but with the fixed per-call cost paid once per pass instead of once per block.

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
    detectors: list[OnsetDetector] = []
    monos: list[F32] = []
    for detector, block in pairs:
        try:
            monos.append(to_mono(block, detector._channels, check=False))
        except AudioFormatError as exc:
            raise AudioFormatError(f"block {len(detectors)}: {exc}") from exc
        detectors.append(detector)
    return analyse(detectors, monos, numbered=True)


def analyse(detectors: list[OnsetDetector], monos: list[F32], *, numbered: bool = False) -> list[list[Onset]]:
    """Check and analyse mono samples from :func:`to_mono` (``monos[i]`` for ``detectors[i]``).

    The first block of each detector, when at most ``CHUNK_HOPS`` hops long, goes into passes shared with
    the other detectors of its plan; longer or repeated blocks follow one by one, in chunks. Every sample
    is checked before any state changes: once per pass, and the other blocks one by one.

    Returns
    -------
    list of list of Onset
        One list per detector entry.
    """
    groups: dict[FramePlan, list[int]] = {}
    later: list[int] = []
    seen: set[int] = set()
    for index, detector in enumerate(detectors):
        key = id(detector)
        if key in seen or len(monos[index]) > detector._chunk_len:
            later.append(index)
        else:
            members = groups.get(detector._frames)
            if members is None:
                groups[detector._frames] = [index]
            else:
                members.append(index)
        seen.add(key)
    passes = [
        _prepare(plan, detectors, monos, part)
        for plan, members in groups.items()
        for part in _split(plan, detectors, monos, members)
    ]
    for prepared in passes:
        if not _finite(prepared.samples):
            _raise_bad(monos, prepared.members, numbered)
    if later:
        _raise_bad(monos, later, numbered)
    results: list[list[Onset]] = [[] for _ in detectors] if later or len(passes) != 1 else []
    for prepared in passes:
        found = _run(prepared, detectors, final=False)
        if not results:  # one pass of every detector, in order
            results = found
            break
        for index, onsets in zip(prepared.members, found, strict=True):
            results[index] = onsets
    for index in later:
        detector, mono = detectors[index], monos[index]
        step = detector._chunk_len
        for start in range(0, max(1, len(mono)), step):
            results[index] += analyse_pass(detector, mono[start : start + step], final=False)
    for index, detector in enumerate(detectors):
        detector._samples_in += len(monos[index])
    return results


def analyse_pass(detector: OnsetDetector, mono: F32, *, final: bool) -> list[Onset]:
    """Analyse one chunk of one detector without checks (``final``: decide the last frames, at the end)."""
    return _run(_prepare(detector._frames, [detector], [mono], [0]), [detector], final=final)[0]


def _split(
    plan: FramePlan, detectors: list[OnsetDetector], monos: list[F32], members: list[int]
) -> list[list[int]]:
    """Split one plan's members into passes of at most ``plan.pass_frames`` new frames (one member may
    bring more), so that a pass's arrays stay small: large temporaries are given back to the system
    after each use and page-faulted in again, which costs more than the per-pass overhead saved."""
    frame_len, hop, limit = plan.grid.frame_len, plan.grid.hop, plan.pass_frames
    parts: list[list[int]] = [[]]
    frames = 0
    for index in members:
        length = len(detectors[index]._tail) + len(monos[index])
        count = (length - frame_len) // hop + 1 if length >= frame_len else 0
        if frames + count > limit and parts[-1]:
            parts.append([])
            frames = 0
        parts[-1].append(index)
        frames += count
    return parts


@dataclasses.dataclass(slots=True)
class _Pass:
    """One pass, ready to run: the detectors' unframed samples joined, and where their frames start."""

    plan: FramePlan
    members: list[int]  # indices of the detectors
    samples: F32  # each member's unframed samples then its new samples, member after member
    starts: list[int]  # offset in `samples` of each new frame
    counts: list[int]  # new frames of each member
    lengths: list[int]  # samples of each member in `samples`


def _prepare(plan: FramePlan, detectors: list[OnsetDetector], monos: list[F32], members: list[int]) -> _Pass:
    frame_len, hop = plan.grid.frame_len, plan.grid.hop
    pieces: list[F32] = []
    starts: list[int] = []
    counts: list[int] = []
    lengths: list[int] = []
    offset = 0
    for index in members:
        tail = detectors[index]._tail
        mono = monos[index]
        length = len(tail) + len(mono)
        pieces += (tail, mono)
        if length >= frame_len:
            count = (length - frame_len) // hop + 1
            starts += range(offset, offset + count * hop, hop)
        else:
            count = 0
        counts.append(count)
        lengths.append(length)
        offset += length
    return _Pass(plan, members, np.concatenate(pieces), starts, counts, lengths)


def _run(prepared: _Pass, detectors: list[OnsetDetector], *, final: bool) -> list[list[Onset]]:
    """Run a prepared pass: frames, features and ODF of all members at once, then each one's decisions."""
    samples, counts, hop = prepared.samples, prepared.counts, prepared.plan.grid.hop
    if prepared.starts:
        values, levels, kept = _analyse_frames(prepared, detectors)
    history = prepared.plan.history
    found: list[list[Onset]] = []
    offset = row = framed = 0
    for j, index in enumerate(prepared.members):
        count, length = counts[j], prepared.lengths[j]
        tail = samples[offset + count * hop : offset + length]
        offset += length
        if count:
            stop = row + count
            hist = kept[framed * history : (framed + 1) * history]
            found.append(detectors[index]._finish(tail, hist, values[row:stop], levels[row:stop], final))
            row = stop
            framed += 1
        else:
            found.append(detectors[index]._finish(tail, None, [], [], final))
    return found


def _finite(samples: F32) -> bool:
    """Whether every sample is finite (a dot product is NaN or Inf when one is, or when it overflows)."""
    return math.isfinite(float(np.dot(samples, samples))) or bool(np.isfinite(samples).all())


def _raise_bad(monos: list[F32], indices: list[int], numbered: bool) -> None:
    """Raise for the first of ``monos[indices]`` with a NaN or Inf sample, if any."""
    for index in indices:
        if not _finite(monos[index]):
            prefix = f"block {index}: " if numbered else ""
            raise AudioFormatError(f"{prefix}audio contains NaN or Inf samples")


def _analyse_frames(prepared: _Pass, detectors: list[OnsetDetector]) -> tuple[list[float], list[float], Any]:
    """Detection function and level of every new frame of a pass, and each member's next history rows.

    Returns
    -------
    values, levels : list of float
        Per new frame, member after member.
    kept : ndarray, shape (members with new frames * history, n_features)
        Their last ``history`` feature rows, member after member.
    """
    plan, samples = prepared.plan, prepared.samples
    grid = plan.grid
    method, history, lags = plan.method, plan.history, plan.lags
    strided = np.ndarray(
        (len(samples) - grid.frame_len + 1, grid.frame_len),
        dtype=np.float32,
        buffer=samples,
        strides=(samples.strides[0], samples.strides[0]),
    )
    windowed = strided[prepared.starts] * plan.window
    spectra = scipy.fft.rfft(windowed, n=grid.fft_size, axis=1)
    levels = (np.add.reduce(np.square(windowed), axis=1) * plan.level_scale).tolist()
    feats = odf_mod.features(method, spectra, plan.bank, grid.bin_hz, plan.hfc_weights)
    peaks = odf_mod.frame_peaks(method, feats).tolist()

    # Row r of `table` is a new frame's features for r < len(starts), then each member's history rows.
    # A member's frames in stream order are its history rows, then its new rows: position p of that
    # sequence is table row `row + p - history` when p >= history, else its history row p (a detector
    # priming after a method switch has no history: its first new row stands for all of it).
    hist_parts: list[Any] = []
    past: list[list[int]] = [[] for _ in lags]
    keep: list[int] = []
    floors: list[float] = []
    row = 0
    next_hist = len(prepared.starts)
    simple = lags == (1,) and history == 1
    for j, index in enumerate(prepared.members):
        count = prepared.counts[j]
        if not count:
            continue
        detector = detectors[index]
        hist = detector._hist
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
        floors += detector._floors(peaks[row : row + count])
        row += count

    table = np.concatenate([feats, *hist_parts]) if hist_parts else feats
    floor = np.array(floors, dtype=np.float32)[:, None]
    references = tuple(table[rows] for rows in past)
    values = odf_mod.odf_rows(method, feats, references, plan.spec.unit, floor).tolist()
    return values, levels, table[keep]


def to_mono(block: npt.ArrayLike, channels: int, *, check: bool = True) -> F32:
    """Validate one block and return it as contiguous mono float32.

    Parameters
    ----------
    block : array_like, shape (n,) or (n, channels)
        float32/float64 in [-1, 1], or int16 scaled by 1/32768.
    channels : int
        Expected channel count; a 1-D block is accepted only when it is 1.
    check : bool
        Also reject NaN/Inf samples (:func:`analyse` checks them itself, many blocks at once).

    Returns
    -------
    ndarray, shape (n,), float32
        Channel mean, computed channel by channel so each sample's value never depends on the block.

    Raises
    ------
    AudioFormatError
        Wrong shape or dtype, or (with ``check``) a NaN/Inf sample, also a float64 one beyond float32's range.
    """
    if (
        type(block) is np.ndarray
        and block.dtype == np.float32
        and block.ndim == 1
        and channels == 1
        and block.flags.c_contiguous
        and not check
    ):
        return block  # the common case: mono float32 as it came
    array = np.asarray(block)
    kind = array.dtype
    if kind == np.float32 or kind == np.float64:
        scaled = array if kind == np.float32 else array.astype(np.float32)
    elif kind == np.int16:
        scaled = array.astype(np.float32) * INT16_SCALE
    else:
        raise AudioFormatError(f"audio dtype {array.dtype} is not float32, float64 or int16")
    if scaled.ndim == 1:
        if channels != 1:
            raise AudioFormatError(f"a 1-D block is mono but the stream has {channels} channels")
        mono = scaled if scaled.flags.c_contiguous else np.ascontiguousarray(scaled)
    elif scaled.ndim != 2 or scaled.shape[1] != channels:
        raise AudioFormatError(f"block shape {array.shape} does not match (n, {channels})")
    elif channels == 1:
        mono = np.ascontiguousarray(scaled[:, 0])
    else:
        mono = scaled[:, 0].copy()
        for channel in range(1, channels):
            mono += scaled[:, channel]
        mono *= np.float32(1.0 / channels)
    if check and kind != np.int16 and not _finite(mono):
        raise AudioFormatError("audio contains NaN or Inf samples")
    return mono
