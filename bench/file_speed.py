"""Whole-file analysis end to end through the HTTP API, next to librosa and aubio on the same files.

Usage::

    .venv/bin/python bench/file_speed.py [--minutes 10 60] [--repeat 3] [--workers 2] [--keep DIR]
                                         [--settings JSON] [--json PATH]

For each length it writes a generated 44.1 kHz 16-bit mono WAV (drum-like hits over noise, seeded) to a
temporary directory, then:

- ours: starts ``run.py`` as a subprocess (fresh data directory), POSTs the file to ``/api/v3/analysis`` (with
  ``--settings`` as its ``settings`` field, else the defaults)
  and polls ``GET ?wait_s=5`` until ``success`` (each answered once the task finishes; a server that does not
  wait is asked again every 20 ms). Wall time runs from the start of the upload to the result
  (upload + queue + analysis). CPU time is the user + system time the server process and all its
  descendants (pool workers) spent meanwhile, from /proc. Peak memory = the largest sum of RSS over the
  server process and its descendants, sampled from /proc every 10 ms during the run; the idle server's
  RSS is reported too.
- librosa (``librosa.load`` + ``onset.onset_detect``, defaults) and aubio (``source`` + ``onset("hfc")``,
  buffer 512, hop 256, streaming), each in its own process on the same file: wall and CPU time
  (``time.process_time``) from reading the file to the onsets (imports excluded), peak memory = the
  process's ``ru_maxrss``.

Each measurement is repeated ``--repeat`` times, alternating detectors; the fastest wall time (the least
disturbed by other load on the machine) and the CPU time of that run are reported, as multiples of real
time (audio duration / time). Peak memory is the largest seen over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procs import descendants, start_server  # noqa: E402

RATE_HZ = 44100
BLOCK_S = 10
POLL_S = 0.02  # least time between two GETs of a task
WAIT_S = 5.0  # each GET's wait_s
SAMPLE_S = 0.01
NAMES = ("ours (HTTP API)", "aubio hfc", "librosa")

PEERS = {
    "librosa": """
import librosa
t0 = time.perf_counter()
c0 = time.process_time()
y, sr = librosa.load(PATH, sr=None)
onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
count = len(onsets)
""",
    "aubio": """
import aubio
t0 = time.perf_counter()
c0 = time.process_time()
src = aubio.source(PATH, 0, 256)
det = aubio.onset("hfc", 512, 256, src.samplerate)
count = 0
while True:
    samples, read = src()
    if det(samples):
        count += 1
    if read < 256:
        break
""",
}
PEER_TAIL = """
seconds = time.perf_counter() - t0
cpu_seconds = time.process_time() - c0
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb,
                  "onsets": int(count)}))
"""


def write_test_file(path: Path, minutes: float, seed: int = 1) -> float:
    """Drum-like decaying noise bursts every 0.15–0.6 s over -40 dB noise, written block by block."""
    rng = np.random.default_rng(seed)
    total = round(minutes * 60 * RATE_HZ)
    block = BLOCK_S * RATE_HZ
    decay = np.exp(-np.arange(round(0.25 * RATE_HZ)) / (0.04 * RATE_HZ))
    carry = np.zeros(0)
    next_hit = 0.1 * RATE_HZ
    with sf.SoundFile(str(path), "w", RATE_HZ, 1, subtype="PCM_16") as out:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = rng.standard_normal(n + len(decay)) * 0.01
            x[: len(carry)] += carry
            while next_hit < start + n:
                at = int(next_hit) - start
                x[at : at + len(decay)] += rng.uniform(0.2, 0.8) * rng.standard_normal(len(decay)) * decay
                next_hit += rng.uniform(0.15, 0.6) * RATE_HZ
            out.write(np.clip(x[:n], -1, 1).astype(np.float32))
            carry = x[n:]
    return total / RATE_HZ


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (living ones)."""
    ticks = 0
    for one in descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    total = 0
    for one in descendants(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class PeakSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            time.sleep(SAMPLE_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def analyse_over_http(
    url: str, path: Path, settings: dict[str, Any] | None = None
) -> tuple[float, float, dict[str, Any]]:
    """(upload seconds, total seconds, result) for one file, analysed with ``settings`` (None: defaults)."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        with path.open("rb") as file:
            form = aiohttp.FormData()
            if settings is not None:
                form.add_field("settings", json.dumps(settings), content_type="application/json")
            form.add_field("file", file, filename=path.name, content_type="audio/wav")
            async with http.post(url + "/api/v3/analysis", data=form) as resp:
                body = await resp.json()
                assert resp.status == 202, body
        uploaded = time.perf_counter() - t0
        while True:
            asked = time.perf_counter()
            async with http.get(f"{url}/api/v3/analysis/{body['task_id']}?wait_s={WAIT_S:g}") as resp:
                task = await resp.json()
            if task["status"] in ("success", "failed"):
                break
            await asyncio.sleep(max(0.0, POLL_S - (time.perf_counter() - asked)))
        total = time.perf_counter() - t0
    assert task["status"] == "success", task
    return uploaded, total, task["result"]


class OurServer:
    """``run.py`` on a fresh data directory, for the repeats on one file."""

    def __init__(self, workers: int, scratch: Path) -> None:
        self.data_dir = Path(tempfile.mkdtemp(dir=scratch, prefix="data-"))
        self.proc, self.url = start_server(["--data-dir", str(self.data_dir), "--workers", str(workers),
                                            "--log-level", "WARNING"])
        time.sleep(1.0)
        self.idle_mb = rss_mb(self.proc.pid)

    def run(self, path: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        cpu_before = cpu_s(self.proc.pid)
        with PeakSampler(self.proc.pid) as sampler:
            uploaded, total, result = asyncio.run(analyse_over_http(self.url, path, settings))
        return {"seconds": total, "cpu_seconds": cpu_s(self.proc.pid) - cpu_before,
                "upload_seconds": uploaded, "peak_rss_mb": sampler.peak_mb, "idle_rss_mb": self.idle_mb,
                "onsets": len(result["onsets"])}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_peer(name: str, path: Path) -> dict[str, Any]:
    code = "import json, resource, time\nPATH = " + repr(str(path)) + "\n" + PEERS[name] + PEER_TAIL
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def best(runs: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """The fastest run's figures, with the peak memory of all runs and multiples of real time."""
    fastest = dict(min(runs, key=lambda run: run["seconds"]))
    fastest["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    fastest["x_realtime"] = duration_s / fastest["seconds"]
    fastest["x_realtime_cpu"] = duration_s / fastest["cpu_seconds"]
    fastest["repeats"] = len(runs)
    return fastest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per detector and file (fastest kept)")
    parser.add_argument("--workers", type=int, default=2, help="the server's pool size")
    parser.add_argument("--keep", type=Path, help="write the test files here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--settings", help='our analysis settings as JSON, e.g. \'{"beats": false}\'')
    args = parser.parse_args()
    settings = json.loads(args.settings) if args.settings else None

    with tempfile.TemporaryDirectory(prefix="file-speed-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for minutes in args.minutes:
            path = folder / f"drums-{minutes:g}min.wav"
            duration_s = write_test_file(path, minutes)
            size_mb = path.stat().st_size / 1e6
            print(f"{path.name}: {duration_s:.0f} s, {size_mb:.0f} MB", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
            server = OurServer(args.workers, Path(tmp))
            try:
                for _ in range(args.repeat):
                    runs[NAMES[0]].append(server.run(path, settings))
                    runs[NAMES[1]].append(run_peer("aubio", path))
                    runs[NAMES[2]].append(run_peer("librosa", path))
            finally:
                server.stop()
            for name in NAMES:
                figures = best(runs[name], duration_s)
                figures.update(detector=name, minutes=minutes)
                rows.append(figures)
                extra = (f", upload {figures['upload_seconds']:.1f} s, idle {figures['idle_rss_mb']:.0f} MB"
                         if "upload_seconds" in figures else "")
                print(f"  {name:16s} wall {figures['seconds']:7.2f} s {figures['x_realtime']:6.0f}x   "
                      f"cpu {figures['cpu_seconds']:7.2f} s {figures['x_realtime_cpu']:6.0f}x   "
                      f"peak {figures['peak_rss_mb']:6.0f} MB   {figures['onsets']} onsets{extra}",
                      flush=True)
        print("\nratios, same run (> 1: ours better): wall speed, CPU speed (ours x / peer x); "
              "memory (peer peak / our peak)")
        for minutes in args.minutes:
            same = {r["detector"]: r for r in rows if r["minutes"] == minutes}
            ours = same[NAMES[0]]
            for peer in NAMES[1:]:
                wall = ours["x_realtime"] / same[peer]["x_realtime"]
                cpu = ours["x_realtime_cpu"] / same[peer]["x_realtime_cpu"]
                memory = same[peer]["peak_rss_mb"] / ours["peak_rss_mb"]
                print(f"  {minutes:g} min vs {peer:10s} wall {wall:5.2f}  cpu {cpu:5.2f}  "
                      f"memory {memory:5.2f}")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
