"""Reading EfficientFormer weights of any layout: transformers, timm or the original snap-research release.

`load_checkpoint(name_or_path)` finds the weights (a folder, a hub id or a single file), reads them
without running pickled code, detects the layout from the key names, renames the keys to the
transformers layout (`efficientformer.checkpoints.keys`), and returns them with an `EfficientFormerConfig`:
the checkpoint's `config.json` when it has one (checked against the tensor shapes), else one inferred
from the shapes.

Example:
    >>> from efficientformer.checkpoints.loading import load_checkpoint
    >>> ckpt = load_checkpoint("efficientformer_l1_300d.pth")  # doctest: +SKIP
    >>> ckpt.format, ckpt.config.depths  # doctest: +SKIP
    ('original', [3, 2, 6, 4])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..config import MODEL_TYPE, MODEL_TYPE_V2, EfficientFormerConfig, read_json_object
from ..constants import CONFIG_NAME, PREPROCESSOR_NAME, PT_WEIGHTS_NAMES, TIMM_LAYER_NORM_EPS
from ..errors import CheckpointError, ConfigError
from ..labels import with_known_names
from .keys import FORMATS, convert_state_dict, detect_format, strip_wrappers
from .keys_v2 import is_v2_keys
from .reading import check_tensors, read_state_dict
from .infer import infer_config
from .shapes import check_shapes, complete_buffers
from .timm_meta import check_timm_args, is_timm_config, processor_from_timm

if TYPE_CHECKING:  # pragma: no cover
    import torch

# single weights files a folder may hold when it has none of PT_WEIGHTS_NAMES
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


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


# ----------------------------------------------------------------------------------- the V1 family
def _timm_args(data: dict, config: EfficientFormerConfig) -> tuple[dict, dict, None]:
    """timm's `model_args` (or those of the preset its `architecture` names) and the same values read from
    the weights, for `timm_meta.check_timm_args`."""
    args = dict(data.get("model_args") or {})
    arch = str(data.get("architecture", ""))
    if not args and arch.startswith("efficientformer_l"):
        from ..presets import VARIANTS

        variant = VARIANTS.get(arch.replace("efficientformer_", ""))
        if variant is not None:
            args = {"depths": list(variant.depths), "embed_dims": list(variant.hidden_sizes),
                    "num_vit": variant.num_meta3d_blocks}
    found = {"depths": list(config.depths), "embed_dims": list(config.hidden_sizes),
             "num_vit": config.num_meta3d_blocks, "num_classes": config.num_labels}
    return args, found, None


def _infer(state: dict, source: str, fmt: str) -> EfficientFormerConfig:
    # timm and the original code build their LayerNorms with eps 1e-5, transformers with 1e-12
    eps = TIMM_LAYER_NORM_EPS if fmt != "transformers" else EfficientFormerConfig().layer_norm_eps
    return infer_config(state, source=source, layer_norm_eps=eps)


@dataclass(frozen=True)
class Family:
    """What `load_checkpoint` needs of a model family: its name and config class, the renaming of its keys
    to our layout, the config its shapes imply, the shape check against a config, timm's `model_args` next to
    the values read, and the buffers a model rebuilds."""

    name: str
    model_type: str
    config_class: type
    to_our_layout: Callable[..., tuple[dict, str]]  # (raw, source=) -> (state, layout)
    infer: Callable[[dict, str, str], Any]  # (state, source, layout) -> config
    check_shapes: Callable[..., None]  # (state, config, source=, against=)
    timm_args: Callable[[dict, Any], tuple[dict, dict, Any]]
    complete: Callable[[dict, Any], dict]


def family_of(raw: dict) -> Family:
    """The family whose weights `raw` holds (EfficientFormerV2 when every FFN has a depthwise convolution)."""
    if is_v2_keys(raw):
        from ..config_v2 import EfficientFormerV2Config
        from . import loading_v2
        from .infer_v2 import infer_config_v2
        from .shapes_v2 import check_shapes_v2

        return Family("EfficientFormerV2", MODEL_TYPE_V2, EfficientFormerV2Config, loading_v2.to_our_layout_v2,
                      lambda state, source, fmt: infer_config_v2(state, source=source), check_shapes_v2,
                      loading_v2.timm_args_v2, lambda state, config: state)
    return Family("EfficientFormer", MODEL_TYPE, EfficientFormerConfig, to_transformers_layout, _infer, check_shapes,
                  _timm_args, complete_buffers)


# ------------------------------------------------------------------------------------- the entry point
def _find_files(name_or_path: str, hub: dict) -> tuple[str, str | None, str | None]:
    """(weights, config.json or None, preprocessor_config.json or None) of a file, folder or hub id."""
    from .hub import resolve_file, resolve_first

    if os.path.isfile(name_or_path):
        return name_or_path, None, None
    weights = resolve_first(name_or_path, PT_WEIGHTS_NAMES, **hub)
    if weights is None and os.path.isdir(name_or_path):
        candidates = sorted(f for f in os.listdir(name_or_path) if f.endswith(WEIGHT_SUFFIXES))
        if len(candidates) == 1:
            weights = os.path.join(name_or_path, candidates[0])
        elif candidates:
            raise CheckpointError(f"{name_or_path} holds several weights files ({', '.join(candidates)}); "
                                  "point at the one to load.")
    if weights is None:
        raise CheckpointError(f"{name_or_path} has neither {' nor '.join(PT_WEIGHTS_NAMES)}; point at a folder written "
                              "by save_pretrained or timm, a hub id, or a weights file.")
    config = resolve_file(name_or_path, CONFIG_NAME, required=False, **hub)
    processor = resolve_file(name_or_path, PREPROCESSOR_NAME, required=False, **hub)
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
    family = family_of(raw)
    state, fmt = family.to_our_layout(raw, source=weights)
    check_tensors(raw, source=weights)  # after the layout check: a non-EfficientFormer file is named as such
    config_data = _read_json(config_path) if config_path else None
    processor = _read_json(processor_path) if processor_path else None

    if config_data is not None and not is_timm_config(config_data):
        if config_data.get("model_type", family.model_type) != family.model_type:
            raise CheckpointError(f"{config_path} is for model_type {config_data.get('model_type')!r}, but {weights} "
                                  f"holds {family.name} weights; the two belong to different models.")
        try:
            config = family.config_class.from_dict(config_data)
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{config_path} is not a valid {family.name} config.json ({err}).") from None
        family.check_shapes(state, config, source=weights, against=f"its config.json ({config_path})")
    else:
        config = family.infer(state, weights, fmt)
        if config_data is not None:  # timm's config.json: check it, take its labels and preprocessing
            args, found, same = family.timm_args(config_data, config)
            if "num_classes" in config_data:
                args.setdefault("num_classes", config_data["num_classes"])
            check_timm_args(args, found, weights, same)
            names = config_data.get("label_names")
            if names:
                if len(names) != config.num_labels:
                    raise CheckpointError(f"{config_path} lists {len(names)} label_names but the head of {weights} "
                                          f"has {config.num_labels} classes.")
                config.id2label = dict(enumerate(map(str, names)))
            if processor is None and isinstance(config_data.get("pretrained_cfg"), dict):
                processor = processor_from_timm(config_data["pretrained_cfg"])
    config.id2label = with_known_names(config.id2label)
    state = family.complete(state, config)
    return Checkpoint(state_dict=state, config=config, processor=processor, format=fmt, source=weights)
