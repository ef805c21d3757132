"""Input blocks: validation, int16 scaling and downmix to contiguous mono float32."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from server.exceptions import AudioFormatError

F32 = npt.NDArray[np.float32]

INT16_SCALE = np.float32(1.0 / 32768.0)
FLOAT32 = np.dtype(np.float32)


def clip_full_scale(samples: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.generic], int]:
    """Float ``samples`` with every value beyond full scale [-1, 1] clipped to it, and how many were.

    Far louder input (|x| of 100 and more, even for 20 ms) would blind the detector for seconds; clipped,
    it is as loud as audio gets. Integer samples are returned as they are (never beyond full scale).
    """
    if samples.dtype.kind != "f" or not samples.size or (samples.max() <= 1.0 and samples.min() >= -1.0):
        return samples, 0
    clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    return np.clip(samples, -1.0, 1.0), clipped


def all_finite(samples: F32) -> bool:
    """Whether every sample is finite (a dot product is NaN or Inf when one is, or when it overflows)."""
    return math.isfinite(float(np.dot(samples, samples))) or bool(np.isfinite(samples).all())


def to_mono(block: npt.ArrayLike, channels: int, *, check: bool = True) -> F32:
    """Validate one block and return it as contiguous mono float32.

    Parameters
    ----------
    block : array_like, shape (n,) or (n, channels)
        float32/float64 in [-1, 1], or int16 scaled by 1/32768.
    channels : int
        Expected channel count; a 1-D block is accepted only when it is 1.
    check : bool
        Also reject NaN/Inf samples (:func:`server.dsp.batch.analyse` checks many blocks at once).

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
    if check and kind != np.int16 and not all_finite(mono):
        raise AudioFormatError("audio contains NaN or Inf samples")
    return mono
