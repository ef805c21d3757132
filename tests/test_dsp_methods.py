"""The method table: a stateful method plugs in by one table row and keeps the detector's contract.

A toy causal network (two dilated causal convolutions over the per-frame log energy, its per-layer buffers
of past values in the stream's state) is registered in a local copy of the table, never in the global one.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.dsp import DetectorSettings, Onset, OnsetDetector, detect_onsets, process_many
from server.dsp import odf as odf_mod
from server.dsp.methods import METHOD_NAMES, METHOD_TABLE, OnsetMethod, describe
from server.dsp.plan import FramePlan
from server.dsp.settings import METHODS
from testkit import signals

F64 = np.ndarray


def toy_initial_state(plan: FramePlan) -> tuple[Any, Any]:
    """Per-layer buffers: the last input (layer 1 has dilation 1) and the last two layer-1 outputs."""
    return np.zeros(1, dtype=np.float64), np.zeros(2, dtype=np.float64)


def toy_step(plan: FramePlan, rows: Sequence[Any], states: Sequence[Any]) -> tuple[list[F64], list[Any]]:
    """Layer 1: rise of log energy over the previous frame; layer 2: ReLU(h[t]) + 0.5 ReLU(h[t - 2])."""
    odfs: list[F64] = []
    new_states: list[Any] = []
    for feats, (inputs, hidden) in zip(rows, states, strict=True):
        x = np.log10(1.0 + feats[:, 0].astype(np.float64) * 1e6)
        xs = np.concatenate([inputs, x])
        h = np.maximum(xs[1:] - xs[:-1], 0.0)
        hs = np.concatenate([hidden, h])
        odfs.append((hs[2:] + 0.5 * hs[:-2]) / plan.method.unit)
        new_states.append((xs[-1:].copy(), hs[-2:].copy()))
    return odfs, new_states


TOY = OnsetMethod(
    name="energy",  # the local table's "energy" row: settings accept only the registered names
    label="Toy network",
    description="Two dilated causal convolutions over the log energy.",
    constants=odf_mod.no_constants,
    features=odf_mod.total_power,
    unit=0.5,
    attack_offset=0.2,
    initial_state=toy_initial_state,
    step=toy_step,
    warmup=3,
)


def local_table() -> dict[str, OnsetMethod]:
    return {**METHOD_TABLE, "energy": TOY}


def toy_detector() -> OnsetDetector:
    return OnsetDetector(16000, settings=DetectorSettings(method="energy"), methods=local_table())


def feed(detector: OnsetDetector, samples: np.ndarray, sizes: list[int]) -> tuple[list[Onset], np.ndarray]:
    onsets: list[Onset] = []
    odf: list[np.ndarray] = []
    start, k = 0, 0
    while start < len(samples):
        size = sizes[k % len(sizes)]
        onsets += detector.process(samples[start : start + size])
        odf.append(detector.take_odf())
        start, k = start + size, k + 1
    onsets += detector.flush()
    odf.append(detector.take_odf())
    return onsets, np.concatenate(odf)


def test_toy_stateful_method_is_block_size_invariant_and_separate_from_the_global_table() -> None:
    signal = signals.drums(16000, 2.5, seed=40)
    settings = DetectorSettings(method="energy")
    whole, whole_odf = feed(toy_detector(), signal.samples, [10**9])
    assert len(whole) >= 5
    _, classical_odf = feed(OnsetDetector(16000, settings=settings), signal.samples, [10**9])
    assert not np.array_equal(classical_odf, whole_odf), "the global table must still hold the real energy"
    assert METHOD_TABLE["energy"].step is None
    rng = np.random.default_rng(3)
    for sizes in ([1], [7], [160, 3], [int(n) for n in rng.integers(0, 3000, 40)]):
        got, got_odf = feed(toy_detector(), signal.samples, sizes)
        assert got == whole, sizes[:3]
        assert np.array_equal(got_odf, whole_odf)


def test_toy_state_pickles_batches_and_resets() -> None:
    signal = signals.drums(16000, 3.0, seed=41)
    reference, _ = feed(toy_detector(), signal.samples, [10**9])
    detectors = [toy_detector() for _ in range(3)]
    found: list[list[Onset]] = [[] for _ in detectors]
    for step, start in enumerate(range(0, len(signal.samples), 320)):
        if step == 40:
            detectors = [pickle.loads(pickle.dumps(d)) for d in detectors]
            assert all(d.state.method_state is not None for d in detectors)
        block = signal.samples[start : start + 320]
        for k, onsets in enumerate(process_many([(d, block) for d in detectors])):
            found[k] += onsets
    for k, detector in enumerate(detectors):
        found[k] += detector.flush()
        assert found[k] == reference
        inputs, hidden = detector.state.method_state
        assert not inputs.any() and not hidden.any(), "flush starts a new stream with a new state"


def test_switching_to_and_from_a_stateful_method_mid_stream() -> None:
    signal = signals.drums(16000, 3.0, seed=42)
    detector = OnsetDetector(16000, methods=local_table())
    half = len(signal.samples) // 2
    onsets = detector.process(signal.samples[:half])
    detector.configure(DetectorSettings(method="energy"))
    assert detector.state.prime == TOY.warmup and detector.state.method_state is not None
    onsets += detector.process(signal.samples[half : half + 8000])
    detector.configure(DetectorSettings(method="superflux"))
    onsets += detector.process(signal.samples[half + 8000 :]) + detector.flush()
    times = [o.time for o in onsets]
    assert times == sorted(times) and len(times) >= 5


def test_a_method_row_is_either_classical_or_stateful() -> None:
    with pytest.raises(ValueError, match="either"):
        dataclasses.replace(TOY, step=None)
    with pytest.raises(ValueError, match="either"):
        dataclasses.replace(METHOD_TABLE["hfc"], initial_state=toy_initial_state, step=toy_step)


def test_settings_docs_and_browser_follow_the_table() -> None:
    assert METHODS == METHOD_NAMES == tuple(METHOD_TABLE)
    with pytest.raises(TypeError):
        METHOD_TABLE["toy"] = TOY  # type: ignore[index]
    assert [m["name"] for m in describe()] == list(METHOD_NAMES)
    assert {m["name"]: m["mean_factor"] for m in describe()}["complex"] == 1.5
    assert {m["name"]: m["baseline"] for m in describe()}["superflux"] == "median"
    with pytest.raises(ValueError, match="baseline"):
        dataclasses.replace(METHOD_TABLE["hfc"], baseline="mode")
    protocol = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    row = next(line for line in protocol.splitlines() if line.startswith("| `method` |"))
    allowed = row.split("|")[4]
    assert re.findall(r"`([a-z_]+)`", allowed) == list(METHOD_NAMES)


def _odf_and_rows(samples: np.ndarray, rate: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    detector = OnsetDetector(rate, settings=DetectorSettings(method=method))
    detector.tap_rows()
    detector.process(samples)
    return detector.take_odf().astype(np.float64), np.concatenate(detector.take_rows())


def test_superflux_half_is_superflux_against_the_frame_half_a_frame_back() -> None:
    """The two rows differ in the lag (and where a peak's attack lies): a quarter frame, one 10 ms hop at the
    defaults, against half a frame, two; 20 ms at any hop. A note that swells by 20 dB over 150 ms rises
    about twice as much against the frame two hops back: an onset for ``superflux_half``, none for
    ``superflux``."""
    rate = 44100
    for hop_ms, quarter, half in ((10.0, 1, 2), (5.0, 2, 4)):
        grid = OnsetDetector(rate, settings=DetectorSettings(hop_ms=hop_ms)).plan.frames.grid
        assert METHOD_TABLE["superflux"].lags(grid) == (quarter,)  # type: ignore[misc]
        assert METHOD_TABLE["superflux_half"].lags(grid) == (half,)  # type: ignore[misc]
    t = np.arange(2 * rate) / rate
    envelope = np.clip((t - 0.5) / 0.15, 0.0, 1.0)
    swell = (0.3 * (0.1 + 0.9 * envelope) * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    plain, rows = _odf_and_rows(swell, rate, "superflux")
    half, half_rows = _odf_and_rows(swell, rate, "superflux_half")
    assert np.array_equal(rows, half_rows), "the same features"
    scale, low = odf_mod.amplitude_floor()
    peaks = rows.max(axis=1)
    width = round(odf_mod.FLOOR_WINDOW_S * 100)
    recent = np.array([peaks[max(0, i - width) : i + 1].max() for i in range(len(peaks))])
    floor = np.maximum(recent * scale, low).astype(np.float32)[:, None]
    reference = np.zeros_like(rows)
    reference[2:] = odf_mod.max_filter_bands(rows[:-2])
    expected = odf_mod.mean_log_rise(rows, reference, METHOD_TABLE["superflux_half"].unit, floor)
    assert np.allclose(half[2:], expected[2:], rtol=1e-5, atol=1e-5)
    during = slice(46, 70)  # the frames whose windows reach into the swell
    assert half[during].max() > 1.6 * plain[during].max() > 0
    found = {m: [o.time for o in detect_onsets(swell, rate, DetectorSettings(method=m))]
             for m in ("superflux", "superflux_half")}
    assert found["superflux"] == [] and len(found["superflux_half"]) == 1
    assert abs(found["superflux_half"][0] - 0.5) < 0.02
