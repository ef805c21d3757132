"""Every onset and ODF value of many streaming scenarios, to check that two versions agree bit for bit.

Usage::

    .venv/bin/python bench/bitwise_capture.py --out /tmp/a.pkl [--root DIR] [--quick] [--data DIR]
    .venv/bin/python bench/bitwise_capture.py --compare /tmp/a.pkl /tmp/b.pkl

``--root`` is the tree whose ``server`` package is imported (default: this one), e.g. a
``git archive main | tar -x -C DIR`` copy; run once per version with the same venv, then ``--compare``
(exit status 1 when any capture differs). The clips: the dev set's first 12 s (``--data``, as
``bench/accuracy.py`` finds it) and seven generated signals (16–48 kHz, mono and stereo, drums, clicks,
mixes, a quiet passage, noise). Per clip and method (``superflux``, ``neural``, ``fused``, ``complex``,
``hfc``, ``energy``; ``--quick``: the first three, 20 ms blocks only):

- streams in lockstep through ``process_many`` (8 in 20 ms blocks, 5 in 10 ms, 6 in 1000-sample blocks with
  threshold 0.8), each from its own offset; mid-way a threshold change, a switch to no look-ahead, a pickle
  round trip, the row tap on (its rows captured), a switch of method, a ``decide_pending``; then ``flush``;
- one stream through ``process`` in 333-sample blocks;
- streams of several methods and settings in one ``process_many`` call with random block sizes (0 to
  beyond a pass's chunk), a detector listed twice, settings changed and detectors pickled mid-way.

A capture is each call's onsets (time, strength) and ``take_odf()`` bytes, in order.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import argparse  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ("superflux", "neural", "fused", "complex", "hfc", "energy")
QUICK_METHODS = METHODS[:3]

Captures = dict[tuple[Any, ...], list[Any]]


def clips(data: Path) -> list[tuple[str, Any, int]]:
    """(name, samples, rate): the dev set's clips (first 12 s; stereo as (n, 2)), then generated ones."""
    import soundfile

    from testkit import signals

    out: list[tuple[str, Any, int]] = []
    for path in sorted(data.glob("*.wav")):
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        samples = samples[: rate * 12]
        out.append((path.name, samples[:, 0].copy() if samples.shape[1] == 1 else samples, int(rate)))
    return [
        *out,
        ("mix44", signals.music_mix(44100, 8.0, seed=11).samples, 44100),
        ("mix48st", signals.music_mix(48000, 6.0, seed=12, stereo=True).samples, 48000),
        ("drums16", signals.drums(16000, 6.0, seed=13).samples, 16000),
        ("clicks22", signals.clicks(22050, 4.0, seed=14).samples, 22050),
        ("quiet44", signals.quiet_passage(44100, 5.0, seed=15).samples, 44100),
        ("noise44", signals.noise(44100, 4.0, seed=16).samples, 44100),
        ("ghost48", signals.ghost_notes(48000, 5.0, seed=17).samples, 48000),
    ]


def channels(samples: Any) -> int:
    return 1 if samples.ndim == 1 else int(samples.shape[1])


def record(captures: Captures, key: tuple[Any, ...], detector: Any, onsets: list[Any]) -> None:
    captures.setdefault(key, []).append(
        ([(o.time, o.strength) for o in onsets], detector.take_odf().tobytes())
    )


def lockstep(captures: Captures, name: str, x: Any, rate: int, method: str, block: int, n_streams: int,
             extra: dict[str, float] | None = None) -> None:
    """``n_streams`` streams from their own offsets, fixed blocks through ``process_many``; live changes."""
    from server.dsp import DetectorSettings, OnsetDetector, process_many

    extra = extra or {}
    detectors = [OnsetDetector(rate, channels(x), DetectorSettings(method=method, **extra))
                 for _ in range(n_streams)]
    stride = max(1, len(x) // (n_streams + 1))
    looped = np.concatenate([x, x])
    steps = len(x) // block
    key = (name, method, block, n_streams)
    for t in range(steps):
        if t == steps // 3:
            detectors[1].configure(DetectorSettings(method=method, **{**extra, "threshold": 0.5}))
            if n_streams > 3:
                detectors[3].configure(DetectorSettings(method=method, threshold=2.5, lookahead_ms=0.0))
            detectors[2] = pickle.loads(pickle.dumps(detectors[2]))
            detectors[0].tap_rows()
        if t == steps // 2 and n_streams > 4:
            detectors[4].configure(DetectorSettings(method="neural" if method != "neural" else "superflux"))
        if t == (2 * steps) // 3:
            record(captures, (*key, "pending"), detectors[1], detectors[1].decide_pending())
            rows = detectors[0].take_rows()
            captures.setdefault((*key, "rows"), []).append(b"".join(r.tobytes() for r in rows))
        blocks = [looped[i * stride + t * block : i * stride + (t + 1) * block] for i in range(n_streams)]
        for i, (detector, onsets) in enumerate(
            zip(detectors, process_many(list(zip(detectors, blocks, strict=True))), strict=True)
        ):
            record(captures, (*key, i), detector, onsets)
    for i, detector in enumerate(detectors):
        record(captures, (*key, i), detector, detector.flush())


def irregular(captures: Captures, name: str, x: Any, rate: int, methods: tuple[str, ...], seed: int) -> None:
    """Streams of several methods and settings in one call, random block sizes, one detector twice."""
    from server.dsp import DetectorSettings, OnsetDetector, process_many

    rng = np.random.default_rng(seed)
    settings = []
    for method in methods:
        settings += [DetectorSettings(method=method),
                     DetectorSettings(method=method, lookahead_ms=0.0, threshold=0.7)]
    detectors = [OnsetDetector(rate, channels(x), s) for s in settings]
    positions = [0] * len(detectors)
    step = 0
    sizes_of = [0, 1, 7, 160, 441, 480, 882, 960, 2000, 7000, 70000]
    while min(positions) < len(x):
        pairs = []
        for i, detector in enumerate(detectors):
            size = int(rng.choice(sizes_of))
            pairs.append((detector, x[positions[i] : positions[i] + size]))
            positions[i] += size
        if step % 5 == 2:  # one detector listed twice
            pairs.append((detectors[0], x[positions[0] : positions[0] + 441]))
            positions[0] += 441
        if step == 7:
            detectors[1].configure(DetectorSettings(method=methods[0], threshold=1.7, lookahead_ms=30.0))
            detectors = [pickle.loads(pickle.dumps(d)) if i % 3 == 0 else d for i, d in enumerate(detectors)]
            pairs = [(detectors[i] if i < len(detectors) else detectors[0], block)
                     for i, (_, block) in enumerate(pairs)]
        for i, ((detector, _), onsets) in enumerate(zip(pairs, process_many(pairs), strict=True)):
            which = i if i < len(detectors) else "twice"
            record(captures, (name, "irregular", seed, which), detector, onsets)
        step += 1
    for i, detector in enumerate(detectors):
        record(captures, (name, "irregular", seed, i), detector, detector.flush())


def one_by_one(captures: Captures, name: str, x: Any, rate: int, method: str, block: int) -> None:
    from server.dsp import DetectorSettings, OnsetDetector

    detector = OnsetDetector(rate, channels(x), DetectorSettings(method=method))
    key = (name, method, "process", block)
    for start in range(0, len(x), block):
        record(captures, key, detector, detector.process(x[start : start + block]))
    record(captures, key, detector, detector.flush())


def capture(data: Path, quick: bool) -> Captures:
    captures: Captures = {}
    for name, x, rate in clips(data):
        block20, block10 = round(0.02 * rate), round(0.01 * rate)
        for method in QUICK_METHODS if quick else METHODS:
            lockstep(captures, name, x, rate, method, block20, 8)
            if not quick:
                lockstep(captures, name, x, rate, method, block10, 5)
                lockstep(captures, name, x, rate, method, 1000, 6, {"threshold": 0.8})
                one_by_one(captures, name, x, rate, method, 333)
        irregular(captures, name, x, rate, QUICK_METHODS, 1)
        if not quick:
            irregular(captures, name, x, rate, METHODS, 2)
        print(f"{name}: {len(captures)} captures so far", flush=True)
    return captures


def summary(captures: Captures) -> str:
    calls = [item for items in captures.values() for item in items if isinstance(item, tuple)]
    onsets = sum(len(item[0]) for item in calls)
    values = sum(len(item[1]) // 4 for item in calls)
    return f"{len(captures)} captures, {onsets} onsets, {values} ODF values"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=HERE.parent, help="tree whose server package runs")
    parser.add_argument("--out", type=Path, help="write the captures here (pickle)")
    parser.add_argument("--quick", action="store_true", help="3 methods, 20 ms lockstep and random blocks")
    parser.add_argument("--data", help="dev-set folder (default as bench/accuracy.py)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two captures")
    args = parser.parse_args()
    if args.compare:
        a, b = (pickle.loads(path.read_bytes()) for path in args.compare)
        differ = sorted((k for k in a.keys() & b.keys() if a[k] != b[k]), key=repr)
        print(f"{summary(a)}; differing captures: {len(differ)}; only in one: {len(a.keys() ^ b.keys())}")
        for key in differ[:10]:
            print("  differs:", key)
        sys.exit(1 if differ or a.keys() != b.keys() else 0)
    if args.out is None:
        parser.error("--out or --compare is required")
    root = args.root.resolve()
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(HERE))
    import server  # before corpus, which puts this tree first on the path

    if not Path(server.__file__).resolve().is_relative_to(root):
        sys.exit(f"server imported from {server.__file__}, not from {root}")
    import corpus

    data = corpus.data_dir(args.data)
    if not data.is_dir():
        sys.exit(f"no dev set at {data}: give --data or $TRANSIENT_ONSETS_DEV")
    captures = capture(data, args.quick)
    args.out.write_bytes(pickle.dumps(captures))
    print(summary(captures))


if __name__ == "__main__":
    main()
