"""Decoding and preprocessing image files in worker processes, ahead of the model.

Each batch of paths is cut into pieces that worker processes decode, resize and crop
(`EfficientFormerImageProcessor.crop_8bit`): they send back uint8 crops, 4x fewer bytes than float32
`pixel_values`, which the model's side turns into exactly the processor's values through its lookup table
(`lookup_table`; on the GPU after a pinned, non-blocking copy: `ImageClassifier.pixels_from_8bit`).
Batches come out in input order and each holds the same images as the serial path (`workers=0`, everything
in this process), so the results are identical; up to PREFETCH_BATCHES batches are in flight, so decoding
the next batches overlaps the model's work on this one.

Worker processes are started with "spawn" (never forked from a process running PyTorch's threads) and with
one BLAS / OpenMP thread each, so N workers use N cores; they stay up for the next call with the same settings
(`_pool`), since starting them costs seconds.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError

PREFETCH_BATCHES = 3  # batches decoded ahead of the model
PIECE_IMAGES = 16  # most images one worker task holds
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Batch:
    """One batch, decoded: the names of the images that worked, their uint8 crops (N, H, W, 3) (None when
    none worked), and (name, reason) for the others; GPU decoding (`preprocessing.gpu_decode`) gives the
    finished `pixel_values` on the device as `pixels` instead of crops."""

    names: list[str]
    crops: np.ndarray | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    pixels: Any = None


def shape_mismatch(shape: tuple, first: tuple) -> str:
    """Why an image whose crop is `shape` (height, width) cannot join a batch whose first image's is `first`."""
    return (f"it preprocesses to {tuple(shape)} pixels, not {tuple(first)} as the batch's first image; set a crop "
            "size (do_center_crop) in the processor")


def prepare(paths: Sequence[str], processor, draft: bool = False) -> Batch:
    """Decode and crop `paths` in this process (what each worker task runs); `draft` decodes JPEGs at a
    reduced DCT scale that still covers the resize (`image_io.open_image`): faster, not exact."""
    from ..preprocessing.image_io import open_image

    names, crops, failed = [], [], []
    for path in paths:
        try:
            crop = processor.crop_8bit(open_image(path, draft=processor.draft_size) if draft else path)
        except InputError as err:
            failed.append((path, str(err)))
            continue
        if crops and crop.shape != crops[0].shape:
            failed.append((path, shape_mismatch(crop.shape[:2], crops[0].shape[:2])))
            continue
        names.append(path)
        crops.append(crop)
    return Batch(names, np.stack(crops) if crops else None, failed)


def _join(pieces: list[Batch]) -> Batch:
    """One batch from its pieces, as `prepare` would have made it from all of its paths at once."""
    arrays = [p.crops for p in pieces if p.crops is not None]
    if len({a.shape[1:] for a in arrays}) <= 1:
        crops = (arrays[0] if len(arrays) == 1 else np.concatenate(arrays)) if arrays else None
        return Batch([n for p in pieces for n in p.names], crops, [f for p in pieces for f in p.failed])
    first = arrays[0].shape[1:]  # pieces of different crop sizes: image by image against the first
    names, kept, failed = [], [], [f for p in pieces for f in p.failed]
    for piece in pieces:
        for name, crop in zip(piece.names, piece.crops if piece.crops is not None else ()):
            if crop.shape == first:
                names.append(name)
                kept.append(crop)
            else:
                failed.append((name, shape_mismatch(crop.shape[:2], first[:2])))
    return Batch(names, np.stack(kept), failed)


_PROCESSOR: Any = None  # (processor, draft) of this worker process


def _start_worker(processor, draft: bool) -> None:
    global _PROCESSOR
    _PROCESSOR = (processor, draft)


def _work(paths: list[str]) -> Batch:
    return prepare(paths, *_PROCESSOR)


def default_workers(images: int, batch_size: int) -> int:
    """Worker processes when none are asked for: none for a single batch (starting one costs more than it
    saves), else one per usable core but one (the main process runs the model), at least 1 and at most 16.
    Under torchrun the cores are shared out among the processes of this machine (LOCAL_WORLD_SIZE): 8 ranks
    on 16 cores get 1 worker each, not 15 (120 processes fighting for 16 cores).
    On 2 CPU cores one worker beat none for L1 (BENCHMARKS.md, "End to end"); a short job may not pay back
    the second or so a worker takes to start."""
    if images <= batch_size:
        return 0
    from ..preprocessing.resize import usable_cores

    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, min(16, usable_cores() // local - 1))


_POOL: tuple[bytes, int, Any] | None = None  # (pickled (processor, draft), workers, pool) of the last call
_EXIT_HOOKED: list = []  # close_pool is registered with atexit once, with the first pool


def _pool(workers: int, processor, draft: bool):
    """`workers` processes set up for (processor, draft): the last call's when the settings are the same, else
    new ones. Starting "spawn" processes takes seconds (each imports the caller's main module, PyTorch often
    among it), more than decoding a few thousand images takes them, so a process that predicts again (rounds
    of a benchmark, a service, `predict_files` in a loop) keeps its pool; it ends with the process or with
    `close_pool()`."""
    global _POOL
    import atexit
    import multiprocessing
    import pickle

    key = pickle.dumps((processor, draft))
    if _POOL is not None and _POOL[0] == key and _POOL[1] == workers:
        return _POOL[2]
    close_pool()
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update({name: "1" for name in _ONE_THREAD})  # read by the children's BLAS at start-up
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                         initargs=(processor, draft))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if not _EXIT_HOOKED:
        atexit.register(close_pool)
        _EXIT_HOOKED.append(True)
    _POOL = (key, workers, pool)
    return pool


def close_pool() -> None:
    """End the worker processes kept by the last call of `batches` (if any)."""
    global _POOL
    if _POOL is not None:
        pool, _POOL = _POOL[2], None
        pool.terminate()
        pool.join()


def started_ahead(chunks: Sequence, start: Callable[[Any], Any], ahead: int = PREFETCH_BATCHES) -> Iterator:
    """`start(chunk)` for each chunk in order, yielded in order, with up to `ahead` chunks started before the
    one yielded is used: the work of the next chunks (in worker processes or threads) overlaps the caller's
    work on this one."""
    pending: deque = deque()
    upcoming = iter(chunks)
    for chunk in upcoming:
        pending.append(start(chunk))
        if len(pending) >= max(1, ahead):
            break
    while pending:
        handles = pending.popleft()
        chunk = next(upcoming, None)
        if chunk is not None:
            pending.append(start(chunk))
        yield handles


def batches(paths: Sequence[str], batch_size: int, processor, workers: int = 0,
            draft: bool = False) -> Iterator[Batch]:
    """The decoded batches of `paths[i:i + batch_size]`, in order, decoded by `workers` processes (0: here);
    `draft` as for `prepare`.

    Raises:
        InputError: workers below 0.
    """
    if workers < 0:
        raise InputError(f"--workers must be 0 (decode in the main process) or more, got {workers}.")
    slices = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
    if workers == 0 or not slices:
        for chunk in slices:
            yield prepare(chunk, processor, draft)
        return
    piece = max(1, min(PIECE_IMAGES, math.ceil(batch_size / workers)))
    for results in in_workers(slices, _work, piece, workers, processor, draft):
        yield _join(results)


def in_workers(slices: Sequence[list], task: Callable[[list], Any], piece: int, workers: int, processor,
               draft: bool = False, ahead: int = PREFETCH_BATCHES) -> Iterator[list]:
    """For each slice, in order, [task(part) for each part of `piece` items], run by the kept worker processes
    (`_pool`) up to `ahead` slices ahead of the one yielded. `task` is a module-level function (the workers
    import it by name). A caller that stops half-way (an error, or it stopped reading) ends the pool, whose
    tasks may still be running."""
    pool = _pool(workers, processor, draft)
    finished = False
    try:
        for results in started_ahead(slices, lambda chunk: [pool.apply_async(task, (chunk[i:i + piece],))
                                                            for i in range(0, len(chunk), piece)], ahead):
            yield [result.get() for result in results]
        finished = True
    finally:
        if not finished:
            close_pool()
