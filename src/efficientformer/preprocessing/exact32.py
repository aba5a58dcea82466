"""Pillow's bicubic / bilinear / box resize of a photo, bit for bit, with float32 matrix products.

`resample` computes each pass as float64 products, in which Pillow's integer sums are exact. Here the
same banded products run in float32 (twice the arithmetic per cycle, half the memory), which are not
exact, but whose error is bounded. The inputs (8-bit levels) and the weights (integers / 2**22, below 2**24)
are exact in float32, and a weight block's zeros add nothing (0 * x and s + 0 are exact), so an output is a
float32 sum of n nonzero terms, n its own taps (9 for bicubic at a 1.9x shrink; not the band's height):
in any summation order, fused multiply-adds included, its error is at most (n + 2) * 2**-24 times the sum
of the terms' magnitudes, here at most 255 times the largest sum of |weight| of an output (`Axis.eps`,
about 2e-4 for a photo, against 7e-4 from the band's height). An 8-bit sample is floor(v + 0.5) of the
exact value v (`resample`); wherever the float32 value lies farther than the bound from a half-integer, its
floor(v + 0.5) is that sample, so only the samples within the bound of a half-integer (about 0.04% of them,
a hundred or so per image) are recomputed exactly, in integer arithmetic, from their taps (`_round` says
how one comparison finds them). The result is the same bytes as `resample` (and Pillow).

Used by `resample.resize_crop` for sources whose needed region fits one strip, when the bound is below
MAX_EPS (shrink factors up to about 280); other resizes keep the float64 path. Work arrays are kept per
thread (`workspace`): fresh ones would cost a page fault per 4 kB on every call.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .workspace import work_array

MAX_EPS = 0.02  # beyond this about 4% of the samples would need the exact path: float64 is then faster
_UNIT = 2.0 ** -24  # float32's unit roundoff
# OpenBLAS runs a product on several threads above m*n*k = 65536 * 4; these products take microseconds, and
# threads that then spin beside PyTorch's (a process classifying images) made a photo's resize 15x slower
# and the model slower too: each product stays below that, one core, the same on any machine
SINGLE_THREAD_MNK = 65536 * 4 - 1
if any(os.environ.get(name) == "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
    SINGLE_THREAD_MNK = 1 << 62  # BLAS runs on one thread anyway: whole products (splitting costs about 5%)


class Axis:
    """One pass: bands of float32 weights, the error bound, and the integer taps for the exact recomputation."""

    def __init__(self, first: np.ndarray, count: np.ndarray, integer: np.ndarray, bands: list, offset: int,
                 precision_bits: int) -> None:
        # column-major weights: OpenBLAS packs them about 5% faster for these shapes
        self.bands = [(a, b, i, j, np.asfortranarray(w, dtype=np.float32)) for a, b, i, j, w in bands]
        taps = np.arange(integer.shape[1])
        start = (first - offset).astype(np.intp)
        # (outputs, ksize) input index of every tap of every output, built once per geometry; past an output's
        # count its first tap again (weight 0), so that one gather serves outputs of any count
        self.tap_index = np.where(taps[None, :] < count[:, None], start[:, None] + taps[None, :], start[:, None])
        self.integer = integer  # (outputs, ksize) float64 whole numbers, zero past count
        terms = int(np.count_nonzero(integer, axis=1).max())
        largest = float(np.abs(integer).sum(axis=1).max()) * 2.0 ** -precision_bits
        self.eps = (terms + 2) * _UNIT * 255.0 * largest * 1.01
        # `_round` adds 0.5 + edge to outputs of magnitude below 255 * largest + 1 (< 2**k), which rounds by up
        # to half a float32 step there (2**(k - 25)); edge is a multiple of 2**-24, so that 0.5 + edge and
        # 2 * edge are exact in float32
        reach = math.ceil(math.log2(255.0 * largest + 1.5))
        self.edge = math.ceil((self.eps + 2.0 ** (reach - 25)) * 2.0 ** 24) * 2.0 ** -24
        self.shift = precision_bits

    def exact(self, samples: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Pillow's 8-bit results for `outputs` (indices along this axis), from `samples` (n, ksize) gathered
        by the caller at `tap_index[outputs]`: (sum + 2**(bits-1)) >> bits, clipped to 0..255."""
        # float32 samples times float64 whole-number weights: float64 products and sums, exact (< 2**53)
        sums = np.add.reduce(samples * self.integer[outputs], axis=1)
        sums += 2.0 ** (self.shift - 1)
        sums *= 2.0 ** -self.shift
        return np.clip(np.floor(sums, out=sums), 0, 255, out=sums)


def _round(values: np.ndarray, edge: float, role: str) -> tuple[np.ndarray, np.ndarray]:
    """(near, rounded): the flat indices of the samples that may lie within the error bound of a
    half-integer, and floor(v + 0.5) of all values v, clipped to 0..255 (float32, a kept work array).
    `values` is overwritten.

    With u = v + 0.5 + edge (`Axis.edge`: the product's bound plus this addition's own rounding), a
    fraction u - floor(u) of at least 2 * edge puts the exact v + 0.5 within [floor(u), floor(u) + 1), so
    floor(u) is Pillow's sample; one comparison finds the others (an abs() pass fewer than |v - rint(v)|)."""
    np.add(values, np.float32(0.5 + edge), out=values)
    rounded = np.floor(values, out=work_array(role, values.shape))
    np.subtract(values, rounded, out=values)  # the fraction, exact wherever u >= 0 (Sterbenz)
    near = np.flatnonzero(np.less(values, np.float32(2 * edge), out=work_array("flags", values.shape, np.bool_)))
    np.clip(rounded, 0, 255, out=rounded)
    return near, rounded


# Work array roles (`workspace`: one block of memory per role, reused by the steps in turn): "planes" the
# float32 source of the horizontal pass, "products" every matrix product (then the processor's lookup
# indices), "samples" the horizontal pass's 8-bit result.
def horizontal(planes: np.ndarray, axis: Axis) -> np.ndarray:
    """(rows, in_cols) float32 8-bit samples -> (rows, out_cols) float32 8-bit samples, exact (in the
    "samples" work array)."""
    out = work_array("products", (planes.shape[0], axis.bands[-1][1]))
    for a, b, i, j, weights in axis.bands:
        step = max(1, SINGLE_THREAD_MNK // ((j - i) * (b - a)))  # rows per product
        for r in range(0, planes.shape[0], step):
            np.matmul(planes[r:r + step, i:j], weights, out=out[r:r + step, a:b])
    near, rounded = _round(out, axis.edge, "samples")
    if near.size:
        rows, cols = np.divmod(near, rounded.shape[1])
        rounded.flat[near] = axis.exact(planes[rows[:, None], axis.tap_index[cols]], cols)
    return rounded


def vertical(rows: np.ndarray, axis: Axis, role: str) -> np.ndarray:
    """(in_rows, cols) float32 8-bit samples -> (out_rows, cols) float32 8-bit samples, exact, in the work
    array of `role` (one that `rows` is not in)."""
    out = work_array("products", (axis.bands[-1][1], rows.shape[1]))
    for a, b, i, j, weights in axis.bands:
        step = max(1, SINGLE_THREAD_MNK // ((j - i) * (b - a)))  # columns per product
        for c in range(0, rows.shape[1], step):
            np.matmul(weights, rows[i:j, c:c + step], out=out[a:b, c:c + step])
    near, rounded = _round(out, axis.edge, role)
    if near.size:
        outs, cols = np.divmod(near, rounded.shape[1])
        rounded.flat[near] = axis.exact(rows[axis.tap_index[outs], cols[:, None]], outs)
    return rounded


def to_float32(view: np.ndarray, role: str) -> np.ndarray:
    """A C-ordered float32 copy of a (strided) uint8 view, in a kept work array."""
    out = work_array(role, view.shape)
    np.copyto(out, view)
    return out


def planes_float32(region: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
    """(rows, cols, C) uint8 (any strides) -> (rows, C, cols) float32.

    `words`: the same pixels as (rows, cols) little-endian uint32 words, where they lie 4 bytes apart
    (Pillow's RGB memory): each channel is then a shift and a truncating copy of whole words (vector
    instructions), about 1.5x faster than gathering bytes 4 apart. Otherwise through a uint8 transposed
    copy (converting and transposing in one pass is about twice as slow)."""
    rows, cols, channels = region.shape
    staged = work_array("bytes", (rows, channels, cols), np.uint8)
    if words is not None:
        np.copyto(staged[:, 0, :], words, casting="unsafe")  # unsigned narrowing keeps the low byte
        for channel in range(1, channels):  # shifted and narrowed in one pass
            np.right_shift(words, 8 * channel, out=staged[:, channel, :], casting="unsafe")
    else:
        np.copyto(staged, region.transpose(0, 2, 1))
    out = work_array("planes", (rows, channels, cols))
    np.copyto(out, staged)
    return out
