"""The EfficientFormerV2 branch of `load_checkpoint`: once the keys show a V2 (every block's FFN has a
depthwise convolution), the layout is detected among V2's three (`checkpoints.keys_v2`), the keys are
renamed to ours, and the config comes from our `config.json`, else from the shapes (checked against timm's
`config.json` when there is one, whose labels and preprocessing it takes)."""

from __future__ import annotations

from ..config import MODEL_TYPE_V2, LabelledConfig
from ..constants import BASE_PREFIX
from ..errors import CheckpointError, ConfigError
from ..labels import with_known_names
from .keys import WRAPPER_PREFIXES
from .keys_v2 import convert_state_dict_v2, detect_format_v2
from .reading import check_tensors

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


def _check_timm_args_v2(data: dict, config, source: str) -> None:
    """timm's `model_args` (depths, embed_dims, num_vit, mlp_ratios, num_classes) against the shapes read."""
    from ..config_v2 import expand_mlp_ratios

    args = dict(data.get("model_args") or {})
    if "num_classes" in data:
        args.setdefault("num_classes", data["num_classes"])
    found = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
             "num_vit": config.num_attention_blocks, "num_classes": config.num_labels,
             "mlp_ratios": config.mlp_ratios}
    for name, value in args.items():
        if name not in found:
            continue
        given = expand_mlp_ratios(value, config.depths) if name == "mlp_ratios" else (
            list(value) if isinstance(value, (list, tuple)) else value)
        if name == "num_vit" and isinstance(value, int):  # a stage shorter than num_vit has attention everywhere
            same = [min(value, d) for d in config.depths[2:]] == [min(found[name], d) for d in config.depths[2:]]
        else:
            same = given == found[name]
        if not same:
            raise CheckpointError(f"{source}: timm's config.json says {name}={value} but the weights have "
                                  f"{name}={found[name]}; the weights and config.json belong to different models.")


def load_v2(raw: dict, *, weights: str, config_data: dict | None, config_path: str | None, processor: dict | None):
    """The `Checkpoint` of EfficientFormerV2 weights `raw` read from `weights`."""
    from ..config_v2 import EfficientFormerV2Config
    from .infer_v2 import infer_config_v2
    from .loading import Checkpoint, _is_timm_config, _timm_processor
    from .shapes_v2 import check_shapes_v2

    state, fmt = to_our_layout_v2(raw, source=weights)
    check_tensors(raw, source=weights)
    if config_data is not None and not _is_timm_config(config_data):
        if config_data.get("model_type") != MODEL_TYPE_V2:
            raise CheckpointError(f"{config_path} is for model_type {config_data.get('model_type')!r}, but "
                                  f"{weights} holds EfficientFormerV2 weights; the two belong to different models.")
        try:
            config = EfficientFormerV2Config.from_dict(config_data)
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{config_path} is not a valid EfficientFormerV2 config.json ({err}).") from None
        check_shapes_v2(state, config, source=weights, against=f"its config.json ({config_path})")
    else:
        config = infer_config_v2(state, source=weights)
        if config_data is not None:
            _check_timm_args_v2(config_data, config, weights)
            names = config_data.get("label_names")
            if names:
                if len(names) != config.num_labels:
                    raise CheckpointError(f"{config_path} lists {len(names)} label_names but the head of {weights} "
                                          f"has {config.num_labels} classes.")
                config.id2label = dict(enumerate(map(str, names)))
            if processor is None and isinstance(config_data.get("pretrained_cfg"), dict):
                processor = _timm_processor(config_data["pretrained_cfg"])
    config.id2label = with_known_names(config.id2label)
    return Checkpoint(state_dict=state, config=config, processor=processor, format=fmt, source=weights)


def is_v2_config(config: object) -> bool:
    """Whether a config object is an `EfficientFormerV2Config`."""
    return isinstance(config, LabelledConfig) and config.model_type == MODEL_TYPE_V2


__all__ = ["load_v2", "to_our_layout_v2", "strip_v2", "is_v2_config"]
