"""Audio files with known onsets in every format the analysis API takes, and a small HTTP client for it.

soundfile writes WAV, FLAC, OGG/Vorbis and MP3; PyAV's encoders write WebM/Opus, M4A/AAC and Ogg/Opus.
Signals come from the seeded generator in ``testkit/signals.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import soundfile as sf

from testkit import signals

F32 = npt.NDArray[np.float32]
WRITE_BLOCK_FRAMES = 4096  # libsndfile's Vorbis encoder crashes on one very large write; write in blocks
POLL_INTERVAL_S = 0.05
JOB_TIMEOUT_S = 90.0  # generous: the suite may run on a loaded 2-core machine


@dataclass(frozen=True)
class Fmt:
    """One file format: how to write it and which sample rate it needs."""

    name: str
    suffix: str
    writer: str  # "soundfile" or "av"
    container: str
    codec: str  # soundfile subtype, or PyAV encoder name
    sample_rate: int
    options: tuple[tuple[str, str], ...] = ()


FORMATS = {
    "wav": Fmt("wav", ".wav", "soundfile", "WAV", "PCM_16", 44100),
    "flac": Fmt("flac", ".flac", "soundfile", "FLAC", "PCM_24", 48000),
    "ogg": Fmt("ogg", ".ogg", "soundfile", "OGG", "VORBIS", 44100),
    "mp3": Fmt("mp3", ".mp3", "soundfile", "MP3", "MPEG_LAYER_III", 44100),
    "webm": Fmt("webm", ".webm", "av", "webm", "libopus", 48000),
    # Without perceptual noise substitution the decoder is deterministic, so the pre-rolled spans equal
    # one continuous decode exactly (with it, noise bands are random in every decoder).
    "m4a": Fmt("m4a", ".m4a", "av", "mp4", "aac", 44100, (("aac_pns", "0"),)),
    "opus": Fmt("opus", ".opus", "av", "ogg", "libopus", 48000),
}


@dataclass(frozen=True)
class TestFile:
    path: Path
    fmt: Fmt
    onsets_s: npt.NDArray[np.float64]
    samples: F32  # what was encoded, (n, channels)


def drum_signal(sample_rate: int, duration_s: float, seed: int, channels: int = 2) -> tuple[F32, Any]:
    """Drum-like hits at known times; stereo copies differ in gain. Returns (samples, onset times)."""
    sig = signals.drums(sr=sample_rate, duration_s=duration_s, seed=seed)
    mono = sig.samples if sig.samples.ndim == 1 else sig.samples.mean(axis=1)
    stacked = np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
    return stacked, sig.onsets_s


def write_soundfile(path: Path, samples: F32, sample_rate: int, fmt: Fmt) -> None:
    with sf.SoundFile(str(path), "w", sample_rate, samples.shape[1], format=fmt.container,
                      subtype=fmt.codec) as out:
        for start in range(0, len(samples), WRITE_BLOCK_FRAMES):
            out.write(samples[start : start + WRITE_BLOCK_FRAMES])


def write_av(path: Path, samples: F32, sample_rate: int, fmt: Fmt) -> None:
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt.container) as container:
        stream = container.add_stream(fmt.codec, rate=sample_rate, layout=layout, options=dict(fmt.options))
        frame_len = 960 if "opus" in fmt.codec else 1024
        for pts, start in enumerate(range(0, len(samples), frame_len)):
            block = np.ascontiguousarray(samples[start : start + frame_len].T)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = pts * frame_len
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make_file(folder: Path, fmt_name: str, duration_s: float = 6.0, seed: int = 0,
              channels: int = 2) -> TestFile:
    fmt = FORMATS[fmt_name]
    samples, onsets = drum_signal(fmt.sample_rate, duration_s, seed, channels)
    path = folder / f"drums-{seed}-{duration_s:g}s-{channels}ch{fmt.suffix}"
    if fmt.writer == "soundfile":
        write_soundfile(path, samples, fmt.sample_rate, fmt)
    else:
        write_av(path, samples, fmt.sample_rate, fmt)
    return TestFile(path, fmt, onsets, samples)


def decode_whole(path: Path) -> tuple[F32, int]:
    """The file decoded in one go by the decoder the server uses for it: (samples (n, ch), rate)."""
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError:
        info = None
    if info is not None and info.format != "MP3" and info.subtype != "OPUS":
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(rate)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        blocks = [frame.to_ndarray().T for frame in container.decode(stream)]
        return np.concatenate(blocks).astype(np.float32), int(stream.codec_context.sample_rate)


def wav_header(sample_rate: int, channels: int, data_bytes: int, format_tag: int = 1,
               bits: int = 16) -> bytes:
    """A RIFF/WAVE header whose ``data`` chunk declares ``data_bytes``."""
    block_align = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", format_tag, channels, sample_rate, sample_rate * block_align,
                            block_align, bits)
    riff_bytes = min(0xFFFFFFFF, 4 + 8 + len(fmt_chunk) + 8 + data_bytes)
    return (b"RIFF" + struct.pack("<I", riff_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk))
            + fmt_chunk + b"data" + struct.pack("<I", data_bytes))


def matches(found_s: list[float], truth_s: Any, window_s: float = 0.05) -> float:
    """Fraction of true onsets with a detection within ``window_s``."""
    found = np.asarray(found_s)
    if not len(truth_s):
        return 1.0
    hits = sum(1 for t in truth_s if len(found) and np.min(np.abs(found - t)) <= window_s)
    return hits / len(truth_s)


# --- HTTP client ------------------------------------------------------------------------------------


async def post_file(http: aiohttp.ClientSession, base_url: str, data: bytes | Path, *,
                    filename: str = "audio.bin", settings: Mapping[str, Any] | str | None = None
                    ) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    if settings is not None:
        form.add_field("settings", settings if isinstance(settings, str) else json.dumps(settings))
    payload = data.read_bytes() if isinstance(data, Path) else data
    form.add_field("file", io.BytesIO(payload), filename=filename, content_type="application/octet-stream")
    async with http.post(base_url + "/api/v3/analysis", data=form) as resp:
        return resp.status, await resp.json()


async def get_task(http: aiohttp.ClientSession, base_url: str, task_id: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base_url}/api/v3/analysis/{task_id}") as resp:
        return resp.status, await resp.json()


async def wait_finished(http: aiohttp.ClientSession, base_url: str, task_id: str,
                        timeout_s: float = JOB_TIMEOUT_S, monotonic: bool = True) -> dict[str, Any]:
    """Poll until the task is ``success`` or ``failed``; checks progress never goes backwards."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last_progress = 0.0
    while True:
        status, body = await get_task(http, base_url, task_id)
        assert status == 200, body
        assert 0.0 <= body["progress"] <= 1.0
        if body["status"] in ("success", "failed"):
            return body
        if body["status"] == "processing" and monotonic:
            assert body["progress"] >= last_progress
            last_progress = body["progress"]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"task {task_id} did not finish in {timeout_s} s: {body}")
        await asyncio.sleep(POLL_INTERVAL_S)


def times_and_strengths(onsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A result's onsets without their ``band`` (checked to be one of the three), for the detector's."""
    assert all(o.get("band") in ("low", "mid", "high") for o in onsets), onsets
    return [{"time": o["time"], "strength": o["strength"]} for o in onsets]
