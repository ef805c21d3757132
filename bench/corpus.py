"""The two corpora of ``bench/accuracy.py``: real annotated clips and a generated music-like set."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit import signals  # noqa: E402

DATA_ENV = "TRANSIENT_ONSETS_DEV"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "onsets-dev"


@dataclasses.dataclass(frozen=True)
class Clip:
    """One annotated clip.

    Attributes
    ----------
    name : str
    samples : ndarray, shape (n,) or (n, channels), float32
    sample_rate : int
    onsets_s : ndarray of float64, reference onset times, seconds
    group : str
        ``drums`` or ``pitched`` (pitched, soft or mixed material).
    """

    name: str
    samples: npt.NDArray[np.float32]
    sample_rate: int
    onsets_s: npt.NDArray[np.float64]
    group: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def mono(self) -> npt.NDArray[np.float32]:
        if self.samples.ndim == 1:
            return self.samples
        return self.samples.mean(axis=1).astype(np.float32)


def data_dir(option: str | None) -> Path:
    """The dev-set folder: the option, else ``$TRANSIENT_ONSETS_DEV``, else ``../shared/data/onsets-dev``."""
    return Path(option or os.environ.get(DATA_ENV) or DEFAULT_DATA)


def real_clips(folder: Path) -> list[Clip]:
    """Every ``*.wav`` with a ``.onsets`` file beside it; ``mdbdrums_*`` clips are the drums group."""
    import soundfile

    clips = []
    for wav in sorted(folder.glob("*.wav")):
        annotation = wav.with_suffix(".onsets")
        if not annotation.exists():
            continue
        samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=False)
        onsets = np.atleast_1d(np.loadtxt(annotation, ndmin=1, usecols=0))
        group = "drums" if wav.stem.startswith("mdbdrums") else "pitched"
        clips.append(Clip(wav.stem, samples, int(rate), np.sort(onsets), group))
    return clips


def generated_clips(seed: int = 1000) -> list[Clip]:
    """Varied music-like signals (drums, plucks, piano chords, pads, dense mixes, reverb, noise, quiet,
    stereo) at 16–48 kHz, seeded; none of them is used by the unit tests with these seeds."""
    rates = [16000, 22050, 32000, 44100, 48000]
    made: list[signals.Signal] = []
    for k in range(2):
        s = seed + 10 * k
        sr = rates[(k * 3) % len(rates)]
        sr2 = rates[(k * 3 + 1) % len(rates)]
        sr3 = rates[(k * 3 + 2) % len(rates)]
        made += [
            signals.drums(sr, 8.0, s),
            signals.drums(sr2, 8.0, s + 1, gap_s=0.16),
            signals.plucks(sr3, 8.0, s + 2),
            signals.chords(sr, 8.0, s + 3),
            signals.soft_attacks(sr2, 10.0, s + 4),
            signals.tone_bursts(sr3, 6.0, s + 5),
            signals.music_mix(sr, 10.0, s + 6),
            signals.music_mix(sr2, 10.0, s + 7, parts=("plucks", "chords", "pad"), rt60_s=1.2),
            signals.music_mix(sr3, 10.0, s + 8, parts=("drums",), rt60_s=0.6, noise_db=-30.0),
            signals.music_mix(sr, 10.0, s + 9, parts=("chords", "pad"), noise_db=-35.0, stereo=True),
            signals.music_mix(sr2, 10.0, s + 11, gain=0.01),
            signals.quiet_passage(sr3, 8.0, s + 12, level_db=-45.0),
            signals.music_mix(sr, 10.0, s + 13, parts=("drums", "plucks"), stereo=True, rt60_s=0.4),
        ]
    return [Clip(f"{m.name}@{m.sample_rate}", m.samples, m.sample_rate, m.onsets_s, m.group) for m in made]


def rendered_clips(folder: Path, split: str, per_family: int | None = None) -> list[Clip]:
    """Clips of one split (``train``, ``tune`` or ``valid``) of the rendered corpus, grouped by family.

    ``folder`` holds ``MANIFEST.tsv`` and one folder per split of ``<clip_id>.flac`` with ``.onsets``
    beside; clips listed but not (yet) rendered are skipped. ``per_family`` keeps the first few of each.
    """
    import csv

    import soundfile

    manifest = folder / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    clips: list[Clip] = []
    count: dict[str, int] = {}
    with manifest.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            family = row["family"]
            audio = folder / row["split"] / f"{row['clip_id']}.flac"
            annotation = audio.with_suffix(".onsets")
            if row["split"] != split or not audio.exists() or not annotation.exists():
                continue
            if per_family is not None and count.get(family, 0) >= per_family:
                continue
            count[family] = count.get(family, 0) + 1
            samples, rate = soundfile.read(str(audio), dtype="float32", always_2d=False)
            onsets = np.atleast_1d(np.loadtxt(annotation, ndmin=1, usecols=0))
            clips.append(Clip(row["clip_id"], samples, int(rate), np.sort(onsets), family))
    return clips
