"""How closely a second Ableton Link peer follows a live stream through the server (``--link``), and what
being a Link peer costs the server.

    sudo PYTHONPATH=$PWD .venv/bin/python bench/link_sync.py [--bpm 124] [--seconds 20] [--idle-s 10]

Everything runs inside a network namespace made here (``unshare -n``; only loopback, multicast routed to it),
so nothing leaves the machine: the server (``run.py --link``), a second peer (``testkit.link_peer``,
sampling its Link beat every 20 ms) and ``run.py stream`` publishing a generated drum track
(``testkit.rhythm_signals``, seed 7) in real time with ``{"link": true}``. Reported:

- discovery: seconds from the peer's start to its first sample with ``num_peers >= 1``;
- tempo: the peer's tempo against the track's, from 4 s into the music on (median and worst relative error);
- phase against the server's beats: at each beat event's ``wall_time`` (from the fifth beat on), the peer's
  Link beat less the nearest whole beat, in ms (median and 95th percentile of the absolute value, the worst);
- phase against the music: the same at the true beats of the track (dated with the beat events'
  ``wall_time - time``), which adds the tracker's own timing error;
- bars: share of positioned beats where the peer's beat modulo 4 equals ``bar_position - 1``;
- cost: the server process's CPU time (user + system, from /proc) over ``--idle-s`` seconds with no stream,
  with and without ``--link`` (aalink runs a thread that wakes every millisecond).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procs import launch, stop  # noqa: E402
from testkit.rhythm_signals import beat_times, drum_track  # noqa: E402

SETUP = ("ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo "
         "&& echo ready && exec sleep 3600")


def namespace() -> subprocess.Popen[str]:
    holder = subprocess.Popen(["unshare", "-n", "--", "sh", "-c", SETUP], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready", "no namespace"
    return holder


def serve(prefix: list[str], data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    return launch([*prefix, sys.executable, str(REPO / "run.py"), "--port", "0", "--workers", "1",
                   "--data-dir", str(data_dir), *extra], new_session=True)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cost(prefix: list[str], data_dir: Path, seconds: float, *extra: str) -> float:
    """CPU seconds per second of the server process with no stream."""
    proc, _ = serve(prefix, data_dir, *extra)
    try:
        time.sleep(2.0)  # start-up settles
        before = cpu_s(proc.pid)
        time.sleep(seconds)
        return (cpu_s(proc.pid) - before) / seconds
    finally:
        stop(proc, group=True, timeout_s=20.0)


def beat_at(samples: list[dict[str, Any]], wall_s: float) -> float | None:
    after = next((s for s in samples if s["wall"] >= wall_s), None)
    if after is None:
        return None
    return float(after["beat"] - (after["wall"] - wall_s) * after["tempo"] / 60.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bpm", type=float, default=124.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle-s", type=float, default=10.0)
    args = parser.parse_args()
    holder = namespace()
    prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            track = drum_track(beat_times([(args.bpm, args.seconds)]), seed=7)
            wav = work / "track.wav"
            sf.write(wav, track.audio, track.sample_rate, subtype="FLOAT")
            server, url = serve(prefix, work / "data", "--link")
            log = (work / "peer.jsonl").open("w")
            peer_start = time.time()
            peer = subprocess.Popen([*prefix, sys.executable, "-m", "testkit.link_peer",
                                     str(args.seconds + 30), "90"], cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            out = subprocess.run(
                [*prefix, sys.executable, str(REPO / "run.py"), "stream", str(wav), "--server", url,
                 "--settings", '{"link": true}', "--format", "json", "--speed", "1"],
                cwd=REPO, capture_output=True, text=True, timeout=args.seconds + 60, check=True)
            time.sleep(0.5)
            stop(peer, group=True, timeout_s=20.0)
            log.close()
            stop(server, group=True, timeout_s=20.0)
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
        samples = [json.loads(line) for line in (work / "peer.jsonl").read_text().splitlines()
                   if line.startswith("{")]
        events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        holder = namespace()  # a fresh one for the idle cost
        prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
        try:
            cost_off = idle_cost(prefix, work / "data-off", args.idle_s)
            cost_on = idle_cost(prefix, work / "data-on", args.idle_s, "--link")
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)

    beats = [e for e in events if e["type"] == "beat"]
    found = next((s["wall"] for s in samples if s["peers"] >= 1), None)
    print(f"discovery: {'never' if found is None else f'{found - peer_start:.2f} s'} after the peer started")
    origin = float(np.median([b["wall_time"] - b["time"] for b in beats]))  # wall time of stream sample 0
    steady = [s for s in samples if s["wall"] >= origin + float(track.beats[0]) + 4.0
              and s["wall"] <= origin + float(track.beats[-1])]
    tempo_err = np.array([abs(s["tempo"] / args.bpm - 1.0) for s in steady])
    print(f"tempo from 4 s of music on ({len(steady)} samples): median error "
          f"{100 * np.median(tempo_err):.2f} %, worst {100 * tempo_err.max():.2f} %")
    beat_ms = 60000.0 / args.bpm

    def phase_ms(walls: list[float]) -> np.ndarray:
        values = [beat_at(samples, w) for w in walls]
        return np.array([(v - round(v)) * beat_ms for v in values if v is not None])

    at_beats = phase_ms([b["wall_time"] for b in beats[4:]])
    at_music = phase_ms([origin + t for t in track.beats if origin + t >= beats[4]["wall_time"]])
    for name, errors in (("server's beats", at_beats), ("the music's beats", at_music)):
        a = np.abs(errors)
        print(f"phase at {name} ({len(a)}): median |error| {np.median(a):.1f} ms, 95th percentile "
              f"{np.percentile(a, 95):.1f} ms, worst {a.max():.1f} ms, mean signed {errors.mean():+.1f} ms")
    positioned = [b for b in beats if "bar_position" in b]
    bars = [round(v) % 4 == b["bar_position"] - 1 for b in positioned[1:]
            if (v := beat_at(samples, b["wall_time"])) is not None]
    print(f"bars: {sum(bars)}/{len(bars)} positioned beats on Link beat bar_position - 1 (mod 4)")
    print(f"server CPU with no stream: {1000 * cost_off:.1f} ms/s without --link, {1000 * cost_on:.1f} ms/s "
          "with it")


if __name__ == "__main__":
    main()
