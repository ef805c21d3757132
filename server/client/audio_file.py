"""Decoded audio of a file for publishing (``run.py stream FILE``), read by the server's own decoders.

:func:`server.jobs.probe.probe` picks the decoder exactly as whole-file analysis does: libsndfile for
WAV/FLAC/OGG-Vorbis and friends, PyAV (through the packet spool of :mod:`server.jobs.spool`) for MP3,
WebM/Opus, M4A/AAC and the rest. Blocks are float32 of shape ``(frames, channels)``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from server.jobs.probe import Decoder, Source, probe
from server.jobs.spool import SpanDecoder, SpoolCursor, demux_to_spool


class AudioFile:
    """One audio file's format and its samples block by block. Raises :class:`DecodeError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source: Source = probe(path)

    @property
    def sample_rate(self) -> int:
        return self.source.sample_rate

    @property
    def channels(self) -> int:
        return self.source.channels

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """The file's samples in blocks of about ``block_frames`` frames (blocking I/O and decoding)."""
        if self.source.decoder is Decoder.SOUNDFILE:
            with sf.SoundFile(str(self.path)) as file:
                yield from file.blocks(block_frames, dtype="float32", always_2d=True)
            return
        with tempfile.TemporaryDirectory(prefix="transient-stream-") as work_dir:
            spool = Path(work_dir) / "packets.spool"
            demux_to_spool(self.path, spool)
            decoder = SpanDecoder(self.path, spool, self.sample_rate, self.channels)
            cursor: SpoolCursor | None = SpoolCursor()
            while cursor is not None:
                decoded, cursor = decoder.decode(cursor, block_frames)
                yield from decoded
