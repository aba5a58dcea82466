"""The tensors an `EfficientFormerConfig` implies, read off its architecture plan.

`expected_shapes(config)` lists every key of the two-head classifier with its shape; `check_shapes` compares
a state dict with it (the message names the key and both shapes); `complete_buffers` adds the buffers a model
rebuilds. The way back, the config that shapes imply, is `efficientformer.checkpoints.infer`. Keys are the
transformers layout's (`efficientformer.checkpoints.keys` renames the others).
"""

from __future__ import annotations

from typing import Any

from ..constants import BASE_PREFIX, HEADS
from ..errors import CheckpointError
from ..models.architecture import META4D, AttentionPlan, plan
from .reading import INTEGER_BUFFERS

# `config` below is an `EfficientFormerConfig`; this module never imports the config module, so that
# `EfficientFormerConfig.num_parameters()` can read `expected_shapes` without an import cycle

def state_dict_mismatch(expected: dict, given: dict) -> str | None:
    """How `given` differs from the state dict `expected` (first difference, in words), or None when every
    key is there with its shape. For messages: a checkpoint of another architecture."""
    for key, tensor in expected.items():
        if key not in given:
            return f"it lacks {key}"
        if tuple(given[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(given[key].shape)} there but {tuple(tensor.shape)} here"
    extra = [key for key in given if key not in expected]
    if extra:
        return f"it has {len(extra)} weights this model lacks, e.g. {extra[0]}"
    return None


# ------------------------------------------------------------------------------ shapes of a config
def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _meta4d(prefix: str, dim: int, hidden: int, layer_scale: bool) -> dict[str, tuple]:
    """A Meta4D block: pooling token mixer (no weights) and a 1x1-convolution MLP with BatchNorms."""
    out: dict[str, tuple] = {}
    if layer_scale:
        out.update({f"{prefix}.layer_scale_1": (dim,), f"{prefix}.layer_scale_2": (dim,)})
    out.update({f"{prefix}.mlp.convolution1.weight": (hidden, dim, 1, 1), f"{prefix}.mlp.convolution1.bias": (hidden,),
                f"{prefix}.mlp.convolution2.weight": (dim, hidden, 1, 1), f"{prefix}.mlp.convolution2.bias": (dim,)})
    out.update(_bn(f"{prefix}.mlp.batchnorm_before", hidden))
    out.update(_bn(f"{prefix}.mlp.batchnorm_after", dim))
    return out


def _meta3d(prefix: str, attention: AttentionPlan, dim: int, hidden: int, layer_scale: bool) -> dict[str, tuple]:
    """A Meta3D block: LayerNorm, attention with its bias table, LayerNorm, linear MLP."""
    value_dim = attention.value_dim * attention.heads
    out: dict[str, tuple] = {}
    if layer_scale:
        out.update({f"{prefix}.layer_scale_1": (dim,), f"{prefix}.layer_scale_2": (dim,)})
    mixer, qkv = f"{prefix}.token_mixer", attention.qkv_width
    out.update({f"{mixer}.attention_biases": attention.table_shape, f"{mixer}.attention_bias_idxs": attention.index_shape,
                f"{mixer}.qkv.weight": (qkv, attention.dim), f"{mixer}.qkv.bias": (qkv,),
                f"{mixer}.projection.weight": (attention.dim, value_dim), f"{mixer}.projection.bias": (attention.dim,)})
    for norm in ("layernorm1", "layernorm2"):
        out.update({f"{prefix}.{norm}.weight": (dim,), f"{prefix}.{norm}.bias": (dim,)})
    out.update({f"{prefix}.mlp.linear_in.weight": (hidden, dim), f"{prefix}.mlp.linear_in.bias": (hidden,),
                f"{prefix}.mlp.linear_out.weight": (dim, hidden), f"{prefix}.mlp.linear_out.bias": (dim,)})
    return out


def expected_shapes(config: Any, *, heads: bool = True) -> dict[str, tuple]:
    """Every state-dict key of `EfficientFormerForImageClassificationWithTeacher` for `config`, with its shape.

    The stages, Downsamples and blocks are those of the architecture plan (`efficientformer.models.architecture`).

    Args:
        config: the architecture.
        heads: include `classifier.*` and `distillation_classifier.*` (absent when num_labels is 0).

    Returns:
        key -> shape tuple, in the order transformers' `state_dict()` lists them.
    """
    net = plan(config)
    stem, first = net.stem_width, net.stages[0].width
    out: dict[str, tuple] = {
        f"{BASE_PREFIX}.patch_embed.convolution1.weight": (stem, net.in_channels, 3, 3),
        f"{BASE_PREFIX}.patch_embed.convolution1.bias": (stem,)}
    out.update(_bn(f"{BASE_PREFIX}.patch_embed.batchnorm_before", stem))
    out.update({f"{BASE_PREFIX}.patch_embed.convolution2.weight": (first, stem, 3, 3),
                f"{BASE_PREFIX}.patch_embed.convolution2.bias": (first,)})
    out.update(_bn(f"{BASE_PREFIX}.patch_embed.batchnorm_after", first))
    encoder = f"{BASE_PREFIX}.encoder"
    for stage in net.stages:
        for block in stage.blocks:
            prefix, hidden = f"{encoder}.{block.path()}", int(block.width * config.mlp_expansion_ratio)
            out.update(_meta4d(prefix, block.width, hidden, config.use_layer_scale) if block.kind == META4D
                       else _meta3d(prefix, net.attention, block.width, hidden, config.use_layer_scale))
        down = stage.downsample
        if down is not None:
            prefix = f"{encoder}.intermediate_stages.{down.position}"
            out.update({f"{prefix}.projection.weight": (down.out_width, down.in_width, down.kernel, down.kernel),
                        f"{prefix}.projection.bias": (down.out_width,)})
            out.update(_bn(f"{prefix}.norm", down.out_width))
    dim = net.stages[-1].width
    out.update({f"{BASE_PREFIX}.layernorm.weight": (dim,), f"{BASE_PREFIX}.layernorm.bias": (dim,)})
    if heads and config.num_labels > 0:
        for head in HEADS:
            out.update({f"{head}.weight": (config.num_labels, dim), f"{head}.bias": (config.num_labels,)})
    return out


def check_shapes(state_dict: dict, config: Any, *, source: str, against: str) -> None:
    """Raise CheckpointError unless `state_dict` (transformers layout) is exactly what `config` describes.

    Heads and rebuildable buffers (`num_batches_tracked`, `attention_bias_idxs`) may be absent.

    Args:
        state_dict: key -> tensor in the transformers layout.
        config: the architecture to check against.
        source: the file, for the message.
        against: what the config is, for the message (e.g. "its config.json").
    """
    expected = expected_shapes(config)
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CheckpointError(f"{source}: key {unexpected[0]} (shape {tuple(state_dict[unexpected[0]].shape)}) has no "
                              f"place in the architecture of {against} ({len(unexpected)} such keys); the weights "
                              "and the configuration belong to different models.")
    for key, shape in expected.items():
        if key in state_dict:
            got = tuple(state_dict[key].shape)
            if got != shape:
                raise CheckpointError(f"{source}: {key} has shape {got} but {against} implies {shape}; the weights "
                                      "and the configuration belong to different models.")
        elif not key.endswith(INTEGER_BUFFERS) and not key.startswith(tuple(f"{head}." for head in HEADS)):
            raise CheckpointError(f"{source}: {key} (shape {shape}) is missing although {against} needs it; the file "
                                  "is incomplete or belongs to another architecture.")


def complete_buffers(state_dict: dict, config: Any) -> dict:
    """Add the buffers a model can rebuild (`attention_bias_idxs`, BatchNorm `num_batches_tracked`) that a
    state dict lacks (timm versions and hand-saved files omit them), so strict loaders find every key."""
    import torch

    from ..models.attention_bias import bias_index

    out = dict(state_dict)
    for key in expected_shapes(config, heads=False):
        if key in out:
            continue
        if key.endswith("attention_bias_idxs"):
            out[key] = torch.from_numpy(bias_index(config.resolution, config.resolution).astype("int64"))
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
    return out
