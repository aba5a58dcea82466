"""timm's hub metadata (`config.json` with `pretrained_cfg`, `model_args`, `label_names`) in both directions, for
both families: recognizing a timm `config.json`, the image-processor settings its `pretrained_cfg` implies and the
`pretrained_cfg` our settings imply, and the check of its `model_args` against the architecture read from the
weights. Used by `checkpoints.loading` (reading) and `checkpoints.conversion` (writing)."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError

_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def is_timm_config(data: dict) -> bool:
    """Whether a `config.json` mapping is timm's (no `model_type`; `pretrained_cfg` or `architecture`)."""
    return "model_type" not in data and ("pretrained_cfg" in data or "architecture" in data)


def processor_from_timm(pretrained_cfg: dict) -> dict:
    """The `EfficientFormerImageProcessor` settings of timm's `pretrained_cfg`."""
    from ..preprocessing.processor import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor.from_timm_config(pretrained_cfg).to_dict()


def timm_pretrained_cfg(settings: dict, config: Any) -> dict:
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
    mean = list(settings.get("image_mean") or IMAGENET_MEAN)
    std = list(settings.get("image_std") or IMAGENET_STD)
    return {"input_size": [config.num_channels, height, width], "fixed_input_size": True,
            "interpolation": _INTERPOLATION.get(int(settings.get("resample", 3)), "bicubic"),
            "crop_pct": crop_pct, "crop_mode": crop_mode, "mean": mean, "std": std,
            "num_classes": config.num_labels, "first_conv": "stem.conv1",
            # timm's model always has both heads (a single-head model is written with its head twice)
            "classifier": ["head", "head_dist"]}


def check_timm_args(args: dict, found: dict, source: str,
                    same: Callable[[str, Any, Any], bool] | None = None) -> None:
    """timm's `model_args` (e.g. depths, embed_dims, num_vit, num_classes) against the values `found` in the
    weights; `same(name, given, found)` compares one (default: equal, sequences as lists)."""
    for name, value in args.items():
        if name not in found:
            continue
        given = list(value) if isinstance(value, (list, tuple)) else value
        if not (same(name, value, found[name]) if same else given == found[name]):
            raise CheckpointError(f"{source}: timm's config.json says {name}={value} but the weights have "
                                  f"{name}={found[name]}; the weights and config.json belong to different models.")


__all__ = ["is_timm_config", "processor_from_timm", "timm_pretrained_cfg", "check_timm_args"]
