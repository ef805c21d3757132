"""Render one clip end to end, and the resumable parallel driver over clip indices.

Seeded and deterministic per clip id; a clip is done when its ``.onsets`` file exists (audio and labels are
each written to ``.tmp/`` and renamed into place, audio first), so a killed run simply continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

from train.corpus import codec, effects, manifest, synth
from train.corpus.compose import compose
from train.corpus.instruments import DRUM_CHANNEL
from train.corpus.labels import onset_labels
from train.corpus.score import Note
from train.corpus.spec import SPLITS, ClipSpec, Processing, clip_spec, rng_for

log = logging.getLogger("train.corpus")


def _atomic_write(out: Path, final: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write`` into ``out/.tmp`` and rename onto ``final``."""
    tmp_dir = out / ".tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=final.suffix)
    os.close(fd)
    try:
        write(Path(name))
        os.replace(name, final)
    finally:
        if os.path.exists(name):
            os.unlink(name)


def process(dry: effects.Audio, proc: Processing, rng: np.random.Generator) -> effects.Audio:
    """The processing chain on a dry 48 kHz stereo render: reverb, EQ, noise, channels, a 20 ms fade-out at
    the end, peak gain, codec round trip, resampling to the clip's rate. Onset times are unchanged.

    Returns
    -------
    ndarray, shape (n, proc.channels), float32 at ``proc.rate_hz``
    """
    rate = synth.RENDER_RATE_HZ
    x = dry
    if proc.rt60_s is not None:
        x = effects.reverb(x, effects.room_ir(rng, rate, proc.rt60_s, 2), proc.wet_db)
    x = effects.equalise(x, [effects.biquad(k, f, g, q, rate) for k, f, g, q in proc.eq])
    if proc.noise is not None:
        x = effects.add_noise(x, effects.coloured_noise(rng, len(x), 2, proc.noise), proc.snr_db)
    x = x.mean(axis=1, keepdims=True) if proc.channels == 1 else x.copy()
    fade = int(0.02 * rate)
    x[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)[:, None]
    x = effects.to_peak(x, min(proc.peak_dbfs, -1.0) if proc.codec else proc.peak_dbfs)
    if proc.codec is not None:
        x, _ = codec.round_trip(x, rate, proc.codec, proc.bitrate)
    x = effects.resample(x, rate, proc.rate_hz)
    return np.clip(x, -1.0, 1.0)


def render_clip(spec: ClipSpec, out: Path, seed: int = 0) -> dict[str, str]:
    """Compose, render, process and label one clip; write its audio, labels and manifest row."""
    score = compose(spec.family, rng_for(spec.clip_id, "compose", seed), spec.duration_ms, spec.tempo_bpm)
    cals = {(p.channel, p.program): synth.calibration(out / ".calib", spec.soundfont, p.program,
                                                      p.channel == DRUM_CHANNEL)
            for p in score.parts}
    program_of = {p.channel: p.program for p in score.parts}
    with tempfile.TemporaryDirectory() as tmp:
        dry = synth.render(score, spec.soundfont, Path(tmp))
    proc = spec.processing
    x = process(dry, proc, rng_for(spec.clip_id, "process", seed))

    def lookup(n: Note) -> tuple[float | None, float]:
        return cals[(n.channel, program_of[n.channel])].lookup(n.pitch, n.velocity)

    dry_rms_db = 20 * float(np.log10(max(effects.active_rms(dry), 1e-12)))
    onsets, dropped = onset_labels(score.notes, lookup, dry_rms_db,
                                   proc.snr_db if proc.noise is not None else None)
    split_dir = out / spec.split
    split_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, split_dir / f"{spec.clip_id}.flac",
                  lambda p: soundfile.write(str(p), x, proc.rate_hz, subtype="PCM_16", format="FLAC"))
    _atomic_write(out, split_dir / f"{spec.clip_id}.onsets",
                  lambda p: p.write_text("".join(f"{t:.6f}\n" for t in onsets)))
    row = {
        "clip_id": spec.clip_id, "split": spec.split, "family": spec.family,
        "duration_s": f"{len(x) / proc.rate_hz:.3f}", "sample_rate": str(proc.rate_hz),
        "channels": str(x.shape[1]), "n_onsets": str(len(onsets)), "soundfont": spec.soundfont,
        "programs": "+".join(("kit" if p.channel == DRUM_CHANNEL else "") + str(p.program)
                             for p in score.parts),
        "tempo_bpm": f"{spec.tempo_bpm:g}", "processing": proc.describe(),
        "style": ";".join(score.style[:6]), "n_notes": str(len(score.notes)), "n_dropped": str(dropped),
    }
    manifest.write_row(out, row)
    return row


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which clips to render: indices from 0 until ``hours`` of audio, with optional overrides."""

    hours: float
    seed: int = 0
    soundfonts: tuple[str, ...] = ()
    clip_s: float | None = None

    def spec(self, index: int) -> ClipSpec:
        """The spec of clip ``index``."""
        return clip_spec(index, self.seed, soundfonts=self.soundfonts, clip_s=self.clip_s)

    def specs(self) -> list[ClipSpec]:
        """Clip specs from index 0 until their durations add up to ``hours``."""
        out: list[ClipSpec] = []
        total_ms = 0
        while total_ms < self.hours * 3_600_000:
            out.append(self.spec(len(out)))
            total_ms += out[-1].duration_ms
        return out


def _work(args: tuple[int, str, Plan]) -> tuple[str, float, str]:
    index, out, plan = args
    seed = plan.seed
    spec = plan.spec(index)
    t0 = time.perf_counter()
    try:
        render_clip(spec, Path(out), seed)
    except Exception as exc:  # logged and skipped; the next run retries it
        return spec.clip_id, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    return spec.clip_id, time.perf_counter() - t0, ""


def is_done(out: Path, spec: ClipSpec) -> bool:
    """A clip is finished once its labels exist (they are written after the audio)."""
    return (out / spec.split / f"{spec.clip_id}.onsets").exists()


def run(out: Path, plan: Plan, workers: int, splits: tuple[str, ...] = SPLITS) -> int:
    """Render every clip of ``plan`` in ``splits`` that is not done yet; returns the number of failures.

    A clip's split is a hash of its id, so rendering only some splits gives exactly those splits' clips of the
    full plan (the same files a full run would write).
    """
    specs = [s for s in plan.specs() if s.split in splits]
    todo = [s for s in specs if not is_done(out, s)]
    log.info("plan: %d clips, %.2f h; %d to render", len(specs), sum(s.duration_ms for s in specs) / 3.6e6,
             len(todo))
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    for stale in (out / ".tmp").glob("*"):  # partial files of a run that was killed
        stale.unlink()
    failures = 0
    done_s = 0.0
    t0 = time.perf_counter()
    last_manifest = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for k, (cid, secs, err) in enumerate(pool.imap_unordered(
                _work, [(s.index, str(out), plan) for s in todo]), 1):
            if err:
                failures += 1
                log.error("%s failed after %.1f s: %s", cid, secs, err)
            else:
                done_s += next(s.duration_ms for s in todo if s.clip_id == cid) / 1000.0
            if time.perf_counter() - last_manifest > 30 or k == len(todo):
                manifest.rebuild(out)
                last_manifest = time.perf_counter()
            if k % 10 == 0 or k == len(todo):
                wall = time.perf_counter() - t0
                log.info("%d/%d clips, %.1f min audio in %.1f min (%.1fx real time)", k, len(todo),
                         done_s / 60, wall / 60, done_s / max(wall, 1e-9))
    manifest.rebuild(out)
    return failures


def main(argv: list[str] | None = None) -> int:
    """Command line: see ``python -m train.render_corpus --help``."""
    parser = argparse.ArgumentParser(prog="python -m train.render_corpus", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output directory (e.g. /work/corpus)")
    parser.add_argument("--hours", type=float, required=True, help="total audio to plan, hours")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (clip ids are seeded from it)")
    parser.add_argument("--soundfont", action="append", default=[], choices=list(synth.SOUNDFONTS),
                        help="use only these soundfonts (repeatable; changes the corpus)")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="fixed clip length instead of the drawn 10-30 s (changes the corpus)")
    parser.add_argument("--splits", default=",".join(SPLITS),
                        help="comma-separated splits to render (default all; e.g. tune,valid to evaluate "
                             "without the training split)")
    args = parser.parse_args(argv)
    splits = tuple(args.splits.split(","))
    if unknown := set(splits) - set(SPLITS):
        parser.error(f"unknown split(s) {sorted(unknown)}; choose from {list(SPLITS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    plan = Plan(args.hours, args.seed, tuple(args.soundfont), args.clip_seconds)
    failures = run(args.out, plan, args.workers, splits)
    return 1 if failures else 0
