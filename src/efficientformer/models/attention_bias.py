"""The attention biases of EfficientFormer, written once for every backend (numpy, torch, keras.ops).

Each Meta3D block learns one bias per head for every relative offset (|d_row|, |d_col|) between two
tokens of the R x R grid it was trained on (R = `config.resolution`, 7 for 224x224): a table of
shape (heads, R * R) whose column for an offset is `|d_row| * R + |d_col|`.

At another input size the token grid is H x W (`efficientformer.models.architecture.Plan.token_grid`:
ceil(height / 32) x ceil(width / 32) with the default Downsamples). The table,
seen as a (heads, R, R) image over offsets, is resized to (heads, H, W) by separable linear
interpolation with aligned corners (offset 0 stays offset 0, the largest trained offset maps to the
largest new one), written as two matrix products so that every backend computes the same numbers.
At the trained grid no resizing happens and the biases are used exactly as stored.

The recipe (`grid_bias`, `resize_weights`, `offset_index`) is written against a small array namespace
(`ArrayOps`) that each backend supplies, so the numpy reference, the PyTorch model, the fused network
of `efficientformer.optimize` and the Keras model run the same code. Everything is built from the
Python ints of the grid with the backend's own ops (no numpy constants, no caches): torch.compile
(fullgraph=True) and torch.jit.trace see plain tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayOps:
    """The few array operations the recipe needs, as one backend spells them.

    `arange(n, like, integer)` counts 0..n-1 in `like`'s float dtype (or an integer dtype) on its device;
    `take(table, index)` gathers columns (axis 1) of a 2-D table with an integer array of any shape.
    """

    arange: Callable[[int, Any, bool], Any]
    abs: Callable[[Any], Any]
    relu: Callable[[Any], Any]
    matmul: Callable[[Any, Any], Any]
    reshape: Callable[[Any, tuple[int, ...]], Any]
    transpose: Callable[[Any], Any]
    take: Callable[[Any, Any], Any]


def _np_arange(n: int, like: Any, integer: bool) -> np.ndarray:
    # The reference computes its weights in float64 whatever the table is; callers cast.
    return np.arange(n, dtype=np.int64 if integer else (np.float64 if like is None else np.asarray(like).dtype))


NUMPY = ArrayOps(arange=_np_arange, abs=np.abs, relu=lambda x: np.maximum(x, 0), matmul=np.matmul,
                 reshape=np.reshape, transpose=np.transpose, take=lambda table, index: np.take(table, index, axis=1))


def offset_index(grid_h: int, grid_w: int, xp: ArrayOps, like: Any = None, query_stride: int = 1) -> Any:
    """(Nq, N) column of the (heads, grid_h * grid_w) table for each pair of a query and one of the N
    row-major tokens. The queries are the tokens themselves (Nq = N), or with `query_stride` s every s-th
    row and column of the grid (Nq = ceil(grid_h / s) * ceil(grid_w / s): EfficientFormerV2's downsampling
    attention, whose queries sit on the stride-2 grid while its keys keep the full one)."""
    rows = xp.arange(grid_h, like, True)
    cols = xp.arange(grid_w, like, True)
    d_row = xp.abs(rows[::query_stride][:, None] - rows[None, :])  # (Hq, H)
    d_col = xp.abs(cols[::query_stride][:, None] - cols[None, :])  # (Wq, W)
    # query (i, j) against token (k, l): |s*i - k| * W + |s*j - l|, laid out as (i, j) x (k, l)
    index = d_row[:, None, :, None] * grid_w + d_col[None, :, None, :]
    queries = len(range(0, grid_h, query_stride)) * len(range(0, grid_w, query_stride))
    return xp.reshape(index, (queries, grid_h * grid_w))


def resize_weights(new: int, old: int, xp: ArrayOps, like: Any = None) -> Any:
    """(new, old) weights of linear interpolation with aligned corners: w[i, j] = max(0, 1 - |p_i - j|),
    p_i = i * (old - 1) / (new - 1). Computed as an exact integer product divided once, so the corners
    land exactly on 0 and old - 1."""
    positions = xp.arange(new, like, False) * float(old - 1) / float(max(new - 1, 1))
    return xp.relu(1.0 - xp.abs(positions[:, None] - xp.arange(old, like, False)[None, :]))


def grid_bias(table: Any, resolution: int, grid: tuple[int, int], xp: ArrayOps, query_stride: int = 1) -> Any:
    """(heads, Nq, N) additive bias for a token grid (H, W) from the (heads, R * R) table of the R x R
    training grid: resized as `A_h @ table @ A_w.T` when the grid differs, then gathered by offset
    (queries every `query_stride`-th token, see `offset_index`)."""
    grid_h, grid_w = int(grid[0]), int(grid[1])
    if (grid_h, grid_w) != (resolution, resolution):
        heads = table.shape[0]
        square = xp.reshape(table, (heads, resolution, resolution))
        a_h = resize_weights(grid_h, resolution, xp, table)
        a_w_t = xp.transpose(resize_weights(grid_w, resolution, xp, table))
        table = xp.reshape(xp.matmul(xp.matmul(a_h, square), a_w_t), (heads, grid_h * grid_w))
    return xp.take(table, offset_index(grid_h, grid_w, xp, table, query_stride))


@lru_cache(maxsize=64)
def bias_index(grid_h: int, grid_w: int) -> np.ndarray:
    """(N, N) int64 `offset_index` as a read-only numpy array (for checkpoint buffers and tests)."""
    index = offset_index(grid_h, grid_w, NUMPY)
    index.setflags(write=False)
    return index


@lru_cache(maxsize=64)
def interpolation_matrix(new: int, old: int) -> np.ndarray:
    """(new, old) float32 `resize_weights` as a read-only numpy array (computed in float64)."""
    matrix = resize_weights(new, old, NUMPY).astype(np.float32)
    matrix.setflags(write=False)
    return matrix
