"""Pillow's bicubic / bilinear / box resize of a photo, bit for bit, with float32 matrix products.

`resample` computes each pass as float64 products, in which Pillow's integer sums are exact. Here the
same banded products run in float32 (twice the arithmetic per cycle, half the memory), which are not
exact, but whose error is bounded: a dot product of K terms has an error of at most (K + 2) * 2**-24 times
the sum of the terms' magnitudes (the standard bound for any summation order, fused multiply-adds
included), here at most 255 times the largest sum of |weight| of an output: `EPS` a few 1e-4 for a photo.
An 8-bit sample is floor(v + 0.5) of the exact value v (`resample`); wherever the float32 value lies
farther than EPS from a half-integer, that equals its nearest integer (rint), so only the samples within
EPS of a half-integer (about 2 * EPS of them, a few hundred per image) are recomputed exactly, in integer
arithmetic, from their taps. The result is the same bytes as `resample` (and Pillow).

Used by `resample.resize_crop` for sources whose needed region fits one strip, when the bound is below
MAX_EPS (shrink factors up to about 8); other resizes keep the float64 path.
"""

from __future__ import annotations

import os
import threading

import numpy as np

MAX_EPS = 0.02  # beyond this about 4% of the samples would need the exact path: float64 is then faster
_UNIT = 2.0 ** -24  # float32's unit roundoff
# OpenBLAS runs a product on several threads above m*n*k = 65536 * 4; these products take microseconds, and
# threads that then spin beside PyTorch's (a process classifying images) made a photo's resize 15x slower
# and the model slower too: each product stays below that, one core, the same on any machine
SINGLE_THREAD_MNK = 65536 * 4 - 1
if any(os.environ.get(name) == "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
    SINGLE_THREAD_MNK = 1 << 62  # BLAS runs on one thread anyway: whole products (splitting costs about 5%)


class Axis:
    """One pass: bands of float32 weights, and the integer taps for the exact recomputation."""

    def __init__(self, first: np.ndarray, count: np.ndarray, integer: np.ndarray, bands: list, offset: int,
                 precision_bits: int) -> None:
        self.bands = [(a, b, i, j, w.astype(np.float32)) for a, b, i, j, w in bands]
        self.first = (first - offset).astype(np.intp)
        self.count = count
        self.integer = integer  # (outputs, ksize) float64 whole numbers, zero past count
        self.taps = np.arange(integer.shape[1])
        height = max(j - i for _, _, i, j, _ in bands)
        largest = float(np.abs(integer).sum(axis=1).max()) * 2.0 ** -precision_bits
        self.eps = (height + 2) * _UNIT * 255.0 * largest * 1.01
        self.shift = precision_bits

    def exact(self, samples: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Pillow's 8-bit results for `outputs` (indices along this axis), from `samples` (n, taps) gathered
        by the caller at `tap_index(outputs)`: (sum + 2**(bits-1)) >> bits, clipped to 0..255."""
        sums = (samples.astype(np.float64) * self.integer[outputs]).sum(axis=1)  # whole numbers < 2**53: exact
        return np.clip(np.floor((sums + 2.0 ** (self.shift - 1)) * 2.0 ** -self.shift), 0, 255)

    def tap_index(self, outputs: np.ndarray) -> np.ndarray:
        """(n, ksize) input indices of each output's taps (past its count: its first tap, weight 0)."""
        first = self.first[outputs]
        index = first[:, None] + self.taps[None, :]
        return np.where(self.taps[None, :] < self.count[outputs][:, None], index, first[:, None])


def _round(values: np.ndarray, eps: float, role: str) -> tuple[np.ndarray, np.ndarray]:
    """(near, rounded): the flat indices of the samples within `eps` of a half-integer, and rint of all
    values clipped to 0..255 (float32, in a buffer kept between calls). `values` is overwritten."""
    rounded = np.rint(values, out=scratch(role, values.shape))
    np.subtract(values, rounded, out=values)
    np.abs(values, out=values)
    near = np.flatnonzero(values > 0.5 - eps)
    np.clip(rounded, 0, 255, out=rounded)
    return near, rounded


_SCRATCH = threading.local()


def scratch(role: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 work array of this thread, kept between calls (at most 16, for any mix of image sizes)."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    key = (role, shape)
    if key not in arrays:
        if len(arrays) >= 16:
            arrays.clear()
        arrays[key] = np.empty(shape, dtype=np.float32)
    return arrays[key]


def horizontal(planes: np.ndarray, axis: Axis) -> np.ndarray:
    """(rows, in_cols) float32 8-bit samples -> (rows, out_cols) float32 8-bit samples, exact."""
    out = scratch("h", (planes.shape[0], axis.bands[-1][1]))
    for a, b, i, j, weights in axis.bands:
        step = max(1, SINGLE_THREAD_MNK // ((j - i) * (b - a)))  # rows per product
        for r in range(0, planes.shape[0], step):
            np.matmul(planes[r:r + step, i:j], weights, out=out[r:r + step, a:b])
    near, rounded = _round(out, axis.eps, "h8")
    if near.size:
        rows, cols = np.divmod(near, rounded.shape[1])
        rounded.flat[near] = axis.exact(planes[rows[:, None], axis.tap_index(cols)], cols)
    return rounded


def vertical(rows: np.ndarray, axis: Axis) -> np.ndarray:
    """(in_rows, cols) float32 8-bit samples -> (out_rows, cols) float32 8-bit samples, exact."""
    out = scratch("v", (axis.bands[-1][1], rows.shape[1]))
    for a, b, i, j, weights in axis.bands:
        step = max(1, SINGLE_THREAD_MNK // ((j - i) * (b - a)))  # columns per product
        for c in range(0, rows.shape[1], step):
            np.matmul(weights, rows[i:j, c:c + step], out=out[a:b, c:c + step])
    near, rounded = _round(out, axis.eps, "v8")
    if near.size:
        outs, cols = np.divmod(near, rounded.shape[1])
        rounded.flat[near] = axis.exact(rows[axis.tap_index(outs), cols[:, None]], outs)
    return rounded


def to_float32(view: np.ndarray, role: str) -> np.ndarray:
    """A C-ordered float32 copy of a (strided) uint8 view, in a buffer kept between calls."""
    out = scratch(role, view.shape)
    np.copyto(out, view)
    return out


def planes_float32(region: np.ndarray) -> np.ndarray:
    """(rows, cols, C) uint8 (any strides) -> (rows, C, cols) float32, through a uint8 transposed copy
    first (converting and transposing in one pass is about twice as slow)."""
    rows, cols, channels = region.shape
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    key = ("u8", region.shape)
    if key not in arrays:
        arrays[key] = np.empty((rows, channels, cols), dtype=np.uint8)
    staged = arrays[key]
    np.copyto(staged, region.transpose(0, 2, 1))
    out = scratch("source", (rows, channels, cols))
    np.copyto(out, staged)
    return out
