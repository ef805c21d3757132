"""Where a 20 ms chunk's CPU goes in a live server under a fixed load: CPU per chunk and a sampled profile.

Usage::

    .venv/bin/python bench/profile_chunk.py [--streams 64] [--duration-s 20] [--rate-hz 200] [--keep DIR]
                                            [--beats on|off]

Starts ``run.py`` confined to core 0 (``taskset``; its pool, one worker, inherits it) and the lean load
generator of ``bench/capacity_per_core.py`` on core 1: ``--streams`` 48 kHz streams of 20 ms chunks. From
4 s in until 4 s before the end it reads each process's CPU time from /proc (CPU time per chunk: what
does not depend on how loaded the machine is) and samples every process with py-spy (``pip install
py-spy``; itself on core 1), then sorts the busy samples of the event loop and of the worker into the
stages of a chunk's way through the server (a sample goes to the first stage found from its innermost
frame outwards; a sample in uvloop's own C code shows only the loop's Python frame, and is counted as
such). The split of CPU time between user and kernel is printed too. Sampling is wall-clock
(``--nonblocking``): on a loaded machine a process preempted in a stage is counted there, so read the
stage shares with the machine's load, which is printed.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity_per_core import CHUNK_S, ShardResult, shard_main, start
from bench.procs import descendants
from bench.stream_load import CLOCK_TICKS, cpu_s, percentile

REPO = Path(__file__).resolve().parent.parent
# py-spy leaves out samples of threads waiting in the kernel (its idle test), so every sample counts as
# busy. A sample whose innermost Python frame is the loop's run() is in uvloop's C code: polling, the
# sockets' and pipes' reads and writes, timers.
LOOP_C = "Runner.run (asyncio/runners.py"
# A sample with a frame of the rhythm beside the detector (the setting ``beats``) anywhere in its stack is
# counted as that (it has FFTs of its own, which the stages below would take for the detector's).
RHYTHM = ("worker: beats and bands (rhythm beside the detector)", ("/server/rhythm/", "rhythm_beside.py"))
# (stage, substrings of a frame), tried from the innermost frame outwards.
STAGES = (
    ("uvloop's C code: polling, socket and pipe I/O, timers", (LOOP_C,)),
    ("worker: reading the call pipe", ("_read_exactly",)),
    ("status messages", ("emit_status", "sweep_streams")),
    ("result path: complete, events, outbox, send", ("StreamSession.complete", "Outbox.run", "codec.py",
                                                     "send_str", "_emit", "Lane._answered", "_Answers")),
    ("worker: unpickling, frames", ("loads", "_read_frame", "ArenaView", "copies")),
    ("worker: result pickling, answer", ("_answer", "_write_all", "_finish", "_shift", "take_odf")),
    ("worker: FFT, filterbank, detection function", ("fft", "spectr", "band_", "frame_power", "odf.py",
                                                      "_analyse_frames", "seal", "_Pass")),
    ("worker: peak picking", ("pick", "peak", "_compare_classical", "finish_pass")),
    ("scheduler, hand-off, arena, pipes", ("scheduler.py", "handoff.py", "take_job", "read_bytes",
                                           "arena.py", "lane.py", "run_on")),
    ("masked-frame check (ws_masking)", ("ws_masking.py",)),
    ("decoding, ring buffer", ("parse_audio", "decode_frame", "decode_audio", "StreamSession.feed", "ring.py",
                               "arrival.py", "stream_messages.py", "audio_tap.py", "Publisher._tapped")),
    ("aiohttp WebSocket reader", ("web_protocol", "_websocket/reader", "web_ws.py", "Publisher._receive")),
)


def kernel_s(pid: int) -> float:
    """System (kernel) CPU seconds of ``pid`` so far."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12]) / CLOCK_TICKS


def switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of ``pid`` so far (a voluntary one: it blocked, e.g. the
    event loop waiting in epoll or a worker waiting for its next call)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def runqueue_s(pid: int) -> float:
    """Seconds ``pid`` has spent runnable but waiting for a core (``/proc/PID/schedstat``): how much the
    machine's other work held it back."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def stages(raw: Path) -> tuple[int, collections.Counter[str]]:
    """Busy samples of one py-spy raw profile, and their count by stage."""
    busy, counts = 0, collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        busy += int(n)
        if any(key in frame for frame in frames for key in RHYTHM[1]):
            counts[RHYTHM[0]] += int(n)
            continue
        for frame in reversed(frames):
            stage = next((name for name, keys in STAGES if any(k in frame for k in keys)), None)
            if stage is not None:
                counts[stage] += int(n)
                break
        else:
            counts["other"] += int(n)
    return busy, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rate-hz", type=int, default=200, help="py-spy samples per second (0: no py-spy)")
    parser.add_argument("--keep", type=Path, default=None, help="keep py-spy's raw profiles here")
    parser.add_argument("--beats", choices=("on", "off"), default="on", help="the streams' setting beats")
    parser.add_argument("--server-arg", action="append", default=[], help="extra run.py option")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = args.keep or Path(tempfile.mkdtemp(prefix="profile_chunk_"))
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start([str(REPO / "run.py"), "--port", "0", "--max-streams", "4096",
                       "--max-streams-per-client", "4096", "--idle-timeout-s", "120",
                       "--log-level", "WARNING", *args.server_arg], 0)
    try:
        time.sleep(1.5)
        tree = descendants(proc.pid)
        names = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in tree}
        print(f"load average {os.getloadavg()}", flush=True)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            settings = {} if args.beats == "on" else {"beats": False}
            job = (url, proc.pid, "ours", args.streams, args.duration_s, 1, settings)
            pending = pool.apply_async(shard_main, (job,))
            time.sleep(4.0)
            window_s = int(args.duration_s - 8)
            cpu0 = {pid: cpu_s([pid]) for pid in tree}
            sys0 = {pid: kernel_s(pid) for pid in tree}
            ctx0 = {pid: switches(pid) for pid in tree}
            wait0 = {pid: runqueue_s(pid) for pid in tree}
            t0 = time.perf_counter()
            spies = [subprocess.Popen(["taskset", "-c", "1", spy, "record", "--nonblocking", "-r",
                                       str(args.rate_hz), "-d", str(window_s), "-f", "raw", "-o",
                                       str(out / f"{pid}.txt"), "-p", str(pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for pid in tree if args.rate_hz > 0]
            for each in spies:
                each.wait()
            if not spies:
                time.sleep(window_s)
            elapsed_s = time.perf_counter() - t0
            cpu1 = {pid: cpu_s([pid]) for pid in tree}
            sys1 = {pid: kernel_s(pid) for pid in tree}
            ctx1 = {pid: switches(pid) for pid in tree}
            wait1 = {pid: runqueue_s(pid) for pid in tree}
            shard = ShardResult(**pending.get(timeout=args.duration_s * 10 + 300))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    chunks = args.streams * elapsed_s / CHUNK_S
    print(f"{args.streams} streams, {elapsed_s:.1f} s profiled; overhead p50 "
          f"{percentile(shard.overhead_ms, 50):.1f} ms p99 {percentile(shard.overhead_ms, 99):.1f} ms, "
          f"missed {shard.missed}, dropped {shard.dropped_s:g} s; load average {os.getloadavg()}")
    for pid in tree:
        used = cpu1[pid] - cpu0[pid]
        role = "event loop" if pid == proc.pid else names[pid][:70]
        kernel = sys1[pid] - sys0[pid]
        print(f"pid {pid} ({role}): {1e6 * used / chunks:.1f} us CPU per chunk, of which "
              f"{1e6 * kernel / chunks:.1f} in the kernel; context switches per 100 chunks "
              f"{100 * (ctx1[pid][0] - ctx0[pid][0]) / chunks:.1f} voluntary, "
              f"{100 * (ctx1[pid][1] - ctx0[pid][1]) / chunks:.1f} involuntary; waited for a core "
              f"{1e6 * (wait1[pid] - wait0[pid]) / chunks:.1f} us per chunk")
        raw = out / f"{pid}.txt"
        if used > 0.05 and raw.exists():
            busy, counts = stages(raw)
            for stage, n in counts.most_common():
                print(f"    {100 * n / max(1, busy):5.1f} %  {stage}")
    print(f"raw profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
