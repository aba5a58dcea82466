"""EfficientFormer's layers in PyTorch, as in the paper (Li et al., 2022, Fig. 3).

    image (B, 3, H, W)
      -> ConvStem                    two stride-2 3x3 convs             (B, C1, H/4, W/4)
      -> stage 1..3: Meta4D blocks   pooling mixer + conv MLP, 4-D      (B, Ci, H/2^(i+1), ...)
         with a Downsample (stride-2 conv) between stages
      -> last stage: Meta4D blocks, flatten to tokens, Meta3D blocks  (B, N, C4), N = H/32 * W/32
         Meta3D = LayerNorm + multi-head attention with learned relative-position biases + LayerNorm + MLP

The structure (stages, where the Downsamples sit, each block's kind and drop-path rate) comes from
`efficientformer.models.architecture.plan`; the Keras layers (`efficientformer.models.keras.layers`)
mirror these name for name. Attribute names are transformers' (`patch_embed`, `intermediate_stages`,
`meta4D_layers`, ...) so that state dicts written by transformers load unchanged, and ours load in
transformers 4.57.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

from ...config import EfficientFormerConfig
from ...constants import ACTIVATIONS
from ...errors import require
from ..architecture import DownsamplePlan, StagePlan, plan
from ..attention_bias import ArrayOps, offset_index
from ..attention_bias import grid_bias as _grid_bias

torch = require("torch", "torch", "the PyTorch EfficientFormer classes")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

# one module factory per name of `constants.ACTIVATIONS` (exact GELU for "gelu", as transformers)
_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
assert set(_ACTIVATIONS) == set(ACTIVATIONS), "every activation a config may name needs a PyTorch module"


def activation(name: str) -> nn.Module:
    """The module for `config.hidden_act` (validated by the config against `constants.ACTIVATIONS`)."""
    return _ACTIVATIONS[name]()


# ------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of whole samples with probability `rate` in training,
    and rescales the kept ones by 1 / (1 - rate) so that the expectation is unchanged."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def _layer_scale(config: EfficientFormerConfig, dim: int) -> nn.Parameter | None:
    if not config.use_layer_scale:
        return None
    return nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))


class ConvStem(nn.Module):
    """Two 3x3 stride-2 convolutions with BatchNorm and ReLU: (B, 3, H, W) -> (B, C, H/4, W/4).
    (EfficientFormerV2's stem is this one with its configured activation.)"""

    def __init__(self, config: Any, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.convolution1 = nn.Conv2d(config.num_channels, mid, 3, stride=2, padding=1)
        self.batchnorm_before = nn.BatchNorm2d(mid, eps=config.batch_norm_eps)
        self.convolution2 = nn.Conv2d(mid, out_channels, 3, stride=2, padding=1)
        self.batchnorm_after = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)
        self.activation = F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.batchnorm_before(self.convolution1(x)))
        return self.activation(self.batchnorm_after(self.convolution2(x)))


class Downsample(nn.Module):
    """Strided convolution + BatchNorm between stages: (B, Ci, H, W) -> (B, Ci+1, H/2, W/2)."""

    def __init__(self, config: EfficientFormerConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, out_channels, config.downsample_patch_size,
                                    stride=config.downsample_stride, padding=config.downsample_pad)
        self.norm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.projection(x))


class Pooling(nn.Module):
    """Token mixer of Meta4D blocks: average pooling minus the input (PoolFormer)."""

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """1x1 conv -> BN -> activation -> 1x1 conv -> BN, on (B, C, H, W)."""

    def __init__(self, config: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_expansion_ratio)
        self.convolution1 = nn.Conv2d(dim, hidden, 1)
        self.batchnorm_before = nn.BatchNorm2d(hidden, eps=config.batch_norm_eps)
        self.activation = activation(config.hidden_act)
        self.convolution2 = nn.Conv2d(hidden, dim, 1)
        self.batchnorm_after = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.activation(self.batchnorm_before(_conv1x1(self.convolution1, x))))
        return self.dropout(self.batchnorm_after(_conv1x1(self.convolution2, x)))


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of (B, C, H, W) with a (O, C) weight. On channels-last memory it is the same function as a
    matrix product over the rows (B*H*W, C) of the NHWC view, and computed as one: cuBLAS and Inductor then run a
    plain GEMM with the bias in its epilogue (L1 training on an H200, bf16, batch 256: 4% more images/s than as a
    convolution, BENCHMARKS.md; the optimized network's blocks use it too)."""
    if x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight[:, :, None, None], bias)


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` through `pointwise`; traced export keeps the convolution, which every converter knows."""
    if torch.jit.is_tracing():
        return conv(x)
    return pointwise(x, conv.weight.flatten(1), conv.bias)


class Meta4D(nn.Module):
    """x + s1 * Pooling(x), then x + s2 * ConvMlp(x), on (B, C, H, W) with stochastic depth."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        self.token_mixer = Pooling(config.pool_size)
        self.mlp = ConvMlp(config, dim)
        self.layer_scale_1 = _layer_scale(config, dim)
        self.layer_scale_2 = _layer_scale(config, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(_scale(self.layer_scale_1, self.token_mixer(x), channel_dim=1))
        return x + self.drop_path(_scale(self.layer_scale_2, self.mlp(x), channel_dim=1))


def _scale(scale: torch.Tensor | None, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    if scale is None:
        return x
    return x * (scale.view(-1, 1, 1) if channel_dim == 1 else scale)


def _call_block(owner: nn.Module, block: nn.Module, *args: Any) -> Any:
    """`block(*args)`, recomputed in the backward pass instead of kept (activation checkpointing) when the
    owner's `grad_checkpointing` is on in training; the gradients are the same, the memory is one block's."""
    if not (owner.grad_checkpointing and owner.training and torch.is_grad_enabled()):
        return block(*args)
    if torch.compiler.is_compiling():  # the compiled graph replays the block itself; context_fn is eager-only
        return checkpoint(block, *args, use_reentrant=False)
    return checkpoint(block, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _keep_batchnorm_statistics(block)))


@contextlib.contextmanager
def _keep_batchnorm_statistics(block: nn.Module):
    """Around the recomputation: BatchNorm in training updates its running statistics on every call, so
    without this a checkpointed block would count each batch twice and drift from the plain model."""
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class Meta4DBlocks(nn.Module):
    """A run of Meta4D blocks of one width."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Meta4D(config, dim, rate) for rate in drop_paths)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = _call_block(self, block, x)
        return x


class IntermediateStage(nn.Module):
    """One of stages 1..3: a run of Meta4D blocks (B, Ci, Hi, Wi) -> same shape."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.meta4D_layers(x)


def _arange(n: int, like: torch.Tensor, integer: bool) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64 if integer else like.dtype, device=like.device)


# `efficientformer.models.attention_bias`'s recipe in torch ops, so the model and the fused network share it.
TORCH_OPS = ArrayOps(arange=_arange, abs=torch.abs, relu=torch.relu, matmul=torch.matmul, reshape=torch.reshape,
                     transpose=lambda x: x.transpose(-2, -1), take=lambda table, index: table[:, index])


def grid_bias(table: torch.Tensor, resolution: int, grid: tuple[int, int]) -> torch.Tensor:
    """(heads, N, N) additive bias for a token grid (H, W) from a (heads, R * R) table of the R x R
    training grid: `efficientformer.models.attention_bias.grid_bias` in torch ops. Used by `Attention`
    and by the fused network of `efficientformer.optimize`, so both compute the same bias."""
    return _grid_bias(table, resolution, grid, TORCH_OPS)


class Attention(nn.Module):
    """Multi-head self-attention with a learned bias per head and relative offset (|d_row|, |d_col|).

    Shapes: tokens (B, N, C) -> (B, N, C); probabilities (B, heads, N, N). `attention_biases` holds
    (heads, R * R) for the R x R grid of training. At another grid (H, W) the table is resized by
    bilinear interpolation with aligned corners (see `efficientformer.models.attention_bias`); it is computed
    from the parameters on every call, so it is never stale.
    """

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        dim, heads, key_dim = config.dim, config.num_attention_heads, config.key_dim
        self.num_heads, self.key_dim = heads, key_dim
        self.value_dim = int(config.attention_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.resolution = config.resolution
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + self.value_dim))
        self.projection = nn.Linear(heads * self.value_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, config.resolution ** 2))
        self.register_buffer("attention_bias_idxs", offset_index(config.resolution, config.resolution, TORCH_OPS,
                                                                 self.attention_biases), persistent=True)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """(heads, N, N) additive attention bias for a token grid (H, W)."""
        if grid == (self.resolution, self.resolution):  # as stored, through the checkpoint's index buffer
            return self.attention_biases[:, self.attention_bias_idxs]
        return grid_bias(self.attention_biases, self.resolution, grid)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, self.num_heads, -1).transpose(1, 2)
        query, key, value = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        scores = (query @ key.transpose(-2, -1)) * self.scale + self.bias(grid)
        probs = scores.softmax(dim=-1)  # (B, heads, N, N)
        out = (probs @ value).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.value_dim)
        return self.projection(out), probs


class LinearMlp(nn.Module):
    """Linear -> activation -> Linear on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_expansion_ratio)
        self.linear_in = nn.Linear(dim, hidden)
        self.activation = activation(config.hidden_act)
        self.linear_out = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear_out(self.dropout(self.activation(self.linear_in(x)))))


class Meta3D(nn.Module):
    """x + s1 * Attention(LN(x)), then x + s2 * LinearMlp(LN(x)), on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        self.layernorm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.token_mixer = Attention(config)
        self.layernorm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = LinearMlp(config, dim)
        self.layer_scale_1 = _layer_scale(config, dim)
        self.layer_scale_2 = _layer_scale(config, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        mixed, probs = self.token_mixer(self.layernorm1(x), grid)
        x = x + self.drop_path(_scale(self.layer_scale_1, mixed, channel_dim=-1))
        x = x + self.drop_path(_scale(self.layer_scale_2, self.mlp(self.layernorm2(x)), channel_dim=-1))
        return x, probs


class Meta3DBlocks(nn.Module):
    """A run of Meta3D blocks; returns the tokens and every block's attention probabilities."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Meta3D(config, dim, rate) for rate in drop_paths)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        attentions = []
        for block in self.blocks:
            x, probs = _call_block(self, block, x, grid)
            attentions.append(probs)
        return x, tuple(attentions)


class LastStage(nn.Module):
    """Meta4D blocks on (B, C, H, W), flatten to tokens (B, H*W, C), then Meta3D blocks."""

    def __init__(self, config: EfficientFormerConfig, drop_paths: Sequence[float]) -> None:
        super().__init__()
        dim, n4d = config.hidden_sizes[-1], config.num_meta4d_last_stage
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths[:n4d])
        self.meta3D_layers = Meta3DBlocks(config, dim, drop_paths[n4d:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        x = self.meta4D_layers(x)
        grid = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens, attentions = self.meta3D_layers(tokens, grid)
        return tokens, attentions, grid


def _rates(stage: StagePlan) -> list[float]:
    return [block.drop_path for block in stage.blocks]


class Encoder(nn.Module):
    """`intermediate_stages`: stages 1..3 (Meta4D blocks), each followed by a Downsample where the plan puts
    one; then `last_stage`. The layout is `efficientformer.models.architecture.plan(config).layout`."""

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        network = plan(config)
        self.intermediate_stages = nn.ModuleList(
            Downsample(config, item.in_width, item.out_width) if isinstance(item, DownsamplePlan)
            else IntermediateStage(config, item.width, _rates(item)) for item in network.layout)
        self.last_stage = LastStage(config, _rates(network.stages[-1]))


__all__ = [
    "DropPath", "ConvStem", "Downsample", "Pooling", "ConvMlp", "Meta4D", "Meta4DBlocks", "IntermediateStage",
    "Attention", "LinearMlp", "Meta3D", "Meta3DBlocks", "LastStage", "Encoder", "activation", "grid_bias",
]
