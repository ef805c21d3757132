"""madmom's beat trackers as a bench peer, run by bench/rhythm.py in its own venv (never imported here).

Usage: ``/work/madmom-venv/bin/python bench/madmom_peer.py FILE.wav ...`` prints one JSON object:
``{path: {"online": [beat times, s], "offline": [...], "cpu_s": {"online": s, "offline": s}}}``.
madmom (code CC BY-NC-SA for its models) is compared against, never copied; see bench/README.md.
"""

from __future__ import annotations

import json
import sys
import time


def main(paths: list[str]) -> None:
    from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor

    out = {}
    for path in paths:
        result: dict[str, object] = {}
        cpu: dict[str, float] = {}
        for mode, online in (("online", True), ("offline", False)):
            start = time.process_time()
            activations = RNNBeatProcessor(online=online)(path)
            beats = DBNBeatTrackingProcessor(fps=100, online=online)(activations)
            cpu[mode] = time.process_time() - start
            result[mode] = [float(b) for b in beats]
        result["cpu_s"] = cpu
        out[path] = result
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
