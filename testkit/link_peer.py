"""A second Ableton Link peer for tests: ``python -m testkit.link_peer SECONDS [BPM]``.

Joins the Link session (proposing ``BPM``, default 90), then prints one JSON line every 20 ms for ``SECONDS``:
``{"wall": Unix time s, "peers", "tempo": bpm, "beat"}`` (beats on a 4-beat quantum), and exits.
Run it in the network namespace of the peer it should find.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

SAMPLE_S = 0.02


async def watch(seconds: float, bpm: float) -> None:
    import aalink

    link = aalink.Link(bpm)
    link.quantum = 4
    link.enabled = True
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        print(json.dumps({"wall": time.time(), "peers": int(link.num_peers), "tempo": float(link.tempo),
                          "beat": float(link.beat)}), flush=True)
        await asyncio.sleep(SAMPLE_S)
    link.enabled = False


def main() -> None:
    seconds = float(sys.argv[1])
    bpm = float(sys.argv[2]) if len(sys.argv) > 2 else 90.0
    asyncio.run(watch(seconds, bpm))


if __name__ == "__main__":
    main()
