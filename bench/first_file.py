"""The first whole file on a fresh server against the next ones: does a first upload wait for imports?

Usage::

    .venv/bin/python bench/first_file.py [--servers 3] [--uploads 3] [--seconds 3]

Starts ``run.py`` (``bench/file_speed.py``'s ``OurServer``: 2 workers, a fresh data directory) ``--servers``
times; on each, uploads the same generated ``--seconds`` WAV ``--uploads`` times, one after another, and
prints each upload's wall time from the start of the upload to the result (``GET ?wait_s=``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import file_speed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clip.wav"
        file_speed.write_test_file(path, args.seconds / 60.0)
        for _ in range(args.servers):
            server = file_speed.OurServer(2, Path(scratch))
            try:
                walls_s = [server.run(path)["seconds"] for _ in range(args.uploads)]
            finally:
                server.stop()
            walls = " ".join(f"{wall:.3f}" for wall in walls_s)
            print("uploads on a fresh server, wall s:", walls, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
