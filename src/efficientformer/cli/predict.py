"""Classify images with an EfficientFormer checkpoint and print the top classes of each.

Inputs are image files, folders and glob patterns. A file named on the command line is decoded whatever
its name; folders are searched recursively (symbolic links followed, each real folder and file taken once,
so a link loop classifies nothing twice) for files with an extension Pillow decodes (`image_suffixes()`:
.jpg, .jfif, .png, .webp, .tif, ...); hidden entries (names starting with ".") are not searched, as a shell
glob skips them. A glob's matches count as if named on the command line (a matched folder is searched,
except under "**", which lists the folder's files itself).

Every input that is not classified is reported on stderr with the reason: a file with another extension
(or none) found in a folder, a folder that cannot be read, a broken link, a file that is not an image,
is truncated, or is larger than Pillow's decompression-bomb limit. The exit code is then 1, else 0.
Results are printed batch by batch, so a failure later on loses nothing already printed.

examples:
  efficientformer predict                      # the bundled Fashion-MNIST model on the bundled sample images
  efficientformer predict cat.jpg --model snap-research/efficientformer-l1-300
  efficientformer predict photos/ "more/*.png" --model efficientformer_l1_300d.pth --top-k 3
  efficientformer predict photos/ --model my-finetuned-folder --format csv > predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import errno
import glob
import json
import os
import sys

from ..bundled import default_model_path, sample_images_path

HELP = "classify images (files, folders, globs) and print the top classes"

PROGRESS_MIN_IMAGES = 64  # below this, no progress bar
BUNDLED_NOTE = ("the bundled demo model knows 10 Fashion-MNIST clothing classes (96x96 grayscale images), so it "
                "names any photo after clothing; for the 1000 ImageNet classes pass --model "
                "snap-research/efficientformer-l1-300 (or another ImageNet checkpoint)")


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
    """(image paths in order, each real file once; [(input or path, reason)] for everything skipped).

    Files named directly (or matched by a glob) are kept whatever their extension; folders give their image
    files in sorted order and report their other files, unreadable sub-folders and broken links.
    """
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen_files: set = set()
    seen_dirs: set = set()

    def add_file(path: str) -> None:
        key = _identity(path)
        if key not in seen_files:
            seen_files.add(key)
            paths.append(path)

    def add_folder(folder: str) -> None:
        found = _search_folder(folder, seen_dirs, skipped)
        if found is not None and not found:
            skipped.append((folder, "folder holds no image files"))
        for path in sorted(found or ()):
            add_file(path)

    for item in inputs:
        if os.path.isdir(item):
            add_folder(item)
        elif os.path.lexists(item):
            add_file(item)
        elif glob.has_magic(item):
            # shallowest first: a file that "**" also reaches through a link loop is shown by its shortest path
            matches = sorted(glob.glob(item, recursive=True), key=lambda m: (m.count(os.sep), m))
            matched, known = False, {}
            for match in matches:
                if os.path.isdir(match):
                    if "**" not in item:  # "**" lists the folder's files itself
                        add_folder(match)
                        matched = True
                elif not _past_link_loop(match, known):
                    add_file(match)  # once, even when an earlier input named it already
                    matched = True
            if not matched:
                skipped.append((item, "pattern matches no files"))
        else:
            skipped.append((item, "no such file or folder"))
    return paths, skipped


def _past_link_loop(path: str, known: dict) -> bool:
    """Whether `path` goes through one folder twice: "**" follows folder links, so a link loop gives every file
    under it again and again (up to the system's limit of links); glob also returned its shortest path.
    `known` caches the identity of each folder prefix."""
    pieces = path.split(os.sep)
    seen = set()
    for i in range(1, len(pieces)):
        prefix = os.sep.join(pieces[:i]) or os.sep
        if prefix not in known:
            try:
                known[prefix] = _identity(prefix, strict=True)
            except OSError as err:
                known[prefix] = "loop" if err.errno == errno.ELOOP else None
        key = known[prefix]
        if key == "loop" or (key is not None and key in seen):
            return True
        seen.add(key)
    return False


def _identity(path: str, strict: bool = False):
    """What makes two paths one file: device and inode (links, `..`, link loops), else the real path."""
    try:
        info = os.stat(path)
        return info.st_dev, info.st_ino
    except OSError:
        if strict:
            raise
        return os.path.realpath(path)


def _search_folder(folder: str, seen_dirs: set, skipped: list) -> list[str] | None:
    """Image files under `folder` (links followed, each real folder once; None when it was searched already),
    appending everything else found to `skipped`."""
    from ..preprocessing.image_io import image_suffixes

    found: list[str] = []
    stack, first = [folder], True
    while stack:
        current = stack.pop()
        key = _identity(current)
        if key in seen_dirs:  # a link back up the tree, or a folder named twice
            if first:
                return None
            continue
        seen_dirs.add(key)
        first = False
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            skipped.append((current, f"folder cannot be read ({err.strerror or err})"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError as err:  # a link loop (a -> a) or a folder we may not look into
                skipped.append((entry.path, f"cannot be read ({err.strerror or err})"))
                continue
            if is_dir:
                subfolders.append(entry.path)
            elif is_file:
                if os.path.splitext(entry.name)[1].lower() in image_suffixes():
                    found.append(entry.path)
                else:
                    skipped.append((entry.path, "not an image file extension (name the file itself to try it)"))
            elif entry.is_symlink():
                skipped.append((entry.path, "broken symbolic link"))
            else:
                skipped.append((entry.path, "not a regular file"))
        stack.extend(reversed(subfolders))
    return found


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
    from ..preprocessing.image_io import open_image
    from ..errors import CheckpointError, InputError
    from . import require_positive

    require_positive(("--top-k", args.top_k), ("--batch-size", args.batch_size))
    model = args.model
    if model is None:
        model = default_model_path()
        if not os.path.isdir(model):
            raise CheckpointError("no default model is bundled with this installation yet; pass --model with a "
                                  "folder, hub id or weights file, e.g. --model snap-research/efficientformer-l1-300.")
    paths, skipped = expand_inputs(args.inputs or [sample_images_path()])
    shown = {path: _display_name(path, bundled=not args.inputs) for path in paths}
    failed = 0
    for item, reason in skipped:
        print(f"efficientformer predict: skipped {item}: {reason}", file=sys.stderr)
        failed += 1
    if args.model is None:
        print(f"efficientformer predict: {BUNDLED_NOTE}", file=sys.stderr)
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
                except InputError:  # one image the processor refuses: classify the others one by one
                    ranked = []
                    for path, image in zip(names, opened):
                        try:
                            ranked.append(classifier.rank(classifier.logits([image]), args.top_k)[0])
                        except InputError as err:
                            print(f"efficientformer predict: skipped {path}: {err}", file=sys.stderr)
                            failed += 1
                            ranked.append(None)
                except (ValueError, RuntimeError) as err:
                    print(f"efficientformer predict: batch of {len(opened)} images from {names[0]} failed: {err}",
                          file=sys.stderr)
                    failed += len(opened)
                    ranked = []
                for path, predictions in zip(names, ranked):
                    if predictions is not None:
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
