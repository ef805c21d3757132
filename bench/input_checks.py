"""CPU cost of the input checks on the event loop's hot path (issue 17, items 4 and 15).

- ``FrameBoundaries.feed`` (server/transport/ws_masking.py): runs on every read of every WebSocket, in front
  of aiohttp's frame reader, to refuse unmasked client frames. Measured per 20 ms audio frame of a live
  stream (16/48 kHz mono float32, 48 kHz stereo), one frame per read (the usual case), and one frame cut in
  two reads (the slow path).
- ``parse_json`` (server/protocol/codec.py) against ``json.loads`` alone, on a ``configure`` message: the
  nesting check (control messages only; audio is never walked).

    .venv/bin/python bench/input_checks.py [--repeat 5] [--count 20000]

CPU time (``time.process_time``); each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import time
from collections.abc import Callable

from server.protocol.codec import parse_json
from server.transport.ws_masking import FrameBoundaries

CONFIGURE = json.dumps({"type": "configure", "settings": {"threshold": 1.5, "method": "superflux",
                                                         "odf": True, "lookahead_ms": 20}})


def masked_frame(payload: bytes) -> bytes:
    size = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + struct.pack("!H", size))
    return head + os.urandom(4) + payload


def best_us(run: Callable[[], None], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(count):
            run()
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    for label, payload_bytes in (("16 kHz mono", 1280), ("48 kHz mono", 3840), ("48 kHz stereo", 7680)):
        frame = masked_frame(b"\0" * payload_bytes)
        whole = FrameBoundaries()
        split = FrameBoundaries()
        half = len(frame) // 2
        one_us = best_us(lambda: whole.feed(frame), args.count, args.repeat)  # noqa: B023
        two_us = best_us(lambda: (split.feed(frame[:half]), split.feed(frame[half:])),  # noqa: B023
                         args.count, args.repeat)
        print(f"FrameBoundaries.feed, 20 ms {label} ({len(frame)} B): {one_us:.2f} us per frame in one read, "
              f"{two_us:.2f} us cut in two")
    parse_us = best_us(lambda: parse_json(CONFIGURE), args.count, args.repeat)
    loads_us = best_us(lambda: json.loads(CONFIGURE), args.count, args.repeat)
    print(f"configure message: parse_json {parse_us:.2f} us, json.loads alone {loads_us:.2f} us")


if __name__ == "__main__":
    main()
