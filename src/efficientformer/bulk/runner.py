"""Bulk prediction: image files in, one record per image out, resumable, on one process or many.

`predict_paths` runs an `ImageClassifier` over a list of files: worker processes decode and crop the next
batches (`bulk.loader`) while the model runs the current one; on a GPU each batch goes through pinned
memory with a non-blocking copy, and the previous batch's classes are ranked and written while the GPU
computes. With `decode="gpu"`, worker processes read the files' bytes ahead and each batch is decoded, resized and
normalized on the GPU instead (`preprocessing.gpu_decode`: nvJPEG, within its stated tolerance of the CPU
path); records, resuming, sharding and the reasons given for failed files are the same.

With `output`, each batch's records are appended to the results file as one whole piece (`bulk.records`),
and a rerun skips every image already there, so a killed job continues where it stopped and every image
ends up in the file exactly once.

Under torchrun (a process group initialized, `efficientformer predict` does it), the images not yet in the
output are split across the ranks, round robin; each rank appends to its own part file, and rank 0 merges
the parts into the output at the end (and at the start, what an interrupted run left).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import loader, records


@dataclass
class BulkResult:
    """What one call did: the new (name, predictions) of this process (kept unless `keep=False`), the
    (name, reason) of the images that failed, and how many images the output held already."""

    predictions: list[tuple[str, list]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    already_done: int = 0


def _world() -> tuple[int, int, Any]:
    """(rank, world size, torch.distributed or None) of an initialized process group."""
    try:
        import torch.distributed as dist
    except ImportError:  # ONNX classifiers run without torch
        return 0, 1, None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def top_k_for(classifier, top_k: int) -> int:
    """The classes each record holds: `top_k`, at most the model's label count."""
    count = getattr(classifier.config, "num_labels", None) or len(classifier.config.id2label)
    return max(1, min(top_k, count))


def predict_paths(classifier, paths: Sequence[str], *, top_k: int = 5, batch_size: int = 32,
                  workers: int | None = None, output: str | os.PathLike | None = None,
                  names: dict[str, str] | None = None, progress: Any = None,
                  on_result: Callable[[str, list], None] | None = None,
                  on_failure: Callable[[str, str], None] | None = None, keep: bool = True,
                  draft: bool = False, decode: Any = "cpu") -> BulkResult:
    """Classify image files batch by batch.

    Args:
        classifier: an `ImageClassifier` (PyTorch or ONNX).
        paths: image files, in order (`bulk.sources.expand_inputs` turns folders, globs and CSV lists into this).
        workers: decoding processes; None picks `loader.default_workers`, 0 decodes in this process. With
            GPU decoding: the processes that read the files (None: as for CPU decoding; 0: threads of this
            process, one per core but one).
        output: a `.jsonl` or `.csv` results file, appended batch by batch and resumed from.
        names: the name each path gets in records (default: the path).
        progress: a `bulk.progress.Progress`, or a callable `make(total) -> Progress`, or None.
        on_result, on_failure: called for each image as its batch is done.
        keep: keep the predictions in the result (False for jobs too large to hold them).
        draft: decode JPEGs at a reduced DCT scale that still covers the resize (faster for large photos,
            not exact: `efficientformer predict --draft`, BENCHMARKS.md).
        decode: "cpu" (the exact CPU path, in `workers` processes), "gpu" (nvJPEG on the classifier's CUDA
            device, `workers` reading processes) or a `preprocessing.gpu_decode.GpuDecoder` (any device).

    Raises:
        InputError: a bad output file name, an output written with another --top-k or not a results file;
            `decode="gpu"` with a model that is not on a CUDA GPU, an ONNX file, or `draft`.
        MissingDependencyError: `decode="gpu"` without a working torchvision.
    """
    k = top_k_for(classifier, top_k)
    decoder = gpu_decoder(classifier, decode, draft)
    rank, world, dist = _world()
    fmt = records.output_format(output) if output is not None else None
    result = BulkResult()
    key = (lambda p: names.get(p, p)) if names else (lambda p: p)
    todo = list(paths)
    target = None
    if output is not None:
        if rank == 0:  # what an interrupted run left in part files goes into the output first
            contents = records.merge(output, fmt, top_k=k)
        if dist is not None:
            dist.barrier()
            contents = records.read(output, fmt, top_k=k)
        records.check_top_k(output, contents, k)
        done = contents.records
        todo = [p for p in todo if key(p) not in done]
        result.already_done = len(paths) - len(todo)
        target = records.part_path(output, rank) if dist is not None else output
    if dist is not None:
        todo = todo[rank::world]
    if decoder is not None:  # reading processes as for CPU decoding; 0: threads here, one per core but one
        processes = loader.default_workers(len(todo), batch_size) if workers is None else workers
        source = decoder.batches(todo, batch_size, max(1, loader.default_workers(10 ** 9, 1)), processes=processes)
    else:
        if workers is None:
            workers = loader.default_workers(len(todo), batch_size)
        source = loader.batches(todo, batch_size, classifier.processor, workers, draft)
    bar = progress(len(todo)) if callable(progress) and not hasattr(progress, "update") else progress

    def finish(batch: loader.Batch, logits) -> None:
        texts = []
        if logits is not None:
            for path, predictions in zip(batch.names, classifier.rank(logits, k)):
                name = key(path)
                if keep:
                    result.predictions.append((name, predictions))
                if target is not None:
                    texts.append(records.encode(fmt, name, predictions))
                if on_result is not None:
                    on_result(name, predictions)
        if target is not None:
            records.append(target, fmt, texts)
        for path, reason in batch.failed:
            result.failed.append((key(path), reason))
            if on_failure is not None:
                on_failure(key(path), reason)
        if bar is not None:
            bar.update(len(batch.names) + len(batch.failed))

    previous = None
    try:
        for batch in source:
            logits = None
            if batch.crops is not None or batch.pixels is not None:
                try:
                    pixels = batch.pixels if batch.pixels is not None else classifier.pixels_from_8bit(batch.crops)
                    logits = classifier.logits_from_pixels(pixels)
                except (ValueError, RuntimeError) as err:  # out of memory, a broken model: this batch only
                    reason = f"the batch of {len(batch.names)} images from {key(batch.names[0])} failed: {err}"
                    batch = loader.Batch([], None, batch.failed + [(p, reason) for p in batch.names])
            if previous is not None:  # the GPU works on this batch while the last one is ranked and written
                finish(*previous)
            previous = (batch, logits)
        if previous is not None:
            finish(*previous)
    finally:
        if bar is not None and bar is not progress:
            bar.close()
    if output is not None and dist is not None:
        dist.barrier()
        if rank == 0:
            order = [key(p) for p in paths]
            records.merge(output, fmt, order, top_k=k)
        dist.barrier()
    return result


def check_decode(decode: str, draft: bool) -> None:
    """Refuse an unknown `decode`, and "gpu" with `draft` (the CLI asks before it reads any model).

    Raises:
        InputError: either.
    """
    from ..errors import InputError

    if decode not in ("cpu", "gpu"):
        raise InputError(f"decode={decode!r} is not a decoder; use 'cpu' (exact, worker processes) or 'gpu' (nvJPEG).")
    if decode == "gpu" and draft:
        raise InputError("--draft decodes JPEGs at a reduced scale on the CPU and --decode gpu decodes them whole "
                         "on the GPU; use one of the two.")


def gpu_decoder(classifier, decode: Any, draft: bool = False):
    """The `GpuDecoder` that `decode` asks for (None for "cpu"), checked against the classifier.

    Raises:
        InputError: an unknown `decode`; "gpu" with `draft`, an ONNX classifier or a model not on CUDA.
        MissingDependencyError: "gpu" without a working torchvision (nvJPEG).
    """
    if not isinstance(decode, str):  # a GpuDecoder made by the caller (tests: on the CPU)
        return decode
    check_decode(decode, draft)
    if decode == "cpu":
        return None
    from ..errors import InputError

    if getattr(classifier, "model", None) is None:
        raise InputError("--decode gpu feeds PyTorch models, and an .onnx file runs through onnxruntime; use "
                         "--decode cpu for it.")
    device = classifier.device
    if device.type != "cuda":
        raise InputError(f"--decode gpu decodes with nvJPEG on a CUDA GPU, but the model runs on {device}; pass "
                         "--device cuda on a machine with a CUDA GPU, or use --decode cpu.")
    from ..preprocessing.gpu_decode import GpuDecoder

    dtype = next(classifier.model.parameters()).dtype
    return GpuDecoder(classifier.processor, device, dtype=dtype,
                      channels_last=bool(getattr(classifier.model, "channels_last", False)))
