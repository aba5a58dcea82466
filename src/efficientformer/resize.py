"""The processor's resize + center crop, and the threads that spread a batch over the cores.

Exact mode gives transformers' numbers: Pillow's resize of the whole image, then the center crop. Bicubic,
bilinear and box resizes (the hub setting is bicubic) are computed by `efficientformer.resample`, bit for bit
and only inside the crop; the others (lanczos, hamming, nearest) by Pillow itself. With `num_threads`, a batch
is spread over threads image by image (Pillow and BLAS release the GIL), which changes no value.

Fast mode (`fast=True`), for the filters Pillow computes, resamples only the crop region with Pillow's `box`
argument where that stays within one 8-bit level of exact mode (see FAST_FILTERS below): Pillow places the
samples from float32 box coordinates, so a few values differ by one level, at most 1/255/std after
normalization.
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

    Bicubic, bilinear and box resizes run in numpy, bit for bit (`efficientformer.resample`); others run in
    Pillow, with only the crop region resampled when `fast` qualifies (module docstring), else the whole
    image as transformers does.
    """
    array = image if isinstance(image, np.ndarray) else None
    width, height = (image.shape[1], image.shape[0]) if array is not None else image.size
    if resample_module.supported(resample) and (array is None or array.dtype == np.uint8):
        return resample_module.resize_crop(image, out_w, out_h, resample, box)
    if array is not None:
        image = Image.fromarray(np.ascontiguousarray(array))
    sx, sy = width / out_w, height / out_h
    if fast and resample in FAST_FILTERS and min(sx, sy) >= MIN_FAST_SCALE and abs(sx / sy - 1) <= MAX_ASPECT_CHANGE:
        left, top, right, bottom = box
        return np.asarray(image.resize((right - left, bottom - top), resample=resample,
                                       box=(left * sx, top * sy, right * sx, bottom * sy)))
    return np.asarray(image.resize((out_w, out_h), resample=resample).crop(box))
