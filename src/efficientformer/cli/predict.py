"""Classify images with an EfficientFormer checkpoint and print (or write) the top classes of each.

Inputs are image files, folders, glob patterns and `.csv` lists of image paths (`efficientformer.bulk.sources`:
folders are searched recursively for the extensions Pillow decodes, each real file taken once; a file named
directly is decoded whatever its name), `.tar` shards, and Hugging Face datasets: `hf:NAME[:CONFIG]` (the
Hub, or its local cache) or `hf:FOLDER` (written by `save_to_disk`) stands for every row of one split
(`--split`, default test or the only split), each named `hf:SOURCE/SPLIT/ROW` in the results
(`efficientformer.preprocessing.hf_datasets`). Worker processes (`--workers`) decode and crop the next batches
while the model runs; on a GPU the batches go through pinned memory with non-blocking copies. With
`--decode gpu`, worker processes read the files and nvJPEG decodes the JPEGs on the GPU, which also resizes and
normalizes them (`efficientformer.preprocessing.gpu_decode`; other formats are decoded on the CPU).

With `--output FILE.jsonl` (or `.csv`) each batch's records are appended to the file as one whole piece as
soon as it is done, and rerunning the same command skips the images already in the file: a job killed
halfway continues where it stopped, and every image ends up in the file exactly once. Under
`torchrun --nproc-per-node N -m efficientformer predict ... --output FILE` the images are split across the
processes (each appends to its own part file, merged into FILE at the end).

Every input that is not classified is reported on stderr with the reason: a file with another extension
(or none) found in a folder, a folder that cannot be read, a broken link, a file that is not an image,
is truncated, or is larger than Pillow's decompression-bomb limit. The exit code is then 1, else 0.
Progress (images/s) goes to stderr: redrawn on a terminal, a line every 10 s at most anywhere else.

examples:
  efficientformer predict                      # the bundled Fashion-MNIST model on the bundled sample images
  efficientformer predict cat.jpg --model snap-research/efficientformer-l1-300
  efficientformer predict photos/ "more/*.png" --model efficientformer_l1_300d.pth --top-k 3
  efficientformer predict photos/ --model my-finetuned-folder --format csv > predictions.csv
  efficientformer predict photos/ list.csv --output predictions.jsonl --workers 4   # rerun to resume
  efficientformer predict hf:beans --split test --output beans.jsonl   # every row of a Hugging Face dataset
  efficientformer predict photos/ --device cuda --optimize --decode gpu --batch-size 256 --output predictions.jsonl
  torchrun --nproc-per-node 8 -m efficientformer predict photos/ --device cuda --output predictions.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from ..bulk.sources import expand_inputs  # noqa: F401 - the folder search, named here since before bulk/
from ..bundled import default_model_path, sample_images_path

HELP = "classify images (files, folders, globs, .tar shards, Hugging Face datasets) and print the top classes"

PROGRESS_MIN_IMAGES = 64  # below this, no progress bar
BUNDLED_NOTE = ("the bundled demo model knows 10 Fashion-MNIST clothing classes (96x96 grayscale images), so it "
                "names any photo after clothing; for the 1000 ImageNet classes pass --model "
                "snap-research/efficientformer-l1-300 (or another ImageNet checkpoint)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="IMAGE",
                        help="image files, folders, glob patterns, .csv lists of images, .tar shards, or "
                             "hf:NAME[:CONFIG] / hf:FOLDER for the rows of a Hugging Face dataset (default: the "
                             "sample images bundled with the package, Fashion-MNIST test images for the bundled "
                             "model)")
    parser.add_argument("--model", "-m", default=None,
                        help="checkpoint: folder, hub id or weights file in the transformers, timm or original "
                             "layout (default: the model bundled with the package)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument("--batch-size", "-b", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table",
                        help="output format on stdout (default: table)")
    parser.add_argument("--output", "-o", default=None, metavar="FILE.jsonl|FILE.csv",
                        help="append each batch's records to this file as it is done, and skip the images "
                             "already in it (rerun the same command to resume a killed job)")
    parser.add_argument("--optimize", action="store_true",
                        help="run the optimized network (efficientformer.deploy.optimize: on a GPU bfloat16, "
                             "compiled, CUDA graphs; on the CPU the folded float32 network), for large jobs; "
                             "not exact (bfloat16 logits within about 5e-3-7e-3: BENCHMARKS.md, Inference)")
    parser.add_argument("--draft", action="store_true",
                        help="decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the "
                             "resize: 11x-14x faster for 4000x3000 photos and the same for 640x480 ones at the hub "
                             "settings, not exact (8-bit values move by 0.3-0.9 levels on average, up to 25 at "
                             "edges: BENCHMARKS.md)")
    parser.add_argument("--workers", "-j", type=int, default=None,
                        help="processes that decode images ahead of the model (default: one per core but one; "
                             "0: decode in the main process); with --decode gpu, processes that read the files "
                             "(0: threads)")
    parser.add_argument("--split", default=None,
                        help="split of hf: inputs (default: test, or the dataset's only split)")
    parser.add_argument("--image-column", default=None, metavar="COLUMN",
                        help="column of hf: inputs that holds the images (default: the first with the Image "
                             "feature, else one named image or img)")
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (default): decode and resize in worker processes, exactly as the processor; "
                             "gpu: decode JPEGs with nvJPEG and resize on the GPU (needs CUDA and torchvision; "
                             "pixel values within a few 8-bit levels of cpu: BENCHMARKS.md, GPU decoding)")


class _Printer:
    """Writes results as they come: table or csv rows at once, json as one array at the end."""

    def __init__(self, fmt: str, width: int, write) -> None:
        self.fmt, self.width, self.write = fmt, width, write
        self.records: list[dict] = []
        self.started = False
        if fmt == "csv":
            self._csv_row(["image", "rank", "label", "index", "score"])

    def _csv_row(self, row: list) -> None:
        import io

        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(row)
        self.write(buffer.getvalue())

    def add(self, path: str, predictions) -> None:
        if self.fmt == "json":
            self.records.append({"image": path, "predictions": [p.to_dict() for p in predictions]})
        elif self.fmt == "csv":
            for rank, p in enumerate(predictions, 1):
                self._csv_row([path, rank, p.label, p.index, f"{p.score:.6f}"])
        else:
            if not self.started:
                self.write(f"{'image':<{self.width}}  {'rank':>4}  {'score':>7}  {'index':>5}  label")
                self.started = True
            for rank, p in enumerate(predictions, 1):
                shown = path if rank == 1 else ""
                self.write(f"{shown:<{self.width}}  {rank:>4}  {p.score:>7.4f}  {p.index:>5}  {p.label}")

    def close(self) -> None:
        if self.fmt == "json":
            self.write(json.dumps(self.records, indent=2))


def _display_name(path: str, bundled: bool) -> str:
    """The bundled samples by file name; other paths as given."""
    return os.path.join("sample-images", os.path.basename(path)) if bundled else path


def _progress(total: int):
    if total < PROGRESS_MIN_IMAGES:
        return None
    from ..bulk.progress import Progress

    return Progress(total, "predicting")


def _check_gpu_decode(args: argparse.Namespace) -> None:
    """Refuse --decode gpu where it cannot run, before any model is read."""
    from ..bulk.runner import check_decode
    from ..errors import InputError

    if args.device == "cpu":
        raise InputError("--decode gpu decodes on a CUDA GPU, but --device cpu was given; drop one of the two.")
    check_decode(args.decode, args.draft)
    try:
        import torch
    except ImportError:
        raise InputError("--decode gpu feeds PyTorch models on a CUDA GPU, and PyTorch is not installed; use "
                         "--decode cpu (the default).") from None
    if not torch.cuda.is_available():
        raise InputError("--decode gpu decodes with nvJPEG on a CUDA GPU, and PyTorch sees none here; use "
                         "--decode cpu (the default).")


def run(args: argparse.Namespace) -> int:
    from ..bulk.runner import predict_paths
    from ..classifier import ImageClassifier
    from ..errors import CheckpointError, InputError
    from ..preprocessing.hf_datasets import PREFIX
    from . import require_positive

    require_positive(("--top-k", args.top_k), ("--batch-size", args.batch_size))
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 (decode in the main process) or more, got {args.workers}.")
    if args.decode == "gpu":
        _check_gpu_decode(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and args.output is None:
        raise InputError(f"{world} processes (torchrun) need --output FILE.jsonl or FILE.csv to write to; "
                         "add it, or run one process.")
    if args.output is not None:
        from ..bulk.records import output_format

        output_format(args.output)  # a bad name is refused before any model is read
    model = args.model
    if model is None:
        model = default_model_path()
        if not os.path.isdir(model):
            raise CheckpointError("no default model is bundled with this installation yet; pass --model with a "
                                  "folder, hub id or weights file, e.g. --model snap-research/efficientformer-l1-300.")
    rank, device = 0, args.device
    if world > 1:
        from ..training.distributed import init_distributed

        context = init_distributed(args.device or "auto")
        rank, device = context.rank, str(context.device)
    if (args.split is not None or args.image_column is not None) and not any(
            item.startswith(PREFIX) for item in args.inputs):
        raise InputError("--split and --image-column choose the rows of hf: inputs, and none was given; add an "
                         "hf:NAME or hf:FOLDER input, or drop them.")
    paths, skipped = expand_inputs(args.inputs or [sample_images_path()], args.split, args.image_column)
    shown = {path: _display_name(path, bundled=not args.inputs) for path in paths}
    failed = 0
    for item, reason in skipped if rank == 0 else ():
        print(f"efficientformer predict: skipped {item}: {reason}", file=sys.stderr)
        failed += 1
    if args.model is None and rank == 0:
        print(f"efficientformer predict: {BUNDLED_NOTE}", file=sys.stderr)
    if not paths:
        print("efficientformer predict: no images to classify", file=sys.stderr)
        return 1
    classifier = ImageClassifier.from_pretrained(model, device=device)
    if args.optimize:
        if classifier.model is None:
            raise InputError("--optimize runs PyTorch checkpoints; an .onnx file runs as it was exported.")
        from ..deploy.optimize import optimize

        classifier.model = optimize(classifier.model, device=classifier.device)
    bars: list = []  # the progress bar, made by the runner once it knows how many images are left

    def progress(total: int):
        bars.append(_progress(total) if rank == 0 else None)
        return bars[-1]

    def write(line: str) -> None:
        if bars and bars[-1] is not None:
            bars[-1].write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def failure(name: str, reason: str) -> None:
        nonlocal failed
        print(f"efficientformer predict: skipped {name}: {reason}", file=sys.stderr)
        failed += 1

    printer = None
    if args.output is None:
        printer = _Printer(args.format, max(len("image"), *(len(name) for name in shown.values())), write)
    try:
        result = predict_paths(classifier, paths, top_k=args.top_k, batch_size=args.batch_size,
                               workers=args.workers, output=args.output, names=shown, progress=progress,
                               on_result=printer.add if printer is not None else None, on_failure=failure,
                               keep=False, draft=args.draft, decode=args.decode)
    finally:
        if printer is not None:
            printer.close()
    if args.output is not None and rank == 0:
        print(f"efficientformer predict: {args.output}: {result.already_done} of {len(paths)} image(s) were there "
              "already, the others done now" + (f" by {world} processes" if world > 1 else ""), file=sys.stderr)
    if failed:
        print(f"efficientformer predict: {failed} input(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0
