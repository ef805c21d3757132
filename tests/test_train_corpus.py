"""The rendered onset corpus (train/corpus): a tiny corpus through the real FluidSynth, its layout and
manifest, determinism, resuming after a killed run, and label/audio alignment on isolated notes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("mido")
if shutil.which("fluidsynth") is None:
    pytest.skip("fluidsynth is not installed (apt-get install fluidsynth)", allow_module_level=True)

from train.corpus import labels, manifest, synth
from train.corpus.compose import FAMILIES
from train.corpus.render import Plan, process, render_clip, run
from train.corpus.score import Note, Part, Score
from train.corpus.spec import Processing, split_of

for _path in synth.SOUNDFONTS.values():
    if not os.path.exists(_path):
        pytest.skip(f"soundfont {_path} is missing (see train/README.md)", allow_module_level=True)

# Seven clips of 2 s, one per family (clip index i is family i % 7), on the small soundfont.
PLAN = Plan(hours=13.5 / 3600, seed=0, soundfonts=("TimGM6mb",), clip_s=2.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    assert run(out, PLAN, workers=2) == 0
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for split in ("train", "tune", "valid") for p in sorted((out / split).glob("*"))}


def test_tiny_corpus_has_every_family_and_a_manifest_matching_the_files(corpus: Path) -> None:
    rows = manifest.read(corpus)
    header = (corpus / "MANIFEST.tsv").read_text().splitlines()[0].split("\t")
    assert header[:11] == ["clip_id", "split", "family", "duration_s", "sample_rate", "channels", "n_onsets",
                           "soundfont", "programs", "tempo_bpm", "processing"]
    assert sorted(r["family"] for r in rows) == sorted(FAMILIES)
    assert len(_files(corpus)) == 2 * len(rows)
    for row in rows:
        assert row["split"] == split_of(row["clip_id"])
        audio = corpus / row["split"] / f"{row['clip_id']}.flac"
        info = soundfile.info(str(audio))
        assert info.samplerate == int(row["sample_rate"]) and info.channels == int(row["channels"])
        assert abs(info.frames / info.samplerate - 2.0) < 1e-3
        assert abs(float(row["duration_s"]) - 2.0) < 1e-3
        x, _ = soundfile.read(str(audio))
        assert 10 ** (-31 / 20) < np.abs(x).max() <= 1.0  # peak between -30 dBFS and full scale
        onsets = np.loadtxt(corpus / row["split"] / f"{row['clip_id']}.onsets", ndmin=1)
        assert len(onsets) == int(row["n_onsets"]) > 0
        assert np.all(np.diff(onsets) >= labels.MERGE_S - 1e-9)
        assert onsets[0] >= 0 and onsets[-1] < 2.0


def test_splits_are_a_fixed_hash_of_the_clip_id() -> None:
    ids = [f"x-{i:06d}" for i in range(20000)]
    counts = {s: sum(split_of(i) == s for i in ids) / len(ids) for s in ("train", "tune", "valid")}
    assert abs(counts["train"] - 0.8) < 0.02 and abs(counts["tune"] - 0.1) < 0.01
    assert abs(counts["valid"] - 0.1) < 0.01
    assert [split_of(i) for i in ids[:50]] == [split_of(i) for i in ids[:50]]


def test_a_clip_renders_to_the_same_bytes_again(corpus: Path, tmp_path: Path) -> None:
    spec = PLAN.spec(6)  # the mix: several parts, and this one goes through Opus
    assert spec.family == "mixes" and spec.processing.codec == "opus"
    render_clip(spec, tmp_path)
    for suffix in (".flac", ".onsets"):
        name = f"{spec.split}/{spec.clip_id}{suffix}"
        assert (tmp_path / name).read_bytes() == (corpus / name).read_bytes()


def test_a_killed_run_continues_where_it_stopped(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(corpus, out)
    before = _files(corpus)
    rows = manifest.read(out)
    half_done, not_started = rows[0], rows[1]
    # Killed between the audio and the labels of one clip, before another began, with a temp file left.
    (out / half_done["split"] / f"{half_done['clip_id']}.onsets").unlink()
    for suffix in (".flac", ".onsets"):
        (out / not_started["split"] / f"{not_started['clip_id']}{suffix}").unlink()
    (out / ".tmp" / "junk.flac").write_bytes(b"partial")
    manifest.rebuild(out)
    assert len(manifest.read(out)) == len(rows) - 2
    kept = {p: (out / p).stat().st_mtime_ns for p in before
            if (out / p).exists() and half_done["clip_id"] not in p}

    assert run(out, PLAN, workers=1) == 0
    assert _files(out) == before
    assert not (out / ".tmp" / "junk.flac").exists()  # a dead run's partial file is cleared
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept  # nothing finished was rendered again
    assert len(manifest.read(out)) == len(rows)


def _first_above(x: np.ndarray, rate: int, start_s: float, rel_db: float) -> float:
    env = np.abs(x.reshape(len(x), -1)).max(axis=1)
    seg = env[int((start_s - 0.1) * rate): int((start_s + 0.5) * rate)]
    return start_s - 0.1 + int(np.argmax(seg >= seg.max() * 10 ** (rel_db / 20))) / rate


@pytest.mark.parametrize(("soundfont", "program", "drums", "key", "velocity"), [
    ("TimGM6mb", 24, False, 57, 90),  # nylon guitar, a key and velocity between the measured ones
    ("FluidR3_GM", 0, False, 67, 45),  # piano, soft
    ("FluidR3_GM", 0, True, 38, 110),  # standard kit, snare
])
def test_an_isolated_note_is_labelled_where_its_audio_starts(
        tmp_path: Path, soundfont: str, program: int, drums: bool, key: int, velocity: int) -> None:
    channel = 9 if drums else 0
    score = Score(3000, 120.0, [Part(channel, program, "test")])
    score.add_note(1000, 500, key, velocity, channel)
    cal = synth.calibration(tmp_path / "calib", soundfont, program, drums)
    dry = synth.render(score, soundfont, tmp_path)

    def lookup(n: Note) -> tuple[float | None, float]:
        return cal.lookup(n.pitch, n.velocity)

    label, dropped = labels.onset_labels(score.notes, lookup, dry_rms_dbfs=-20.0, noise_snr_db=None)
    assert dropped == 0 and len(label) == 1
    start = _first_above(dry, synth.RENDER_RATE_HZ, 1.0, synth.ONSET_THRESHOLD_DB)
    assert 1.0 < start < 1.012  # FluidSynth does start late ...
    assert abs(start - label[0]) < 0.002  # ... and the label says by how much

    # After resampling to 16 kHz, mono, and an Opus round trip, the attack is still at the label.
    proc = Processing(rt60_s=None, wet_db=0.0, eq=(), noise=None, snr_db=0.0, channels=1, peak_dbfs=-6.0,
                      codec="opus", bitrate=64000, rate_hz=16000)
    y = process(dry, proc, np.random.default_rng(0))
    assert y.shape == (3 * 16000, 1)
    loud = _first_above(y, 16000, 1.0, -20.0)
    assert -0.002 < loud - label[0] < 0.030  # the -20 dB point is on the attack, never before the onset


def test_labels_merge_within_30_ms_and_drop_inaudible_notes() -> None:
    merged = labels.merge([0.2, 0.0, 0.01, 0.029, 0.031, 0.05])
    np.testing.assert_allclose(merged, [0.0, 0.031, 0.2])
    notes = [Note(100, 50, 60, 100, 0), Note(500, 50, 61, 20, 0), Note(900, 50, 62, 100, 0)]
    table = {60: (2.0, -10.0), 61: (2.0, -45.0), 62: (None, -120.0)}  # loud, under the noise, silent

    def lookup(n: Note) -> tuple[float | None, float]:
        return table[n.pitch]

    times, dropped = labels.onset_labels(notes, lookup, dry_rms_dbfs=-20.0, noise_snr_db=20.0)
    np.testing.assert_allclose(times, [0.102])
    assert dropped == 2
    times, dropped = labels.onset_labels(notes, lookup, dry_rms_dbfs=-20.0, noise_snr_db=None)
    np.testing.assert_allclose(times, [0.102, 0.502])  # without noise: 40 dB below the clip's RMS is heard
