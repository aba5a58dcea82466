"""The processor's resize + center crop, and the threads that spread a batch over the cores.

Exact mode is transformers' own: Pillow resizes the whole image, then the center is cropped. Pillow chooses the
order of its two separable passes from the sizes (Pillow 12.3 changed how), so an image is never cut into
pieces: a batch is spread over threads image by image (Pillow releases the GIL while it resamples), which
changes no value.

Fast mode (`fast=True`) resamples only the crop region with Pillow's `box` argument, for resizes where that
stays within one 8-bit level of exact mode (see FAST_FILTERS below): Pillow places the samples from float32 box
coordinates, so about 0.01% of values differ by one level, at most 1/255/std after normalization.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

# Pillow's resampling filters: code -> (name, filter support in input pixels at scale 1)
FILTERS = {0: ("nearest", 0.0), 1: ("lanczos", 3.0), 2: ("bilinear", 1.0), 3: ("bicubic", 2.0),
           4: ("box", 0.5), 5: ("hamming", 1.0)}
# Fast mode only where it stays within one 8-bit level of exact mode (checked on the fixture photos at 100+
# scales, tests/test_processing.py): smooth filters (bicubic, lanczos; box, bilinear and hamming move by more
# when the sample positions shift), shrinking by 1.25x or more, and resizes that keep the aspect ratio (as
# shortest_edge does; when one axis shrinks much more than the other, Pillow may order its two passes
# differently for the box call). Any other resize takes the exact path.
FAST_FILTERS = (1, 3)
MIN_FAST_SCALE = 1.25
MAX_ASPECT_CHANGE = 0.02
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (process id, pool): a forked child makes its own


def default_threads() -> int:
    """Threads used when the processor's `num_threads` is None: the usable cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


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


def resize_crop(image: Image.Image, out_w: int, out_h: int, resample: int, box: tuple[int, int, int, int],
                fast: bool) -> np.ndarray:
    """`np.asarray(image.resize((out_w, out_h), resample).crop(box))`, with `box` inside the resized image.

    Exact unless `fast` and the resize qualifies for fast mode (module docstring).
    """
    sx, sy = image.width / out_w, image.height / out_h
    if fast and resample in FAST_FILTERS and min(sx, sy) >= MIN_FAST_SCALE and abs(sx / sy - 1) <= MAX_ASPECT_CHANGE:
        left, top, right, bottom = box
        return np.asarray(image.resize((right - left, bottom - top), resample=resample,
                                       box=(left * sx, top * sy, right * sx, bottom * sy)))
    return np.asarray(image.resize((out_w, out_h), resample=resample).crop(box))
