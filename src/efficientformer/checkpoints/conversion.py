"""Converting checkpoints between the transformers, timm and original layouts, with a numerical check.

`convert(src, dst, format="hf")` reads any checkpoint `load_checkpoint` reads and writes:

- `"hf"`: a folder transformers 4.57 and this package load: `config.json` (with `hidden_size` and
  `architectures`), `model.safetensors`, `preprocessor_config.json`.
- `"timm"`: a timm hub folder: `config.json` (`architecture`, `model_args`, `pretrained_cfg`,
  `label_names`) and `model.safetensors` with timm's key names.
- `"original"`: a `.pth` file `{"model": state_dict}` as the snap-research release.

Keys are renamed through `efficientformer.checkpoints.keys`; tensors are copied unchanged (or cast with
`dtype`), so converting there and back gives identical tensors. With `verify=True` the source and the
written checkpoint are run as models on the same random batch and the largest difference is reported.

Writes are atomic (`efficientformer.fileio.write_folder`): a kill leaves the old folder or the new one.
A destination that already holds a model is refused unless `overwrite=True`, and then every file of the
old model goes (its other files stay); a destination that is, holds or lies inside the source (symlinks
resolved) is always refused. `"timm"` refuses shapes timm's constructor cannot build
(`timm_support_error` names the field).

Example:
    >>> from efficientformer.checkpoints.conversion import convert
    >>> result = convert("efficientformer_l1_300d.pth", "efficientformer-l1", format="hf")  # doctest: +SKIP
    >>> result.max_abs_diff < 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config import EfficientFormerConfig
from ..constants import (
    BASE_PREFIX,
    CLASS_HEAD,
    DISTILLATION_HEAD,
    SAFETENSORS_NAME,
    TIMM_LAYER_NORM_EPS,
)
from ..errors import CheckpointError, InputError, require
from ..factory import architecture_for, create_model
from ..fileio import check_folder, is_inside, is_model_file, same_path, write_with
from ..models.architecture import plan
from ..presets import RELEASED_PREPROCESSING
from .folder import write_model_folder
from .keys import Layout, convert_state_dict
from .loading import Checkpoint, load_checkpoint
from .conversion_v2 import timm_support_error_v2, write_v2
from .loading_v2 import is_v2_config
from .timm_meta import timm_pretrained_cfg

OUTPUT_FORMATS = {"hf": "transformers", "transformers": "transformers", "timm": "timm", "original": "original"}
DTYPES = ("float32", "float16", "bfloat16")
# preprocessing of the released checkpoints (resize 256 bicubic, crop 224, ImageNet mean/std): used for
# checkpoints that carry no settings of their own (a bare .pth / .safetensors file)
# What timm 1.0's EfficientFormer constructor fixes, as (config field, timm's value). Its `Attention` is built
# with its defaults (key_dim 32, 8 heads, attn_ratio 4, a 7x7 bias grid) whatever the model args say, so
# the attention fields matter only for models with attention blocks; the rest holds for every model.
_TIMM_FIXED_ATTENTION = (("key_dim", 32), ("num_attention_heads", 8), ("attention_ratio", 4), ("resolution", 7))
_TIMM_FIXED = (("downsample_patch_size", 3), ("downsample_stride", 2), ("downsample_pad", 1),
               ("hidden_act", "gelu"), ("batch_norm_eps", 1e-5), ("use_layer_scale", True))


@dataclass
class ConversionResult:
    """What `convert` wrote.

    Attributes:
        path: the folder (hf, timm) or `.pth` file (original) written.
        format: `"hf"`, `"timm"` or `"original"`.
        source_format: layout of the source (`"transformers"`, `"timm"`, `"original"`).
        num_tensors: tensors written.
        max_abs_diff: largest |difference| between the outputs of the source and the written model on
            the same random input (None without verification).
        notes: remarks for the user (e.g. settings timm cannot express).
    """

    path: str
    format: str
    source_format: str
    num_tensors: int
    max_abs_diff: float | None = None
    notes: tuple[str, ...] = ()


def _cast(state: dict, dtype: str | None) -> dict:
    if dtype is None:
        return dict(state)
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}.")
    import torch

    target = getattr(torch, dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}


def processor_settings(checkpoint: Checkpoint) -> dict:
    """The checkpoint's preprocessing as `EfficientFormerImageProcessor` settings; the released models'
    (`RELEASED_PREPROCESSING`) when the checkpoint carries none."""
    from ..preprocessing.processor import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor(**(checkpoint.processor or RELEASED_PREPROCESSING)).to_dict()


def timm_support_error(config: EfficientFormerConfig, state: dict) -> str | None:
    """Why timm's `EfficientFormer` cannot hold this model (one sentence), or None when it can."""
    fixed = list(_TIMM_FIXED) + (list(_TIMM_FIXED_ATTENTION) if config.num_meta3d_blocks > 0 else [])
    for name, value in fixed:
        if getattr(config, name) != value:
            why = " in its Attention blocks" if name in dict(_TIMM_FIXED_ATTENTION) else ""
            return (f"timm's EfficientFormer cannot build this model: it fixes {name}={value!r}{why}, and this model "
                    f"has {name}={getattr(config, name)!r}; convert to --format hf (this package and transformers "
                    "load it) or original instead.")
    if config.num_meta3d_blocks < 1:
        return ("timm's EfficientFormer needs at least one attention block (num_vit >= 1: with none its final "
                "LayerNorm gets a feature map and fails), and this model has num_meta3d_blocks=0; convert to "
                "--format hf or original instead.")
    if config.pool_size != 3:
        # timm's constructor takes pool_size, but timm folders (ours and timm's) do not record it for readers
        # that infer the model from its weights, so the folder would come back with 3
        return (f"the timm layout keeps timm's default pool_size=3, and this model has pool_size={config.pool_size}; "
                "convert to --format hf or original instead.")
    if f"{CLASS_HEAD}.weight" not in state and f"{DISTILLATION_HEAD}.weight" not in state:
        return ("timm's EfficientFormer folder holds a classifier, and this checkpoint is a bare backbone (no head); "
                "convert a classification checkpoint, or use --format hf or original for the backbone.")
    return None


def _timm_config(checkpoint: Checkpoint) -> dict:
    """timm's hub `config.json` for the checkpoint: `timm.create_model(architecture, **model_args)` builds it."""
    config = checkpoint.config
    from ..presets import VARIANTS

    arch = next((f"efficientformer_{v.name}" for v in VARIANTS.values()
                 if list(v.depths) == config.depths and list(v.hidden_sizes) == config.hidden_sizes
                 and v.num_meta3d_blocks == config.num_meta3d_blocks), "efficientformer_l1")
    # num_classes is in model_args too, so the documented recipe builds the right head as pasted
    model_args: dict[str, Any] = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
                                  "num_vit": config.num_meta3d_blocks, "mlp_ratios": config.mlp_expansion_ratio,
                                  "num_classes": config.num_labels}
    if config.num_channels != 3:
        model_args["in_chans"] = config.num_channels
    before = {down.after + 1 for down in plan(config).downsamples}
    if len(before) != config.num_stages - 1:  # timm's flags say which stage starts with a Downsample
        model_args["downsamples"] = [i in before for i in range(config.num_stages)]
    return {
        "architecture": arch,
        "num_classes": config.num_labels,
        "num_features": config.hidden_sizes[-1],
        "model_args": model_args,
        "pretrained_cfg": {"architecture": arch, **timm_pretrained_cfg(processor_settings(checkpoint), config)},
        "label_names": [config.id2label[i] for i in range(config.num_labels)],
    }


def _write_hf(checkpoint: Checkpoint, state: dict, folder: str) -> str:
    from safetensors.torch import save_file

    config = checkpoint.config.copy()
    config.extra["architectures"] = [architecture_for(state)]
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    if floats:
        config.extra["dtype"] = str(floats[0]).replace("torch.", "")
    if CLASS_HEAD + ".weight" not in state:  # a bare backbone is saved without the prefix, as transformers does
        state = {k.removeprefix(BASE_PREFIX + "."): v for k, v in state.items()}
    tensors = {k: v.contiguous() for k, v in state.items()}
    # all files appear at once; an older model's files go
    return write_model_folder(folder, config=config, processor=processor_settings(checkpoint),
                              weights={SAFETENSORS_NAME: lambda path: save_file(tensors, path, metadata={"format": "pt"})})


def _with_both_heads(state: dict) -> tuple[dict, bool]:
    """timm's model always has a distillation head: a single-head state gets its head twice (timm averages
    the two, so its logits are the head's own). Returns (state, whether the head was doubled)."""
    if f"{CLASS_HEAD}.weight" not in state or f"{DISTILLATION_HEAD}.weight" in state:
        return state, False
    state = dict(state)
    for part in ("weight", "bias"):
        state[f"{DISTILLATION_HEAD}.{part}"] = state[f"{CLASS_HEAD}.{part}"].clone()
    return state, True


def _write_timm(checkpoint: Checkpoint, state: dict, folder: str) -> str:
    from safetensors.torch import save_file

    layout = Layout.from_config(checkpoint.config)
    timm_state = convert_state_dict(state, "transformers", "timm", layout)
    tensors = {k: v.contiguous() for k, v in timm_state.items()}
    return write_model_folder(folder, config=_timm_config(checkpoint), processor=None,
                              weights={SAFETENSORS_NAME: lambda path: save_file(tensors, path)})


def _write_original(checkpoint: Checkpoint, state: dict, path: str) -> str:
    import torch

    layout = Layout.from_config(checkpoint.config)
    original = {"model": convert_state_dict(state, "transformers", "original", layout)}
    write_with(path, lambda tmp: torch.save(original, tmp))
    return path


def max_output_difference(a: Checkpoint, b: Checkpoint, *, batch: int = 1, seed: int = 0) -> float:
    """Largest |difference| of the two checkpoints' model outputs (logits, else tokens) on one random batch."""
    import torch

    size = a.config.image_size
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, a.config.num_channels, size, size, generator=generator)
    outputs = []
    with torch.no_grad():
        for checkpoint in (a, b):
            out = create_model(checkpoint)(pixels)
            outputs.append(out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state)
    return float((outputs[0] - outputs[1]).abs().max())


def _target(dst: str, kind: str) -> str:
    """The path convert writes: the folder itself (hf, timm), or the `.pth` file (original)."""
    if kind != "original" or dst.endswith((".pth", ".pt")):
        return dst
    return os.path.join(dst, "model.pth")


def _check_destination(dst: str, kind: str, overwrite: bool) -> str:
    """Refuse (one sentence, before any work) a destination that cannot or should not be written."""
    path = _target(dst, kind)
    if kind != "original":
        target = check_folder(path)
        held = sorted(e.name for e in target.iterdir() if is_model_file(e.name)) if target.is_dir() else []
        if held and not overwrite:
            raise InputError(f"{dst} already holds a model ({', '.join(held)}); pass --overwrite (overwrite=True) "
                             "to replace it (its other files are kept), or choose an empty folder.")
        return path
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; give a .pth file path for --format original.")
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it, or choose "
                         "another file name.")
    if os.path.isfile(path) and not os.stat(path).st_mode & 0o222 or (
            os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{path} is read-only, so it is not replaced; make it writable (chmod u+w {path}) or "
                         "write somewhere else.")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK) or not os.stat(parent).st_mode & 0o222:
        raise InputError(f"cannot write {path}: {parent} is not a writable folder; fix its permissions or write "
                         "somewhere else.")
    return path


def _check_not_source(dst: str, path: str, sources: list[str], folder_source: bool) -> None:
    """Refuse a destination that is, holds or lies inside the source, through symlinks and hard links too:
    writing there would replace the weights being converted."""
    for source in sources:
        if same_path(path, source) or is_inside(source, path) or is_inside(source, dst) or (
                folder_source and is_inside(path, source)):
            raise InputError(f"{dst} is where the source is ({source}, through links resolved); write the "
                             "conversion somewhere else.")


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, format: str = "hf", dtype: str | None = None,
            verify: bool = True, allow_training_args: bool = False, overwrite: bool = False,
            **hub_kwargs: Any) -> ConversionResult:
    """Write the checkpoint `src` (any layout `load_checkpoint` reads) in layout `format` at `dst`.

    The write is atomic: the folder (or `.pth` file) is built beside `dst` and swapped in at once, so an
    error or a kill leaves what was there before.

    Args:
        src: folder, hub id or weights file.
        dst: output folder (hf, timm), or `.pth` file for `"original"` (a folder gets `model.pth`).
        format: `"hf"` (transformers), `"timm"` or `"original"`.
        dtype: `"float32"`, `"float16"` or `"bfloat16"` to cast floating tensors; None keeps them.
        verify: run source and written checkpoint on one random batch and report the difference
            (needs the PyTorch model classes).
        allow_training_args: read training checkpoints that pickle `argparse.Namespace` arguments.
        overwrite: replace a model already at `dst` (its model files all go, other files stay); without
            it such a `dst` is refused.
        **hub_kwargs: revision, cache_dir, local_files_only, token.

    Returns:
        A `ConversionResult` with the path written and the largest output difference.

    Raises:
        CheckpointError: the source cannot be read.
        InputError: unknown format or dtype; `dst` is, holds or lies inside the source (symlinks
            resolved), is a file where a folder is needed, is read-only, or holds a model and `overwrite`
            is False; `format="timm"` for a model timm's constructor cannot build (the field is named).
    """
    require("torch", "torch", "converting checkpoints")
    if format not in OUTPUT_FORMATS:
        raise InputError(f"format {format!r} is not supported; choose hf, timm or original.")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}.")
    kind = OUTPUT_FORMATS[format]
    dst = os.fspath(dst)
    path = _check_destination(dst, kind, overwrite)
    src_path = os.fspath(src)
    local = os.path.exists(src_path)
    if local:  # before reading: a destination that is the source is refused at once
        _check_not_source(dst, path, [src_path], os.path.isdir(src_path))
    source = load_checkpoint(src, allow_training_args=allow_training_args, **hub_kwargs)
    # the file actually read (a hub snapshot's blob, a folder's weights) and the folder it lies in
    folder_source = not (local and os.path.isfile(src_path))
    sources = [source.source] + ([os.path.dirname(source.source)] if folder_source else [])
    _check_not_source(dst, path, sources, folder_source)
    notes: list[str] = []
    state = source.state_dict
    v2 = is_v2_config(source.config)  # EfficientFormerV2: its own key table and timm config (conversion_v2)
    if kind == "timm":
        problem = (timm_support_error_v2 if v2 else timm_support_error)(source.config, state)
        if problem:
            raise InputError(problem)
        if not v2:  # timm's V2 takes distillation=False; its V1 always has both heads
            state, doubled = _with_both_heads(state)
            if doubled:
                notes.append("timm's EfficientFormer always has a distillation head; the classifier was written as "
                             "both heads (timm averages them, so its logits are this model's)")
    state = _cast(state, dtype)
    if not v2 and kind != "transformers" and source.config.layer_norm_eps != TIMM_LAYER_NORM_EPS:
        notes.append(f"the {kind} layout implies LayerNorm eps {TIMM_LAYER_NORM_EPS:g} (this model used "
                     f"{source.config.layer_norm_eps:g}); the verified difference below includes that change")
    if v2:
        write_v2(source, state, kind, path, processor_settings(source))
    elif kind == "transformers":
        _write_hf(source, state, path)
    elif kind == "timm":
        _write_timm(source, state, path)
    else:
        _write_original(source, state, path)
    written = load_checkpoint(path)
    if set(written.state_dict) != set(state):
        raise CheckpointError(f"{path} did not read back with the same keys; please report this as a bug.")
    diff = max_output_difference(source, written) if verify else None
    return ConversionResult(path=path, format="hf" if kind == "transformers" else format,
                            source_format=source.format, num_tensors=len(state), max_abs_diff=diff,
                            notes=tuple(notes))
