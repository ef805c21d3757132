"""Weight-times-frames products whose every column is bitwise the same however the frames are grouped.

A BLAS matrix product (``np.matmul``) is ten times faster than a scipy sparse one at the network's sizes,
but its result for one column depends on the product's shape: it changes kernels with the number of
columns (a one-column product is a matrix-vector product; a remainder of columns goes through edge
kernels). :class:`Product` therefore multiplies in blocks of exactly ``BLOCK_COLUMNS`` columns, the last
one zero-padded: every product then has one and the same shape, so one and the same kernel computes each
column, whatever its position in the block and whatever the other columns hold (each output value is
one row of the weights against one column of the input).

That column exactness is checked when a :class:`Product` is made (:func:`blocks_are_column_exact`):
where the BLAS library would give a column a different value in another position or company, the product
falls back to the scipy sparse product (each output a running sum in a fixed order), slower and exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import scipy.sparse

F32 = npt.NDArray[np.float32]

BLOCK_COLUMNS = 32  # columns of every BLAS product: at the network's sizes one thread, no edge kernel
CHECK_SEED = 21  # seed of the random columns of the load-time check


@dataclasses.dataclass(frozen=True, eq=False)
class Product:
    """A weight matrix and how it multiplies frame columns (read-only, shared by every stream).

    Attributes
    ----------
    weight : ndarray, shape (outputs, inputs), float32, C-contiguous, read-only
    sparse : csr_matrix or None
        The exact fallback, used when BLAS blocks are not column-exact on this machine; None when they are.
    """

    weight: F32
    sparse: scipy.sparse.csr_matrix | None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.weight.shape[1]))

    def __call__(self, columns: F32) -> F32:
        """``weight @ columns``, shape (outputs, n), float32, C-contiguous; each column on its own."""
        if self.sparse is not None:
            out: F32 = np.ascontiguousarray(self.sparse @ columns)
            return out
        return block_product(self.weight, columns)


def block_product(weight: F32, columns: F32) -> F32:
    """``weight @ columns`` by ``np.matmul`` on blocks of exactly ``BLOCK_COLUMNS`` columns.

    Parameters
    ----------
    weight : ndarray, shape (outputs, inputs), float32
    columns : ndarray, shape (inputs, n), float32

    Returns
    -------
    ndarray, shape (outputs, n), float32, C-contiguous
    """
    count = columns.shape[1]
    width = -(-count // BLOCK_COLUMNS) * BLOCK_COLUMNS
    if width != count or not columns.flags.c_contiguous:
        wide = np.zeros((columns.shape[0], width), dtype=np.float32)
        wide[:, :count] = columns
    else:
        wide = columns
    out = np.empty((len(weight), width), dtype=np.float32)
    for start in range(0, width, BLOCK_COLUMNS):
        stop = start + BLOCK_COLUMNS
        np.matmul(weight, wide[:, start:stop], out=out[:, start:stop])
    if width != count:
        return np.ascontiguousarray(out[:, :count])
    return out


def blocks_are_column_exact(weight: F32) -> bool:
    """Whether :func:`block_product` gives each column the same bits in every position and company.

    Seeded random non-negative columns (like the network's inputs after a ``relu``, with exact zeros),
    multiplied in one order, in a shuffled order with other columns, one at a time, and through a
    non-contiguous view, must agree bit for bit.
    """
    rng = np.random.default_rng(CHECK_SEED)
    inputs = weight.shape[1]
    columns = np.maximum(rng.standard_normal((inputs, 3 * BLOCK_COLUMNS + 5)), 0.0).astype(np.float32)
    reference = block_product(weight, columns)
    order = rng.permutation(columns.shape[1])
    if not np.array_equal(block_product(weight, columns[:, order]), reference[:, order]):
        return False
    for start, stop in ((0, 1), (7, 8), (BLOCK_COLUMNS - 1, BLOCK_COLUMNS + 1), (100, 101), (3, 20)):
        if not np.array_equal(block_product(weight, columns[:, start:stop]), reference[:, start:stop]):
            return False
    return True


def make_product(array: npt.ArrayLike) -> Product:
    """A :class:`Product` of a weight matrix: BLAS blocks where they are column-exact, else scipy sparse."""
    weight = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    weight.setflags(write=False)
    if blocks_are_column_exact(weight):
        return Product(weight=weight, sparse=None)
    sparse = scipy.sparse.csr_matrix(weight)
    sparse.sort_indices()
    for part in (sparse.data, sparse.indices, sparse.indptr):
        part.setflags(write=False)
    return Product(weight=weight, sparse=sparse)
