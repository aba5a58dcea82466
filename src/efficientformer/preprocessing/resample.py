"""Pillow's bicubic, bilinear and box resize of 8-bit images, bit for bit, as banded matrix products in numpy.

Pillow resamples separably: one pass along each axis, with an 8-bit image in between. Each output sample is
`clip((sum_i pixel_i * k_i + 2**21) >> 22, 0, 255)`, where the `k_i` are the filter weights normalized to sum
1 and rounded to integers with 22 fractional bits (`precompute_coeffs` and `normalize_coeffs_8bpc` in Pillow's
`Resample.c`). Those integer sums are exact in float64 (at most about 2**35), so a float64 matrix product whose
weights are `k_i / 2**22` gives Pillow's sums exactly, scaled by a power of two, and
`floor(clip(sum + 0.5, 0, 255))` gives Pillow's samples exactly.

Only the samples inside the center crop are computed (weights included: a 1x100000 image resized to
256x25600000 costs what its 224x224 crop needs), each pass multiplies bands of outputs by the small dense
block of weights they need, and BLAS does the arithmetic: about twice as fast as Pillow on the hub setting
(640x480 -> 341x256, crop 224), with the same bytes. Large sources are converted to float64 in strips of
rows (or columns), so the work memory stays near STRIP_ELEMENTS samples whatever the image size; the sums
are exact, so strips give the same bytes. `plan_elements` estimates the weight blocks a resize needs, so
that callers can leave extreme downscales (a 1x50000000 image to 96x96) to Pillow instead.

The order of the passes is Pillow's: horizontal first, except that Pillow 13 and later run the vertical pass
first when the height shrinks by more than twice as many pixels as the width (`ImagingResampleInner`).
Filters: bicubic, bilinear and box, whose weights are plain arithmetic and come out identical in numpy
(lanczos and hamming call `sin`, whose last bit may differ between C libraries; they stay with Pillow).
A photo whose needed region fits one strip runs both passes in float32 instead (`exact32`: an error bound,
and the few samples within it of a rounding edge recomputed exactly), with the same bytes.
On first use a small comparison with the installed Pillow (both pass orders, every filter) decides whether
this module is used at all, so a future Pillow that computes differently only makes resizing slower again.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np
import PIL

from .workspace import work_array

PRECISION_BITS = 22  # Pillow's 8-bit resampling: 32 - 8 (sample) - 2 (overflow room)
# Pillow's resampling filters: code -> (name, filter support in input pixels at scale 1)
FILTERS = {0: ("nearest", 0.0), 1: ("lanczos", 3.0), 2: ("bilinear", 1.0), 3: ("bicubic", 2.0),
           4: ("box", 0.5), 5: ("hamming", 1.0)}
SUPPORTED = (2, 3, 4)  # the filters this module computes: bilinear, bicubic, box
BAND = 16  # outputs per matrix product
# the float32 vertical pass (`exact32`) multiplies bands of 8 output rows: OpenBLAS' kernels work in steps
# of 8, and the narrower bands skip more zero weights (15% faster on a photo; the horizontal pass is as
# fast with 8 as with 16, and keeps 16, half the products)
FAST_VERTICAL_BAND = 8
STRIP_ELEMENTS = 1 << 22  # source samples converted to float64 at a time (32 MB)
_SCRATCH_MAX = 1 << 21  # work arrays up to this many elements (16 MB) are kept between calls, larger ones not
_PLAN_CACHE_MAX = 1 << 19  # plans whose weight blocks hold up to this many elements (4 MB) are cached
_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def supported(resample: int) -> bool:
    """Whether `resize_crop` reproduces Pillow for this filter (and, checked once per process, for the
    installed Pillow: a release that computes differently sends every resize back to Pillow)."""
    return resample in SUPPORTED and _matches_installed_pillow()


@lru_cache(maxsize=1)
def _matches_installed_pillow() -> bool:
    """Compare with Pillow on a small random image: both pass orders, shrinking and enlarging, every filter
    (a few milliseconds, once)."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (61, 47, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for out_w, out_h in ((31, 37), (45, 20), (70, 90), (29, 61)):  # h first, v first (Pillow 13), up, width only
        box = (1, 2, out_w - 1, out_h - 2)
        for resample in SUPPORTED:
            expected = np.asarray(image.resize((out_w, out_h), resample).crop(box))
            if not np.array_equal(resize_crop(pixels, out_w, out_h, resample, box), expected):
                return False
    return True


def vertical_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """Pillow's choice of pass order (13.0 and later; earlier releases always start horizontally)."""
    return _PILLOW_MAJOR >= 13 and (in_h - out_h) > 0 and (in_h - out_h) > (in_w - out_w) * 2


def _filter(resample: int, x: np.ndarray) -> np.ndarray:
    """Pillow's filter functions, operation for operation (float64)."""
    if resample == 4:  # box: the interval is half-open, so no abs()
        return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)
    x = np.abs(x)
    if resample == 2:
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5  # bicubic
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def pillow_coefficients(in_size: int, out_size: int, resample: int, start: int, stop: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For output samples start..stop-1 of a resize of in_size to out_size: first input index, number of taps,
    and integer weights (stop - start, ksize) as float64. Each sample's weights depend only on its own
    position, so computing a range gives the same numbers as computing all of them."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = FILTERS[resample][1] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(start, stop, dtype=np.float64) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(ksize)
    used = taps[None, :] < count[:, None]
    weights = np.where(used, _filter(resample, ((taps[None, :] + first[:, None]) - center[:, None] + 0.5)
                                     * (1.0 / filterscale)), 0.0)
    total = np.zeros(stop - start)
    for tap in range(ksize):  # summed tap by tap, in Pillow's order (numpy's pairwise sum rounds differently)
        total = total + weights[:, tap]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    scaled = weights * (1 << PRECISION_BITS)
    integer = np.where(weights < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    return first, count, integer


def plan_elements(in_w: int, in_h: int, out_w: int, out_h: int, box: tuple[int, int, int, int],
                  resample: int) -> int:
    """About how many float64 weights (and coefficient temporaries) `resize_crop` builds for this resize: per
    axis, the crop's outputs times the inputs each band of them spans. Small for any real photo; it grows
    with the shrink factor (1x100000 to 96x96: about 2 million)."""
    total = 0
    for in_size, out_size, length in ((in_w, out_w, box[2] - box[0]), (in_h, out_h, box[3] - box[1])):
        scale = max(float(in_size) / out_size, 1.0)
        total += length * int((BAND + 2 * FILTERS[resample][1] + 2) * scale + 1)
    return total


def _bands(first: np.ndarray, count: np.ndarray, weights: np.ndarray, offset: int,
           band: int = BAND) -> list[tuple[int, int, int, int, np.ndarray]]:
    """For the outputs of (first, count, weights) in bands of `band`: (out_a, out_b, in_a, in_b, (in_b - in_a,
    out_b - out_a) weights / 2**22), with input indices relative to `offset`."""
    bands = []
    for a in range(0, len(first), band):
        b = min(len(first), a + band)
        in_a, in_b = int(first[a:b].min()), int((first[a:b] + count[a:b]).max())
        block = np.zeros((in_b - in_a, b - a))
        for column, out in enumerate(range(a, b)):
            block[first[out] - in_a:first[out] - in_a + count[out], column] = weights[out, :count[out]]
        bands.append((a, b, in_a - offset, in_b - offset, block * 2.0 ** -PRECISION_BITS))
    return bands


_PLANS: dict = {}  # small plans by their arguments (at most 64), so a batch of same-size photos plans once
_PLANS_LOCK = threading.Lock()


def _plan(in_w: int, in_h: int, out_w: int, out_h: int, box: tuple[int, int, int, int], resample: int):
    """Input rows and columns the crop needs, and the weight bands of both passes (relative to them)."""
    key = (in_w, in_h, out_w, out_h, box, resample)
    with _PLANS_LOCK:
        if key in _PLANS:
            return _PLANS[key]
    left, top, right, bottom = box
    y_first, y_count, y_weights = pillow_coefficients(in_h, out_h, resample, top, bottom)
    rows = (int(y_first.min()), int((y_first + y_count).max()))
    x_first, x_count, x_weights = pillow_coefficients(in_w, out_w, resample, left, right)
    cols = (int(x_first.min()), int((x_first + x_count).max()))
    horizontal = _bands(x_first, x_count, x_weights, cols[0])
    vertical = [(a, b, i, j, np.ascontiguousarray(w.T)) for a, b, i, j, w in _bands(y_first, y_count, y_weights,
                                                                                     rows[0])]
    from . import exact32

    pair = (exact32.Axis(x_first, x_count, x_weights, horizontal, cols[0], PRECISION_BITS),
            exact32.Axis(y_first, y_count, y_weights,
                         [(a, b, i, j, w.T) for a, b, i, j, w in _bands(y_first, y_count, y_weights, rows[0],
                                                                        FAST_VERTICAL_BAND)],
                         rows[0], PRECISION_BITS))
    fast = pair if max(pair[0].eps, pair[1].eps) <= exact32.MAX_EPS else None
    plan = rows, cols, horizontal, vertical, fast
    if sum(w.size for *_, w in horizontal + vertical) <= _PLAN_CACHE_MAX:  # large plans are not kept around
        with _PLANS_LOCK:
            if len(_PLANS) >= 64:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _scratch(role: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 work array kept between calls (`workspace`): fresh multi-megabyte arrays come from the
    operating system page by page on every call, which costs as much as the arithmetic. Contents are
    overwritten; arrays above _SCRATCH_MAX elements are made afresh (kept, they would hold their memory)."""
    if math.prod(shape) > _SCRATCH_MAX:
        return np.empty(shape)
    return work_array("f64 " + role, shape, np.float64)


def _float64(view: np.ndarray, role: str) -> np.ndarray:
    """A C-ordered float64 copy of a (strided) view in one pass (astype + reshape of a transposed view copies
    twice, several times slower)."""
    out = _scratch(role, view.shape)
    np.copyto(out, view)
    return out


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """Pillow's rounding of a scaled sum to a sample, in place: floor(clip(v + 0.5, 0, 255))."""
    values += 0.5
    np.clip(values, 0, 255, out=values)
    return np.floor(values, out=values)


def _horizontal(planes: np.ndarray, bands: list) -> np.ndarray:
    """(rows, in_cols) float64 samples -> (rows, out_cols) 8-bit samples (as float64)."""
    out = _scratch("horizontal", (planes.shape[0], bands[-1][1]))
    for a, b, i, j, weights in bands:
        np.matmul(planes[:, i:j], weights, out=out[:, a:b])
    return _to_8bit(out)


def _vertical(rows: np.ndarray, bands: list) -> np.ndarray:
    """(in_rows, cols) float64 samples -> (out_rows, cols) 8-bit samples (as float64)."""
    out = _scratch("vertical", (bands[-1][1], rows.shape[1]))
    for a, b, i, j, weights in bands:
        np.matmul(weights, rows[i:j], out=out[a:b])
    return _to_8bit(out)


def resize_crop(pixels, out_w: int, out_h: int, resample: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """`np.asarray(Image.fromarray(pixels).resize((out_w, out_h), resample).crop(box))`, bit for bit.

    Args:
        pixels: uint8 (H, W, C) or (H, W), or a PIL image of mode "RGB" or "L" (only the region the crop
            needs is copied out of it).
        resample: 2 (bilinear), 3 (bicubic) or 4 (box).
        box: (left, top, right, bottom) inside the resized image.

    Returns:
        uint8 (bottom - top, right - left, C) (a strided view), or (rows, cols) for (H, W) input.
    """
    if isinstance(pixels, np.ndarray):
        height, width = pixels.shape[:2]
    else:
        width, height = pixels.size
    (r0, r1), (c0, c1), horizontal, vertical, fast = _plan(width, height, out_w, out_h, box, resample)
    keep = words = None  # what keeps a zero-copy view of a PIL image's memory alive; its pixels as words
    if isinstance(pixels, np.ndarray):
        region = pixels[r0:r1, c0:c1]
    else:
        from .image_io import pixel_view

        shared = pixel_view(pixels, words=True)
        if shared is not None:
            keep, region = shared[1], shared[0][r0:r1, c0:c1]
            words = shared[2][r0:r1, c0:c1] if shared[2] is not None else None
        else:
            region = np.asarray(pixels.crop((c0, r0, c1, r1)))
    gray = region.ndim == 2
    region = region[:, :, None] if gray else region
    channels = region.shape[2]
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    rows, cols = r1 - r0, c1 - c0
    if fast is not None and rows * cols * channels <= STRIP_ELEMENTS:  # a photo: float32, exact (exact32)
        from . import exact32

        if vertical_first(width, height, out_w, out_h):
            # work array roles as exact32 names them; "source" for the vertical pass's input
            middle = exact32.vertical(exact32.to_float32(region, "source").reshape(rows, -1), fast[1], "samples")
            planes = exact32.to_float32(middle.reshape(crop_h, cols, channels).transpose(0, 2, 1), "planes")
            out = exact32.horizontal(planes.reshape(-1, cols), fast[0])  # (crop_h*C, crop_w)
        else:
            planes = exact32.planes_float32(region, words).reshape(-1, cols)
            middle = exact32.horizontal(planes, fast[0]).reshape(rows, channels * crop_w)
            out = exact32.vertical(middle, fast[1], "planes")  # (crop_h, C*crop_w); the planes are done
    elif vertical_first(width, height, out_w, out_h):
        # vertical pass on rows of (column, channel) samples, then horizontal on rows of (row, channel)
        step = max(1, STRIP_ELEMENTS // (rows * channels))  # columns per strip
        if step >= cols:
            middle = _vertical(_float64(region, "source").reshape(rows, -1), vertical)  # (crop_h, cols*C)
        else:
            middle = np.empty((crop_h, cols * channels))
            for c in range(0, cols, step):
                strip = region[:, c:c + step]
                middle[:, c * channels:(c + strip.shape[1]) * channels] = _vertical(
                    _float64(strip, "source").reshape(rows, -1), vertical)
        planes = _float64(middle.reshape(crop_h, cols, channels).transpose(0, 2, 1), "planes")
        out = _horizontal(planes.reshape(-1, cols), horizontal)  # (crop_h*C, crop_w)
    else:
        step = max(1, STRIP_ELEMENTS // (cols * channels))  # rows per strip
        if step >= rows:
            planes = _float64(region.transpose(0, 2, 1), "source").reshape(-1, cols)  # (rows*C, cols)
            middle = _horizontal(planes, horizontal).reshape(rows, channels * crop_w)
        else:
            middle = np.empty((rows * channels, crop_w))
            for r in range(0, rows, step):
                strip = region[r:r + step]
                planes = _float64(strip.transpose(0, 2, 1), "source").reshape(-1, cols)
                middle[r * channels:(r + strip.shape[0]) * channels] = _horizontal(planes, horizontal)
            middle = middle.reshape(rows, channels * crop_w)
        out = _vertical(middle, vertical)  # (crop_h, C*crop_w)
    del keep  # the region was copied: the image's memory may go
    result = out.astype(np.uint8).reshape(crop_h, channels, crop_w).transpose(0, 2, 1)
    return result[:, :, 0] if gray else result
