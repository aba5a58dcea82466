"""Reading EfficientFormer weights of any layout: transformers, timm or the original snap-research release.

`load_checkpoint(name_or_path)` finds the weights (a folder, a hub id or a single file), reads them
without running pickled code, detects the layout from the key names, renames the keys to the
transformers layout (`efficientformer.key_mapping`), and returns them with an `EfficientFormerConfig`:
the checkpoint's `config.json` when it has one (checked against the tensor shapes), else one inferred
from the shapes.

Example:
    >>> from efficientformer.checkpoints import load_checkpoint
    >>> ckpt = load_checkpoint("efficientformer_l1_300d.pth")  # doctest: +SKIP
    >>> ckpt.format, ckpt.config.depths  # doctest: +SKIP
    ('original', [3, 2, 6, 4])
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import CONFIG_NAME, EfficientFormerConfig, read_json_object
from .errors import CheckpointError, ConfigError, require
from .key_mapping import FORMATS, convert_state_dict, detect_format, layout_from_keys, strip_wrappers
from .labels import with_known_names

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Entries of a saved dict that hold the weights (training checkpoints keep more beside them).
STATE_DICT_ENTRIES = ("model", "state_dict", "model_state_dict", "module")
# timm and the original code use LayerNorm's default epsilon; transformers' config default is 1e-12.
TIMM_LAYER_NORM_EPS = 1e-5
# Buffers a model can rebuild, so a checkpoint may lack them.
_OPTIONAL_SUFFIXES = ("num_batches_tracked", "attention_bias_idxs")
_HEADS = ("classifier.", "distillation_classifier.")
# Integer buffers; every other tensor of an EfficientFormer is a floating-point weight.
_INTEGER_SUFFIXES = ("num_batches_tracked", "attention_bias_idxs")
# Float dtypes every backend computes in; anything else in a float slot (an integer, bool, complex or float8
# tensor) is a corrupt or altered file, and casting it would give wrong numbers without an error.
_FLOAT_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
_INTEGER_DTYPE_NAMES = ("uint8", "int8", "int16", "int32", "int64")
# torch.save stores its zip entries uncompressed, and an EfficientFormer holds at most a few hundred MB (L7: 82 M
# parameters, 330 MB in float32; a training checkpoint with optimizer state about three times that). A small
# archive declaring far more (a zip bomb) is refused before torch allocates what it declares.
MAX_ARCHIVE_BYTES = 4 * 2**30
MAX_COMPRESSION_RATIO = 50  # declared size / stored size of one entry, checked for entries over 1 MiB


@dataclass
class Checkpoint:
    """Weights in the transformers layout, with the configuration and preprocessing that go with them.

    Attributes:
        state_dict: key -> tensor, keys as transformers names them (`efficientformer.…`, `classifier.…`,
            `distillation_classifier.…`), dtypes as stored.
        config: from `config.json` when present (checked against the shapes), else inferred from them.
        processor: settings for `EfficientFormerImageProcessor(**processor)` (`preprocessor_config.json`,
            or timm's `pretrained_cfg` translated), or None when the checkpoint carries none.
        format: the layout the file was in: `"transformers"`, `"timm"` or `"original"`.
        source: path of the weights file read.
    """

    state_dict: dict[str, "torch.Tensor"]
    config: EfficientFormerConfig
    processor: dict | None
    format: str
    source: str


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
        if key.endswith(_INTEGER_SUFFIXES):
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


def state_dict_mismatch(expected: dict, given: dict) -> str | None:
    """How `given` differs from the state dict `expected` (first difference, in words), or None when every
    key is there with its shape. For messages: a checkpoint of another architecture."""
    for key, tensor in expected.items():
        if key not in given:
            return f"it lacks {key}"
        if tuple(given[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(given[key].shape)} there but {tuple(tensor.shape)} here"
    extra = [key for key in given if key not in expected]
    if extra:
        return f"it has {len(extra)} weights this model lacks, e.g. {extra[0]}"
    return None


# ------------------------------------------------------------------------------ shapes of a config
def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _meta4d(prefix: str, dim: int, hidden: int, layer_scale: bool) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    if layer_scale:
        out.update({f"{prefix}.layer_scale_1": (dim,), f"{prefix}.layer_scale_2": (dim,)})
    out.update({f"{prefix}.mlp.convolution1.weight": (hidden, dim, 1, 1), f"{prefix}.mlp.convolution1.bias": (hidden,),
                f"{prefix}.mlp.convolution2.weight": (dim, hidden, 1, 1), f"{prefix}.mlp.convolution2.bias": (dim,)})
    out.update(_bn(f"{prefix}.mlp.batchnorm_before", hidden))
    out.update(_bn(f"{prefix}.mlp.batchnorm_after", dim))
    return out


def _meta3d(prefix: str, config: EfficientFormerConfig, dim: int, hidden: int) -> dict[str, tuple]:
    heads, key_dim, res = config.num_attention_heads, config.key_dim, config.resolution
    value_dim = int(config.attention_ratio * key_dim) * heads
    qkv = value_dim + 2 * key_dim * heads
    out: dict[str, tuple] = {}
    if config.use_layer_scale:
        out.update({f"{prefix}.layer_scale_1": (dim,), f"{prefix}.layer_scale_2": (dim,)})
    mixer = f"{prefix}.token_mixer"
    out.update({f"{mixer}.attention_biases": (heads, res * res), f"{mixer}.attention_bias_idxs": (res * res, res * res),
                f"{mixer}.qkv.weight": (qkv, config.dim), f"{mixer}.qkv.bias": (qkv,),
                f"{mixer}.projection.weight": (config.dim, value_dim), f"{mixer}.projection.bias": (config.dim,)})
    for norm in ("layernorm1", "layernorm2"):
        out.update({f"{prefix}.{norm}.weight": (dim,), f"{prefix}.{norm}.bias": (dim,)})
    out.update({f"{prefix}.mlp.linear_in.weight": (hidden, dim), f"{prefix}.mlp.linear_in.bias": (hidden,),
                f"{prefix}.mlp.linear_out.weight": (dim, hidden), f"{prefix}.mlp.linear_out.bias": (dim,)})
    return out


def expected_shapes(config: EfficientFormerConfig, *, heads: bool = True) -> dict[str, tuple]:
    """Every state-dict key of `EfficientFormerForImageClassificationWithTeacher` for `config`, with its shape.

    Args:
        config: the architecture.
        heads: include `classifier.*` and `distillation_classifier.*` (absent when num_labels is 0).

    Returns:
        key -> shape tuple, in the order transformers' `state_dict()` lists them.
    """
    widths, depths = list(config.hidden_sizes), list(config.depths)
    ratio = config.mlp_expansion_ratio
    stem = widths[0] // 2
    out: dict[str, tuple] = {
        "efficientformer.patch_embed.convolution1.weight": (stem, config.num_channels, 3, 3),
        "efficientformer.patch_embed.convolution1.bias": (stem,)}
    out.update(_bn("efficientformer.patch_embed.batchnorm_before", stem))
    out.update({"efficientformer.patch_embed.convolution2.weight": (widths[0], stem, 3, 3),
                "efficientformer.patch_embed.convolution2.bias": (widths[0],)})
    out.update(_bn("efficientformer.patch_embed.batchnorm_after", widths[0]))
    index, k = 0, config.downsample_patch_size
    for stage in range(len(depths) - 1):
        dim = widths[stage]
        for block in range(depths[stage]):
            prefix = f"efficientformer.encoder.intermediate_stages.{index}.meta4D_layers.blocks.{block}"
            out.update(_meta4d(prefix, dim, int(dim * ratio), config.use_layer_scale))
        index += 1
        if config.downsamples[stage] or widths[stage] != widths[stage + 1]:
            prefix = f"efficientformer.encoder.intermediate_stages.{index}"
            out.update({f"{prefix}.projection.weight": (widths[stage + 1], dim, k, k),
                        f"{prefix}.projection.bias": (widths[stage + 1],)})
            out.update(_bn(f"{prefix}.norm", widths[stage + 1]))
            index += 1
    dim = widths[-1]
    for block in range(config.num_meta4d_last_stage):
        prefix = f"efficientformer.encoder.last_stage.meta4D_layers.blocks.{block}"
        out.update(_meta4d(prefix, dim, int(dim * ratio), config.use_layer_scale))
    for block in range(config.num_meta3d_blocks):
        prefix = f"efficientformer.encoder.last_stage.meta3D_layers.blocks.{block}"
        out.update(_meta3d(prefix, config, dim, int(dim * ratio)))
    out.update({"efficientformer.layernorm.weight": (dim,), "efficientformer.layernorm.bias": (dim,)})
    if heads and config.num_labels > 0:
        for head in ("classifier", "distillation_classifier"):
            out.update({f"{head}.weight": (config.num_labels, dim), f"{head}.bias": (config.num_labels,)})
    return out


def check_shapes(state_dict: dict, config: EfficientFormerConfig, *, source: str, against: str) -> None:
    """Raise CheckpointError unless `state_dict` (transformers layout) is exactly what `config` describes.

    Heads and rebuildable buffers (`num_batches_tracked`, `attention_bias_idxs`) may be absent.

    Args:
        state_dict: key -> tensor in the transformers layout.
        config: the architecture to check against.
        source: the file, for the message.
        against: what the config is, for the message (e.g. "its config.json").
    """
    expected = expected_shapes(config)
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CheckpointError(f"{source}: key {unexpected[0]} (shape {tuple(state_dict[unexpected[0]].shape)}) has no "
                              f"place in the architecture of {against} ({len(unexpected)} such keys); the weights "
                              "and the configuration belong to different models.")
    for key, shape in expected.items():
        if key in state_dict:
            got = tuple(state_dict[key].shape)
            if got != shape:
                raise CheckpointError(f"{source}: {key} has shape {got} but {against} implies {shape}; the weights "
                                      "and the configuration belong to different models.")
        elif not key.endswith(_OPTIONAL_SUFFIXES) and not key.startswith(_HEADS):
            raise CheckpointError(f"{source}: {key} (shape {shape}) is missing although {against} needs it; the file "
                                  "is incomplete or belongs to another architecture.")


def complete_buffers(state_dict: dict, config: EfficientFormerConfig) -> dict:
    """Add the buffers a model can rebuild (`attention_bias_idxs`, BatchNorm `num_batches_tracked`) that a
    state dict lacks (timm versions and hand-saved files omit them), so strict loaders find every key."""
    import torch

    from .attention_bias import bias_index

    out = dict(state_dict)
    for key in expected_shapes(config, heads=False):
        if key in out:
            continue
        if key.endswith("attention_bias_idxs"):
            out[key] = torch.from_numpy(bias_index(config.resolution, config.resolution).astype("int64"))
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
    return out


# --------------------------------------------------------------------------- architecture inference
def _count(keys: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for m in map(regex.match, keys) if m}
    return max(found) + 1 if found else 0


def infer_config(state_dict: dict, *, source: str = "the checkpoint", **fields: Any) -> EfficientFormerConfig:
    """The `EfficientFormerConfig` whose model has exactly the tensors of `state_dict` (transformers layout).

    Read from the shapes: depths, hidden_sizes, num_meta3d_blocks, mlp_expansion_ratio, heads (rows of
    the attention biases), resolution (square root of their columns), key_dim and attention_ratio (from
    the qkv and projection widths), num_labels (rows of the head), num_channels, the downsampling kernel,
    use_layer_scale, and whether there is a distillation head. Settings that leave no trace in the
    weights (activation, pooling size, LayerNorm epsilon) keep their defaults unless given in `fields`.

    Raises:
        CheckpointError: the shapes fit no EfficientFormer.

    Example:
        >>> config = infer_config(checkpoint.state_dict, layer_norm_eps=1e-5)  # doctest: +SKIP
    """
    keys = list(state_dict)

    def shape(key: str) -> tuple:
        if key not in state_dict:
            raise CheckpointError(f"{source}: {key} is missing, so the architecture cannot be read from the weights; "
                                  "the file is incomplete or not an EfficientFormer.")
        return tuple(state_dict[key].shape)

    layout = layout_from_keys(keys, "transformers")
    last = layout.last
    enc = "efficientformer.encoder"
    widths = [shape("efficientformer.patch_embed.convolution2.weight")[0]]
    depths = []
    for stage in range(last):
        depths.append(_count(keys, rf"{enc}\.intermediate_stages\.{2 * stage}\.meta4D_layers\.blocks\.(\d+)\."))
        widths.append(shape(f"{enc}.intermediate_stages.{2 * stage + 1}.projection.weight")[0])
    num_meta3d = _count(keys, rf"{enc}\.last_stage\.meta3D_layers\.blocks\.(\d+)\.")
    depths.append(layout.m4 + num_meta3d)
    if not all(depths):
        raise CheckpointError(f"{source}: some stage has no blocks (depths {depths}); the file is incomplete.")
    dim = widths[-1]
    first4d = f"{enc}.intermediate_stages.0.meta4D_layers.blocks.0"
    hidden, width0 = shape(f"{first4d}.mlp.convolution1.weight")[:2]
    ratio = hidden / width0
    config: dict[str, Any] = {
        "depths": depths, "hidden_sizes": widths, "dim": dim, "hidden_size": dim,
        "num_meta3d_blocks": num_meta3d, "mlp_expansion_ratio": int(ratio) if ratio.is_integer() else ratio,
        "num_channels": shape("efficientformer.patch_embed.convolution1.weight")[1],
        "use_layer_scale": f"{first4d}.layer_scale_1" in state_dict,
        "distillation": "distillation_classifier.weight" in state_dict,
    }
    if last:
        kernel = shape(f"{enc}.intermediate_stages.1.projection.weight")[-1]
        config.update(downsample_patch_size=kernel, downsample_pad=kernel // 2)
    if num_meta3d:
        mixer = f"{enc}.last_stage.meta3D_layers.blocks.0.token_mixer"
        heads, cells = shape(f"{mixer}.attention_biases")
        resolution = math.isqrt(cells)
        if resolution * resolution != cells:
            raise CheckpointError(f"{source}: {mixer}.attention_biases has {cells} columns, not a square number; "
                                  "this is not an EfficientFormer attention table.")
        qkv, value_dim = shape(f"{mixer}.qkv.weight")[0], shape(f"{mixer}.projection.weight")[1]
        key_dim, rest = divmod(qkv - value_dim, 2 * heads)
        if rest or key_dim <= 0 or value_dim % (heads * key_dim):
            raise CheckpointError(f"{source}: {mixer}.qkv.weight {shape(f'{mixer}.qkv.weight')} and projection.weight "
                                  f"{shape(f'{mixer}.projection.weight')} fit no split into {heads} heads.")
        config.update(num_attention_heads=heads, resolution=resolution, key_dim=key_dim,
                      attention_ratio=value_dim // (heads * key_dim), image_size=resolution * 2 ** (last + 2))
    if "classifier.weight" in state_dict:
        config["num_labels"] = shape("classifier.weight")[0]
    elif "distillation_classifier.weight" in state_dict:
        config["num_labels"] = shape("distillation_classifier.weight")[0]
    config.update(fields)
    try:
        result = EfficientFormerConfig(**config)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the weights describe an invalid architecture ({err})") from None
    check_shapes(state_dict, result, source=source, against="the architecture read from its shapes")
    return result


# ------------------------------------------------------------------------------------ timm metadata
def _is_timm_config(data: dict) -> bool:
    return "model_type" not in data and ("pretrained_cfg" in data or "architecture" in data)


def _check_timm_args(data: dict, config: EfficientFormerConfig, source: str) -> None:
    """Compare timm's `model_args` (or the preset named by `architecture`) with the shapes read."""
    args = dict(data.get("model_args") or {})
    arch = str(data.get("architecture", ""))
    if not args and arch.startswith("efficientformer_l"):
        from .presets import VARIANTS

        variant = VARIANTS.get(arch.replace("efficientformer_", ""))
        if variant is not None:
            args = {"depths": list(variant.depths), "embed_dims": list(variant.hidden_sizes),
                    "num_vit": variant.num_meta3d_blocks}
    found = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
             "num_vit": config.num_meta3d_blocks, "num_classes": config.num_labels}
    if "num_classes" in data:
        args.setdefault("num_classes", data["num_classes"])
    for name, value in args.items():
        if name in found and (list(value) if isinstance(value, (list, tuple)) else value) != found[name]:
            raise CheckpointError(f"{source}: timm's config.json says {name}={value} but the weights have "
                                  f"{name}={found[name]}; the weights and config.json belong to different models.")


def _timm_processor(pretrained_cfg: dict) -> dict:
    from .processing import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor.from_timm_config(pretrained_cfg).to_dict()


# ------------------------------------------------------------------------------------- the entry point
def _find_files(name_or_path: str, hub: dict) -> tuple[str, str | None, str | None]:
    """(weights, config.json or None, preprocessor_config.json or None) of a file, folder or hub id."""
    from .hub import resolve_file, resolve_first

    if os.path.isfile(name_or_path):
        return name_or_path, None, None
    weights = resolve_first(name_or_path, WEIGHT_FILES, **hub)
    if weights is None and os.path.isdir(name_or_path):
        candidates = sorted(f for f in os.listdir(name_or_path) if f.endswith(WEIGHT_SUFFIXES))
        if len(candidates) == 1:
            weights = os.path.join(name_or_path, candidates[0])
        elif candidates:
            raise CheckpointError(f"{name_or_path} holds several weights files ({', '.join(candidates)}); "
                                  "point at the one to load.")
    if weights is None:
        raise CheckpointError(f"{name_or_path} has neither {' nor '.join(WEIGHT_FILES)}; point at a folder written "
                              "by save_pretrained or timm, a hub id, or a weights file.")
    config = resolve_file(name_or_path, CONFIG_NAME, required=False, **hub)
    processor = resolve_file(name_or_path, PROCESSOR_FILE, required=False, **hub)
    return weights, config, processor


def _read_json(path: str) -> dict:
    return read_json_object(path, CheckpointError)


def to_transformers_layout(raw: dict, *, source: str) -> tuple[dict, str]:
    """Detect the layout of a state dict and rename its keys to transformers'.

    Returns:
        (state dict in the transformers layout, the detected format).

    Raises:
        CheckpointError: the keys fit no EfficientFormer layout.
    """
    names = strip_wrappers(raw)
    state = {names[k]: v for k, v in raw.items()}
    fmt = detect_format(state)
    if fmt is None:
        shown = ", ".join(list(state)[:4])
        raise CheckpointError(f"{source} is not an EfficientFormer checkpoint: its keys ({shown}, ...) fit none of the "
                              f"{', '.join(FORMATS)} layouts.")
    return convert_state_dict(state, fmt, "transformers", source=source), fmt


def load_checkpoint(name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None,
                    local_files_only: bool = False, token: str | bool | None = None,
                    allow_training_args: bool = False) -> Checkpoint:
    """Load EfficientFormer weights of any layout as a transformers-layout state dict with its config.

    Args:
        name_or_path: a folder (transformers: `config.json` + `model.safetensors` or `pytorch_model.bin`;
            timm: timm's `config.json` + weights), a hub id (`"snap-research/efficientformer-l1-300"`,
            `"timm/efficientformer_l1.snap_dist_in1k"`), or one weights file (`.safetensors`, `.pth`,
            `.pt`, `.bin`; the original release `{"model": state_dict}` included). safetensors is preferred
            when a folder has both.
        revision, cache_dir, local_files_only, token: for hub ids (offline from the cache with
            `HF_HUB_OFFLINE=1`).
        allow_training_args: read training checkpoints that pickle their `argparse.Namespace` arguments
            (only that class is allowed; see `read_state_dict`).

    Returns:
        A `Checkpoint`; buffers the file lacks but a model can rebuild are added. Its config comes from
        a transformers `config.json` when present (checked against the shapes), else is inferred from
        the shapes; timm and original weights get `layer_norm_eps=1e-5` (timm's LayerNorm) and timm's
        `label_names`; 1000-class models with placeholder labels get the ImageNet names.

    Raises:
        CheckpointError: missing, corrupt, unsafe or non-EfficientFormer files; a config.json that does not
            fit the weights (the message names the key and both shapes).

    Example:
        >>> ckpt = load_checkpoint("timm/efficientformer_l1.snap_dist_in1k")  # doctest: +SKIP
        >>> ckpt.format, ckpt.config.num_labels  # doctest: +SKIP
        ('timm', 1000)
    """
    name = os.fspath(name_or_path)
    hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
    weights, config_path, processor_path = _find_files(name, hub)
    raw = read_state_dict(weights, allow_training_args=allow_training_args)
    state, fmt = to_transformers_layout(raw, source=weights)
    check_tensors(raw, source=weights)  # after the layout check: a non-EfficientFormer file is named as such
    config_data = _read_json(config_path) if config_path else None
    processor = _read_json(processor_path) if processor_path else None

    if config_data is not None and not _is_timm_config(config_data):
        try:
            config = EfficientFormerConfig.from_dict(config_data)
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{config_path} is not a valid EfficientFormer config.json ({err}).") from None
        check_shapes(state, config, source=weights, against=f"its config.json ({config_path})")
    else:
        eps = TIMM_LAYER_NORM_EPS if fmt != "transformers" else EfficientFormerConfig().layer_norm_eps
        config = infer_config(state, source=weights, layer_norm_eps=eps)
        if config_data is not None:  # timm's config.json: check it, take its labels and preprocessing
            _check_timm_args(config_data, config, weights)
            names = config_data.get("label_names")
            if names:
                if len(names) != config.num_labels:
                    raise CheckpointError(f"{config_path} lists {len(names)} label_names but the head of {weights} "
                                          f"has {config.num_labels} classes.")
                config.id2label = dict(enumerate(map(str, names)))
            if processor is None and isinstance(config_data.get("pretrained_cfg"), dict):
                processor = _timm_processor(config_data["pretrained_cfg"])
    config.id2label = with_known_names(config.id2label)
    state = complete_buffers(state, config)
    return Checkpoint(state_dict=state, config=config, processor=processor, format=fmt, source=weights)
