"""The tensors an `EfficientFormerV2Config` implies (our layout's key names), read off its plan, and the
check of a state dict against them. Torch-free, so that the config's own size check can use it."""

from __future__ import annotations

from typing import Any

from ..constants import BASE_PREFIX, HEADS
from ..errors import CheckpointError
from ..models.architecture_v2 import AttentionPlanV2, plan_v2

# `config` below is an `EfficientFormerV2Config`; the config module is not imported, so that its size check
# can read `expected_shapes_v2` without an import cycle


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, out: int, per_group_in: int, kernel: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (out, per_group_in, kernel, kernel), f"{prefix}.bias": (out,)}


def _conv_norm(prefix: str, out: int, per_group_in: int, kernel: int = 1) -> dict[str, tuple]:
    return {**_conv(f"{prefix}.convolution", out, per_group_in, kernel), **_bn(f"{prefix}.batchnorm", out)}


def _attention(prefix: str, att: AttentionPlanV2) -> dict[str, tuple]:
    keys, values = att.heads * att.key_dim, att.heads * att.value_dim
    out: dict[str, tuple] = {}
    if att.kind == "downsample":
        out.update(_conv(f"{prefix}.query.local", att.in_width, 1, 3))
        out.update(_conv_norm(f"{prefix}.query.projection", keys, att.in_width))
    else:
        if att.kind == "stride":
            out.update(_conv_norm(f"{prefix}.stride_conv", att.in_width, 1, 3))
        out.update(_conv_norm(f"{prefix}.query", keys, att.in_width))
    out.update(_conv_norm(f"{prefix}.key", keys, att.in_width))
    out.update(_conv_norm(f"{prefix}.value", values, att.in_width))
    out.update(_conv_norm(f"{prefix}.value_local", values, 1, 3))
    if att.talking_heads:
        for name in ("talking_head1", "talking_head2"):
            out.update(_conv(f"{prefix}.{name}", att.heads, att.heads, 1))
    out.update(_conv_norm(f"{prefix}.projection", att.out_width, values))
    out[f"{prefix}.attention_biases"] = att.table_shape
    return out


def expected_shapes_v2(config: Any, *, heads: bool = True) -> dict[str, tuple]:
    """Every state-dict key of `EfficientFormerV2ForImageClassificationWithTeacher` for `config`, with its shape
    (heads only when `heads` and num_labels > 0)."""
    network = plan_v2(config)
    base = BASE_PREFIX
    out: dict[str, tuple] = {}
    out.update(_conv(f"{base}.patch_embed.convolution1", network.stem_width, network.in_channels, 3))
    out.update(_bn(f"{base}.patch_embed.batchnorm_before", network.stem_width))
    out.update(_conv(f"{base}.patch_embed.convolution2", config.hidden_sizes[0], network.stem_width, 3))
    out.update(_bn(f"{base}.patch_embed.batchnorm_after", config.hidden_sizes[0]))
    for stage in network.stages:
        prefix = f"{base}.encoder.stages.{stage.index}"
        down = stage.downsample
        if down is not None:
            out.update(_conv(f"{prefix}.downsample.projection", down.out_width, down.in_width, 3))
            out.update(_bn(f"{prefix}.downsample.norm", down.out_width))
            if down.attention is not None:
                out.update(_attention(f"{prefix}.downsample.attention", down.attention))
        for block in stage.blocks:
            at, dim, hidden = f"{prefix}.blocks.{block.index}", block.width, block.hidden
            if block.attention is not None:
                out.update(_attention(f"{at}.token_mixer", block.attention))
                if config.use_layer_scale:
                    out[f"{at}.layer_scale_1"] = (dim,)
            out.update(_conv(f"{at}.mlp.convolution1", hidden, dim, 1))
            out.update(_bn(f"{at}.mlp.batchnorm_before", hidden))
            out.update(_conv(f"{at}.mlp.depthwise", hidden, 1, 3))
            out.update(_bn(f"{at}.mlp.batchnorm_depthwise", hidden))
            out.update(_conv(f"{at}.mlp.convolution2", dim, hidden, 1))
            out.update(_bn(f"{at}.mlp.batchnorm_after", dim))
            if config.use_layer_scale:
                out[f"{at}.layer_scale_2"] = (dim,)
    out.update(_bn(f"{base}.norm", config.hidden_sizes[-1]))
    if heads and config.num_labels > 0:
        names = HEADS if config.distillation else HEADS[:1]
        for name in names:
            out.update({f"{name}.weight": (config.num_labels, config.hidden_sizes[-1]),
                        f"{name}.bias": (config.num_labels,)})
    return out


def shape_mismatch_v2(expected: dict[str, tuple], given: dict) -> str | None:
    """The first difference between the shapes `expected` and the tensors `given`, in words, or None."""
    for key, shape in expected.items():
        if key not in given:
            return f"it lacks {key}"
        if tuple(given[key].shape) != tuple(shape):
            return f"{key} has shape {tuple(given[key].shape)} there but {tuple(shape)} here"
    extra = [key for key in given if key not in expected]
    return f"it has {len(extra)} weights this model lacks, e.g. {extra[0]}" if extra else None


def check_shapes_v2(state_dict: dict, config: Any, *, source: str, against: str) -> None:
    """Raise `CheckpointError` when the tensors of `state_dict` (our layout) differ from `config`'s."""
    heads = any(k.startswith(tuple(f"{h}." for h in HEADS)) for k in state_dict)
    expected = expected_shapes_v2(config, heads=heads)
    if heads and f"{HEADS[1]}.weight" not in state_dict:  # a one-head classifier
        expected = {k: v for k, v in expected.items() if not k.startswith(f"{HEADS[1]}.")}
    problem = shape_mismatch_v2(expected, state_dict)
    if problem:
        raise CheckpointError(f"{source} does not fit {against}: {problem}.")


__all__ = ["expected_shapes_v2", "check_shapes_v2", "shape_mismatch_v2"]
