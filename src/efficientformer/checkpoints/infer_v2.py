"""The `EfficientFormerV2Config` that a state dict's shapes imply (our layout's keys), for timm folders and
files and the original release, which carry no config of ours: the inverse of `checkpoints.shapes_v2`."""

from __future__ import annotations

import re
from typing import Any

from ..constants import BASE_PREFIX, DISTILLATION_HEAD
from ..errors import CheckpointError
from .infer import built_config, shape_reader, square_table
from .shapes_v2 import check_shapes_v2

_ENCODER = f"{BASE_PREFIX}.encoder.stages"
_BLOCK = re.compile(rf"{re.escape(_ENCODER)}\.(\d+)\.blocks\.(\d+)\.")


def _ratio(hidden: int, width: int) -> float | int:
    ratio = hidden / width
    return int(ratio) if ratio.is_integer() else ratio


def infer_config_v2(state_dict: dict, *, source: str = "the checkpoint", **fields: Any):
    """The `EfficientFormerV2Config` whose model has exactly the tensors of `state_dict` (our layout).

    Read from the shapes: depths, hidden_sizes, every block's MLP ratio, the number of attention blocks,
    the heads, key size and value ratio of both kinds of attention, the trained image size (16 times the
    side of the downsampling attention's bias grid), num_channels, layer scales, the heads and labels.
    Settings that leave no trace (activation, BatchNorm epsilon) keep their defaults unless given in `fields`.

    Raises:
        CheckpointError: the shapes fit no EfficientFormerV2.
    """
    from ..config_v2 import EfficientFormerV2Config

    shape = shape_reader(state_dict, source, "EfficientFormerV2")
    blocks: dict[int, set[int]] = {}
    for match in map(_BLOCK.match, state_dict):
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if sorted(blocks) != list(range(4)) or any(sorted(b) != list(range(len(b))) for b in blocks.values()):
        raise CheckpointError(f"{source}: the blocks of stages {sorted(blocks)} do not form four stages of "
                              "consecutive blocks; the file is incomplete or not an EfficientFormerV2.")
    depths = [len(blocks[i]) for i in range(4)]
    widths, ratios, attention = [], [], []
    for i, depth in enumerate(depths):
        width = shape(f"{_ENCODER}.{i}.blocks.0.mlp.convolution2.weight")[0]
        widths.append(width)
        ratios.append([_ratio(shape(f"{_ENCODER}.{i}.blocks.{j}.mlp.convolution1.weight")[0], width)
                       for j in range(depth)])
        attention.append(sum(f"{_ENCODER}.{i}.blocks.{j}.token_mixer.attention_biases" in state_dict
                             for j in range(depth)))
    config: dict[str, Any] = {
        "depths": depths, "hidden_sizes": widths, "mlp_ratios": ratios, "num_attention_blocks": max(attention),
        "num_channels": shape(f"{BASE_PREFIX}.patch_embed.convolution1.weight")[1],
        "use_layer_scale": f"{_ENCODER}.0.blocks.0.layer_scale_2" in state_dict,
        "distillation": f"{DISTILLATION_HEAD}.weight" in state_dict,
    }
    down = f"{_ENCODER}.3.downsample.attention"
    heads, grid = square_table(shape, f"{down}.attention_biases", source, "EfficientFormerV2")
    keys, values = shape(f"{down}.key.convolution.weight")[0], shape(f"{down}.value.convolution.weight")[0]
    if keys % heads or values % heads:
        raise CheckpointError(f"{source}: the downsampling attention's widths ({keys}, {values}) fit no split into "
                              f"{heads} heads.")
    config.update(downsample_num_attention_heads=heads, downsample_key_dim=keys // heads,
                  downsample_attention_ratio=_ratio(values, keys), image_size=16 * grid)
    mixer = next((f"{_ENCODER}.{i}.blocks.{j}.token_mixer" for i in (3, 2) for j in range(depths[i])
                  if f"{_ENCODER}.{i}.blocks.{j}.token_mixer.attention_biases" in state_dict), None)
    if mixer is not None:
        heads = shape(f"{mixer}.attention_biases")[0]
        keys, values = shape(f"{mixer}.key.convolution.weight")[0], shape(f"{mixer}.value.convolution.weight")[0]
        if keys % heads or values % heads:
            raise CheckpointError(f"{source}: {mixer}'s widths ({keys}, {values}) fit no split into {heads} heads.")
        config.update(num_attention_heads=heads, key_dim=keys // heads, attention_ratio=_ratio(values, keys))
    return built_config(EfficientFormerV2Config, config, state_dict, fields, source, check_shapes_v2)


__all__ = ["infer_config_v2"]
