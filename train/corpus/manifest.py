"""MANIFEST.tsv: one row per finished clip, rebuilt atomically from the per-clip rows in ``.rows/``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

COLUMNS = ("clip_id", "split", "family", "duration_s", "sample_rate", "channels", "n_onsets", "soundfont",
           "programs", "tempo_bpm", "processing", "style", "n_notes", "n_dropped")


def write_row(out: Path, row: dict[str, str]) -> None:
    """Store one clip's row (atomically) for the next ``rebuild``."""
    rows = out / ".rows"
    rows.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=rows, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("\t".join(row[c] for c in COLUMNS) + "\n")
    os.replace(tmp, rows / f"{row['clip_id']}.tsv")


def rebuild(out: Path) -> int:
    """Rewrite ``MANIFEST.tsv`` from the rows of clips whose labels exist; returns the number of rows."""
    lines = []
    for path in sorted((out / ".rows").glob("*.tsv")):
        line = path.read_text()
        fields = line.rstrip("\n").split("\t")
        if len(fields) == len(COLUMNS) and (out / fields[1] / f"{fields[0]}.onsets").exists():
            lines.append(line)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("\t".join(COLUMNS) + "\n" + "".join(lines))
    os.replace(tmp, out / "MANIFEST.tsv")
    return len(lines)


def read(out: Path) -> list[dict[str, str]]:
    """The manifest's rows as dicts."""
    text = (out / "MANIFEST.tsv").read_text().splitlines()
    header = text[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in text[1:] if line]
