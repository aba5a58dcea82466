"""Writing EfficientFormerV2 checkpoints in the three layouts, for `checkpoints.conversion.convert`.

- `"hf"`: our folder (`config.json` with `model_type` "efficientformer_v2", `model.safetensors`,
  `preprocessor_config.json`).
- `"timm"`: a timm hub folder that `timm.create_model("efficientformerv2_s0", **model_args)` builds and
  whose `model.safetensors` it loads (`timm_support_error_v2` names what timm cannot express).
- `"original"`: `{"model": state_dict}` with the snap-research names, layer scales (C, 1, 1) and the
  persistent `attention_bias_idxs` its modules register.

The keys go through the one V2 table (`checkpoints.keys_v2`); the tensors are copied unchanged.
"""

from __future__ import annotations

from typing import Any

from ..constants import CLASS_HEAD, DISTILLATION_HEAD, SAFETENSORS_NAME
from ..fileio import write_with
from .folder import write_model_folder
from .keys_v2 import bias_index_buffers, convert_state_dict_v2
from .loading import Checkpoint
from .timm_meta import timm_pretrained_cfg

# What timm 1.0's EfficientFormerV2 fixes (its attention modules are built with their defaults), as
# (config field, timm's value).
_TIMM_FIXED_V2 = (("key_dim", 32), ("num_attention_heads", 8), ("attention_ratio", 4), ("downsample_key_dim", 16),
                  ("downsample_num_attention_heads", 8), ("downsample_attention_ratio", 4), ("hidden_act", "gelu"))


def timm_support_error_v2(config: Any, state: dict) -> str | None:
    """Why timm's `EfficientFormerV2` cannot hold this model (one sentence), or None when it can."""
    for name, value in _TIMM_FIXED_V2:
        if getattr(config, name) != value:
            return (f"timm's EfficientFormerV2 cannot build this model: it fixes {name}={value!r}, and this model has "
                    f"{name}={getattr(config, name)!r}; convert to --format hf or original instead.")
    if f"{CLASS_HEAD}.weight" not in state:
        return ("timm's EfficientFormerV2 folder holds a classifier, and this checkpoint is a bare backbone (no head); "
                "convert a classification checkpoint, or use --format hf or original for the backbone.")
    return None


def _timm_architecture(config: Any) -> str:
    from ..presets import V2_VARIANTS

    for variant in V2_VARIANTS.values():
        if list(variant.depths) == config.depths and list(variant.hidden_sizes) == config.hidden_sizes:
            return f"efficientformerv2_{variant.name}"
    return "efficientformerv2_s0"


def timm_config_v2(checkpoint: Checkpoint, settings: dict) -> dict:
    """timm's hub `config.json`: `timm.create_model(architecture, **model_args)` builds the model."""
    config = checkpoint.config
    arch = _timm_architecture(config)
    args: dict[str, Any] = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
                            "num_vit": config.num_attention_blocks, "mlp_ratios": config.mlp_ratios,
                            "num_classes": config.num_labels, "drop_path_rate": config.drop_path_rate}
    if config.image_size != 224:
        args["img_size"] = config.image_size
    if config.num_channels != 3:
        args["in_chans"] = config.num_channels
    if config.batch_norm_eps != 1e-5:
        args["norm_eps"] = config.batch_norm_eps
    if not config.use_layer_scale:
        args["layer_scale_init_value"] = None
    if f"{DISTILLATION_HEAD}.weight" not in checkpoint.state_dict:
        args["distillation"] = False
    pretrained = timm_pretrained_cfg(settings, config)
    pretrained.update(first_conv="stem.conv1.conv",
                      classifier=["head", "head_dist"] if args.get("distillation", True) else "head")
    return {"architecture": arch, "num_classes": config.num_labels, "num_features": config.hidden_sizes[-1],
            "model_args": args, "pretrained_cfg": {"architecture": arch, **pretrained},
            "label_names": [config.id2label[i] for i in range(config.num_labels)]}


def write_v2(checkpoint: Checkpoint, state: dict, kind: str, path: str, settings: dict) -> None:
    """Write `state` (our names) of a V2 checkpoint at `path` in layout `kind` ("transformers", "timm",
    "original"); `settings` are the image processor's."""
    from safetensors.torch import save_file

    from ..factory import CLASS_NAMES_V2, task_for

    if kind == "transformers":
        config = checkpoint.config.copy()
        config.extra["architectures"] = [CLASS_NAMES_V2[task_for(state)]]
        tensors = {k: v.contiguous() for k, v in state.items()}
        write_model_folder(path, config=config, processor=settings,
                           weights={SAFETENSORS_NAME: lambda p: save_file(tensors, p, metadata={"format": "pt"})})
    elif kind == "timm":
        tensors = {k: v.contiguous() for k, v in convert_state_dict_v2(state, "transformers", "timm").items()}
        write_model_folder(path, config=timm_config_v2(checkpoint, settings), processor=None,
                           weights={SAFETENSORS_NAME: lambda p: save_file(tensors, p)})
    else:
        import torch

        full = {**state, **bias_index_buffers(checkpoint.config)}
        original = {"model": convert_state_dict_v2(full, "transformers", "original")}
        write_with(path, lambda tmp: torch.save(original, tmp))


__all__ = ["write_v2", "timm_support_error_v2", "timm_config_v2"]
