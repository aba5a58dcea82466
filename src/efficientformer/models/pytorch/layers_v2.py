"""EfficientFormerV2's layers in PyTorch, as in the paper (Li et al., 2023, Fig. 2).

    image -> StemV2 (two stride-2 conv + BN + GELU)
          -> stages of BlockV2: [x + s1 * Attention4D(x)] then x + s2 * FFN(x), all on (B, C, H, W) maps
             FFN = 1x1 conv -> BN -> GELU -> 3x3 depthwise conv -> BN -> GELU -> 1x1 conv -> BN
             Attention4D: 1x1-conv queries, keys, values; talking heads around the softmax; a local value
             branch (3x3 depthwise conv of the values) added to the attended values; in stage 3 it runs
             on the map downsampled by a stride-2 depthwise conv and is upsampled back
          -> DownsampleV2 between stages: stride-2 conv + BN, plus (into stage 4) Attention4DDownsample,
             whose queries are local (depthwise stride-2 conv) + global (stride-2 sampling) of the input

The structure comes from `efficientformer.models.architecture_v2.plan_v2`. Every attention's bias table
is resized to the grid it meets through `efficientformer.models.attention_bias` (unchanged at the trained
grid), so any input size works.
"""

from __future__ import annotations

from typing import Sequence

from ...config_v2 import EfficientFormerV2Config
from ...errors import require
from ..architecture_v2 import DOWNSAMPLE_CONV, STRIDE, AttentionPlanV2, BlockPlanV2, DownsamplePlanV2, plan_v2
from ..attention_bias import grid_bias, offset_index
from .layers import TORCH_OPS, ConvStem, DropPath, _call_block, activation

torch = require("torch", "torch", "the PyTorch EfficientFormerV2 classes")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


class ConvNorm(nn.Module):
    """Convolution + BatchNorm (`groups=channels` for a depthwise one)."""

    def __init__(self, config: EfficientFormerV2Config, in_channels: int, out_channels: int, kernel: int = 1,
                 stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                                     groups=groups)
        self.batchnorm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batchnorm(self.convolution(x))


class StemV2(ConvStem):
    """Two 3x3 stride-2 convolutions, each with BatchNorm and the activation: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, config: EfficientFormerV2Config) -> None:
        super().__init__(config, config.hidden_sizes[0])
        self.activation = activation(config.hidden_act)


class DepthwiseFFN(nn.Module):
    """The FFN of every block: 1x1 conv -> BN -> act -> 3x3 depthwise conv -> BN -> act -> 1x1 conv -> BN."""

    def __init__(self, config: EfficientFormerV2Config, dim: int, hidden: int) -> None:
        super().__init__()
        eps = config.batch_norm_eps
        self.convolution1 = nn.Conv2d(dim, hidden, 1)
        self.batchnorm_before = nn.BatchNorm2d(hidden, eps=eps)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.batchnorm_depthwise = nn.BatchNorm2d(hidden, eps=eps)
        self.convolution2 = nn.Conv2d(hidden, dim, 1)
        self.batchnorm_after = nn.BatchNorm2d(dim, eps=eps)
        self.activation = activation(config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.batchnorm_before(self.convolution1(x)))
        x = self.dropout(self.activation(self.batchnorm_depthwise(self.depthwise(x))))
        return self.dropout(self.batchnorm_after(self.convolution2(x)))


class _BiasTable(nn.Module):
    """The learned bias per head and offset of the trained grid, and its bias for the grid met."""

    def __init__(self, plan: AttentionPlanV2) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = plan.heads, plan.key_dim, plan.value_dim
        self.scale = plan.key_dim ** -0.5
        self.resolution, self.query_stride = plan.grid, plan.query_stride
        self.attention_biases = nn.Parameter(torch.zeros(plan.table_shape))
        # the gather of the trained grid, rebuilt with the module (never saved: no checkpoint layout needs it)
        self.register_buffer("bias_index", self._index(), persistent=False)

    def _index(self) -> torch.Tensor:
        return offset_index(self.resolution, self.resolution, TORCH_OPS, self.attention_biases, self.query_stride)

    def rebuild_index(self) -> None:
        """Recompute `bias_index` in place, for loaders that build modules on the meta device and fill only
        saved tensors (transformers' `from_pretrained`)."""
        self.bias_index = self._index().to(self.attention_biases.device)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """(heads, Nq, N) additive bias for a key grid (H, W): the stored table at the trained grid, else
        resized to the grid (`efficientformer.models.attention_bias.grid_bias`)."""
        if tuple(grid) == (self.resolution, self.resolution):
            return self.attention_biases[:, self.bias_index]
        return grid_bias(self.attention_biases, self.resolution, grid, TORCH_OPS, self.query_stride)

    def heads(self, x: torch.Tensor, per_head: int) -> torch.Tensor:
        """(B, heads * per_head, H, W) -> (B, heads, H * W, per_head)."""
        return x.flatten(2).reshape(x.shape[0], self.num_heads, per_head, -1).transpose(-2, -1)

    def scores(self, x: torch.Tensor, grid: tuple[int, int]):
        """Scaled query-key scores plus the bias of the key `grid` (B, heads, Nq, N), the values and their
        local (depthwise) branch: the part both attentions share."""
        query, key = self.heads(self.query(x), self.key_dim), self.heads(self.key(x), self.key_dim)
        value = self.value(x)
        return (query @ key.transpose(-2, -1)) * self.scale + self.bias(grid), value, self.value_local(value)


class Attention4D(_BiasTable):
    """Multi-head attention on a (B, C, H, W) map with talking heads and a local value branch.

    In stage 3 (`stride_conv`) it attends over the map downsampled by a stride-2 depthwise conv and the
    result is upsampled (bilinear) back to (H, W). Returns the map and the attention weights
    (B, heads, N, N) after the second talking head.
    """

    def __init__(self, config: EfficientFormerV2Config, plan: AttentionPlanV2) -> None:
        super().__init__(plan)
        dim, keys, values = plan.in_width, plan.heads * plan.key_dim, plan.heads * plan.value_dim
        self.stride_conv = ConvNorm(config, dim, dim, 3, stride=2, groups=dim) if plan.kind == STRIDE else None
        self.query = ConvNorm(config, dim, keys)
        self.key = ConvNorm(config, dim, keys)
        self.value = ConvNorm(config, dim, values)
        self.value_local = ConvNorm(config, values, values, 3, groups=values)
        self.talking_head1 = nn.Conv2d(plan.heads, plan.heads, 1)
        self.talking_head2 = nn.Conv2d(plan.heads, plan.heads, 1)
        self.activation = activation(config.hidden_act)
        self.projection = ConvNorm(config, values, plan.out_width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        scores, value, local = self.scores(x, (x.shape[2], x.shape[3]))
        weights = self.talking_head2(self.talking_head1(scores).softmax(dim=-1))  # (B, heads, N, N)
        out = (weights @ self.heads(value, self.value_dim)).transpose(-2, -1)
        out = out.reshape(local.shape) + local
        if self.stride_conv is not None:
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
        return self.projection(self.activation(out)), weights


class LocalGlobalQuery(nn.Module):
    """Queries of the downsampling attention: a stride-2 depthwise conv (local) plus stride-2 sampling
    (global pooling of kernel 1), then a 1x1 conv + BN."""

    def __init__(self, config: EfficientFormerV2Config, dim: int, out: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim)
        self.projection = ConvNorm(config, dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.local(x) + x[:, :, ::2, ::2])


class Attention4DDownsample(_BiasTable):
    """Local-global attention into stage 4: queries on the stride-2 grid, keys and values on the full
    map, a stride-2 local value branch; (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, config: EfficientFormerV2Config, plan: AttentionPlanV2) -> None:
        super().__init__(plan)
        dim, keys, values = plan.in_width, plan.heads * plan.key_dim, plan.heads * plan.value_dim
        self.query = LocalGlobalQuery(config, dim, keys)
        self.key = ConvNorm(config, dim, keys)
        self.value = ConvNorm(config, dim, values)
        self.value_local = ConvNorm(config, values, values, 3, stride=2, groups=values)
        self.activation = activation(config.hidden_act)
        self.projection = ConvNorm(config, values, plan.out_width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, value, local = self.scores(x, (x.shape[2], x.shape[3]))
        weights = scores.softmax(dim=-1)  # (B, heads, Nq, N)
        out = (weights @ self.heads(value, self.value_dim)).transpose(-2, -1).reshape(local.shape) + local
        return self.projection(self.activation(out)), weights


class DownsampleV2(nn.Module):
    """Stride-2 conv + BN between stages; into the last stage the attention downsample is added to it."""

    def __init__(self, config: EfficientFormerV2Config, plan: DownsamplePlanV2) -> None:
        super().__init__()
        kernel, stride, padding = DOWNSAMPLE_CONV
        self.projection = nn.Conv2d(plan.in_width, plan.out_width, kernel, stride=stride, padding=padding)
        self.norm = nn.BatchNorm2d(plan.out_width, eps=config.batch_norm_eps)
        self.attention = Attention4DDownsample(config, plan.attention) if plan.attention is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.norm(self.projection(x))
        if self.attention is None:
            return out, None
        mixed, weights = self.attention(x)
        return mixed + out, weights


def _layer_scale(config: EfficientFormerV2Config, dim: int) -> nn.Parameter | None:
    if not config.use_layer_scale:
        return None
    return nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))


def _scaled(scale: nn.Parameter | None, x: torch.Tensor) -> torch.Tensor:
    return x if scale is None else x * scale.view(-1, 1, 1)


class BlockV2(nn.Module):
    """`x + s1 * Attention4D(x)` (attention blocks only), then `x + s2 * DepthwiseFFN(x)`, with stochastic depth."""

    def __init__(self, config: EfficientFormerV2Config, plan: BlockPlanV2) -> None:
        super().__init__()
        has_attention = plan.attention is not None
        self.token_mixer = Attention4D(config, plan.attention) if has_attention else None
        self.layer_scale_1 = _layer_scale(config, plan.width) if has_attention else None
        self.mlp = DepthwiseFFN(config, plan.width, plan.hidden)
        self.layer_scale_2 = _layer_scale(config, plan.width)
        self.drop_path = DropPath(plan.drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None
        if self.token_mixer is not None:
            mixed, weights = self.token_mixer(x)
            x = x + self.drop_path(_scaled(self.layer_scale_1, mixed))
        return x + self.drop_path(_scaled(self.layer_scale_2, self.mlp(x))), weights


class StageV2(nn.Module):
    """The downsample a stage starts with (none for the first) and its blocks; returns the map and the
    attention weights of its attentions in order."""

    def __init__(self, config: EfficientFormerV2Config, downsample: DownsamplePlanV2 | None,
                 blocks: Sequence[BlockPlanV2]) -> None:
        super().__init__()
        self.downsample = DownsampleV2(config, downsample) if downsample is not None else None
        self.blocks = nn.ModuleList(BlockV2(config, block) for block in blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        weights = []
        if self.downsample is not None:
            x, found = self.downsample(x)
            weights.append(found)
        for block in self.blocks:
            x, found = _call_block(self, block, x)
            weights.append(found)
        return x, tuple(w for w in weights if w is not None)


class EncoderV2(nn.Module):
    """`stages`: the four stages of the plan, each with the downsample it starts with."""

    def __init__(self, config: EfficientFormerV2Config) -> None:
        super().__init__()
        network = plan_v2(config)
        self.stages = nn.ModuleList(StageV2(config, stage.downsample, stage.blocks) for stage in network.stages)


__all__ = ["ConvNorm", "StemV2", "DepthwiseFFN", "Attention4D", "LocalGlobalQuery", "Attention4DDownsample",
           "DownsampleV2", "BlockV2", "StageV2", "EncoderV2"]
