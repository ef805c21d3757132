"""Where a pass's dilated-layer taps and new pasts come from, as flat indices (:func:`tap_index`).

In a pass where each of ``members`` streams brings ``count`` new frames, a dilated layer's input is, per
stream and unit, the sequence of its past ``2 d`` columns then its ``count`` new ones: tap ``k`` of new
frame ``j`` is position ``2 d - k d + j`` of it, and the layer's new past is positions ``count`` to
``count + 2 d``. With two or three new frames per stream these are runs of a few values, which numpy copies
slowly as strided slices; gathered by precomputed flat indices (``np.take``), they are one call per layer.

The indices point into a pass's scratch vector: the streams' old pasts, shape (members, hidden, width),
then the layer's input, shape (hidden, members * count) (:data:`TapIndex.input_start`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

KERNEL = 3  # taps per dilated layer: t, t - d, t - 2d


@dataclasses.dataclass(frozen=True, eq=False)
class LayerIndex:
    """One dilated layer's gathers.

    Attributes
    ----------
    taps : ndarray, shape (KERNEL * hidden * members * count,), int64
        Scratch index of each value of the layer's product input, shape (KERNEL * hidden,
        members * count) in C order: tap ``k``'s rows ``k * hidden`` to ``(k + 1) * hidden``.
    new_past : ndarray, int64
        Index into the new pasts (members, hidden, width), flat, of the values that come from new frames.
    from_input : ndarray, int64
        Scratch index of each of those values.
    """

    taps: I64
    new_past: I64
    from_input: I64


@dataclasses.dataclass(frozen=True, eq=False)
class TapIndex:
    """The gathers of a pass shape, for every dilated layer.

    Attributes
    ----------
    input_start : int
        Where the layer's input starts in the scratch vector (after the old pasts).
    size : int
        Length of the scratch vector, floats.
    shifted : int
        New-past columns copied from the old past shifted by ``count`` (``width - count``, or 0): the
        values of each layer's new past that do not come from new frames, plus some that the layer's
        ``new_past`` gather then overwrites.
    layers : tuple of LayerIndex
    """

    input_start: int
    size: int
    shifted: int
    layers: tuple[LayerIndex, ...]


@functools.lru_cache(maxsize=32)
def tap_index(hidden: int, dilations: tuple[int, ...], members: int, count: int) -> TapIndex:
    """The gathers of a pass of ``members`` streams with ``count`` new frames each (``count >= 1``)."""
    width = 2 * sum(dilations)
    frames = members * count
    input_start = members * hidden * width
    unit = np.arange(hidden, dtype=np.int64)[:, None, None]
    member = np.arange(members, dtype=np.int64)[None, :, None]

    def position(place: I64, offset: int, past: int) -> I64:
        """Scratch index, shape (hidden, members, len(place)), of sequence position ``place`` of each
        stream and unit: its old past while ``place < past``, else its new frame ``place - past``."""
        old = member * (hidden * width) + unit * width + (offset + place)
        new = input_start + unit * frames + member * count + (place - past)
        return np.where(place < past, old, new)

    layers = []
    offset = 0
    for dilation in dilations:
        past = 2 * dilation
        frame = np.arange(count, dtype=np.int64)
        taps = [position(past - tap * dilation + frame, offset, past) for tap in range(KERNEL)]
        column = np.arange(max(0, past - count), past, dtype=np.int64)  # new-past columns from new frames
        sources = position(count + column, offset, past).transpose(1, 0, 2)  # (members, hidden, columns)
        targets = (member.transpose(1, 0, 2) * hidden + unit.transpose(1, 0, 2)) * width + offset + column
        targets = np.broadcast_to(targets, sources.shape)
        layers.append(
            LayerIndex(
                taps=np.concatenate([tap.ravel() for tap in taps]),
                new_past=np.ascontiguousarray(targets).ravel(),
                from_input=np.ascontiguousarray(sources).ravel(),
            )
        )
        offset += past
    return TapIndex(
        input_start=input_start,
        size=input_start + hidden * frames,
        shifted=max(0, width - count),
        layers=tuple(layers),
    )
