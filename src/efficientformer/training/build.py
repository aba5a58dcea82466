"""The model a training run starts from: a preset, a config.json, or pretrained weights with new heads."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from ..constants import REDUCTION
from ..errors import ConfigError

ARCH_FIELDS = ("depths", "hidden_sizes", "num_meta3d_blocks", "num_attention_heads", "key_dim",
               "mlp_expansion_ratio")


def build_model(model: str = "l1", class_names: Sequence[str] = (), *, config_path: str | None = None,
                image_size: int | None = None, drop_path_rate: float | None = None, distillation_head: bool = True,
                num_channels: int | None = None, arch: dict[str, Any] | None = None):
    """A classifier for `class_names`, from scratch or from pretrained weights.

    Args:
        model: a preset name ("l1", "l3", "l7": random weights in that shape), or a folder / hub id / weights
            file of an EfficientFormer (pretrained: the heads are re-initialized when the classes differ).
        class_names: names of the classes, index order (sets `num_labels` and `id2label`).
        config_path: a config.json to start from (random weights); overrides `model`'s shape.
        image_size: training input side; for new models it also sets the attention-bias grid to image_size/32.
        drop_path_rate: stochastic depth of the last block.
        distillation_head: `EfficientFormerForImageClassificationWithTeacher` (two heads) when True, else
            `EfficientFormerForImageClassification`.
        num_channels: input channels of a new model (3 unless given).
        arch: overrides of a new model's shape (`depths`, `hidden_sizes`, `num_meta3d_blocks`, ...).

    Returns:
        The model (train mode, float32, on the CPU).

    Raises:
        ConfigError: an inconsistent shape; CheckpointError: unreadable weights.
    """
    from ..checkpoints.loading_v2 import is_v2_config
    from ..factory import config_from_json, create_model, preset_config, preset_name

    task = "distillation" if distillation_head else "classification"
    labels = {i: str(name) for i, name in enumerate(class_names)}
    arch = {k: v for k, v in (arch or {}).items() if v is not None}
    unknown = set(arch) - set(ARCH_FIELDS)
    if unknown:
        raise ConfigError(f"unknown architecture fields {sorted(unknown)}; allowed: {', '.join(ARCH_FIELDS)}.")
    overrides: dict[str, Any] = {}
    if drop_path_rate is not None:
        overrides["drop_path_rate"] = float(drop_path_rate)
    if config_path is None and preset_name(model) is None:  # pretrained weights, new heads where classes differ
        if arch:
            raise ConfigError("architecture overrides (--depths, --hidden-sizes, ...) only apply to new models; "
                              "drop them or start from a preset.")
        if image_size is not None:
            overrides["image_size"] = int(image_size)
        return create_model(model, task=task, ignore_mismatched_sizes=True, id2label=labels, **overrides).train()
    if config_path is not None:
        if not os.path.isfile(config_path):
            raise ConfigError(f"config file {config_path} does not exist.")
        config = config_from_json(config_path)
    else:
        config = preset_config(preset_name(model), {})
    if is_v2_config(config):  # EfficientFormerV2: its bias grids follow image_size; V1's shape flags do not apply
        if arch:
            raise ConfigError("the architecture overrides (--depths, --hidden-sizes, ...) are EfficientFormer (V1) "
                              "fields; for EfficientFormerV2 write them in a config.json and pass --config.")
        overrides.update({k: int(v) for k, v in (("image_size", image_size), ("num_channels", num_channels))
                          if v is not None})
        return create_model(config, task=task, id2label=labels, distillation=bool(distillation_head),
                            **overrides).train()
    if "hidden_sizes" in arch:
        arch["hidden_sizes"] = [int(v) for v in arch["hidden_sizes"]]
        arch["dim"] = arch["hidden_size"] = arch["hidden_sizes"][-1]
    if "depths" in arch:
        arch["depths"] = [int(v) for v in arch["depths"]]
    if image_size is not None:
        overrides["image_size"] = int(image_size)
        overrides["resolution"] = max(1, math.ceil(int(image_size) / REDUCTION))
    if num_channels is not None:
        overrides["num_channels"] = int(num_channels)
    # random weights from the constructor's initialization (torch's global generator, seeded by the trainer)
    return create_model(config, task=task, id2label=labels, distillation=bool(distillation_head), **arch,
                        **overrides).train()
