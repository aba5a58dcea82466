"""EfficientFormerV2's part of `load_checkpoint` (its `Family` in `checkpoints.loading`): once the keys show a
V2 (every block's FFN has a depthwise convolution), the layout is detected among V2's three
(`checkpoints.keys_v2`) and the keys are renamed to ours; timm's `model_args` are read for the check against
the shapes."""

from __future__ import annotations

from ..config import MODEL_TYPE_V2, LabelledConfig
from ..constants import BASE_PREFIX
from ..errors import CheckpointError
from .keys import WRAPPER_PREFIXES
from .keys_v2 import convert_state_dict_v2, detect_format_v2

# our backbone's top-level names, which a bare EfficientFormerV2Model state dict has without the prefix
_BARE = ("patch_embed.", "encoder.stages.", "norm.")


def strip_v2(keys) -> dict[str, str]:
    """Each key without training wrappers (`module.`, `_orig_mod.`), with our `efficientformer.` prefix added
    to the keys of a bare backbone."""
    out = {}
    keys = list(keys)
    bare = any(k.startswith("encoder.stages.") for k in keys)
    for key in keys:
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name[len(next(p for p in WRAPPER_PREFIXES if name.startswith(p))):]
        out[key] = f"{BASE_PREFIX}.{name}" if bare and name.startswith(_BARE) else name
    return out


def to_our_layout_v2(raw: dict, *, source: str) -> tuple[dict, str]:
    """(state dict with our key names, the detected layout) of EfficientFormerV2 weights."""
    names = strip_v2(raw)
    state = {names[k]: v for k, v in raw.items()}
    fmt = detect_format_v2(state)
    if fmt is None:
        raise CheckpointError(f"{source} is not an EfficientFormerV2 checkpoint: its keys fit none of its layouts.")
    return convert_state_dict_v2(state, fmt, "transformers", source=source), fmt


def timm_args_v2(data: dict, config) -> tuple[dict, dict, object]:
    """timm's `model_args` (depths, embed_dims, num_vit, mlp_ratios, num_classes), the same values read from
    the weights, and how two of them compare, for `timm_meta.check_timm_args`."""
    from ..config_v2 import expand_mlp_ratios

    found = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
             "num_vit": config.num_attention_blocks, "num_classes": config.num_labels,
             "mlp_ratios": config.mlp_ratios}

    def same(name, value, read) -> bool:
        if name == "mlp_ratios":
            return expand_mlp_ratios(value, config.depths) == read
        if name == "num_vit" and isinstance(value, int):  # a stage shorter than num_vit has attention everywhere
            return [min(value, d) for d in config.depths[2:]] == [min(read, d) for d in config.depths[2:]]
        return (list(value) if isinstance(value, (list, tuple)) else value) == read

    return dict(data.get("model_args") or {}), found, same


def is_v2_config(config: object) -> bool:
    """Whether a config object is an `EfficientFormerV2Config`."""
    return isinstance(config, LabelledConfig) and config.model_type == MODEL_TYPE_V2


__all__ = ["to_our_layout_v2", "timm_args_v2", "strip_v2", "is_v2_config"]
