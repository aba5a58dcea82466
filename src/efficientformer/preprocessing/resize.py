"""The processor's resize + center crop, and the threads that spread a batch over the cores.

Exact mode gives transformers' numbers: Pillow's resize of the whole image, then the center crop. Bicubic,
bilinear and box resizes (the hub setting is bicubic) are computed by `efficientformer.preprocessing.resample`, bit for bit
and only inside the crop; the others (lanczos, hamming, nearest) by Pillow itself. With `num_threads`, a batch
is spread over threads image by image (Pillow and BLAS release the GIL), which changes no value.

Fast mode (`fast=True`), for the filters Pillow computes, resamples only the crop region with Pillow's `box`
argument where that stays within one 8-bit level of exact mode (see FAST_FILTERS below): Pillow places the
samples from float32 box coordinates, so a few values differ by one level, at most 1/255/std after
normalization.

Bounded work: what a resize costs follows the crop, not the resized image. Bicubic, bilinear and box compute
only the crop's samples (`efficientformer.preprocessing.resample`); the Pillow-computed filters resize the whole image only
while it has at most FULL_RESIZE_PIXELS pixels, and beyond that (a 1x100000 image resized to 256x25600000)
resample the crop alone with Pillow's `box`, as fast mode does (transformers would need gigabytes there;
tests/test_inputs_bounded.py checks nearest picks the same pixels and lanczos/hamming stay within one level). Downscales that would build more than NUMPY_PLAN_ELEMENTS weights go to Pillow, and a side
longer than REDUCE_ABOVE_SIDE pixels is first shrunk by Pillow's `reduce` (box averaging by a whole factor,
as Pillow's own `reducing_gap` does), so that the filter weights stay a few tens of megabytes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from . import resample as resample_module

# Fast mode only where it stays within one 8-bit level of exact mode (checked on the fixture photos at 100+
# scales, tests/test_processing.py): smooth filters (bicubic, lanczos; box, bilinear and hamming move by more
# when the sample positions shift), shrinking by 1.25x or more, and resizes that keep the aspect ratio (as
# shortest_edge does; when one axis shrinks much more than the other, Pillow may order its two passes
# differently for the box call). Any other resize takes the exact path.
FAST_FILTERS = (1, 3)
MIN_FAST_SCALE = 1.25
MAX_ASPECT_CHANGE = 0.02
FULL_RESIZE_PIXELS = 1 << 24  # Pillow resizes of up to 16.8 million output pixels (4096x4096) are done whole
NUMPY_PLAN_ELEMENTS = 1 << 22  # the numpy resize takes plans of up to 4 million weights (32 MB)
REDUCE_ABOVE_SIDE = 1 << 21  # Pillow's weights for a side of 2 million pixels: 2 * support * 16 MB at most
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (process id, pool): a forked child makes its own


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Threads used when the processor's `num_threads` is None: the usable cores, at most 4."""
    return max(1, min(4, usable_cores()))


def thread_map(func, items: list, threads: int) -> list:
    """`[func(x) for x in items]`, on up to `threads` threads of one shared pool (created on first use)."""
    global _POOL
    if threads <= 1 or len(items) <= 1:
        return [func(item) for item in items]
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < threads:  # noqa: SLF001
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[1].shutdown(wait=False)  # replaced by a larger pool
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="efficientformer-resize"))
    return list(_POOL[1].map(func, items))


def resize_crop(image: Image.Image | np.ndarray, out_w: int, out_h: int, resample: int,
                box: tuple[int, int, int, int], fast: bool) -> np.ndarray:
    """`np.asarray(image.resize((out_w, out_h), resample).crop(box))`, with `box` inside the resized image.

    Args:
        image: a PIL image of mode "RGB" or "L", or a uint8 array (H, W, 3) or (H, W).

    Bicubic, bilinear and box resizes run in numpy, bit for bit (`efficientformer.preprocessing.resample`); others run in
    Pillow, with only the crop region resampled when `fast` qualifies or the whole resize would be larger than
    FULL_RESIZE_PIXELS (module docstring), else the whole image as transformers does.
    """
    array = image if isinstance(image, np.ndarray) else None
    width, height = (image.shape[1], image.shape[0]) if array is not None else image.size
    if (resample_module.supported(resample) and (array is None or array.dtype == np.uint8)
            and resample_module.plan_elements(width, height, out_w, out_h, box, resample) <= NUMPY_PLAN_ELEMENTS):
        return resample_module.resize_crop(image, out_w, out_h, resample, box)
    if array is not None:
        image = Image.fromarray(np.ascontiguousarray(array))
    image = _reduce_long_sides(image, out_w, out_h)
    width, height = image.size
    sx, sy = width / out_w, height / out_h
    left, top, right, bottom = box
    fast_ok = (fast and resample in FAST_FILTERS and min(sx, sy) >= MIN_FAST_SCALE
               and abs(sx / sy - 1) <= MAX_ASPECT_CHANGE)
    if fast_ok or out_w * out_h > FULL_RESIZE_PIXELS:  # the crop alone (the whole resize would not fit in memory)
        return np.asarray(image.resize((right - left, bottom - top), resample=resample,
                                       box=(left * sx, top * sy, right * sx, bottom * sy)))
    return np.asarray(image.resize((out_w, out_h), resample=resample).crop(box))


def _reduce_long_sides(image: Image.Image, out_w: int, out_h: int) -> Image.Image:
    """Shrink a side longer than REDUCE_ABOVE_SIDE that is being downscaled by a whole factor (Pillow's
    `reduce`), keeping it at least as long as the output: Pillow's weights for a side grow with its length."""
    width, height = image.size
    factors = []
    for size, out in ((width, out_w), (height, out_h)):
        factor = -(-size // REDUCE_ABOVE_SIDE) if size > REDUCE_ABOVE_SIDE else 1
        factors.append(max(1, min(factor, size // out)))
    return image.reduce(tuple(factors)) if factors != [1, 1] else image
