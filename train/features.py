"""Training examples for the learned onset detector: the server's own features, cached per clip.

Features come from :mod:`server.dsp.neural_features` (the code the server runs), so training and serving
see the same numbers. Targets are per frame: an onset at sample ``s`` first enters frame
``i0 = s // hop``; frame ``i0 + TARGET_DELAY_FRAMES`` is the target (1.0), its two neighbours 0.5.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from server.dsp.neural_features import TARGET_DELAY_FRAMES, file_features, network_grid

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

LEAD_SILENCE_S = 0.7  # silence put before every clip: the network's warm-up, as at a stream's start
CACHE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Example:
    """One clip's features and frame targets.

    Attributes
    ----------
    clip_id : str
    features : ndarray, shape (n_features, n_frames), float32
    targets : ndarray, shape (n_frames,), float32
    onsets_s : ndarray, reference onsets, seconds from the clip's own start
    family : str
    lead_frames : int
        Frames of the leading silence (frame ``lead_frames + i`` is the clip's frame ``i``).
    hop_s : float
        Frame hop, seconds (a whole number of samples over the rate).
    """

    clip_id: str
    features: F32
    targets: F32
    onsets_s: F64
    family: str
    lead_frames: int
    hop_s: float


def read_manifest(corpus: Path) -> list[dict[str, str]]:
    """Rows of ``corpus/MANIFEST.tsv`` as dicts (column names from its header)."""
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def read_onsets(path: Path) -> F64:
    """Onset times (first column), seconds, sorted."""
    values = np.atleast_1d(np.loadtxt(path, ndmin=1, usecols=0)) if path.stat().st_size else np.zeros(0)
    return np.sort(values.astype(np.float64))


def read_mono(path: Path) -> tuple[F32, int]:
    """Audio file as mono float32 (channel mean, as the server downmixes) and its rate."""
    import soundfile

    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples[:, 0].copy()
    for channel in range(1, samples.shape[1]):
        mono += samples[:, channel]
    mono *= np.float32(1.0 / samples.shape[1])
    return mono, int(rate)


def frame_targets(onsets_s: F64, n_frames: int, hop: int, rate: int, lead_frames: int) -> F32:
    """Per-frame targets of onsets given in seconds from the clip start (see the module docstring)."""
    targets = np.zeros(n_frames, dtype=np.float32)
    for onset in onsets_s:
        frame = lead_frames + round(float(onset) * rate) // hop + TARGET_DELAY_FRAMES
        for shift, value in ((-1, 0.5), (1, 0.5), (0, 1.0)):
            if 0 <= frame + shift < n_frames:
                targets[frame + shift] = max(targets[frame + shift], value)
    return targets


def make_example(
    clip_id: str, mono: F32, rate: int, onsets_s: F64, family: str, gain_db: float = 0.0
) -> Example:
    """Features and targets of one clip, after ``LEAD_SILENCE_S`` of silence, at ``gain_db``."""
    hop = network_grid(rate).hop
    lead_frames = round(LEAD_SILENCE_S * rate) // hop
    lead = np.zeros(lead_frames * hop, dtype=np.float32)
    scaled = mono * np.float32(10.0 ** (gain_db / 20.0))
    features, _ = file_features(rate, np.concatenate([lead, scaled]))
    targets = frame_targets(onsets_s, features.shape[1], hop, rate, lead_frames)
    return Example(clip_id, features, targets, onsets_s, family, lead_frames, hop / rate)


def _cache_key(clip_id: str, gain_db: float) -> str:
    return hashlib.sha1(f"{CACHE_VERSION}:{clip_id}:{gain_db:.3f}".encode()).hexdigest()[:16]


def load_example(corpus: Path, row: dict[str, str], cache: Path, gain_db: float = 0.0) -> Example:
    """The example of one manifest row, from ``cache`` or computed and cached there."""
    clip_id, split = row["clip_id"], row["split"]
    path = cache / f"{clip_id}.{_cache_key(clip_id, gain_db)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return Example(
                clip_id,
                data["features"],
                data["targets"],
                data["onsets_s"],
                row.get("family", ""),
                int(data["lead_frames"]),
                float(data["hop_s"]),
            )
    audio = corpus / split / f"{clip_id}.flac"
    mono, rate = read_mono(audio)
    onsets = read_onsets(corpus / split / f"{clip_id}.onsets")
    example = make_example(clip_id, mono, rate, onsets, row.get("family", ""), gain_db)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        features=example.features,
        targets=example.targets,
        onsets_s=example.onsets_s,
        lead_frames=example.lead_frames,
        hop_s=example.hop_s,
    )
    tmp.replace(path)
    return example


def clip_gains(clip_id: str, seed: int) -> list[float]:
    """Gains of a training clip's cached versions, dB: as rendered and one seeded lower level."""
    rng = np.random.default_rng([seed, int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16)])
    return [0.0, float(rng.uniform(-30.0, -6.0))]


def iter_rows(corpus: Path, split: str) -> Iterator[dict[str, str]]:
    """Manifest rows of one split whose audio and labels exist."""
    for row in read_manifest(corpus):
        if row["split"] != split:
            continue
        folder = corpus / split
        if (folder / f"{row['clip_id']}.flac").exists() and (folder / f"{row['clip_id']}.onsets").exists():
            yield row
