"""Sample encodings of a live stream's binary audio frames (docs/protocol.md, "Live streams").

Its own module, so clients that only send audio import numpy and nothing of the detector.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np


class Encoding(enum.Enum):
    """Sample encodings of binary audio frames: raw, interleaved, little-endian."""

    PCM_F32LE = "pcm_f32le"
    PCM_S16LE = "pcm_s16le"

    @property
    def dtype(self) -> np.dtype[Any]:
        return _DTYPES[self]

    @property
    def bytes_per_sample(self) -> int:
        return _DTYPES[self].itemsize


_DTYPES: Mapping[Encoding, np.dtype[Any]] = MappingProxyType({
    Encoding.PCM_F32LE: np.dtype("<f4"),
    Encoding.PCM_S16LE: np.dtype("<i2"),
})
