"""The `EfficientFormerConfig` that a state dict's shapes imply, for checkpoints without a `config.json`
(timm folders and files, the original release): the inverse of `efficientformer.checkpoints.shapes`."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from ..config import EfficientFormerConfig
from ..constants import BASE_PREFIX, DISTILLATION_HEAD, HEADS
from ..errors import CheckpointError, ConfigError
from ..models.architecture import STEM_REDUCTION
from .keys import layout_from_keys
from .shapes import check_shapes


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

    shape = shape_reader(state_dict, source, "EfficientFormer")
    layout = layout_from_keys(keys, "transformers")
    enc = f"{BASE_PREFIX}.encoder"
    # `encoder.intermediate_stages` holds each stage before the last, followed by its Downsample when it
    # has one (the order of `models.architecture.plan`): the positions are read off the file, not assumed
    # to alternate, and `check_shapes` below compares every key with the plan of the result.
    stage_re = re.compile(rf"{enc}\.intermediate_stages\.(\d+)\.meta4D_layers\.")
    positions = sorted({int(m.group(1)) for m in map(stage_re.match, keys) if m})
    down_at = [p + 1 for p in positions if f"{enc}.intermediate_stages.{p + 1}.projection.weight" in state_dict]
    every = {int(m.group(1)) for m in map(re.compile(rf"{enc}\.intermediate_stages\.(\d+)\.").match, keys) if m}
    if every != set(positions) | set(down_at):  # a position that is neither: a stage whose blocks are gone
        raise CheckpointError(f"{source}: some stage has no blocks (intermediate_stages {sorted(every)}); "
                              "the file is incomplete.")
    widths = [shape(f"{BASE_PREFIX}.patch_embed.convolution2.weight")[0]]
    depths, downsamples = [], []
    for position in positions:
        depths.append(_count(keys, rf"{enc}\.intermediate_stages\.{position}\.meta4D_layers\.blocks\.(\d+)\."))
        downsamples.append(position + 1 in down_at)
        # no Downsample means the next stage is as wide (the plan builds one wherever the width changes)
        widths.append(shape(f"{enc}.intermediate_stages.{position + 1}.projection.weight")[0] if downsamples[-1]
                      else widths[-1])
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
        "num_channels": shape(f"{BASE_PREFIX}.patch_embed.convolution1.weight")[1],
        "use_layer_scale": f"{first4d}.layer_scale_1" in state_dict,
        "distillation": f"{DISTILLATION_HEAD}.weight" in state_dict,
    }
    if down_at:
        kernel = shape(f"{enc}.intermediate_stages.{down_at[0]}.projection.weight")[-1]
        config.update(downsample_patch_size=kernel, downsample_pad=kernel // 2)
    if not all(downsamples):  # the default is a Downsample after every stage; the last entry is unused
        config["downsamples"] = downsamples + [True]
    if num_meta3d:
        mixer = f"{enc}.last_stage.meta3D_layers.blocks.0.token_mixer"
        heads, resolution = square_table(shape, f"{mixer}.attention_biases", source, "EfficientFormer")
        qkv, value_dim = shape(f"{mixer}.qkv.weight")[0], shape(f"{mixer}.projection.weight")[1]
        key_dim, rest = divmod(qkv - value_dim, 2 * heads)
        if rest or key_dim <= 0 or value_dim % (heads * key_dim):
            raise CheckpointError(f"{source}: {mixer}.qkv.weight {shape(f'{mixer}.qkv.weight')} and projection.weight "
                                  f"{shape(f'{mixer}.projection.weight')} fit no split into {heads} heads.")
        config.update(num_attention_heads=heads, resolution=resolution, key_dim=key_dim,
                      attention_ratio=value_dim // (heads * key_dim), image_size=resolution * STEM_REDUCTION * 2 ** len(down_at))
    return built_config(EfficientFormerConfig, config, state_dict, fields, source, check_shapes)


def shape_reader(state_dict: dict, source: str, family: str) -> Callable[[str], tuple]:
    """`shape(key)` of a state dict whose missing keys are named as the reason the architecture cannot be read."""
    def shape(key: str) -> tuple:
        if key not in state_dict:
            raise CheckpointError(f"{source}: {key} is missing, so the architecture cannot be read from the weights; "
                                  f"the file is incomplete or not an {family}.")
        return tuple(state_dict[key].shape)

    return shape


def square_table(shape: Callable[[str], tuple], key: str, source: str, family: str) -> tuple[int, int]:
    """(heads, grid side) of an attention-bias table (heads, grid * grid), refused when its columns are not a square."""
    heads, cells = shape(key)
    grid = math.isqrt(cells)
    if grid * grid != cells:
        raise CheckpointError(f"{source}: {key} has {cells} columns, not a square number; this is not an {family} "
                              "attention table.")
    return heads, grid


def built_config(config_class: type, config: dict[str, Any], state_dict: dict, fields: dict[str, Any], source: str,
                 check: Any) -> Any:
    """The last step of reading a config off the shapes (both families): the label count from the head,
    the caller's `fields`, the config built (its errors worded for a checkpoint), and every key compared
    with the shapes that config implies (`check`)."""
    head = next((f"{name}.weight" for name in HEADS if f"{name}.weight" in state_dict), None)
    if head is not None:
        config["num_labels"] = tuple(state_dict[head].shape)[0]
    config.update(fields)
    try:
        result = config_class(**config)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the weights describe an invalid architecture ({err})") from None
    check(state_dict, result, source=source, against="the architecture read from its shapes")
    return result
