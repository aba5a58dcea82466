"""Reading weight files safely: no pickled code runs, forged archives and files of the wrong kind are named
before torch reads them, and every tensor is checked to be what its key says (dtype, finite values, valid
indices).

`read_state_dict(path)` reads a `.safetensors` file, or a PyTorch pickle with `torch.load(weights_only=True)`;
`check_tensors(state_dict)` checks the values. `efficientformer.checkpoints.loading` uses both for every
checkpoint; the training resume and a timm teacher's weights are read through them too.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, require

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Entries of a saved dict that hold the weights (training checkpoints keep more beside them).
STATE_DICT_ENTRIES = ("model", "state_dict", "model_state_dict", "module")
# Integer buffers a model can rebuild; every other tensor of an EfficientFormer is a floating-point weight.
INTEGER_BUFFERS = ("num_batches_tracked", "attention_bias_idxs")
# Float dtypes every backend computes in; anything else in a float slot (an integer, bool, complex or float8
# tensor) is a corrupt or altered file, and casting it would give wrong numbers without an error.
_FLOAT_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
_INTEGER_DTYPE_NAMES = ("uint8", "int8", "int16", "int32", "int64")
# torch.save stores its zip entries uncompressed, and an EfficientFormer holds at most a few hundred MB (L7: 82 M
# parameters, 330 MB in float32; a training checkpoint with optimizer state about three times that). A small
# archive declaring far more (a zip bomb) is refused before torch allocates what it declares.
MAX_ARCHIVE_BYTES = 4 * 2**30
MAX_COMPRESSION_RATIO = 50  # declared size / stored size of one entry, checked for entries over 1 MiB


# ------------------------------------------------------------------------------------- file reading
def read_state_dict(path: str | os.PathLike, *, allow_training_args: bool = False) -> dict[str, "torch.Tensor"]:
    """Read the tensors of a `.safetensors` file, or of a PyTorch pickle without executing code in it.

    Pickles (`.pth`, `.pt`, `.bin`) are read with `torch.load(weights_only=True)`: only tensors and
    plain containers. A dict holding the weights under `"model"` or `"state_dict"` (the original
    release, training checkpoints) is unwrapped.

    Args:
        path: the file.
        allow_training_args: also accept `argparse.Namespace` objects, which training checkpoints of
            the original repository store under `"args"`. Only that class is allowlisted.

    Returns:
        key -> tensor, keys as stored.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, needs unpickling of other objects,
            or holds no tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist; give the path of a weights file, a folder or a hub id.")
    check_readable(path)
    if _is_safetensors(path):
        return _read_safetensors(path)
    _check_pickle_header(path)
    check_archive(path)
    return _unwrap(_read_pickle(path, allow_training_args), path)


def check_readable(path: str | os.PathLike) -> None:
    """Raise CheckpointError when `path` cannot be opened for reading (so that it is not called corrupt)."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise CheckpointError(f"cannot read {os.fspath(path)}: permission denied; make it readable (chmod u+r) or "
                              "copy it somewhere you can read.") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {os.fspath(path)} ({err.strerror or err}); check the path and "
                              "the disk.") from None


def check_archive(path: str | os.PathLike) -> None:
    """Refuse a zip archive (torch.save's format) whose entries declare more than an EfficientFormer can hold.

    Reads only the archive's directory, so a 4 MB file declaring gigabytes fails in microseconds instead of
    making torch allocate the declared sizes. Other files pass unchecked.

    Raises:
        CheckpointError: more than `MAX_ARCHIVE_BYTES` in all, or an entry compressed more than
            `MAX_COMPRESSION_RATIO` times (torch.save never compresses).
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch file ({_short(err)}); it is truncated or corrupt: "
                              "download or write it again.") from None
    total = sum(entry.file_size for entry in entries)
    if total > MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{path} declares {total / 2**20:,.0f} MiB of data, more than the "
                              f"{MAX_ARCHIVE_BYTES / 2**20:,.0f} MiB any EfficientFormer checkpoint needs; it is not a "
                              "checkpoint of this model (or it is forged) and is not read.")
    for entry in entries:
        if entry.file_size > 2**20 and entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1):
            raise CheckpointError(f"{path}: entry {entry.filename} unpacks {entry.compress_size:,} bytes into "
                                  f"{entry.file_size:,}, a compression torch.save never writes (a zip bomb?); "
                                  "the file is not read: re-save the weights with torch.save or as .safetensors.")


def _check_pickle_header(path: str) -> None:
    """A PyTorch file is a zip archive (torch.save) or a pickle (protocol 2+ starts with 0x80); anything else,
    an image or a text file given by mistake, is named as such before torch tries to read it."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return
    kinds = {b"\x89PNG": "a PNG image", b"\xff\xd8": "a JPEG image", b"GIF8": "a GIF image", b"RIFF": "a RIFF (WebP) file",
             b"BM": "a BMP image", b"II*": "a TIFF image", b"MM\x00*": "a TIFF image"}
    kind = next((name for magic, name in kinds.items() if head.startswith(magic)), None)
    if kind is None:
        kind = "empty" if not head else "not a weights file" + (" (it starts with text)" if head.isascii() else "")
    else:
        kind = f"{kind}, not a weights file"
    raise CheckpointError(f"{path} is {kind}; give a .safetensors, .bin, .pth or .pt weights file, a checkpoint "
                          "folder or a hub id.")


def _is_safetensors(path: str) -> bool:
    if path.endswith(".safetensors"):
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    # a pickle zip starts with "PK", a legacy pickle with 0x80; safetensors with a u64 length then "{"
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def _read_safetensors(path: str) -> dict:
    require("torch", "torch", "reading weights")
    st = require("safetensors.torch", "torch", "reading .safetensors weights")
    try:
        return dict(st.load_file(path))
    except PermissionError:  # between check_readable and here
        raise CheckpointError(f"cannot read {path}: permission denied; make it readable (chmod u+r) or copy it "
                              "somewhere you can read.") from None
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(f"{path} is not a readable safetensors file ({_short(err)}); it is truncated or "
                              "corrupt: download or write it again.") from None


def _read_pickle(path: str, allow_training_args: bool) -> Any:
    torch = require("torch", "torch", "reading .pth/.bin weights")
    import argparse

    try:
        if allow_training_args:
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - translated into one sentence (or re-raised) below
        raise load_error(path, err) from None


def load_error(path: str | os.PathLike, err: BaseException, what: str = "PyTorch file") -> BaseException:
    """The one-sentence CheckpointError for an exception of `torch.load(path, weights_only=True)`.

    torch's own message suggests `weights_only=False`, which would run the file's code; the sentence here
    names the refused object instead. `what` names the expected kind of file in the message.
    Exceptions that are not about the file (KeyboardInterrupt, MemoryError, ...) are returned unchanged.
    """
    path = os.fspath(path)
    if isinstance(err, PermissionError):
        return CheckpointError(f"cannot read {path}: permission denied; make it readable (chmod u+r) or copy it "
                               "somewhere you can read.")
    if isinstance(err, pickle.UnpicklingError):
        unsupported = re.search(r"GLOBAL ([\w.]+)", str(err))
        # allow_training_args is an option of weights files only, so other files get the general sentence below
        if unsupported and unsupported.group(1) == "argparse.Namespace" and what == "PyTorch file":
            return CheckpointError(
                f"{path} is a training checkpoint: beside the weights it stores the training arguments as an "
                "argparse.Namespace, which weights-only loading does not unpickle. If you trust the file, pass "
                "allow_training_args=True (command line: --allow-training-args), which allows that one class "
                "and nothing else, or re-save its weights alone: torch.save({'model': torch.load(path, "
                "weights_only=False)['model']}, 'weights.pth').")
        if unsupported:
            return CheckpointError(
                f"{path} contains a pickled Python object ({unsupported.group(1)}) and is not read, since "
                "unpickling it could run code; re-save only the tensors (a state dict) from a trusted "
                "environment, ideally as .safetensors.")
        if "Weights only load failed" in str(err):
            reason = _short(str(err).rsplit("error:")[-1])
            return CheckpointError(
                f"{path} holds pickled data that weights-only loading refuses ({reason}); re-save only the "
                "tensors (a state dict) from a trusted environment, ideally as .safetensors.")
        return CheckpointError(f"{path} is not a readable {what} ({_short(err)}); it is truncated or corrupt: "
                               "download or write it again.")
    if isinstance(err, (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError,
                        IndexError, TypeError)):
        return CheckpointError(f"{path} is not a readable {what} ({_short(err)}); it is truncated, corrupt "
                               "or not a weights file: download or write it again.")
    return err


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _unwrap(obj: Any, path: str) -> dict:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for entry in STATE_DICT_ENTRIES:
            inner = obj.get(entry)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        shown = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{path} holds no state dict of tensors (its entries: {shown}); expected a state dict "
                              f"or a dict with one under {' / '.join(map(repr, STATE_DICT_ENTRIES))}.")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead "
                          "of the model object.")


# ------------------------------------------------------------------------------------ tensor values
def check_tensors(state_dict: dict, *, source: str, efficientformer: bool = True) -> None:
    """Raise CheckpointError unless every tensor can be what its key says (any layout's key names).

    Weights must be stored in a float dtype (`_FLOAT_DTYPE_NAMES`) and be finite; BatchNorm running
    variances must not be negative; the integer buffers (`num_batches_tracked`, `attention_bias_idxs`)
    must be integers, and attention-bias indices must point inside their table. A float weight relabelled
    as int32 in a safetensors header, or a NaN weight, would otherwise load and give wrong or NaN scores
    without an error. Costs about one summation of each tensor (0.15 s for L7 on two cores).

    With `efficientformer=False` (another architecture, e.g. a timm teacher, whose integer buffers are not
    known here) only floating-point tensors are checked, for finite values.
    """
    for key, tensor in state_dict.items():
        dtype = str(tensor.dtype).replace("torch.", "")
        if not efficientformer:
            if tensor.is_floating_point() and not _all_finite(tensor):
                raise CheckpointError(f"{source}: {key} contains NaN or infinite values; the weights are corrupt "
                                      "or training diverged: use an earlier or another checkpoint.")
            continue
        if key.endswith(INTEGER_BUFFERS):
            if dtype not in _INTEGER_DTYPE_NAMES:
                raise CheckpointError(f"{source}: {key} is stored as {dtype}, but it is an integer buffer "
                                      f"({', '.join(_INTEGER_DTYPE_NAMES)}); the file is corrupt or was altered: "
                                      "download or write it again.")
            if key.endswith("attention_bias_idxs") and tensor.numel() and (
                    int(tensor.min()) < 0 or int(tensor.max()) >= tensor.shape[-1]):
                raise CheckpointError(f"{source}: {key} holds indices outside 0..{tensor.shape[-1] - 1}; the file "
                                      "is corrupt or was altered: download or write it again.")
            continue
        if dtype not in _FLOAT_DTYPE_NAMES:
            raise CheckpointError(f"{source}: {key} is stored as {dtype}, but it is a weight and must be one of "
                                  f"{', '.join(_FLOAT_DTYPE_NAMES)}; the file is corrupt or its header was altered: "
                                  "download or write it again.")
        if not _all_finite(tensor):
            raise CheckpointError(f"{source}: {key} contains NaN or infinite values, so every prediction would be "
                                  "NaN; the weights are corrupt or training diverged: use an earlier or another "
                                  "checkpoint.")
        if key.endswith("running_var") and bool((tensor < 0).any()):
            raise CheckpointError(f"{source}: {key} holds negative variances, which make BatchNorm output NaN; "
                                  "the file is corrupt or was altered: download or write it again.")


def _all_finite(tensor) -> bool:
    """Whether no element is NaN or infinite, at the cost of a sum (a tenth of `isfinite().all()`).

    A NaN or infinite element makes the sum NaN or infinite, so a finite sum proves every element finite;
    only a sum that is not finite (which finite values near the dtype's maximum can also give) is confirmed
    element by element. Half-precision tensors are summed in float32, where their values cannot overflow.
    """
    import torch

    total = tensor.sum(dtype=torch.float32) if tensor.element_size() < 4 else tensor.sum()
    return bool(torch.isfinite(total)) or bool(tensor.isfinite().all())


