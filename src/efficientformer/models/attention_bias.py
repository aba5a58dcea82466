"""The geometry of EfficientFormer's attention biases, shared by every backend (numpy only).

Each Meta3D block learns one bias per head for every relative offset (|d_row|, |d_col|) between two
tokens of the R x R grid it was trained on (R = `config.resolution`, 7 for 224x224): a table of
shape (heads, R * R) whose column for an offset is `|d_row| * R + |d_col|`.

At another input size the token grid is H x W (`efficientformer.models.architecture.Plan.token_grid`:
ceil(height / 32) x ceil(width / 32) with the default Downsamples). The table,
seen as a (heads, R, R) image over offsets, is resized to (heads, H, W) by separable linear
interpolation with aligned corners (offset 0 stays offset 0, the largest trained offset maps to the
largest new one), written as two matrix products so that every backend computes the same numbers.
At the trained grid no resizing happens and the biases are used exactly as stored.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def bias_index(grid_h: int, grid_w: int) -> np.ndarray:
    """(N, N) int64 column of the (heads, grid_h * grid_w) table for each pair of the N tokens."""
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    d_row = np.abs(rows[:, None] - rows[None, :])
    d_col = np.abs(cols[:, None] - cols[None, :])
    index = d_row * grid_w + d_col
    index.setflags(write=False)
    return index


@lru_cache(maxsize=64)
def interpolation_matrix(new: int, old: int) -> np.ndarray:
    """(new, old) float32 weights of linear interpolation with aligned corners."""
    matrix = np.zeros((new, old), dtype=np.float64)
    if new == 1 or old == 1:
        matrix[:, 0] = 1.0
    else:
        pos = np.arange(new) * (old - 1) / (new - 1)
        low = np.minimum(np.floor(pos).astype(int), old - 2)
        frac = pos - low
        matrix[np.arange(new), low] = 1.0 - frac
        matrix[np.arange(new), low + 1] = frac
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix
