"""Images inside Hugging Face `datasets` datasets, named "hf:SOURCE/SPLIT/ROW" like files.

Bulk prediction takes `hf:SOURCE` as it takes a folder (`bulk.sources`): every row of one split becomes an
input named `hf:SOURCE/SPLIT/ROW` (ROW counts from 0), and those names go through the pipeline as file paths
and archive members do (worker processes decode by name, records, resuming, torchrun sharding). SOURCE is
spelled as training spells it (`training.data`): a dataset of the Hugging Face Hub, `NAME` or `NAME:CONFIG`,
opened by `datasets.load_dataset` (from the local cache when it is there; offline with HF_HUB_OFFLINE=1), or
a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`hf:path/to/folder`, recognized by
its state.json / dataset_dict.json and opened by `datasets.load_from_disk`; any other existing folder goes to
`load_dataset`, which reads folders of data files). A saved single `Dataset` is one split, named after the
split it was taken from, else "train" (what `datasets` calls data without splits). Both are memory-mapped
Arrow files, so each process opens a dataset once (`_open`; a saved folder again when its marker file
changes) and reading a row is a slice of those files.

The image of a row is in its split's first column with the `datasets.Image` feature, else a column named
"image" or "img", else the only column; another one is picked with `--image-column` and is then part of each
name, `hf:SOURCE/SPLIT/ROW#COLUMN`, so that worker processes and reruns read the same column. Values are
taken as stored, without `datasets`' decoding: encoded bytes (an Image feature, a binary column) are decoded
by `image_io.open_image` as a file's bytes are (EXIF orientation, the size limit, `--draft`, and GPU decoding
of JPEGs, which reads them by name like a file), arrays (Array2D/3D, nested lists) as numpy images; anything
else (text, numbers, an empty value) fails that input with the reason, as a corrupt file does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

from ..errors import InputError, require

PREFIX = "hf:"
UNSPLIT = "train"  # the split name of a saved single Dataset that names none (datasets' own default)
NAMED_COLUMNS = ("image", "img")  # taken when no column has the Image feature
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # written by Dataset / DatasetDict.save_to_disk
_ROW = re.compile(r"(?P<source>.+)/(?P<split>[^/#]+)/(?P<row>\d+)(?:#(?P<column>.+))?")
_PREDICTING = "predicting over a Hugging Face dataset"


@dataclass(frozen=True)
class Row:
    """The parts of an "hf:SOURCE/SPLIT/ROW[#COLUMN]" name (column None: the split's default image column)."""

    source: str
    split: str
    index: int
    column: str | None


def is_source(item: str) -> bool:
    """Whether a command-line input names a dataset or a row of one (`hf:...`) rather than a file."""
    return item.startswith(PREFIX) and len(item) > len(PREFIX)


def parse_row(name: str) -> Row | None:
    """The parts of a row's name, or None for any other name (a whole dataset, `hf:SOURCE`, included: an
    existing folder is always a source, even when its path ends like a row's name)."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX):]
    match = _ROW.fullmatch(rest)
    if match is None or os.path.isdir(rest):
        return None
    return Row(match["source"], match["split"], int(match["row"]), match["column"])


def row_name(source: str, split: str, index: int, column: str | None = None) -> str:
    """The input name of row `index` of `split` (with `#column` when it is not the split's default column)."""
    return f"{PREFIX}{source}/{split}/{index}" + (f"#{column}" if column else "")


# ------------------------------------------------------------------------------------------ opening
def _saved_state(source: str) -> int | None:
    """The modification time of a saved folder's marker file (None for anything else): part of the cache keys,
    so a folder saved again is opened again."""
    for marker in _SAVED_MARKERS:
        try:
            return os.stat(os.path.join(source, marker)).st_mtime_ns
        except OSError:
            continue
    return None


def open_dataset(source: str, purpose: str = _PREDICTING):
    """The `datasets.Dataset` or `DatasetDict` that `source` (without "hf:") names, with all its splits.

    Raises:
        MissingDependencyError: `datasets` is not installed.
        InputError: no such dataset on the Hub or in the local cache, a bad configuration name, or a saved
            folder that cannot be read.
    """
    require("datasets", "datasets", purpose)
    return _open(source, _saved_state(source))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@lru_cache(maxsize=8)
def _open(source: str, saved: int | None):
    import datasets

    if saved is not None:
        try:
            return datasets.load_from_disk(source)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"hf:{source} is a folder written by save_to_disk but cannot be read "
                             f"({_first_line(err)}); save the dataset again.") from None
    repo, config = (source, "") if os.path.isdir(source) else source.partition(":")[::2]
    try:
        return datasets.load_dataset(repo, config or None)
    except (FileNotFoundError, ConnectionError) as err:  # DatasetNotFoundError, and the Hub offline
        raise InputError(f"hf:{source} is neither a dataset in the local cache nor one the Hugging Face Hub gives "
                         f"({_first_line(err)}); check the name (hf:NAME or hf:NAME:CONFIG), load it once online "
                         "(or point HF_DATASETS_CACHE at the cache that holds it), or give the folder "
                         "save_to_disk wrote.") from None
    except ValueError as err:  # an unknown configuration, or a dataset with several and none named
        raise InputError(f"hf:{source} cannot be loaded ({_first_line(err)}); name the configuration as "
                         "hf:NAME:CONFIG.") from None


def open_split(source: str, wanted: Sequence[str] | None, purpose: str = _PREDICTING,
               hint: str = "pick one with --split") -> tuple[Any, str]:
    """(the `datasets.Dataset` of a split, the split's name): the first of the `wanted` splits that `source`
    has; `wanted` None takes its only split, else "test". Training and prediction both open datasets here.

    Raises:
        InputError: none of them is there (naming the splits it has), or what `open_dataset` raises.
        MissingDependencyError: `datasets` is not installed.
    """
    data = open_dataset(source, purpose)
    splits = dict(data) if isinstance(data, dict) else {str(data.split or UNSPLIT): data}
    if wanted is None:
        wanted = list(splits) if len(splits) == 1 else ["test"]
    for name in wanted:
        if name in splits:
            return splits[name], name
    raise InputError(f"hf:{source} has no split {wanted[0]!r} (its splits: {', '.join(splits)}); {hint}.")


# ------------------------------------------------------------------------------------------ columns
def default_column(dataset) -> str | None:
    """The column a split's images are taken from unless one is named: the first with the Image feature,
    else one named "image" or "img", else the only column; None when there is no such column."""
    import datasets

    columns = list(dataset.column_names)
    found = [c for c in columns if isinstance(dataset.features[c], datasets.Image)]
    if found:
        return found[0]
    named = [c for c in NAMED_COLUMNS if c in columns]
    if named:
        return named[0]
    return columns[0] if len(columns) == 1 else None


def image_column(dataset, wanted: str | None, where: str, hint: str = "name it with --image-column") -> str:
    """`wanted`, checked against the columns of `dataset`, or its `default_column`.

    Raises:
        InputError: no such column, or no image column to be found (naming the columns either way).
    """
    columns = list(dataset.column_names)
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{where} has no column {wanted!r} (its columns: {', '.join(columns)}); {hint}.")
        return wanted
    found = default_column(dataset)
    if found is None:
        raise InputError(f"{where} has no image column (no Image feature, none named image or img; its columns: "
                         f"{', '.join(columns) or 'none'}); {hint}.")
    return found


def row_names(source: str, split: str | None = None, column: str | None = None) -> list[str]:
    """The input name of every row of one split of `source` (without "hf:"), in row order; `split` None as
    for `open_split`, `column` None the split's `default_column`.

    Raises:
        InputError: no such dataset, split or column (before any image is decoded).
        MissingDependencyError: `datasets` is not installed.
    """
    source = source.rstrip("/") or source
    dataset, found = open_split(source, None if split is None else [split])
    chosen = image_column(dataset, column, f"split {found!r} of hf:{source}")
    named = None if chosen == default_column(dataset) else chosen
    return [row_name(source, found, index, named) for index in range(len(dataset))]


# ------------------------------------------------------------------------------------------ rows
def _leaf_dtype(feature) -> Any:
    """The numpy dtype of an array feature's values (Array2D/3D, nested List / Sequence of Value), else None:
    Arrow gives the values back as Python integers, which would lose uint16's meaning."""
    import numpy as np

    while feature is not None:
        inner = getattr(feature, "feature", None)
        if inner is None:
            try:
                return np.dtype(getattr(feature, "dtype", None))
            except TypeError:
                return None
        feature = inner
    return None


@lru_cache(maxsize=8)
def _view(source: str, saved: int | None, split: str, column: str | None):
    """(the split's image column as raw Arrow storage, the column's name, its array dtype), kept per process."""
    dataset, _ = open_split(source, [split])
    chosen = image_column(dataset, column, f"split {split!r} of hf:{source}")
    return dataset.select_columns([chosen]).with_format("arrow"), chosen, _leaf_dtype(dataset.features[chosen])


def read(name: str):
    """The image of the row `name` names, as `stored_image` gives it. `image_io.open_image` calls it for such
    names (and `image_io.row_image` turns it into what a file decodes to).

    Raises:
        InputError: no such dataset, split, column or row, or a value that is not an image.
    """
    row = parse_row(name)
    view, column, dtype = _view(row.source, _saved_state(row.source), row.split, row.column)
    if row.index >= len(view):
        raise InputError(f"{name}: split {row.split!r} of hf:{row.source} has {len(view)} rows, so no row "
                         f"{row.index}; the dataset changed since the name was made, so predict over it again.")
    return stored_image(view[row.index][column][0].as_py(), name, column, dtype)


def stored_image(value: Any, name: str, column: str, dtype: Any = None):
    """One stored value of an image column: encoded bytes (to decode as a file's), a numpy array of pixels
    (H, W), (H, W, C) or (C, H, W), or a PIL image (a file only `datasets` can fetch). Decoding is
    `image_io.row_image`'s.

    Raises:
        InputError: the value is empty or not an image (text, a number, a list that is no 2-D or 3-D array).
    """
    import numpy as np

    if isinstance(value, dict) and set(value) <= {"bytes", "path"}:  # the Image feature's storage
        if value.get("bytes"):
            return value["bytes"]
        path = value.get("path")
        if path and os.path.isfile(path):  # an image kept as a local file's path
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except OSError as err:
                raise InputError(f"{name}: its image file {path} cannot be read ({err.strerror}); check the file."
                                 ) from None
        if path:  # a remote or archived file: datasets knows how to fetch it
            import datasets

            try:
                return datasets.Image().decode_example(value)
            except Exception as err:  # noqa: BLE001 - whatever fetching fails with: this row fails
                raise InputError(f"{name}: its image {path} cannot be fetched ({_first_line(err)}); check the "
                                 "dataset.") from None
        raise InputError(f"{name} has no image: its {column!r} value is empty.")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return _array_image(value, name, column, dtype, np)
    kind = ("no value" if value is None else "text" if isinstance(value, str)
            else f"the value {value!r:.40} ({type(value).__name__})")
    raise InputError(f"{name} is not an image: its column {column!r} holds {kind}; name the column that holds the "
                     "images with --image-column.")


def _array_image(value: list, name: str, column: str, dtype: Any, np):
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} is not an image: its column {column!r} holds a list that is no array of pixel "
                         "values; name the image column with --image-column.") from None
    if array.ndim not in (2, 3):
        raise InputError(f"{name} is not an image: its column {column!r} holds an array of shape {array.shape}; "
                         "an image is (H, W), (H, W, C) or (C, H, W).")
    return array


# ------------------------------------------------------------------------------------------ objects
def is_dataset(obj: Any) -> bool:
    """Whether `obj` is a `datasets` object (Dataset, DatasetDict, IterableDataset), without importing it."""
    return (type(obj).__module__ or "").split(".")[0] == "datasets" and hasattr(obj, "column_names")


def dataset_images(dataset, batch_size: int) -> Iterator[list]:
    """The images of a `datasets.Dataset` object, `batch_size` rows at a time, in row order, as
    [(name, `stored_image` value)]: `ImageClassifier.predict` decodes them with `image_io.row_image`, as rows
    named by `row_names` are.

    Raises:
        InputError: a DatasetDict or a streaming dataset, no rows, no image column, a row that is no image.
    """
    if isinstance(dataset, dict):
        raise InputError(f"got a DatasetDict (splits: {', '.join(dataset)}); pass one split, e.g. "
                         f"dataset[{next(iter(dataset), 'test')!r}].")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "select_columns"):
        raise InputError(f"got a {type(dataset).__name__}, which has no random access; load the dataset without "
                         "streaming=True.")
    if len(dataset) == 0:
        raise InputError("got a dataset with no rows; pass at least one image.")
    column = image_column(dataset, None, "the dataset",
                          "pass dataset.select_columns([NAME]) with the column that holds the images")
    view = dataset.select_columns([column]).with_format("arrow")
    dtype = _leaf_dtype(dataset.features[column])
    for start in range(0, len(view), batch_size):
        values = view[start:start + batch_size][column].to_pylist()
        yield [(f"row {start + offset}", stored_image(value, f"row {start + offset}", column, dtype))
               for offset, value in enumerate(values)]
