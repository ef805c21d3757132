"""What a clip id stands for: its split, family, soundfont, length, tempo and processing, all seeded."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from train.corpus.compose import FAMILIES

SPLITS = ("train", "tune", "valid")
FINAL_RATES_HZ = (16000, 22050, 32000, 44100, 48000)
SOUNDFONT_WEIGHTS = {"FluidR3_GM": 0.4, "TimGM6mb": 0.35, "MuseScore_General_Lite": 0.25}


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(clip_id: str) -> str:
    """Fixed split of a clip: 10 % ``valid`` (never trained or tuned on), 10 % ``tune``, 80 % ``train``."""
    bucket = _hash_int("split:" + clip_id) % 10
    return "valid" if bucket == 0 else "tune" if bucket == 1 else "train"


def clip_id(index: int) -> str:
    """Clip ``index`` cycles through the families so that any prefix of the corpus covers all of them."""
    return f"{FAMILIES[index % len(FAMILIES)]}-{index:06d}"


def rng_for(clip: str, stream: str, seed: int = 0) -> np.random.Generator:
    """An independent generator per clip and purpose (composition, processing)."""
    return np.random.default_rng(_hash_int(f"{seed}:{stream}:{clip}"))


@dataclasses.dataclass(frozen=True)
class Processing:
    """Randomised processing of one clip (see ``effects``); None or 0 means the step is skipped."""

    rt60_s: float | None
    wet_db: float
    eq: tuple[tuple[str, float, float, float], ...]  # (kind, f0 Hz, gain dB, Q)
    noise: str | None
    snr_db: float
    channels: int
    peak_dbfs: float
    codec: str | None
    bitrate: int
    rate_hz: int

    def describe(self) -> str:
        """Short manifest string, e.g. ``rev0.8s,eq2,pink25dB,opus48k,-12dB``."""
        parts = []
        if self.rt60_s is not None:
            parts.append(f"rev{self.rt60_s:.1f}s")
        if self.eq:
            parts.append(f"eq{len(self.eq)}")
        if self.noise is not None:
            parts.append(f"{self.noise}{self.snr_db:.0f}dB")
        if self.codec is not None:
            parts.append(f"{self.codec}{self.bitrate // 1000}k")
        parts.append(f"{self.peak_dbfs:.0f}dBFS")
        return ",".join(parts)


def draw_processing(rng: np.random.Generator) -> Processing:
    """Random processing; about a quarter of the clips stay clean apart from rate, channels and gain."""
    clean = rng.random() < 0.2
    rt60 = None if clean or rng.random() < 0.35 else float(rng.uniform(0.15, 2.5))
    eq: list[tuple[str, float, float, float]] = []
    if not clean and rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["low", "high", "peak"]))
            f0 = float(np.exp(rng.uniform(np.log(60), np.log(6000))))
            eq.append((kind, f0, float(rng.uniform(-12, 12)), float(rng.uniform(0.5, 3.0))))
    noise = None if clean or rng.random() < 0.35 else str(rng.choice(["white", "pink", "brown"]))
    codec = None if clean or rng.random() < 0.7 else str(rng.choice(["opus", "mp3"]))
    bitrate = int(rng.choice([24000, 32000, 64000, 96000, 128000])) if codec == "opus" else int(
        rng.choice([64000, 96000, 128000, 192000]))
    return Processing(
        rt60_s=rt60, wet_db=float(rng.uniform(-15, 0)), eq=tuple(eq), noise=noise,
        snr_db=float(rng.uniform(10, 40)), channels=int(rng.choice([1, 2])),
        peak_dbfs=float(rng.uniform(-30, -0.5)), codec=codec, bitrate=bitrate,
        rate_hz=int(rng.choice(FINAL_RATES_HZ)),
    )


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything decided about a clip before rendering."""

    clip_id: str
    index: int
    split: str
    family: str
    soundfont: str
    duration_ms: int
    tempo_bpm: float
    processing: Processing


def clip_spec(index: int, seed: int = 0, *, soundfonts: tuple[str, ...] = (),
              clip_s: float | None = None) -> ClipSpec:
    """The spec of clip ``index``; a pure function of its arguments.

    ``soundfonts`` (cycled by index) and ``clip_s`` override the drawn soundfont and length, for small test
    corpora; everything else stays as drawn.
    """
    cid = clip_id(index)
    rng = rng_for(cid, "spec", seed)
    names = list(SOUNDFONT_WEIGHTS)
    soundfont = str(rng.choice(names, p=list(SOUNDFONT_WEIGHTS.values())))
    duration_ms = int(rng.integers(10, 31)) * 1000
    tempo = float(np.round(np.exp(rng.uniform(np.log(60), np.log(220))), 1))
    spec = ClipSpec(cid, index, split_of(cid), FAMILIES[index % len(FAMILIES)], soundfont, duration_ms, tempo,
                    draw_processing(rng))
    if soundfonts:
        spec = dataclasses.replace(spec, soundfont=soundfonts[index % len(soundfonts)])
    if clip_s is not None:
        spec = dataclasses.replace(spec, duration_ms=round(clip_s * 1000))
    return spec
