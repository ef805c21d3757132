"""Corpus summary from MANIFEST.tsv: ``python -m train.corpus.summary /work/corpus``.

Hours and clips per family and split, onsets, and how often each rate, channel count, soundfont and
processing step occurs.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

from train.corpus import manifest
from train.corpus.compose import FAMILIES
from train.corpus.spec import SPLITS


def summarise(rows: list[dict[str, str]]) -> str:
    """A markdown report of ``rows``."""
    hours: dict[tuple[str, str], float] = collections.defaultdict(float)
    clips: collections.Counter[tuple[str, str]] = collections.Counter()
    onsets: collections.Counter[str] = collections.Counter()
    for r in rows:
        key = (r["family"], r["split"])
        hours[key] += float(r["duration_s"]) / 3600
        clips[key] += 1
        onsets[r["family"]] += int(r["n_onsets"])
    lines = ["| family | " + " | ".join(f"{s} h (clips)" for s in SPLITS) + " | total h | onsets |",
             "|---|" + "---|" * (len(SPLITS) + 2)]
    for fam in FAMILIES:
        cells = [f"{hours[(fam, s)]:.3f} ({clips[(fam, s)]})" for s in SPLITS]
        total = sum(hours[(fam, s)] for s in SPLITS)
        lines.append(f"| {fam} | " + " | ".join(cells) + f" | {total:.3f} | {onsets[fam]} |")
    cells = [f"{sum(hours[(f, s)] for f in FAMILIES):.3f} ({sum(clips[(f, s)] for f in FAMILIES)})"
             for s in SPLITS]
    lines.append("| **all** | " + " | ".join(cells)
                 + f" | {sum(hours.values()):.3f} | {sum(onsets.values())} |")

    def count(what: str, values: list[str]) -> None:
        c = collections.Counter(values)
        lines.append(f"\n{what}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))

    count("sample rates", [r["sample_rate"] for r in rows])
    count("channels", [r["channels"] for r in rows])
    count("soundfonts", [r["soundfont"] for r in rows])
    steps = []
    for r in rows:
        for part in r["processing"].split(","):
            match = re.match(r"mp3|[a-z]+", part)
            if match and not part.endswith("dBFS"):
                steps.append(match.group(0))
    count("processing steps (clips)", steps)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of a corpus directory."""
    parser = argparse.ArgumentParser(prog="python -m train.corpus.summary", description=__doc__)
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args(argv)
    print(summarise(manifest.read(args.corpus)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
