"""FluidSynth rendering, and the onset offset and level of every soundfont x program, measured.

FluidSynth starts a note's audio a few milliseconds after its note-on, by an amount that depends on the
soundfont, program, key and velocity (sample start points, attack envelopes, the 64-sample block). We render
isolated notes (note-ons on the 4 ms grid at 48 kHz, where blocks and milliseconds align) and record, per
key and velocity, where the audio first reaches -50 dB of that note's peak, and the peak level. Labels add
the offset of the nearest measured key and velocity; a note whose measured peak is silence is not labelled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from train.corpus import instruments as gm
from train.corpus.midi import write_midi
from train.corpus.score import Control, Part, Score

RENDER_RATE_HZ = 48000
GAIN = 0.5  # fluidsynth -g; the default 0.2 is quiet
ONSET_THRESHOLD_DB = -50.0  # relative to the isolated note's peak
SILENT_PEAK = 1e-5  # an isolated note quieter than this (-100 dBFS) is treated as unmapped
CAL_VELOCITIES = (30, 64, 100, 127)
CAL_SPACING_MS = 1200
CAL_START_MS = 500

SOUNDFONTS = {
    "FluidR3_GM": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "TimGM6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "MuseScore_General_Lite": "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
}


def render(score: Score, soundfont: str, workdir: Path) -> npt.NDArray[np.float32]:
    """Render ``score`` through FluidSynth (reverb and chorus off) at ``RENDER_RATE_HZ``.

    Returns
    -------
    ndarray, shape (score.duration_ms * 48, 2), float32
    """
    mid = workdir / "clip.mid"
    wav = workdir / "clip.wav"
    write_midi(score, mid)
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(GAIN), "-F", str(wav),
         "-r", str(RENDER_RATE_HZ), "-o", "synth.polyphony=512", SOUNDFONTS[soundfont], str(mid)],
        check=True, capture_output=True, timeout=600,
    )
    audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    assert rate == RENDER_RATE_HZ
    n = score.duration_ms * RENDER_RATE_HZ // 1000
    out = np.zeros((n, 2), np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Measured onset offsets and peak levels of one soundfont x program (or drum kit).

    ``table[key][velocity] = (offset_ms, peak_dbfs)``; offset_ms is None where the note was silent.
    """

    keys: tuple[int, ...]
    table: dict[int, dict[int, tuple[float | None, float]]]

    def lookup(self, key: int, velocity: int) -> tuple[float | None, float]:
        """(offset_ms, peak_dbfs) of the nearest measured key, interpolated in velocity (peak only)."""
        k = min(self.keys, key=lambda m: (abs(m - key), m))
        row = self.table[k]
        vels = sorted(row)
        v = min(vels, key=lambda m: abs(m - velocity))
        peaks = [row[x][1] for x in vels]
        return row[v][0], float(np.interp(velocity, vels, peaks))


def calibration_keys(program: int, drums: bool) -> tuple[int, ...]:
    """Keys measured: every GM percussion key used for a kit; five keys across a melodic program's range."""
    if drums:
        return gm.DRUM_KEYS
    inst = next((i for t in (gm.PLUCKED, gm.BOWED_BLOWN, gm.PIANO, gm.VOICE, gm.PADS) for i in t
                 if i.program == program), gm.Instrument(program, 36, 96))
    return tuple(sorted({round(inst.low + (inst.high - inst.low) * f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)}))


def measure(soundfont: str, program: int, drums: bool) -> Calibration:
    """Render isolated notes of every calibration key and velocity and measure each one."""
    keys = calibration_keys(program, drums)
    channel = gm.DRUM_CHANNEL if drums else 0
    pairs = [(k, v) for k in keys for v in CAL_VELOCITIES]
    score = Score(CAL_START_MS + CAL_SPACING_MS * len(pairs) + 500, 120.0, [Part(channel, program, "cal")])
    for i, (k, v) in enumerate(pairs):
        t = CAL_START_MS + i * CAL_SPACING_MS
        score.add_note(t, 400, k, v, channel)
        score.controls.append(Control(t + 1000, channel, "cc", 120, 0))  # all sound off: no tail overlaps
    with tempfile.TemporaryDirectory() as tmp:
        audio = render(score, soundfont, Path(tmp))
    env = np.abs(audio).max(axis=1)
    rate = RENDER_RATE_HZ
    table: dict[int, dict[int, tuple[float | None, float]]] = {k: {} for k in keys}
    for i, (k, v) in enumerate(pairs):
        start = (CAL_START_MS + i * CAL_SPACING_MS) * rate // 1000
        seg = env[start: start + rate]
        peak = float(seg.max())
        if peak < SILENT_PEAK:
            table[k][v] = (None, -120.0)
            continue
        first = int(np.argmax(seg >= peak * 10 ** (ONSET_THRESHOLD_DB / 20)))
        table[k][v] = (1000.0 * first / rate, 20 * float(np.log10(peak)))
    return Calibration(keys, table)


def calibration(cache_dir: Path, soundfont: str, program: int, drums: bool) -> Calibration:
    """``measure``, cached as JSON in ``cache_dir``.

    Written atomically; two workers may both measure the same program, harmlessly.
    """
    path = cache_dir / f"{soundfont}-{'kit' if drums else 'prog'}{program:03d}.json"
    if path.exists():
        raw = json.loads(path.read_text())
        table = {int(k): {int(v): (o, p) for v, (o, p) in row.items()} for k, row in raw["table"].items()}
        return Calibration(tuple(raw["keys"]), table)
    cal = measure(soundfont, program, drums)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"soundfont": soundfont, "program": program, "drums": drums, "keys": list(cal.keys),
                   "threshold_db": ONSET_THRESHOLD_DB, "rate_hz": RENDER_RATE_HZ,
                   "table": {str(k): {str(v): list(x) for v, x in row.items()}
                             for k, row in cal.table.items()}},
                  f, indent=0)
    os.replace(tmp, path)
    return cal
