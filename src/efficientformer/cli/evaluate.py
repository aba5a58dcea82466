"""Measure a classifier's top-1 / top-5 accuracy on labelled images and draw its confusion matrix.

DATA is an image folder (one sub-folder per class; DATA/val or DATA/test is used when DATA/train exists),
a CSV of path,label rows, a folder of MNIST-style IDX files (the test split by default), or hf:NAME.
Images go through the model's own preprocessing (its preprocessor_config.json), exactly as in
`efficientformer predict`. Class folders are matched to the model's labels by name (or by index when the
names are the indices 0..K-1).

examples:
  efficientformer eval /usr/share/datasets/fashion-mnist            # the bundled Fashion-MNIST model
  efficientformer eval flowers/val --model runs/flowers/model --confusion flowers-confusion.png
"""

from __future__ import annotations

import argparse
import sys

HELP = "top-1/top-5 accuracy and a confusion-matrix picture on a labelled dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="image folder, CSV file, IDX folder or hf:NAME[:CONFIG]")
    parser.add_argument("--model", "-m", default=None,
                        help="checkpoint folder, hub id or weights file (default: the bundled model)")
    parser.add_argument("--split", default="test", help="split of IDX / hf / train+val folders (default: test)")
    parser.add_argument("--batch-size", "-b", type=int, default=64)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--confusion", default="confusion_matrix.png", metavar="PNG",
                        help="where to write the confusion-matrix picture ('' for none)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")


def _items(source: str, split: str):
    """(list of image sources for the processor, labels, class names)."""
    import numpy as np

    from ..training import data as D

    if not source.startswith(D.hf_datasets.PREFIX) and D.is_idx_folder(source):
        images, labels, names = D.read_idx_split(source, split)
        return list(images), labels.astype(np.int64), list(names)
    # size unused (we read the raw images); unreadable files are reported one by one while evaluating
    dataset = D.load_dataset(source, split, D.DataSpec(size=32, check_files=False))
    if isinstance(dataset, D.FileImageDataset):
        return list(dataset.paths), dataset.labels.numpy(), dataset.class_names
    if isinstance(dataset, D.HFImageDataset):
        return [dataset.data[i][dataset.image_column] for i in range(len(dataset))], dataset.labels.numpy(), \
            dataset.class_names
    raise TypeError(f"unsupported dataset {type(dataset).__name__}")


def _label_map(data_names: list[str], model_labels: dict[int, str]):
    from ..errors import InputError

    by_name = {name: i for i, name in model_labels.items()}
    if all(name in by_name for name in data_names):
        return [by_name[name] for name in data_names]
    if all(name.isdigit() and int(name) in model_labels for name in data_names):
        return [int(name) for name in data_names]
    unknown = [n for n in data_names if n not in by_name][:5]
    raise InputError(f"the data's classes {unknown} are not among the model's labels "
                     f"({list(model_labels.values())[:10]}...); name the class folders as the model's labels.")


def run(args: argparse.Namespace) -> int:
    import os

    import numpy as np
    import torch

    from ..bundled import default_model_path
    from ..classifier import ImageClassifier
    from ..errors import CheckpointError, InputError
    from ..training.evaluation import Tally
    from ..training.metrics import draw_confusion_matrix
    from . import require_positive

    model = args.model or default_model_path()
    if args.model is None and not os.path.isdir(model):
        raise CheckpointError("no default model is bundled with this installation; pass --model.")
    require_positive(("--batch-size", args.batch_size))
    images, labels, names = _items(args.data, args.split)
    if args.limit is not None:
        images, labels = images[:args.limit], labels[:args.limit]
    if not len(images):
        raise InputError(f"{args.data} holds no images to evaluate.")
    classifier = ImageClassifier.from_pretrained(model, device=args.device)
    model_labels = classifier.labels
    to_model = np.asarray(_label_map(names, model_labels))
    targets = torch.from_numpy(to_model[np.asarray(labels)])
    num_classes = len(model_labels)
    tally = Tally(num_classes, getattr(classifier, "device", "cpu"))
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(images), file=sys.stderr, unit="img", desc="evaluating")
    except ImportError:
        pass
    skipped = 0
    for start in range(0, len(images), args.batch_size):
        chunk, chunk_targets = images[start:start + args.batch_size], targets[start:start + args.batch_size]
        try:
            tally.add(classifier.logits(chunk), chunk_targets)
        except InputError:
            # one unreadable image (truncated, not an image, a decompression bomb) must not lose its batch:
            # score the batch image by image, report each bad one, and go on as `predict` does
            for image, target in zip(chunk, chunk_targets):
                try:
                    tally.add(classifier.logits([image]), target[None])
                except InputError as err:
                    skipped += 1
                    print(f"skipped: {err}", file=sys.stderr)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if skipped == len(images):
        raise InputError(f"none of the {len(images)} images of {args.data} could be read; see the messages above.")
    result = tally.result()
    n, acc1, acc5, matrix = result.count, result.top1, result.top5, result.confusion
    print(f"model: {model}")
    print(f"data:  {args.data} ({n} images)")
    print(f"top-1: {acc1:.2f}%")
    print(f"top-5: {acc5:.2f}%")
    label_names = [model_labels[i] for i in range(num_classes)]
    totals = matrix.sum(1)
    print("per class (top-1):")
    for i, name in enumerate(label_names):
        if totals[i]:
            print(f"  {name:<20} {100.0 * matrix[i, i] / totals[i]:6.2f}%  ({int(totals[i])} images)")
    if args.confusion:
        draw_confusion_matrix(matrix, label_names, args.confusion, title=f"top-1 {acc1:.2f}% on {n} images")
        print(f"confusion matrix: {args.confusion}")
    if args.json:
        from ..fileio import write_json  # atomic: a kill never leaves half a JSON file

        write_json(args.json, {"model": str(model), "data": args.data, "images": n, "top1": acc1, "top5": acc5,
                               "confusion": matrix.tolist(), "labels": label_names, "skipped": skipped})
    if skipped:
        print(f"{skipped} of {len(images)} images could not be read and were left out (listed on stderr).",
              file=sys.stderr)
        return 1
    return 0
