"""Onset F and timing error of our methods at given look-aheads, on the corpus ``tune`` split and onsets-dev.

Usage::

    .venv/bin/python bench/lookahead_timing.py [--methods superflux,complex,hfc,energy,neural]
                                               [--lookahead-ms 10,0] [--split tune] [--procs 2]

Tuning data only (``--split tune`` and the real clips of ``$TRANSIENT_ONSETS_DEV`` or
``../shared/data/onsets-dev``); ``valid`` is for a default once chosen. Each method and look-ahead is fed in
20 ms streaming blocks and flushed (``bench/accuracy.py``'s ``streamed``). Per set: mean F (mir_eval,
±50 ms), and over the matched onsets the signed timing error (found minus reference), ms: median, 10th and
90th percentiles, median absolute deviation from the median (``mad``, the spread), and the share within
±5 ms (``within5``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy import

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from pathlib import Path  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accuracy import streamed  # noqa: E402
from corpus import Clip, data_dir  # noqa: E402
from learned import corpus_clips, dev_clips  # noqa: E402

from server.dsp import DetectorSettings  # noqa: E402

CORPUS = Path("/work/corpus")


def scores(clips: list[Clip], settings: DetectorSettings) -> dict[str, float]:
    """Mean F and the timing error of the matched onsets over ``clips``."""
    run = streamed(settings, 20.0)
    f_values, errors = [], []
    for clip in clips:
        found = np.sort(run(clip))
        if len(clip.onsets_s) == 0:
            f_values.append(1.0 if len(found) == 0 else 0.0)
            continue
        f_values.append(float(mir_eval.onset.f_measure(clip.onsets_s, found, window=0.05)[0]))
        pairs = mir_eval.util.match_events(clip.onsets_s, found, 0.05)
        errors += [found[j] - clip.onsets_s[i] for i, j in pairs]
    ms = 1000.0 * np.array(errors)
    median = float(np.median(ms))
    return {"F": float(np.mean(f_values)), "median": median, "p10": float(np.percentile(ms, 10)),
            "p90": float(np.percentile(ms, 90)), "mad": float(np.median(np.abs(ms - median))),
            "within5": float(np.mean(np.abs(ms) <= 5.0)), "matched": float(len(ms))}


def one(job: tuple[str, float, str]) -> tuple[str, float, dict[str, dict[str, float]]]:
    method, lookahead_ms, split = job
    warnings.simplefilter("ignore")
    settings = DetectorSettings.from_mapping({"method": method, "lookahead_ms": lookahead_ms})
    sets = {f"corpus {split}": corpus_clips(CORPUS, split), "onsets-dev": dev_clips(data_dir(None))}
    return method, lookahead_ms, {name: scores(clips, settings) for name, clips in sets.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="superflux,complex,hfc,energy,neural")
    parser.add_argument("--lookahead-ms", default="10,0")
    parser.add_argument("--split", default="tune",
                        help="corpus split (tune: tuning data; valid: report once)")
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(method, float(la), args.split) for method in args.methods.split(",")
            for la in args.lookahead_ms.split(",")]
    with Pool(args.procs) as pool:
        for method, lookahead_ms, result in pool.imap(one, jobs):
            for name, row in result.items():
                print(f"{method:9s} lookahead {lookahead_ms:4g} ms  {name:12s} F {row['F']:.4f}  error "
                      f"median {row['median']:6.2f}  p10 {row['p10']:6.2f}  p90 {row['p90']:6.2f}  "
                      f"mad {row['mad']:5.2f}  within 5 ms {row['within5']:.3f}  "
                      f"({row['matched']:.0f} matched)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
