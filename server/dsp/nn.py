"""A small causal temporal convolutional network (TCN) served with numpy alone.

The network maps feature columns (one per frame) to an onset activation per frame:

    h = relu(W_in @ x + b_in)
    for each layer l with dilation d_l:  h = h + relu(W_l @ [h(t); h(t - d_l); h(t - 2 d_l)] + b_l)
    activation = sigmoid(w_out @ h + b_out)

The frames are the products' columns. The input and dilated layers' products are BLAS products on blocks
of a fixed number of columns (:mod:`server.dsp.products`: each column's value is then the same in any
position and company, checked when the weights are loaded, with scipy's sparse product as the exact
fallback); the output layer's is a scipy sparse (CSR) product, each output a running sum over the weight
row in a fixed order. So a stream's activations are bitwise the same in any block sizes.

A stream's state is, per layer, the last ``2 * d_l`` columns of that layer's input, side by side in one
array, its *past* (:func:`past_segments`); a new stream starts from the network's response to silent
features (:func:`silent_buffers`). Several streams' new frames go through one pass (:func:`forward`), the
streams' pasts stacked once per pass.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse

from server.dsp.nn_taps import tap_index
from server.dsp.products import Product, make_product

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

KERNEL = 3  # taps per dilated layer: t, t - d, t - 2d
FORMAT = "transient-tcn-1"  # the weights file's format name


@dataclasses.dataclass(frozen=True, eq=False)
class Net:
    """Weights of a TCN, ready to serve (read-only, shared by every stream).

    Attributes
    ----------
    w_in : Product, shape (hidden, n_features)
    b_in : ndarray, shape (hidden, 1), float32
    layers : tuple of (Product of shape (hidden, 3 * hidden), ndarray of shape (hidden, 1))
        Weights of the taps ``t``, ``t - d``, ``t - 2d`` side by side, and the bias.
    dilations : tuple of int
        ``d`` of each layer, frames.
    w_out : csr_matrix, shape (1, hidden)
    b_out : ndarray, shape (1, 1), float32
    meta : dict
        What the weights file says about itself (features, training, calibration).
    """

    w_in: Product
    b_in: F32
    layers: tuple[tuple[Product, F32], ...]
    dilations: tuple[int, ...]
    w_out: scipy.sparse.csr_matrix
    b_out: F32
    meta: dict[str, Any]

    @property
    def n_features(self) -> int:
        return int(self.w_in.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.w_in.shape[0])

    @property
    def n_parameters(self) -> int:
        sizes = [self.w_in.shape, self.b_in.shape, self.w_out.shape, self.b_out.shape]
        sizes += [shape for w, b in self.layers for shape in (w.shape, b.shape)]
        return int(sum(np.prod(shape) for shape in sizes))


def _csr(array: npt.ArrayLike) -> scipy.sparse.csr_matrix:
    matrix = scipy.sparse.csr_matrix(np.asarray(array, dtype=np.float32))
    matrix.sort_indices()
    for part in (matrix.data, matrix.indices, matrix.indptr):
        part.setflags(write=False)
    return matrix


def _bias(array: npt.ArrayLike) -> F32:
    column = np.ascontiguousarray(np.asarray(array, dtype=np.float32).reshape(-1, 1))
    column.setflags(write=False)
    return column


def net_from_arrays(arrays: dict[str, Any]) -> Net:
    """A :class:`Net` from the arrays of a weights file (see :func:`save_net`).

    Raises
    ------
    ValueError
        If the format or an array's shape is wrong.
    """
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != FORMAT:
        raise ValueError(f"weights format {meta.get('format')!r} is not {FORMAT!r}")
    dilations = tuple(int(d) for d in np.asarray(arrays["dilations"]).tolist())
    w_in = np.asarray(arrays["w_in"])
    hidden = w_in.shape[0]
    layers = []
    for index in range(len(dilations)):
        weight = np.asarray(arrays[f"w_{index}"])
        if weight.shape != (hidden, KERNEL * hidden):
            raise ValueError(f"w_{index} has shape {weight.shape}, not {(hidden, KERNEL * hidden)}")
        layers.append((make_product(weight), _bias(arrays[f"b_{index}"])))
    return Net(
        w_in=make_product(w_in),
        b_in=_bias(arrays["b_in"]),
        layers=tuple(layers),
        dilations=dilations,
        w_out=_csr(np.asarray(arrays["w_out"]).reshape(1, hidden)),
        b_out=_bias(arrays["b_out"]),
        meta=meta,
    )


@functools.lru_cache(maxsize=8)
def load_net(path: str) -> Net:
    """The :class:`Net` of a weights file (``.npz``), loaded once per process."""
    with np.load(path, allow_pickle=False) as data:
        return net_from_arrays({key: data[key] for key in data.files})


def save_net(path: str | Path, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a weights file: float32 arrays ``w_in, b_in, w_<l>, b_<l>, w_out, b_out``, ``dilations``.

    ``meta`` (JSON-serialisable) is stored beside them with ``format`` set.
    """
    payload: dict[str, Any] = {
        key: np.asarray(value, dtype=np.float32) for key, value in arrays.items() if key != "dilations"
    }
    payload["dilations"] = np.asarray(arrays["dilations"], dtype=np.int64)
    payload["meta"] = np.array(json.dumps({**meta, "format": FORMAT}, sort_keys=True))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **payload)
    Path(path).write_bytes(buffer.getvalue())


def past_segments(net: Net) -> tuple[tuple[int, int], ...]:
    """Where each dilated layer's past lies in a stream's past columns: ``(first column, 2 * d)`` per
    layer, the layer's last ``2 * d`` input columns, oldest first."""
    segments, offset = [], 0
    for dilation in net.dilations:
        segments.append((offset, 2 * dilation))
        offset += 2 * dilation
    return tuple(segments)


def past_width(net: Net) -> int:
    """Columns of a stream's past (:func:`past_segments`): ``2 * d`` per dilated layer."""
    return 2 * sum(net.dilations)


def relu(values: F32) -> F32:
    """``max(values, 0)`` in place."""
    return np.maximum(values, np.float32(0.0), out=values)


def sigmoid(values: F32) -> F32:
    """Logistic function, float32, without overflow for large negative values."""
    small = np.exp(-np.abs(values))
    one_plus = np.float32(1.0) + small
    out: F32 = (np.where(values >= 0, np.float32(1.0), small) / one_plus).astype(np.float32, copy=False)
    return out


def dense(weight: Product | scipy.sparse.csr_matrix, bias: F32, columns: F32) -> F32:
    """``weight @ columns + bias``, each column on its own (one column per frame), float32."""
    out: F32 = weight(columns) if isinstance(weight, Product) else weight @ columns
    out += bias
    return out


def steady_buffers(net: Net, column: F32) -> F32:
    """A stream's past columns when every past frame had the features ``column`` (shape (n_features, 1)):
    shape (hidden, past_width(net)), read-only."""
    h = relu(dense(net.w_in, net.b_in, column))
    parts = []
    for (weight, bias), dilation in zip(net.layers, net.dilations, strict=True):
        parts.append(np.repeat(h, 2 * dilation, axis=1))
        h = h + relu(dense(weight, bias, np.concatenate([h] * KERNEL, axis=0)))
    columns = np.ascontiguousarray(np.concatenate(parts, axis=1))
    columns.setflags(write=False)
    return columns


@functools.lru_cache(maxsize=8)
def silent_buffers(net: Net) -> F32:
    """:func:`steady_buffers` of all-zero features (silence), shared and read-only."""
    return steady_buffers(net, np.zeros((net.n_features, 1), dtype=np.float32))


def run(net: Net, features: F32) -> F32:
    """Activations of a new stream's frames, after silence (:func:`forward` of one stream).

    Parameters
    ----------
    net : Net
    features : ndarray, shape (n_features, n_frames), float32

    Returns
    -------
    ndarray, shape (n_frames,), float32
        Onset activation of each frame, 0–1.
    """
    activations, _ = forward(net, [silent_buffers(net)], features, [features.shape[1]])
    return activations


def forward(net: Net, pasts: Sequence[F32], features: F32, counts: Sequence[int]) -> tuple[F32, list[F32]]:
    """Activations of several streams' new frames in one pass, and each stream's new past columns.

    Parameters
    ----------
    net : Net
    pasts : sequence of ndarray, each shape (hidden, past_width(net)), float32
        Each stream's past columns (:func:`past_segments`; a new stream's: :func:`silent_buffers`); not
        changed.
    features : ndarray, shape (n_features, sum(counts)), float32
        The streams' new frames, stream after stream.
    counts : sequence of int
        New frames of each stream (may be 0).

    Returns
    -------
    activations : ndarray, shape (sum(counts),), float32
        Onset activation of each new frame, 0–1, stream after stream.
    pasts : list of ndarray, each shape (hidden, past_width(net)), float32
        Each stream's new past columns (its old ones when it brought no frame).
    """
    if int(sum(counts)) == 0:
        return np.zeros(0, dtype=np.float32), list(pasts)
    h = relu(dense(net.w_in, net.b_in, features))
    if all(count == counts[0] for count in counts):
        h, stacked = _layers_regular(net, pasts, h, counts[0])
        new_pasts = list(stacked)
    else:
        h, new_pasts = _layers_any(net, pasts, h, counts)
    return sigmoid(dense(net.w_out, net.b_out, h)[0]), new_pasts


def _layers_regular(net: Net, pasts: Sequence[F32], h: F32, count: int) -> tuple[F32, F32]:
    """The dilated layers when every stream brings ``count`` frames, and the streams' new past columns
    (shape (members, hidden, past_width)).

    The streams' pasts are stacked once into a scratch vector, the first layer's input copied in after them
    (each layer adds its output to it in place), and each layer's taps and the new frames' part of the new
    pasts gathered by the flat indices of :func:`~server.dsp.nn_taps.tap_index`; the rest of the new pasts
    is the old ones shifted by ``count``.
    """
    hidden, members = len(h), len(pasts)
    index = tap_index(hidden, net.dilations, members, count)
    scratch = np.empty(index.size, dtype=np.float32)
    old = scratch[: index.input_start].reshape(members, hidden, -1)
    np.stack(pasts, out=old)
    layer_input = scratch[index.input_start :].reshape(hidden, members * count)
    new = np.empty_like(old)
    if index.shifted:
        new[:, :, : index.shifted] = old[:, :, count:]
    flat_new = new.reshape(-1)
    np.copyto(layer_input, h)
    for (weight, bias), gathers in zip(net.layers, index.layers, strict=True):
        flat_new[gathers.new_past] = scratch.take(gathers.from_input)
        out = dense(weight, bias, scratch.take(gathers.taps).reshape(KERNEL * hidden, members * count))
        relu(out)
        layer_input += out  # the next layer's input, h + relu(...), in place of h
    return layer_input, new


def _layers_any(net: Net, pasts: Sequence[F32], h: F32, counts: Sequence[int]) -> tuple[F32, list[F32]]:
    """The dilated layers for any numbers of frames per stream (gathers from one table per layer), and
    the streams' new past columns."""
    total, hidden = len(h[0]), len(h)
    members = len(counts)
    count_array = np.asarray(counts, dtype=np.int64)
    member = np.repeat(np.arange(members), count_array)
    offsets = np.concatenate([[0], np.cumsum(count_array)[:-1]])
    within = np.arange(total, dtype=np.int64) - offsets[member]  # each frame's index in its stream's block
    new = np.empty((members, hidden, past_width(net)), dtype=np.float32)
    for (weight, bias), dilation, (offset, past) in zip(net.layers, net.dilations, past_segments(net),
                                                       strict=True):
        # Table: each stream's past columns then its new columns, stream after stream.
        pieces: list[F32] = []
        for columns, start, count in zip(pasts, offsets.tolist(), counts, strict=True):
            pieces += (columns[:, offset : offset + past], h[:, start : start + count])
        table = np.concatenate(pieces, axis=1)
        base = offsets + past * np.arange(members, dtype=np.int64)  # where each stream's run starts
        now = base[member] + past + within  # the table column of each new frame
        taps = np.concatenate([table[:, now - tap * dilation] for tap in range(KERNEL)], axis=0)
        # The last `past` columns of each stream's run, gathered at once.
        keep = (base + count_array)[:, None] + np.arange(past, dtype=np.int64)
        kept = table[:, keep.ravel()].reshape(hidden, members, past)
        new[:, :, offset : offset + past] = kept.transpose(1, 0, 2)
        h = h + relu(dense(weight, bias, taps))
    return h, list(new)
