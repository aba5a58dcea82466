"""Converting checkpoints between the transformers, timm and original layouts, with a numerical check.

`convert(src, dst, format="hf")` reads any checkpoint `load_checkpoint` reads and writes:

- `"hf"`: a folder transformers 4.57 and this package load: `config.json` (with `hidden_size` and
  `architectures`), `model.safetensors`, `preprocessor_config.json`.
- `"timm"`: a timm hub folder: `config.json` (`architecture`, `model_args`, `pretrained_cfg`,
  `label_names`) and `model.safetensors` with timm's key names.
- `"original"`: a `.pth` file `{"model": state_dict}` as the snap-research release.

Keys are renamed through `efficientformer.key_mapping`; tensors are copied unchanged (or cast with
`dtype`), so converting there and back gives identical tensors. With `verify=True` the source and the
written checkpoint are run as models on the same random batch and the largest difference is reported.

Example:
    >>> from efficientformer.convert import convert
    >>> result = convert("efficientformer_l1_300d.pth", "efficientformer-l1", format="hf")  # doctest: +SKIP
    >>> result.max_abs_diff < 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from .checkpoints import TIMM_LAYER_NORM_EPS, Checkpoint, load_checkpoint
from .config import EfficientFormerConfig
from .errors import CheckpointError, InputError, require
from .key_mapping import Layout, convert_state_dict
from .presets import RELEASED_PREPROCESSING

OUTPUT_FORMATS = {"hf": "transformers", "transformers": "transformers", "timm": "timm", "original": "original"}
DTYPES = ("float32", "float16", "bfloat16")
# preprocessing of the released checkpoints (resize 256 bicubic, crop 224, ImageNet mean/std): used for
# checkpoints that carry no settings of their own (a bare .pth / .safetensors file)
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
# timm's EfficientFormer fixes these; other values load here but not in timm.
_TIMM_FIXED = {"key_dim": 32, "num_attention_heads": 8, "attention_ratio": 4, "resolution": 7}


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
    from .processing import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor(**(checkpoint.processor or RELEASED_PREPROCESSING)).to_dict()


def timm_pretrained_cfg(settings: dict, config: EfficientFormerConfig) -> dict:
    """timm's `pretrained_cfg` for processor `settings` (the inverse of `from_timm_config`)."""
    size, crop = settings.get("size") or {}, settings.get("crop_size") or {}
    # an exact (height, width) resize is timm's "squash" mode; a shortest-edge resize its "center" mode
    crop_mode = "center" if "shortest_edge" in size else "squash"
    if settings.get("do_center_crop", True) and crop:
        height, width = crop["height"], crop["width"]
        edge = size.get("shortest_edge") or size.get("height")
        # rounded down, so that timm's floor(height / crop_pct) gives back the same edge
        crop_pct = math.floor(height / edge * 1e4) / 1e4 if edge else 1.0
    else:
        height = size.get("height") or size.get("shortest_edge") or config.image_size
        width = size.get("width") or size.get("shortest_edge") or config.image_size
        crop_pct = 1.0
    mean = list(settings.get("image_mean") or [0.485, 0.456, 0.406])
    std = list(settings.get("image_std") or [0.229, 0.224, 0.225])
    return {"input_size": [config.num_channels, height, width], "fixed_input_size": True,
            "interpolation": _INTERPOLATION.get(int(settings.get("resample", 3)), "bicubic"),
            "crop_pct": crop_pct, "crop_mode": crop_mode, "mean": mean, "std": std,
            "num_classes": config.num_labels, "first_conv": "stem.conv1",
            "classifier": ["head", "head_dist"] if config.distillation else "head"}


def _timm_config(checkpoint: Checkpoint) -> tuple[dict, list[str]]:
    config = checkpoint.config
    notes = [f"timm's EfficientFormer fixes {name}={value}; this model has {getattr(config, name)}, so timm itself "
             "cannot build it (this package can)" for name, value in _TIMM_FIXED.items()
             if getattr(config, name) != value]
    from .presets import VARIANTS

    arch = next((f"efficientformer_{v.name}" for v in VARIANTS.values()
                 if list(v.depths) == config.depths and list(v.hidden_sizes) == config.hidden_sizes
                 and v.num_meta3d_blocks == config.num_meta3d_blocks), "efficientformer_l1")
    data = {
        "architecture": arch,
        "num_classes": config.num_labels,
        "num_features": config.hidden_sizes[-1],
        "model_args": {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
                       "num_vit": config.num_meta3d_blocks, "mlp_ratios": config.mlp_expansion_ratio},
        "pretrained_cfg": {"architecture": arch, **timm_pretrained_cfg(processor_settings(checkpoint), config)},
        "label_names": [config.id2label[i] for i in range(config.num_labels)],
    }
    return data, notes


def _write_hf(checkpoint: Checkpoint, state: dict, folder: str) -> str:
    from safetensors.torch import save_file

    from .processing import EfficientFormerImageProcessor

    os.makedirs(folder, exist_ok=True)
    config = checkpoint.config.copy()
    has_dist = "distillation_classifier.weight" in state
    has_head = "classifier.weight" in state
    config.extra["architectures"] = ["EfficientFormerForImageClassificationWithTeacher" if has_dist else
                                     "EfficientFormerForImageClassification" if has_head else "EfficientFormerModel"]
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    if floats:
        config.extra["dtype"] = str(floats[0]).replace("torch.", "")
    if not has_head:  # a bare backbone is saved without the "efficientformer." prefix, as transformers does
        state = {k.removeprefix("efficientformer."): v for k, v in state.items()}
    config.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    EfficientFormerImageProcessor(**processor_settings(checkpoint)).save_pretrained(folder)
    return folder


def _write_timm(checkpoint: Checkpoint, state: dict, folder: str) -> tuple[str, list[str]]:
    from safetensors.torch import save_file

    layout = Layout.from_config(checkpoint.config)
    timm_state = convert_state_dict(state, "transformers", "timm", layout)
    data, notes = _timm_config(checkpoint)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    save_file({k: v.contiguous() for k, v in timm_state.items()}, os.path.join(folder, "model.safetensors"))
    return folder, notes


def _write_original(checkpoint: Checkpoint, state: dict, dst: str) -> str:
    import torch

    path = dst if dst.endswith((".pth", ".pt")) else os.path.join(dst, "model.pth")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    layout = Layout.from_config(checkpoint.config)
    torch.save({"model": convert_state_dict(state, "transformers", "original", layout)}, path)
    return path


def build_model(checkpoint: Checkpoint):
    """The eval-mode PyTorch model that fits the checkpoint's heads (WithTeacher, classifier or backbone)."""
    from .modeling_torch import model_class_for

    model = model_class_for(checkpoint.state_dict)(checkpoint.config)
    model.load_pretrained_state_dict(checkpoint.state_dict)
    model.processor_settings = checkpoint.processor
    return model.float().eval()


def max_output_difference(a: Checkpoint, b: Checkpoint, *, batch: int = 1, seed: int = 0) -> float:
    """Largest |difference| of the two checkpoints' model outputs (logits, else tokens) on one random batch."""
    import torch

    size = a.config.image_size
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, a.config.num_channels, size, size, generator=generator)
    outputs = []
    with torch.no_grad():
        for checkpoint in (a, b):
            out = build_model(checkpoint)(pixels)
            outputs.append(out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state)
    return float((outputs[0] - outputs[1]).abs().max())


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, format: str = "hf", dtype: str | None = None,
            verify: bool = True, allow_training_args: bool = False, **hub_kwargs: Any) -> ConversionResult:
    """Write the checkpoint `src` (any layout `load_checkpoint` reads) in layout `format` at `dst`.

    Args:
        src: folder, hub id or weights file.
        dst: output folder (hf, timm), or `.pth` file for `"original"` (a folder gets `model.pth`).
        format: `"hf"` (transformers), `"timm"` or `"original"`.
        dtype: `"float32"`, `"float16"` or `"bfloat16"` to cast floating tensors; None keeps them.
        verify: run source and written checkpoint on one random batch and report the difference
            (needs the PyTorch model classes).
        allow_training_args: read training checkpoints that pickle `argparse.Namespace` arguments.
        **hub_kwargs: revision, cache_dir, local_files_only, token.

    Returns:
        A `ConversionResult` with the path written and the largest output difference.

    Raises:
        CheckpointError: the source cannot be read.
        InputError: unknown format or dtype, or `dst` is where the source is.
    """
    require("torch", "torch", "converting checkpoints")
    if format not in OUTPUT_FORMATS:
        raise InputError(f"format {format!r} is not supported; choose hf, timm or original.")
    source = load_checkpoint(src, allow_training_args=allow_training_args, **hub_kwargs)
    state = _cast(source.state_dict, dtype)
    dst = os.fspath(dst)
    if os.path.abspath(dst) == os.path.abspath(source.source) or (
            os.path.isdir(dst) and os.path.abspath(os.path.dirname(source.source)) == os.path.abspath(dst)):
        raise InputError(f"{dst} is where the source is; write the conversion somewhere else.")
    notes: list[str] = []
    kind = OUTPUT_FORMATS[format]
    if kind != "transformers" and source.config.layer_norm_eps != TIMM_LAYER_NORM_EPS:
        notes.append(f"the {kind} layout implies LayerNorm eps {TIMM_LAYER_NORM_EPS:g} (this model used "
                     f"{source.config.layer_norm_eps:g}); the verified difference below includes that change")
    if kind == "transformers":
        path = _write_hf(source, state, dst)
    elif kind == "timm":
        path, timm_notes = _write_timm(source, state, dst)
        notes.extend(timm_notes)
    else:
        path = _write_original(source, state, dst)
    written = load_checkpoint(path)
    if set(written.state_dict) != set(state):
        raise CheckpointError(f"{path} did not read back with the same keys; please report this as a bug.")
    diff = max_output_difference(source, written) if verify else None
    return ConversionResult(path=path, format="hf" if kind == "transformers" else format,
                            source_format=source.format, num_tensors=len(state), max_abs_diff=diff,
                            notes=tuple(notes))
