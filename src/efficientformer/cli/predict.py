"""Classify images with an EfficientFormer checkpoint and print the top classes of each.

Inputs are image files, folders (searched recursively for image files) and glob patterns. Files that
cannot be read as images are reported on stderr and skipped; the exit code is 1 when some were, 0
otherwise. Results are printed batch by batch, so a failure later on loses nothing already printed.

examples:
  efficientformer predict                      # the bundled Fashion-MNIST model on the bundled sample images
  efficientformer predict cat.jpg --model snap-research/efficientformer-l1-300
  efficientformer predict photos/ "more/*.png" --model efficientformer_l1_300d.pth --top-k 3
  efficientformer predict photos/ --model my-finetuned-folder --format csv > predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

from ..bundled import default_model_path, sample_images_path

HELP = "classify images (files, folders, globs) and print the top classes"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
PROGRESS_MIN_IMAGES = 64  # below this, no progress bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="IMAGE",
                        help="image files, folders or glob patterns (default: the sample images bundled with the "
                             "package, Fashion-MNIST test images for the bundled model)")
    parser.add_argument("--model", "-m", default=None,
                        help="checkpoint: folder, hub id or weights file in the transformers, timm or original "
                             "layout (default: the model bundled with the package)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument("--batch-size", "-b", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table",
                        help="output format (default: table)")


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths in order, [(input, reason)] for inputs that match nothing)."""
    paths: list[str] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(item) for name in names
                           if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                missing.append((item, "folder holds no image files"))
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                missing.append((item, "pattern matches no files"))
            paths.extend(found)
        else:
            missing.append((item, "no such file or folder"))
    unique = list(dict.fromkeys(paths))
    return unique, missing


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
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        return None
    return tqdm(total=total, file=sys.stderr, unit="img", desc="predicting")


def run(args: argparse.Namespace) -> int:
    from ..classifier import ImageClassifier
    from ..image_io import open_image
    from ..errors import CheckpointError, InputError

    if args.top_k < 1 or args.batch_size < 1:
        raise InputError(f"--top-k and --batch-size must be positive, got {args.top_k} and {args.batch_size}.")
    model = args.model
    if model is None:
        model = default_model_path()
        if not os.path.isdir(model):
            raise CheckpointError("no default model is bundled with this installation yet; pass --model with a "
                                  "folder, hub id or weights file, e.g. --model snap-research/efficientformer-l1-300.")
    paths, missing = expand_inputs(args.inputs or [sample_images_path()])
    shown = {path: _display_name(path, bundled=not args.inputs) for path in paths}
    failed = 0
    for item, reason in missing:
        print(f"efficientformer predict: skipped {item}: {reason}", file=sys.stderr)
        failed += 1
    if not paths:
        print("efficientformer predict: no images to classify", file=sys.stderr)
        return 1
    classifier = ImageClassifier.from_pretrained(model, device=args.device)
    bar = _progress(len(paths))

    def write(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    printer = _Printer(args.format, max(len("image"), *(len(name) for name in shown.values())), write)
    try:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            opened, names = [], []
            for path in chunk:
                try:
                    opened.append(open_image(path))
                    names.append(path)
                except InputError as err:
                    print(f"efficientformer predict: skipped: {err}", file=sys.stderr)
                    failed += 1
            if opened:
                try:
                    ranked = classifier.rank(classifier.logits(opened), args.top_k)
                except (InputError, ValueError, RuntimeError) as err:
                    print(f"efficientformer predict: batch of {len(opened)} images from {names[0]} failed: {err}",
                          file=sys.stderr)
                    failed += len(opened)
                else:
                    for path, predictions in zip(names, ranked):
                        printer.add(shown[path], predictions)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        printer.close()
    if failed:
        print(f"efficientformer predict: {failed} input(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0
