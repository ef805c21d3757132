"""The learned detector's weight products: every column bitwise the same however the frames are grouped."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from server.dsp import neural, nn
from server.dsp import neural_features as nf
from server.dsp.products import BLOCK_COLUMNS, Product, block_product, blocks_are_column_exact, make_product
from testkit import signals


def committed_products() -> list[Product]:
    net = neural.default_net()
    return [net.w_in, *(weight for weight, _ in net.layers)]


def relu_columns(rows: int, count: int, seed: int) -> np.ndarray:
    """Non-negative float32 columns with exact zeros, like a layer's input after its relu."""
    values = np.random.default_rng(seed).standard_normal((rows, count)) * 2.0
    return np.maximum(values, 0.0).astype(np.float32)


@pytest.mark.parametrize("index", range(6))
def test_each_column_is_the_same_in_any_grouping(index: int) -> None:
    product = committed_products()[index]
    columns = relu_columns(product.shape[1], 150, seed=index)
    whole = product(columns)
    assert whole.shape == (product.shape[0], 150) and whole.dtype == np.float32 and whole.flags.c_contiguous
    # The float64 product agrees to float32 rounding: the blocks compute the product, not something else.
    exact = product.weight.astype(np.float64) @ columns.astype(np.float64)
    assert np.abs(whole - exact).max() <= 1e-5 * np.abs(exact).max()
    rng = np.random.default_rng(100 + index)
    # Any run of columns alone, at any offset and length (the padding and the block edges move).
    for _ in range(40):
        start = int(rng.integers(0, 150))
        stop = int(rng.integers(start + 1, 151))
        assert np.array_equal(product(columns[:, start:stop]), whole[:, start:stop])
    # Shuffled, and beside other streams' columns.
    order = rng.permutation(150)
    assert np.array_equal(product(columns[:, order]), whole[:, order])
    others = relu_columns(product.shape[1], 77, seed=200 + index)
    mixed = product(np.concatenate([others, columns[:, :40], others], axis=1))
    assert np.array_equal(mixed[:, 77:117], whole[:, :40])


def test_the_committed_weights_use_blas_blocks_here_or_the_exact_fallback() -> None:
    for product in committed_products():
        exact = blocks_are_column_exact(product.weight)
        assert (product.sparse is None) == exact
        assert product.weight.dtype == np.float32 and not product.weight.flags.writeable
    # On this machine's BLAS the blocks are exact (else the fallback would hide a slow serving path).
    assert all(product.sparse is None for product in committed_products())


def test_the_sparse_fallback_is_column_exact_too() -> None:
    weight = committed_products()[1].weight
    fallback = Product(weight=weight, sparse=scipy.sparse.csr_matrix(weight))
    columns = relu_columns(weight.shape[1], 70, seed=9)
    whole = fallback(columns)
    assert np.array_equal(fallback(columns[:, 5:6]), whole[:, 5:6])
    assert np.array_equal(fallback(columns[:, 33:69]), whole[:, 33:69])
    assert np.abs(whole - block_product(weight, columns)).max() <= 1e-5 * np.abs(whole).max()


def test_make_product_keeps_a_read_only_copy() -> None:
    weight = np.ones((3, 4), dtype=np.float64)
    product = make_product(weight)
    weight[0, 0] = 5.0
    assert product.weight[0, 0] == 1.0 and product.weight.dtype == np.float32
    assert np.array_equal(product(np.ones((4, BLOCK_COLUMNS + 1), dtype=np.float32)), np.full((3, 33), 4.0))


def test_one_stream_in_any_blocks_equals_many_streams_in_one_pass() -> None:
    """The network alone: a stream's activations do not depend on how many frames each pass brings or on
    which streams share it (so on where its columns fall in the products' blocks)."""
    net = neural.default_net()
    rate = 44100
    rows, _ = nf.file_rows(rate, signals.music_mix(rate, 4.0, seed=33).samples)
    features, _ = nf.file_features(rate, signals.music_mix(rate, 4.0, seed=33).samples)
    assert features.shape[1] == len(rows)
    whole = nn.run(net, features)
    rng = np.random.default_rng(5)
    for sizes in ((1,), (2,), (3, 29, 64, 1), (33,), (200,)):
        pasts = [nn.silent_buffers(net)] * 4
        got: list[list[np.ndarray]] = [[] for _ in pasts]
        positions = [0] * len(pasts)
        step = 0
        while min(positions) < features.shape[1]:
            counts = []
            for k in range(len(pasts)):  # stream 0 in the sizes given, the others at random
                size = sizes[step % len(sizes)] if k == 0 else int(rng.integers(0, 40))
                size = min(size, features.shape[1] - positions[k])
                counts.append(size)
            block = np.concatenate(
                [features[:, positions[k] : positions[k] + counts[k]] for k in range(len(pasts))], axis=1
            )
            activations, pasts = nn.forward(net, pasts, block, counts)
            for k, stop in enumerate(np.cumsum(counts).tolist()):
                got[k].append(activations[stop - counts[k] : stop])
                positions[k] += counts[k]
            step += 1
        for k in range(len(pasts)):
            assert np.array_equal(np.concatenate(got[k]), whole), (sizes, k)
