"""Which decoder reads a file, and what its header declares. Runs in a pool worker.

libsndfile (through soundfile) reads WAV, FLAC, OGG/Vorbis, AIFF and friends with exact, cheap seeking, so
those files are read straight from the upload, a bounded span per pool call. Everything else goes through
PyAV (FFmpeg): WebM/Opus and M4A/AAC from browsers, Ogg/Opus, and MP3 too — libsndfile can read MP3 but its
seek rescans the stream from the start (measured ~3 ms per minute of audio), which would make a long file
cost quadratic time when every pool call reopens it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import soundfile as sf

from server.exceptions import TransientError
from server.jobs.model import ErrorCode

# libsndfile formats read through PyAV instead (see the module docstring).
AV_PREFERRED = frozenset({("MP3", None), ("OGG", "OPUS")})
WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes written by recorders that could not seek back


class DecodeError(TransientError):
    """The file cannot be analysed; ``code`` is an :class:`ErrorCode` value."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Decoder(enum.Enum):
    SOUNDFILE = "soundfile"
    AV = "av"


@dataclass(frozen=True, slots=True)
class Source:
    """A probed file. ``frames`` is the declared length per channel (soundfile only; ``None`` if unknown)."""

    decoder: Decoder
    format_name: str
    sample_rate: int
    channels: int
    frames: int | None


def wav_data_shortfall(header: bytes, file_bytes: int) -> int:
    """Bytes the ``data`` chunk of a RIFF/WAVE (or RF64/BW64) header declares beyond the end of the file.

    0 if none, or if the size is unknown. An RF64 file's ``data`` chunk says ``0xFFFFFFFF`` and its real
    size is the 64-bit one in the ``ds64`` chunk (EBU Tech 3306), which libsndfile does not check
    against the file's length.

    Parameters
    ----------
    header : bytes
        The first bytes of the file (enough to reach the ``data`` chunk header).
    file_bytes : int
        The whole file's size in bytes.
    """
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64", b"BW64") or header[8:12] != b"WAVE":
        return 0
    ds64_data_bytes: int | None = None
    offset = 12
    while offset + 8 <= len(header):
        chunk_id = header[offset : offset + 4]
        (size,) = struct.unpack_from("<I", header, offset + 4)
        if chunk_id == b"ds64" and offset + 8 + 16 <= len(header):
            (ds64_data_bytes,) = struct.unpack_from("<Q", header, offset + 8 + 8)  # after the RIFF size
        if chunk_id == b"data":
            if size == 0xFFFFFFFF and ds64_data_bytes is not None:
                return max(0, offset + 8 + ds64_data_bytes - file_bytes)
            if size in WAV_UNKNOWN_SIZES:
                return 0
            return max(0, offset + 8 + size - file_bytes)
        offset += 8 + size + (size & 1)
    return 0


def probe(path: Path) -> Source:
    """Identify ``path``. Raises :class:`DecodeError` (``empty``, ``not_audio``, ``unsupported_codec``...)."""
    size = path.stat().st_size
    if size == 0:
        raise DecodeError(ErrorCode.EMPTY, "the file is empty")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        info = None
    if info is not None and (info.format, None) not in AV_PREFERRED and (info.format, info.subtype) \
            not in AV_PREFERRED:
        if info.format in ("WAV", "WAVEX", "RF64"):
            with path.open("rb") as file:
                shortfall = wav_data_shortfall(file.read(1 << 16), size)
            if shortfall:
                raise DecodeError(ErrorCode.TRUNCATED, f"the {info.format} file ends {shortfall} bytes "
                                  "before the length its header declares")
        return Source(Decoder.SOUNDFILE, f"{info.format}/{info.subtype}", int(info.samplerate),
                      int(info.channels), int(info.frames))
    return probe_av(path)


def probe_av(path: Path) -> Source:
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise DecodeError(ErrorCode.NOT_AUDIO, f"not a recognised audio file ({exc.strerror})") from None
    with container:
        if not container.streams.audio:
            raise DecodeError(ErrorCode.NOT_AUDIO, f"the {container.format.name} file has no audio stream")
        stream = container.streams.audio[0]
        context = stream.codec_context
        if context is None:
            raise DecodeError(ErrorCode.UNSUPPORTED_CODEC,
                              f"the {container.format.name} file's audio codec has no decoder here")
        try:
            context.open()
        except (av.FFmpegError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, av.FFmpegError) else str(exc)
            raise DecodeError(ErrorCode.UNSUPPORTED_CODEC,
                              f"cannot decode {context.name or 'this'} audio: {reason}") from None
        return Source(Decoder.AV, f"{container.format.name}/{context.name}", int(context.sample_rate or 0),
                      int(context.channels or 0), None)
