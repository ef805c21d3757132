"""The learned onset detector's per-frame analysis: features, then the causal network, for many streams.

A stream's own state is one :class:`NeuralState` (samples not yet framed, the last frame's log bands, the
network's per-layer buffers). :func:`analyse_many` takes any number of streams' new samples and returns
each one's onset activation and frame level per new frame, in passes shared by all of them; the frames of
a stream come out bitwise the same whatever its block sizes and whichever streams share the pass.

Timing: the network marks the frame ending ``target_delay_frames`` hops (10–20 ms) after an onset, so an
onset's attack lies ``attack_offset_hops`` hops before the end of its peak frame; both are in the weights
file's metadata.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from server.dsp import nn
from server.dsp.neural_features import FeaturePlan, log_bands, with_rise

F32 = npt.NDArray[np.float32]

CHUNK_HOPS = 256  # longest block analysed in one pass, hops

WEIGHTS_FILE = Path(__file__).resolve().parent / "weights" / "onset_tcn_v1.npz"


def default_net() -> nn.Net:
    """The committed network (loaded once per process)."""
    return nn.load_net(str(WEIGHTS_FILE))


@dataclasses.dataclass
class NeuralState:
    """One stream's state for the learned detector.

    Attributes
    ----------
    tail : ndarray, shape (tail_len,) or more, float32
        The stream's last samples not yet past (the long frame minus one hop).
    previous : ndarray, shape (n_log,), float32
        Log bands of the last analysed frame (zeros before the first: silence).
    net : NetState
    """

    tail: F32
    previous: F32
    net: nn.NetState


def new_state(plan: FeaturePlan, net: nn.Net) -> NeuralState:
    """The state of a new stream: silence before it."""
    return NeuralState(
        tail=np.zeros(plan.tail_len, dtype=np.float32),
        previous=np.zeros(plan.n_log, dtype=np.float32),
        net=nn.initial_state(net),
    )


def analyse_many(
    plan: FeaturePlan, net: nn.Net, states: Sequence[NeuralState], monos: Sequence[F32]
) -> list[tuple[F32, F32]]:
    """Activations and levels of several streams' new frames; updates each state.

    Blocks longer than ``CHUNK_HOPS`` hops go through in several passes (the same values as one pass:
    frames never depend on their pass), so the arrays of a pass stay small.
    See :func:`analyse_pass` for the parameters and result.
    """
    chunk = CHUNK_HOPS * plan.hop
    if all(len(mono) <= chunk for mono in monos):
        return analyse_pass(plan, net, states, monos)
    parts: list[list[tuple[F32, F32]]] = [[] for _ in monos]
    for start in range(0, max(len(mono) for mono in monos), chunk):
        members = [i for i, mono in enumerate(monos) if start < len(mono) or start == 0]
        found = analyse_pass(
            plan, net, [states[i] for i in members], [monos[i][start : start + chunk] for i in members]
        )
        for i, result in zip(members, found, strict=True):
            parts[i].append(result)
    return [
        (np.concatenate([a for a, _ in pieces]), np.concatenate([p for _, p in pieces])) for pieces in parts
    ]


def analyse_pass(
    plan: FeaturePlan, net: nn.Net, states: Sequence[NeuralState], monos: Sequence[F32]
) -> list[tuple[F32, F32]]:
    """Activations and levels of several streams' new frames in one pass; updates each state.

    Parameters
    ----------
    plan : FeaturePlan
        Shared by every stream of the pass (one sample rate).
    net : Net
    states : sequence of NeuralState
        One per stream, updated in place.
    monos : sequence of ndarray, each shape (n_i,), float32
        Each stream's new mono samples.

    Returns
    -------
    list of (activation, power)
        Per stream: onset activation 0–1 and long-window mean-square level (linear) of each new frame,
        both shape (n_new_frames,), float32.
    """
    pieces: list[F32] = []
    ends: list[int] = []
    counts: list[int] = []
    lengths: list[int] = []
    offset = 0
    long_len, hop = plan.long.frame_len, plan.hop
    for state, mono in zip(states, monos, strict=True):
        length = len(state.tail) + len(mono)
        count = (length - long_len) // hop + 1 if length >= long_len else 0
        pieces += (state.tail, mono)
        ends += range(offset + long_len, offset + long_len + count * hop, hop)
        counts.append(count)
        lengths.append(length)
        offset += length
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    total = len(ends)
    if total:
        regular = None
        if all(count == counts[0] for count in counts) and all(length == lengths[0] for length in lengths):
            regular = (len(counts), counts[0], lengths[0])
        bands, power = log_bands(plan, samples, np.asarray(ends, dtype=np.int64), regular)
        # Each frame's previous log bands: the state's for a stream's first new frame, else the column before.
        table = np.concatenate(
            [bands, *[s.previous[:, None] for s, c in zip(states, counts, strict=True) if c]], axis=1
        )
        previous_index = np.arange(-1, total - 1, dtype=np.int64)
        row = first = 0
        for count in counts:
            if count:
                previous_index[row] = total + first
                first += 1
                row += count
        features = with_rise(bands, table[:, previous_index])
        activations = nn.run_many(net, [s.net for s in states], features, counts)
    else:
        activations = [np.zeros(0, dtype=np.float32) for _ in counts]
    results: list[tuple[F32, F32]] = []
    offset = row = 0
    for state, count, length, activation in zip(states, counts, lengths, activations, strict=True):
        state.tail = samples[offset + count * hop : offset + length].copy()
        offset += length
        if count:
            state.previous = bands[:, row + count - 1].copy()
            results.append((activation, power[row : row + count]))
            row += count
        else:
            results.append((np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)))
    return results
