"""Labelled image data for training and evaluation.

Every source is turned into the same thing: a dataset whose items are `(image, label)` with `image` a
`uint8` tensor of shape (C, H, W) already resized to the training size (the way the shipped image
processor resizes: Pillow, squashing to `size` x `size`), and `label` an `int` in `0..num_classes-1`.
Random augmentation happens later, on whole batches (see `augment.py`), so loading stays deterministic.

Sources (`load_dataset`):

* an image folder: one sub-folder per class (`root/cat/1.png`, `root/dog/2.jpg`);
  `root/train` and `root/val` (or `validation`/`test`) are used as the splits when present;
* a CSV file of `path,label` rows (an optional header row `path,label`; paths relative to the CSV;
  labels either class indices or class names, not a mix; an empty label, two spellings of one name that
  differ only in spaces, or indices that leave classes without rows are refused before training);
* MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]` and their
  label files), for example Fashion-MNIST from the Debian package `dataset-fashion-mnist`;
* a Hugging Face `datasets` dataset: `hf:NAME` or `hf:NAME:CONFIG` (needs `pip install datasets`);
* `synthetic:CLASSES:COUNT`: COUNT random images in memory, labelled round robin over CLASSES classes, the
  same on every process and run, to measure training speed without reading files (benchmarks/scaling.py).

Bad data gets an `InputError` that names the file: unreadable images (decompression bombs included), labels
out of range, empty folders, fewer than 2 classes to train on. The classes found are printed on stderr.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..preprocessing import hf_datasets
from ..preprocessing.image_io import image_suffixes, open_lazily
from ..preprocessing.resize import usable_cores

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")  # named in
# messages; a folder search takes every extension Pillow decodes (`image_io.image_suffixes`, .jfif included)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SYNTHETIC = "synthetic:"  # the prefix of random in-memory sources (`load_synthetic`)
SYNTHETIC_DISTINCT = 1024  # distinct images of a synthetic source, repeated up to its count
_VAL_FOLDER_NAMES = ("val", "validation", "valid", "test")
_SPLIT_FILE_PREFIX = {"train": "train", "test": "t10k", "val": "t10k", "validation": "t10k", "t10k": "t10k"}


# ------------------------------------------------------------------------------------------- images
def pil_resample(code: int | str) -> int:
    """Pillow's resampling filter from its number (HF `resample`) or name ("bilinear", "bicubic", ...)."""
    from PIL import Image

    names = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
    value = names.get(code.lower()) if isinstance(code, str) else int(code)
    if value is None or value not in range(6):
        raise InputError(f"unknown resampling filter {code!r}; use one of {', '.join(names)}.")
    return Image.Resampling(value)


def pil_to_tensor(image, size: int, channels: int, resample: int = 2) -> torch.Tensor:
    """A Pillow image as a uint8 tensor (channels, size, size), squashed to `size` x `size`.

    Args:
        image: a `PIL.Image.Image` of any mode.
        size: output side in pixels.
        channels: 1 (grayscale "L") or 3 ("RGB"; grayscale images are replicated).
        resample: Pillow filter number (2 bilinear, 3 bicubic).
    """
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), pil_resample(resample))
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_image_file(path: str | os.PathLike, size: int, channels: int, resample: int = 2) -> torch.Tensor:
    """Decode one image file to a uint8 tensor (channels, size, size); `InputError` naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_lazily(path) as image:
            image.load()
            return pil_to_tensor(image, size, channels, resample)
    except InputError as err:  # above the decompression-bomb limit: the message names the file
        raise InputError(f"cannot read image: {err}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove that file.") from None


def check_image_header(path: str | os.PathLike) -> None:
    """Open only the header of `path` (fast) and raise `InputError` naming it if it is no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_lazily(path):
            pass
    except InputError as err:  # above the decompression-bomb limit: the message names the file
        raise InputError(f"cannot read image: {err}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove that file.") from None


# ------------------------------------------------------------------------------------------ datasets
class TensorImageDataset(torch.utils.data.Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W) with int64 labels (N,).

    Batches are taken by indexing (`get_batch`), which is fast enough to keep a GPU busy without
    worker processes; the whole tensor can be moved to the GPU with `.to(device)`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                 source: str = "") -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise InputError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        if labels.shape != (images.shape[0],):
            raise InputError(f"{source or 'dataset'}: {images.shape[0]} images but {labels.numel()} labels.")
        self.images, self.labels = images, labels.long()
        self.class_names = list(class_names)
        self.source = source
        _check_labels(self.labels, len(self.class_names), lambda i: f"{source} item {i}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W) and int64 labels (B,) for `indices` (on the images' device)."""
        indices = indices.to(self.images.device)
        return self.images[indices], self.labels.to(self.images.device)[indices]

    def to(self, device: torch.device | str) -> "TensorImageDataset":
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "TensorImageDataset":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return TensorImageDataset(self.images[indices], self.labels[indices], self.class_names, self.source)


class RepeatedImageDataset(TensorImageDataset):
    """`len(labels)` items cycling through the images held (item i shows image i % len(images)): a large
    synthetic set in the memory of a few images (`load_synthetic`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                 source: str = "") -> None:
        super().__init__(images, labels[:images.shape[0]], class_names, source)  # checks images and classes
        self.labels = labels.long()
        _check_labels(self.labels, len(self.class_names), lambda i: f"{source} item {i}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index % self.images.shape[0]], int(self.labels[index])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = indices.to(self.images.device)
        return self.images[indices % self.images.shape[0]], self.labels.to(self.images.device)[indices]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return TensorImageDataset(self.images[indices % self.images.shape[0]], self.labels[indices],
                                  self.class_names, self.source)


class FileImageDataset(torch.utils.data.Dataset):
    """Image files decoded on demand (in DataLoader workers) to uint8 tensors (C, size, size).

    Args:
        paths: image files.
        labels: class index of every file.
        class_names: names of the classes, index order.
        size: side the images are squashed to.
        channels: 3 (RGB) or 1 (grayscale).
        resample: Pillow filter number used for resizing.
        check: open every file's header now so that a bad file fails before training starts.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], class_names: Sequence[str], size: int,
                 channels: int = 3, resample: int = 2, check: bool = True, source: str = "") -> None:
        if len(paths) != len(labels):
            raise InputError(f"{source}: {len(paths)} files but {len(labels)} labels.")
        if not paths:
            raise InputError(f"{source or 'the dataset'} holds no images; point at a folder or CSV that lists some.")
        self.paths, self.labels = list(paths), torch.as_tensor(list(labels), dtype=torch.long)
        self.class_names, self.size, self.channels, self.resample = list(class_names), size, channels, resample
        self.source = source
        _check_labels(self.labels, len(self.class_names), lambda i: self.paths[i])
        if check:
            for path in self.paths:
                check_image_header(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return read_image_file(self.paths[index], self.size, self.channels, self.resample), int(self.labels[index])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "FileImageDataset":
        keep = [int(i) for i in torch.as_tensor(indices).tolist()]
        return FileImageDataset([self.paths[i] for i in keep], self.labels[keep].tolist(), self.class_names,
                                self.size, self.channels, self.resample, check=False, source=self.source)

    def load_all(self) -> TensorImageDataset:
        """Decode every image now into a `TensorImageDataset` (fast training when the data fits in memory)."""
        images = torch.stack([self[i][0] for i in range(len(self))])
        return TensorImageDataset(images, self.labels.clone(), self.class_names, self.source)


class HFImageDataset(torch.utils.data.Dataset):
    """A Hugging Face `datasets.Dataset` with an image column and an integer label column."""

    def __init__(self, hf_dataset, image_column: str, label_column: str, class_names: Sequence[str], size: int,
                 channels: int = 3, resample: int = 2, source: str = "") -> None:
        for column in (image_column, label_column):
            if column not in hf_dataset.column_names:
                raise InputError(f"{source} has no column {column!r} (columns: {', '.join(hf_dataset.column_names)}); "
                                 "name the right one with --image-column / --label-column.")
        self.data, self.image_column, self.label_column = hf_dataset, image_column, label_column
        self.class_names, self.size, self.channels, self.resample = list(class_names), size, channels, resample
        self.source = source
        self.labels = torch.as_tensor(list(hf_dataset[label_column]), dtype=torch.long)
        _check_labels(self.labels, len(self.class_names), lambda i: f"{source} row {i}")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data[int(index)][self.image_column]
        if isinstance(image, np.ndarray):
            from PIL import Image

            image = Image.fromarray(image)
        return pil_to_tensor(image, self.size, self.channels, self.resample), int(self.labels[index])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "HFImageDataset":
        keep = [int(i) for i in torch.as_tensor(indices).tolist()]
        return HFImageDataset(self.data.select(keep), self.image_column, self.label_column, self.class_names,
                              self.size, self.channels, self.resample, self.source)


def _check_labels(labels: torch.Tensor | Sequence[int], num_classes: int, name_of) -> None:
    """The one range check of class indices (every dataset kind, CSV rows included): refuse the first label
    outside 0..num_classes-1, naming where it is (`name_of(i)` for the i-th label). A list is checked as
    Python integers, so a label too large for int64 is named too."""
    if isinstance(labels, torch.Tensor):
        bad = ((labels < 0) | (labels >= num_classes)).nonzero()
        first = int(bad[0, 0]) if bad.numel() else None
    else:
        first = next((i for i, value in enumerate(labels) if not 0 <= value < num_classes), None)
    if first is not None:
        raise InputError(f"{name_of(first)}: label {int(labels[first])} is out of range; there are {num_classes} "
                         f"classes (0..{num_classes - 1}); fix the label or the class list.")


# ----------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (MNIST format, optionally gzipped) into a numpy array.

    Returns:
        uint8 array (N, H, W) for image files, (N,) for label files.
    Raises:
        InputError: the file is not an unsigned-byte IDX file or is truncated.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise InputError(f"cannot read IDX file {path} ({err}); re-download it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{path} is not an unsigned-byte IDX file (bad magic number); point at MNIST-style "
                         "*-idx3-ubyte / *-idx1-ubyte files.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path} is truncated inside its header; re-download it.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise InputError(f"{path} is truncated: its header promises {count} bytes of data, it holds "
                         f"{len(data) - header}; re-download it.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, prefix: str, kind: str) -> Path:
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz", f"{prefix}-{kind.replace('-idx', '.idx')}",
                 f"{prefix}-{kind.replace('-idx', '.idx')}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} has no {prefix}-{kind}[.gz]; an IDX folder needs the images and labels files "
                     "of the split (train-* for training, t10k-* for test).")


def is_idx_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(p.name.startswith(("train-images", "t10k-images")) for p in folder.iterdir())


def read_idx_split(folder: str | os.PathLike, split: str,
                   class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, Sequence[str]]:
    """(images (N, H, W) uint8, labels (N,), class names) of one split of an IDX folder, checked once for every
    reader (`load_idx`, `efficientformer eval`). The class names default to Fashion-MNIST's when the folder name
    contains "fashion", else the digits."""
    folder = Path(folder)
    prefix = _SPLIT_FILE_PREFIX.get(split)
    if prefix is None:
        raise InputError(f"unknown split {split!r} for IDX files; use 'train' or 'test'.")
    images = read_idx(_idx_file(folder, prefix, "images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, prefix, "labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1:
        raise InputError(f"{folder}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}.")
    if class_names is None:
        class_names = FASHION_MNIST_CLASSES if "fashion" in str(folder.resolve()).lower() else \
            tuple(str(i) for i in range(10))
    return images, labels, class_names


def load_idx(folder: str | os.PathLike, split: str = "train", size: int | None = None, channels: int = 1,
             resample: int = 2, class_names: Sequence[str] | None = None) -> TensorImageDataset:
    """MNIST-style IDX files of one split as a `TensorImageDataset` (uint8, (N, channels, size, size)).

    Args:
        folder: folder with `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and the `t10k-*` pair.
        split: "train" or "test" (also "val").
        size: resize every 28x28 image to `size` x `size` with Pillow (None keeps 28).
        channels: 1 keeps grayscale, 3 replicates it to RGB.
        class_names: names of the 10 classes; Fashion-MNIST's when the folder name contains "fashion",
            else the digits.

    Example:
        >>> ds = load_idx("/usr/share/datasets/fashion-mnist", "test", size=64)  # doctest: +SKIP
        >>> ds.images.shape
        torch.Size([10000, 1, 64, 64])
    """
    folder = Path(folder)
    images, labels, class_names = read_idx_split(folder, split, class_names)
    tensor = torch.from_numpy(images.copy())[:, None]
    if size is not None and size != images.shape[1]:
        from PIL import Image

        out = np.empty((images.shape[0], size, size), dtype=np.uint8)
        filt = pil_resample(resample)
        for i, image in enumerate(images):
            out[i] = np.asarray(Image.fromarray(image).resize((size, size), filt))
        tensor = torch.from_numpy(out)[:, None]
    if channels == 3:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous()
    return TensorImageDataset(tensor, torch.from_numpy(labels.astype(np.int64)), class_names, source=str(folder))


# --------------------------------------------------------------------------------- folders and CSV
def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in image_suffixes() and not path.name.startswith(".")


def _same_but_spaces(names, where) -> None:
    """Refuse two class names that differ only in spaces ("Coffee" and "Coffee "): a typo, not two classes.

    Args:
        names: the raw names.
        where: name -> where it was seen, for the message.
    """
    by_key: dict[str, str] = {}
    for name in names:
        key = " ".join(name.split())
        if key in by_key and by_key[key] != name:
            other = by_key[key]
            raise InputError(f"the labels {other!r} ({where(other)}) and {name!r} ({where(name)}) differ only in "
                             "spaces; write them the same way (or they would train as two classes).")
        by_key[key] = name


def scan_image_folder(root: str | os.PathLike) -> tuple[list[str], list[int], list[str]]:
    """Files, labels and class names of a one-folder-per-class layout (classes in sorted order).

    Raises:
        InputError: the folder is missing, has no class sub-folders, or a class folder holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a folder with one sub-folder of images per class.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders; put the images of each class in root/<class name>/.")
    _same_but_spaces(classes, lambda name: f"folder {root / name}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if _is_image(p))
        if not files:
            raise InputError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}, ...); "
                             "add images or remove the folder.")
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels, classes


def read_csv_labels(path: str | os.PathLike, class_names: Sequence[str] | None = None,
                    num_classes: int | None = None) -> tuple[list[str], list[int], list[str]]:
    """Files, labels and class names from a CSV of `path,label` rows.

    Labels are class indices (then `class_names`, `num_classes` or the largest index + 1 gives the class count,
    and without `class_names` / `num_classes` every index up to the largest must have rows) or class names
    (sorted, unless `class_names` gives the order; spaces around a name are dropped). Relative paths are
    relative to the CSV. The optional header row is `path,label`.

    Raises:
        InputError: a row without two fields, an empty label, indices mixed with names, two names that differ
            only in spaces, a missing file, a label out of range, or classes without rows, naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CSV file {path} does not exist.")
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if not rows and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise InputError(f"{path} line {line_no}: expected 'path,label', got {row!r}.")
            if not row[1].strip():
                raise InputError(f"{path} line {line_no}: the label is empty; give every row a class name or index.")
            rows.append((line_no, row[0].strip(), row[1]))
    if not rows:
        raise InputError(f"{path} lists no images; add 'path,label' rows.")
    is_index = [label.strip().lstrip("-").isdigit() for _, _, label in rows]
    if any(is_index) and not all(is_index):
        index_row = rows[is_index.index(True)]
        name_row = rows[is_index.index(False)]
        hint = " (if line 1 is a header, name its columns path,label)" if name_row[0] == 1 else ""
        raise InputError(f"{path}: line {index_row[0]} has the class index {index_row[2].strip()!r} but line "
                         f"{name_row[0]} the class name {name_row[2].strip()!r}; use indices or names throughout"
                         f"{hint}.")
    if all(is_index):
        values = [int(label) for _, _, label in rows]
        count = len(class_names) if class_names else (num_classes or max(values) + 1)
        names = list(class_names) if class_names else [str(i) for i in range(count)]
        _check_labels(values, count, lambda i: f"{path} line {rows[i][0]}")
        unused = sorted(set(range(count)) - set(values))
        if unused and not class_names and not num_classes:
            listed = ", ".join(map(str, unused[:5])) + (", ..." if len(unused) > 5 else "")
            raise InputError(f"{path}: the labels are class indices up to {count - 1}, but {len(unused)} of those "
                             f"classes have no rows ({listed}); fix the labels that are out of place, or use "
                             "class names.")
        labels = values
    else:
        first_line = {}
        for line_no, _, label in rows:
            first_line.setdefault(label, line_no)
        _same_but_spaces(list(first_line), lambda name: f"line {first_line[name]}")
        found = sorted({label.strip() for _, _, label in rows})
        names = list(class_names) if class_names else found
        index = {name: i for i, name in enumerate(names)}
        labels = []
        for line_no, _, label in rows:
            if label.strip() not in index:
                raise InputError(f"{path} line {line_no}: label {label.strip()!r} is not one of the classes {names}.")
            labels.append(index[label.strip()])
    paths = []
    for line_no, file, _ in rows:
        full = Path(file) if os.path.isabs(file) else path.parent / file
        if not full.is_file():
            hint = " (if line 1 is a header, name its columns path,label)" if line_no == 1 else ""
            raise InputError(f"{path} line {line_no}: image {full} does not exist{hint}.")
        paths.append(str(full))
    return paths, labels, names


# ----------------------------------------------------------------------------------------- dispatch
@dataclass
class DataSpec:
    """How to read images: side after resizing, channels, Pillow filter, and whether to decode all now."""

    size: int = 224
    channels: int = 3
    resample: int = 2
    in_memory: bool = False
    check_files: bool = True  # open every header up front (training); evaluation reports bad files as it goes


def load_dataset(source: str | os.PathLike, split: str = "train", spec: DataSpec | None = None,
                 class_names: Sequence[str] | None = None, image_column: str = "image",
                 label_column: str = "label"):
    """Open a labelled image source as a dataset of (uint8 image (C, H, W), label).

    Args:
        source: image folder, CSV file, IDX folder, `hf:NAME[:CONFIG]` or `synthetic:CLASSES:COUNT`.
        split: "train" or "val"/"test". For a folder with `train/` and `val/` sub-folders, or IDX files, it
            picks the split; a plain class folder or CSV is returned whole for any split.
        spec: size, channels, filter and whether to decode everything into memory.
        class_names: fixes the class order (e.g. the model's `id2label`) instead of deriving it.

    Returns:
        `TensorImageDataset`, `FileImageDataset` or `HFImageDataset`, each with `class_names` and `labels`.

    Raises:
        InputError: naming the missing, empty or unreadable file or folder.
    """
    spec = spec or DataSpec()
    text = os.fspath(source)
    if text.startswith(hf_datasets.PREFIX):
        return _load_hf(text[len(hf_datasets.PREFIX):], split, spec, image_column, label_column)
    if text.startswith(SYNTHETIC):
        return load_synthetic(text, spec, class_names)
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"data source {path} does not exist; give an image folder, a CSV file, an IDX folder "
                         "or hf:NAME.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError(f"{path} is a file but not a .csv; give a CSV of path,label rows or a folder.")
        paths, labels, names = read_csv_labels(path, class_names)
        _check_found_classes(names, labels, str(path), split, class_names)
        dataset = FileImageDataset(paths, labels, names, spec.size, spec.channels, spec.resample,
                                   check=spec.check_files, source=str(path))
    elif is_idx_folder(path):
        return load_idx(path, split, spec.size, spec.channels, spec.resample, class_names)
    else:
        sub = _split_folder(path, split)
        paths, labels, names = scan_image_folder(sub)
        if class_names is not None:
            names = _reorder(names, class_names, sub)
            labels = [list(class_names).index(scan) for scan in (_name_of(p, sub) for p in paths)]
        _check_found_classes(names, labels, str(sub), split, class_names)
        dataset = FileImageDataset(paths, labels, names, spec.size, spec.channels, spec.resample,
                                   check=spec.check_files, source=str(sub))
    return dataset.load_all() if spec.in_memory else dataset


def load_synthetic(source: str, spec: DataSpec, class_names: Sequence[str] | None = None) -> "RepeatedImageDataset":
    """`synthetic:CLASSES:COUNT`: COUNT uint8 images of `spec`'s size, image i of class i % CLASSES: a data
    source that costs no decoding, for measuring the training loop alone. They repeat `SYNTHETIC_DISTINCT`
    uniform random ones (seed 0, so every process holds the same set), held once: a run of many GPUs needs
    a set as large as all its steps (no epoch end inside the timing), which would cost each process
    gigabytes and seconds per gigabyte to draw.

    Raises:
        InputError: not two whole numbers, fewer than 2 classes or no images.
    """
    fields = source[len(SYNTHETIC):].split(":")
    if len(fields) != 2 or not all(f.isdigit() for f in fields) or int(fields[0]) < 2 or int(fields[1]) < 1:
        raise InputError(f"{source!r} is not a synthetic source; write synthetic:CLASSES:COUNT with at least 2 "
                         "classes and 1 image, e.g. synthetic:1000:8192.")
    classes, count = int(fields[0]), int(fields[1])
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(classes)]
    distinct = torch.randint(0, 256, (min(count, SYNTHETIC_DISTINCT), spec.channels, spec.size, spec.size),
                             dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return RepeatedImageDataset(distinct, torch.arange(count) % classes, names, source)


def _check_found_classes(names: list[str], labels: list[int], source: str, split: str,
                         given: Sequence[str] | None) -> None:
    """Before any decoding: a training set needs 2 classes; the classes found are shown (stderr, rank 0)."""
    if given is None and split == "train" and len(names) < 2:
        raise InputError(f"{source} has {len(names)} class ({names}); a classifier needs at least 2, so give the "
                         "images of each class their own folder or label.")
    if given is None and int(os.environ.get("RANK", "0")) == 0:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
        shown = ", ".join(f"{name!r} ({int(n)})" for name, n in zip(names[:20], counts))
        more = f", and {len(names) - 20} more" if len(names) > 20 else ""
        print(f"{len(names)} classes in {source}: {shown}{more}", file=sys.stderr)


def _name_of(file: str, root: Path) -> str:
    return Path(file).relative_to(root).parts[0]


def _reorder(found: list[str], wanted: Sequence[str], root: Path) -> list[str]:
    missing = sorted(set(found) - set(wanted))
    if missing:
        raise InputError(f"{root} has class folders {missing} that the model does not know ({list(wanted)}).")
    return list(wanted)


def _split_folder(path: Path, split: str) -> Path:
    if split == "train":
        names: tuple[str, ...] = ("train",)
    elif split in _VAL_FOLDER_NAMES:  # the exact name first, then the other validation names
        names = (split,) + tuple(n for n in _VAL_FOLDER_NAMES if n != split)
    else:
        names = (split,)
    for name in names:
        if (path / name).is_dir() and any((path / name).iterdir()):
            if (path / "train").is_dir():
                return path / name
    return path


def has_split(source: str | os.PathLike, split: str) -> bool:
    """Whether `source` has its own `split` (an IDX test pair, or a val/test sub-folder beside train/)."""
    text = os.fspath(source)
    if text.startswith(hf_datasets.PREFIX):
        return True
    path = Path(text)
    if is_idx_folder(path):
        return True
    return path.is_dir() and (path / "train").is_dir() and _split_folder(path, split) != path


def _load_hf(name: str, split: str, spec: DataSpec, image_column: str, label_column: str):
    # the split asked for, else a validation split by any of its usual names (hub names, save_to_disk folders)
    data, split = hf_datasets.open_split(name, (split, "validation", "test", "val"),
                                         "training on a Hugging Face dataset",
                                         "pick one with --split (eval), or give training data a train and a "
                                         "validation or test split")
    feature = data.features.get(label_column)
    names = list(getattr(feature, "names", None) or [str(i) for i in range(int(max(data[label_column])) + 1)])
    dataset = HFImageDataset(data, image_column, label_column, names, spec.size, spec.channels, spec.resample,
                             source=f"hf:{name}[{split}]")
    if spec.in_memory:
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return TensorImageDataset(images, dataset.labels.clone(), names, dataset.source)
    return dataset


def split_dataset(dataset, val_fraction: float, seed: int = 0):
    """Split a dataset at random (seeded, stratified by nothing) into (train, val) subsets."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction={val_fraction} must be between 0 and 1.")
    n = len(dataset)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InputError(f"cannot hold out {n_val} of {n} images for validation; add data or lower --val-split.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[n_val:].sort().values), dataset.subset(order[:n_val].sort().values)


# ------------------------------------------------------------------------------------------ batching
def epoch_batches(num_items: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                  shuffle: bool = True, drop_last: bool = True) -> list[torch.Tensor]:
    """The index batches of one epoch for one process: the same order for the same (seed, epoch).

    With `world_size` processes each global step takes `batch_size * world_size` items and this process
    gets its own contiguous `batch_size` slice of them, so a resumed run sees the same data in the same order.
    """
    if shuffle:
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(num_items)
    step = batch_size * world_size
    full = num_items // step
    batches = [order[s * step + rank * batch_size: s * step + (rank + 1) * batch_size] for s in range(full)]
    if not drop_last:
        rest = order[full * step:]
        if rest.numel():
            batches.append(rest[rank::world_size])
    return batches


def iterate_batches(dataset, batches: Sequence[torch.Tensor], device: torch.device, workers: int = 0):
    """Yield (uint8 images (B, C, H, W), int64 labels (B,)) on `device` for each index batch.

    In-memory datasets are indexed directly; file datasets are decoded by a DataLoader with `workers`
    processes, and a decoding error is re-raised as one `InputError` naming the file.
    """
    if isinstance(dataset, TensorImageDataset):
        if batches and dataset.images.device.type != "cpu":  # one copy of all indices, not one per batch
            sizes = [len(b) for b in batches]
            batches = list(torch.cat(list(batches)).to(dataset.images.device).split(sizes))
        for indices in batches:
            images, labels = dataset.get_batch(indices)
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        return
    workers = min(workers, len(batches), usable_cores())  # more processes than cores or batches only cost
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[b.tolist() for b in batches],
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False,
                                         generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    iterator = iter(loader)
    while True:
        try:
            images, labels = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # a worker's InputError arrives with the worker's traceback in its message
            found = [line for line in str(err).splitlines() if "cannot read image" in line]
            if found:
                raise InputError(found[-1].split("InputError: ", 1)[-1]) from None
            raise
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
