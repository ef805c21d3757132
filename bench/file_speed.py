"""Whole-file analysis end to end through the HTTP API, next to librosa and aubio on the same files.

Usage::

    .venv/bin/python bench/file_speed.py [--minutes 10 60] [--workers 2] [--keep DIR] [--json PATH]

For each length it writes a generated 44.1 kHz 16-bit mono WAV (drum-like hits over noise, seeded) to a
temporary directory, then:

- ours: starts ``run.py`` as a subprocess (fresh data directory), POSTs the file to ``/api/v3/analysis``
  and polls ``GET`` every 20 ms until ``success``. Speed = audio duration / wall time from the start of
  the upload to the result (upload + queue + analysis). Peak memory = the largest sum of RSS over the server
  process and all its descendants (pool workers, forkserver), sampled from /proc every 10 ms during the
  run; the idle server's RSS is reported too.
- librosa (``librosa.load`` + ``onset.onset_detect``, defaults) and aubio (``source`` + ``onset("hfc")``,
  buffer 512, hop 256, streaming), each in its own process on the same file: speed = duration / wall time
  from reading the file to the onsets (imports excluded), peak memory = the process's ``ru_maxrss``.
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
RATE_HZ = 44100
BLOCK_S = 10
POLL_S = 0.02
SAMPLE_S = 0.01

PEERS = {
    "librosa": """
import librosa
t0 = time.perf_counter()
y, sr = librosa.load(PATH, sr=None)
onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
count = len(onsets)
""",
    "aubio": """
import aubio
t0 = time.perf_counter()
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
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb, "onsets": int(count)}))
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


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                stack += [int(c) for c in (task / "children").read_text().split()]
    return found


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


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--port", "0", "--data-dir", str(data_dir),
                             "--workers", str(workers), "--log-level", "WARNING"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1]
    raise RuntimeError("the server did not start")


async def analyse_over_http(url: str, path: Path) -> tuple[float, float, dict[str, Any]]:
    """(upload seconds, total seconds, result) for one file."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        with path.open("rb") as file:
            form = aiohttp.FormData()
            form.add_field("file", file, filename=path.name, content_type="audio/wav")
            async with http.post(url + "/api/v3/analysis", data=form) as resp:
                body = await resp.json()
                assert resp.status == 202, body
        uploaded = time.perf_counter() - t0
        while True:
            async with http.get(f"{url}/api/v3/analysis/{body['task_id']}") as resp:
                task = await resp.json()
            if task["status"] in ("success", "failed"):
                break
            await asyncio.sleep(POLL_S)
        total = time.perf_counter() - t0
    assert task["status"] == "success", task
    return uploaded, total, task["result"]


def run_ours(path: Path, duration_s: float, workers: int, scratch: Path) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(dir=scratch, prefix="data-"))
    proc, url = start_server(data_dir, workers)
    try:
        time.sleep(1.0)
        idle_mb = rss_mb(proc.pid)
        with PeakSampler(proc.pid) as sampler:
            uploaded, total, result = asyncio.run(analyse_over_http(url, path))
        return {"seconds": total, "upload_seconds": uploaded, "x_realtime": duration_s / total,
                "peak_rss_mb": sampler.peak_mb, "idle_rss_mb": idle_mb, "onsets": len(result["onsets"])}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_peer(name: str, path: Path, duration_s: float) -> dict[str, Any]:
    code = "import json, resource, time\nPATH = " + repr(str(path)) + "\n" + PEERS[name] + PEER_TAIL
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["x_realtime"] = duration_s / figures["seconds"]
    return dict(figures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--workers", type=int, default=2, help="the server's pool size")
    parser.add_argument("--keep", type=Path, help="write the test files here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="file-speed-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for minutes in args.minutes:
            path = folder / f"drums-{minutes:g}min.wav"
            duration_s = write_test_file(path, minutes)
            size_mb = path.stat().st_size / 1e6
            print(f"{path.name}: {duration_s:.0f} s, {size_mb:.0f} MB", flush=True)
            for name in ("ours (HTTP API)", "aubio hfc", "librosa"):
                if name.startswith("ours"):
                    figures = run_ours(path, duration_s, args.workers, Path(tmp))
                else:
                    figures = run_peer(name.split()[0], path, duration_s)
                figures.update(detector=name, minutes=minutes)
                rows.append(figures)
                extra = (f", upload {figures['upload_seconds']:.1f} s, idle {figures['idle_rss_mb']:.0f} MB"
                         if "upload_seconds" in figures else "")
                print(f"  {name:16s} {figures['seconds']:8.2f} s  {figures['x_realtime']:7.0f}x real time  "
                      f"peak {figures['peak_rss_mb']:7.0f} MB  {figures['onsets']} onsets{extra}", flush=True)
        print("\nratios (ours vs peer, same run): speed = ours x / peer x; memory = peer peak / our peak")
        for minutes in args.minutes:
            same = {r["detector"]: r for r in rows if r["minutes"] == minutes}
            ours = same["ours (HTTP API)"]
            for peer in ("aubio hfc", "librosa"):
                speed = ours["x_realtime"] / same[peer]["x_realtime"]
                memory = same[peer]["peak_rss_mb"] / ours["peak_rss_mb"]
                print(f"  {minutes:g} min vs {peer:10s} speed {speed:5.2f}  memory {memory:5.2f}")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
