"""Render one clip end to end, and the resumable parallel driver over clip indices.

Seeded and deterministic per clip id; a clip is done when its ``.onsets`` file exists (audio and labels are
each written to ``.tmp/`` and renamed into place, audio first), so a killed run simply continues.
"""

from __future__ import annotations

import argparse
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
from train.corpus.spec import SPLITS, ClipSpec, clip_spec, rng_for

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


def render_clip(spec: ClipSpec, out: Path, seed: int = 0) -> dict[str, str]:
    """Compose, render, process and label one clip; write its audio, labels and manifest row."""
    score = compose(spec.family, rng_for(spec.clip_id, "compose", seed), spec.duration_ms, spec.tempo_bpm)
    cals = {(p.channel, p.program): synth.calibration(out / ".calib", spec.soundfont, p.program,
                                                      p.channel == DRUM_CHANNEL)
            for p in score.parts}
    program_of = {p.channel: p.program for p in score.parts}
    with tempfile.TemporaryDirectory() as tmp:
        dry = synth.render(score, spec.soundfont, Path(tmp))
    rate = synth.RENDER_RATE_HZ
    proc = spec.processing
    rng = rng_for(spec.clip_id, "process", seed)
    x = dry
    if proc.rt60_s is not None:
        x = effects.reverb(x, effects.room_ir(rng, rate, proc.rt60_s, 2), proc.wet_db)
    x = effects.equalise(x, [effects.biquad(k, f, g, q, rate) for k, f, g, q in proc.eq])
    if proc.noise is not None:
        x = effects.add_noise(x, effects.coloured_noise(rng, len(x), 2, proc.noise), proc.snr_db)
    if proc.channels == 1:
        x = x.mean(axis=1, keepdims=True)
    fade = int(0.02 * rate)
    x[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)[:, None]
    x = effects.to_peak(x, min(proc.peak_dbfs, -1.0) if proc.codec else proc.peak_dbfs)
    if proc.codec is not None:
        x, _ = codec.round_trip(x, rate, proc.codec, proc.bitrate)
    x = effects.resample(x, rate, proc.rate_hz)
    x = np.clip(x, -1.0, 1.0)

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


def _work(args: tuple[int, str, int]) -> tuple[str, float, str]:
    index, out, seed = args
    spec = clip_spec(index, seed)
    t0 = time.perf_counter()
    try:
        render_clip(spec, Path(out), seed)
    except Exception as exc:  # logged and skipped; the next run retries it
        return spec.clip_id, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    return spec.clip_id, time.perf_counter() - t0, ""


def plan(hours: float, seed: int = 0, start: int = 0) -> list[ClipSpec]:
    """Clip specs from index ``start`` until their durations add up to ``hours``."""
    specs: list[ClipSpec] = []
    total_ms = 0
    i = start
    while total_ms < hours * 3_600_000:
        specs.append(clip_spec(i, seed))
        total_ms += specs[-1].duration_ms
        i += 1
    return specs


def is_done(out: Path, spec: ClipSpec) -> bool:
    """A clip is finished once its labels exist (they are written after the audio)."""
    return (out / spec.split / f"{spec.clip_id}.onsets").exists()


def run(out: Path, hours: float, workers: int, seed: int = 0) -> int:
    """Render every clip of the plan that is not done yet; returns the number of failures."""
    specs = plan(hours, seed)
    todo = [s for s in specs if not is_done(out, s)]
    log.info("plan: %d clips, %.2f h; %d to render", len(specs), sum(s.duration_ms for s in specs) / 3.6e6,
             len(todo))
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    failures = 0
    done_s = 0.0
    t0 = time.perf_counter()
    last_manifest = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for k, (cid, secs, err) in enumerate(pool.imap_unordered(
                _work, [(s.index, str(out), seed) for s in todo]), 1):
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
    parser = argparse.ArgumentParser(prog="python -m train.render_corpus", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output directory (e.g. /work/corpus)")
    parser.add_argument("--hours", type=float, required=True, help="total audio to plan, hours")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (clip ids are seeded from it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    failures = run(args.out, args.hours, args.workers, args.seed)
    return 1 if failures else 0
