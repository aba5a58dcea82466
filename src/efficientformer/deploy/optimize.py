"""One call that turns a trained EfficientFormer into a fast, inference-only module.

`optimize(model, ...)` reads the weights of an `EfficientFormerModel`,
`EfficientFormerForImageClassification` or `EfficientFormerForImageClassificationWithTeacher` and builds a
new, eval-only network (`FusedEfficientFormer`) that computes the same function with fewer operations:

- every BatchNorm is folded into the convolution before it (stem, downsamplings, both 1x1 convs of
  every Meta4D MLP);
- every layer scale is folded into the convolution or linear layer that produces its branch
  (the second MLP conv / linear, the attention projection); the pooling mixer's scale becomes one
  `lerp`: `x + s * (avgpool(x) - x) == lerp(x, avgpool(x), s)`, so pooling, subtraction, scaling and
  the residual add are one kernel (average pooling keeps `count_include_pad=False`, as trained);
- the affine parts of the LayerNorms before attention and before the MLP of each Meta3D block are
  folded into the qkv and first MLP linear layers, and the final LayerNorm's affine part, the token
  mean and the two classifier heads (averaged) into one linear layer;
- the attention bias is gathered once per token grid (also resized when that grid differs from the
  trained one, exactly as the model does), and attention runs through `F.scaled_dot_product_attention`
  with the bias as `attn_mask`, or as two matrix products (the CUDA default);
- the 1x1 convolutions run as matrix products on channels-last memory (no layout copies), in
  float32, bfloat16 or float16;
- `torch.compile` (any of its modes) and CUDA-graph replay per batch bucket and image size, and on CUDA
  Triton kernels (`kernels="triton"`, see `efficientformer.deploy.kernels`) for a whole Meta4D block of
  stages 1-2 in one pass, for the stem's two convs, and for the residual add + pooling + lerp between the
  matrix-product blocks of stages 3-4: the defaults on CUDA, where `optimize(model, device="cuda")` picks the
  fastest mode measured; any sequence of input shapes keeps working (see `OptimizedEfficientFormer`).

EfficientFormerV2 models (`EfficientFormerV2Model` and its classifiers) are folded by `efficientformer.deploy.fold_v2`
(BatchNorms, layer scales, the query scale and the first talking head's bias), and then placed, cast and compiled
by the same `OptimizedEfficientFormer`; the Triton kernels, `pad_stem`, `attention` and `gelu_epilogue` are V1's.

The source model is never modified (its weights are read and copied), so training code is unaffected;
to go back, keep or reload the original model. Folding happens in float64, so the float32 result agrees
with the eager model within about 1e-6 relative.

Example:
    >>> import torch, efficientformer
    >>> from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
    >>> model = EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.from_preset("l1")).eval()
    >>> fast = efficientformer.optimize(model, image_size=(224, 224))
    >>> x = torch.randn(2, 3, 224, 224)
    >>> torch.allclose(fast(x), model(x).logits, atol=1e-4)
    True
"""

from __future__ import annotations

import collections
import copy
import functools
import itertools
import logging
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

from ..constants import HEADS
from ..errors import ConfigError, InputError, require
from ..models.validation import check_pixel_shape
from .folding import (FusedNetwork, GridBiasCache, _buffer, _conv, _f64, _fold_affine_into_heads, _fold_bn,
                      _fold_input_affine, _scale_vector)

torch = require("torch", "torch", "efficientformer.optimize")
from torch import nn
from torch.nn import functional as F

from ..models.pytorch.layers import pointwise  # noqa: E402 - after the check that names optimize

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


def parse_dtype(dtype: Any) -> torch.dtype:
    """`torch.float32/bfloat16/float16` or one of the names in `DTYPES` -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().replace("torch.", "") in DTYPES:
        return DTYPES[dtype.lower().replace("torch.", "")]
    raise ConfigError(f"dtype {dtype!r} is not supported; use one of fp32, bf16, fp16.")


# ------------------------------------------------------------------------------------------ folding
@functools.lru_cache(maxsize=1)
def linear_gelu_op():
    """The custom op `torch.ops.efficientformer.linear_gelu(x, weight, bias)` = GELU(x @ weight.T + bias) for a
    2-D `x`, as one `torch._addmm_activation` call: on CUDA one cuBLASLt matrix product with the GELU (tanh
    approximation) in its epilogue, so the 4x-wide hidden activation is written once instead of written, read
    and written again. An opaque op (registered on first use), so that torch.compile keeps it whole."""

    @torch.library.custom_op("efficientformer::linear_gelu", mutates_args=())
    def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)

    @linear_gelu.register_fake
    def _(x, weight, bias):
        return x.new_empty(x.shape[0], weight.shape[0])

    return linear_gelu


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(linear(x)) over the last dimension of any (…, C) tensor whose rows are contiguous."""
    out = torch.ops.efficientformer.linear_gelu(x.reshape(-1, x.shape[-1]), weight, bias)  # see linear_gelu_op
    return out.view(*x.shape[:-1], weight.shape[0])


# ------------------------------------------------------------------------------------ fused blocks
class FusedStem(nn.Module):
    """conv3x3/2 -> ReLU -> conv3x3/2 -> ReLU with both BatchNorms folded in."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.conv1 = _conv(*_fold_bn(stem.convolution1, stem.batchnorm_before), stem.convolution1)
        self.conv2 = _conv(*_fold_bn(stem.convolution2, stem.batchnorm_after), stem.convolution2)
        self.in_channels = stem.convolution1.in_channels
        self.padded_channels = self.in_channels
        self.triton = False  # set by enable_triton()

    def enable_triton(self) -> bool:
        """Run both convs (and their ReLUs) as one Triton kernel (`kernels.stem_launch`) on CUDA inputs in the
        module's bf16 / fp16. Call after the module has its final device and dtype. Returns whether supported."""
        from . import kernels

        if self.padded_channels != self.in_channels or not kernels.stem_supported(
                self.in_channels, self.conv1.out_channels, self.conv2.out_channels):
            return False
        kernels.stem_op()
        w1k, b1, w2k, b2 = kernels.prepare_stem_weights(self.conv1.weight, self.conv1.bias, self.conv2.weight,
                                                        self.conv2.bias)
        for name, value in (("w1k", w1k), ("b1k", b1), ("w2k", w2k), ("b2k", b2)):
            self.register_buffer(name, value, persistent=False)
        self.triton = True
        return True

    def pad_input_channels(self, channels: int = 8) -> None:
        """Zero-pad the first conv to `channels` inputs (and the images likewise in forward): cuDNN's
        tensor-core kernels need channels-last inputs with a multiple of 8 channels, and a 3-channel
        stride-2 conv otherwise falls back to a slow direct kernel on the GPU."""
        if channels <= self.in_channels:
            return
        weight = self.conv1.weight.data
        padded = weight.new_zeros(weight.shape[0], channels, *weight.shape[2:])
        padded[:, :self.in_channels] = weight
        self.conv1.weight = nn.Parameter(padded.contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.conv1.in_channels = channels
        self.padded_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.triton and x.is_cuda and self.w1k.dtype in (torch.bfloat16, torch.float16):
            return torch.ops.efficientformer.stem(x, self.w1k, self.b1k, self.w2k, self.b2k, self.conv2.out_channels)
        if self.padded_channels != x.shape[1]:
            batch, channels, height, width = x.shape
            nhwc = x.new_zeros(batch, height, width, self.padded_channels)
            nhwc[..., :channels] = x.permute(0, 2, 3, 1)
            x = nhwc.permute(0, 3, 1, 2)
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class FusedDownsample(nn.Module):
    """Strided conv with its BatchNorm folded in."""

    def __init__(self, down: nn.Module) -> None:
        super().__init__()
        self.conv = _conv(*_fold_bn(down.projection, down.norm), down.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FusedMeta4D(nn.Module):
    """Meta4D block: `x = lerp(x, avgpool(x), s1)`, then `x + W2' act(W1' x + b1') + b2'`.

    W1', b1' hold the first BatchNorm; W2', b2' the second BatchNorm and the layer scale s2.
    """

    def __init__(self, block: nn.Module, activation: str = "gelu") -> None:
        super().__init__()
        mlp, pool = block.mlp, block.token_mixer.pool
        self.activation_name = activation
        self.gelu_epilogue = False  # set by optimize(gelu_epilogue=True)
        self.triton = False
        self.triton_min_rows = 0  # at every batch: with small tiles (kernels.TUNED_SMALL) it wins at batch 1 and 8 too
        # Set by optimize(triton_pool=True) on the blocks that run as matrix products (stages 3-4): `pool_kernel`
        # takes the block before's (mixed, mlp output) pair and adds, pools and mixes in one Triton kernel;
        # `defer_residual` hands such a pair to the next block instead of adding it here.
        self.pool_kernel = False
        self.defer_residual = False
        dim = mlp.convolution1.in_channels
        self.pool_size = int(pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0])
        self.activation = copy.deepcopy(mlp.activation)
        w1, b1 = _fold_bn(mlp.convolution1, mlp.batchnorm_before)
        w2, b2 = _fold_bn(mlp.convolution2, mlp.batchnorm_after)
        s2 = _scale_vector(block.layer_scale_2, dim)
        _buffer(self, "mix_scale", _scale_vector(block.layer_scale_1, dim).view(dim, 1, 1))
        _buffer(self, "w1", w1.flatten(1))
        _buffer(self, "b1", b1)
        _buffer(self, "w2", w2.flatten(1) * s2[:, None])
        _buffer(self, "b2", b2 * s2)

    def enable_triton(self) -> bool:
        """Run this block as one Triton kernel (`efficientformer.deploy.kernels`) when its input is a channels-last
        CUDA tensor. Call after the module has its final device and dtype. Returns whether it is supported."""
        from . import kernels

        hidden, dim = self.w1.shape
        if not kernels.supported(dim, hidden, self.activation_name):
            return False
        kernels.meta4d_op()
        w1t, _, w2t, _ = kernels.prepare_weights(self.w1, self.b1, self.w2, self.b2)
        self.register_buffer("w1t", w1t, persistent=False)
        self.register_buffer("w2t", w2t, persistent=False)
        self.triton = True
        return True

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor | tuple:
        if isinstance(x, tuple):  # (mixed, mlp output) of a block with defer_residual: its output is their sum
            if self.pool_kernel and x[0].is_cuda:
                return self._mlp(torch.ops.efficientformer.add_pool_lerp(x[0], x[1], self.mix_scale.view(-1),
                                                                         self.pool_size))
            x = x[0] + x[1]
        if (self.triton and x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
                and x.shape[0] * x.shape[2] * x.shape[3] >= self.triton_min_rows):
            from .kernels import ACTIVATION_CODES

            return torch.ops.efficientformer.meta4d(x, self.mix_scale.view(-1), self.w1t, self.b1, self.w2t, self.b2,
                                                   ACTIVATION_CODES[self.activation_name], self.pool_size)
        pooled = F.avg_pool2d(x, self.pool_size, 1, self.pool_size // 2, count_include_pad=False)
        if torch.jit.is_tracing():  # TorchScript / Core ML: plain arithmetic (coremltools has no lerp)
            x = x + self.mix_scale * (pooled - x)
        else:
            x = torch.lerp(x, pooled, self.mix_scale)
        return self._mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`x + W2' act(W1' x + b1') + b2'` for the mixed input x (or the pair, with defer_residual)."""
        if self.gelu_epilogue and x.is_contiguous(memory_format=torch.channels_last):
            hidden = _linear_gelu(x.permute(0, 2, 3, 1), self.w1, self.b1).permute(0, 3, 1, 2)
        else:
            hidden = self.activation(pointwise(x, self.w1, self.b1))
        if self.defer_residual:
            return x, pointwise(hidden, self.w2, self.b2)
        return x + pointwise(hidden, self.w2, self.b2)


class FusedMeta3D(GridBiasCache):
    """Meta3D block on tokens (B, N, C) with LayerNorm affines and layer scales folded into the linears
    and the attention bias gathered once per token grid."""

    def __init__(self, block: nn.Module, grids: list[tuple[int, int]]) -> None:
        super().__init__()
        attn, mlp = block.token_mixer, block.mlp
        dim = attn.qkv.in_features
        self.heads, self.key_dim, self.value_dim = attn.num_heads, attn.key_dim, attn.value_dim
        self.dim = int(dim)
        self.scale = float(attn.scale)
        self.eps = float(block.layernorm1.eps)
        self.eps2 = float(block.layernorm2.eps)
        self.activation = copy.deepcopy(mlp.activation)
        self.gelu_epilogue = False  # set by optimize(gelu_epilogue=True)
        self.attention = "sdpa"  # or "matmul", set by optimize(attention=...)
        s1, s2 = _scale_vector(block.layer_scale_1, dim), _scale_vector(block.layer_scale_2, dim)
        wqkv, bqkv = _fold_input_affine(attn.qkv, block.layernorm1)
        w_in, b_in = _fold_input_affine(mlp.linear_in, block.layernorm2)
        _buffer(self, "wqkv", wqkv)
        _buffer(self, "bqkv", bqkv)
        _buffer(self, "wproj", _f64(attn.projection.weight) * s1[:, None])
        _buffer(self, "bproj", _f64(attn.projection.bias) * s1)
        _buffer(self, "w_in", w_in)
        _buffer(self, "b_in", b_in)
        _buffer(self, "w_out", _f64(mlp.linear_out.weight) * s2[:, None])
        _buffer(self, "b_out", _f64(mlp.linear_out.bias) * s2)
        self.resolution = attn.resolution
        _buffer(self, "table", _f64(attn.attention_biases))
        self.grids: list[tuple[int, int]] = []
        # grid -> (1, heads, N, N padded) bias. A plain dict, not buffers: registering a buffer for a new image
        # size would change the module's guards in torch.compile and recompile every shape compiled before.
        # The grids given here are also registered buffers (exports trace them as module state).
        self.biases: dict[tuple[int, int], torch.Tensor] = {}
        for grid in grids:
            self.add_grid(grid, register=True)

    def add_grid(self, grid: tuple[int, int], register: bool = False) -> torch.Tensor:
        """Gather (and keep) the (heads, N, N) bias of a token grid; the model's own recipe: the (heads, R, R)
        table resized bilinearly with aligned corners when the grid is not R x R."""
        from ..models.pytorch.layers import grid_bias

        if grid in self.biases:
            return self.biases[grid]
        bias = grid_bias(self.table, self.resolution, grid)  # the model's own recipe, on the float64 table
        n = grid[0] * grid[1]
        # Pad the key axis to a multiple of 8 and keep a view: the memory-efficient attention kernels need
        # an aligned mask stride, and would otherwise copy the mask into a padded buffer on every call.
        padded = bias.new_zeros(1, self.heads, n, -(-n // 8) * 8)
        padded[0, :, :, :n] = bias
        self.grids.append(grid)
        return self._keep(grid, padded, register)

    def attention_bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, heads, N, N) bias for `grid` (a view of an aligned buffer)."""
        bias = self.biases[grid] if grid in self.biases else self.add_grid(grid)
        n = grid[0] * grid[1]
        return bias[..., :n]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        # Shapes come from constants only (no x.shape arithmetic), which keeps traced exports static.
        dim = self.dim
        qkv = F.linear(F.layer_norm(x, (dim,), eps=self.eps), self.wqkv, self.bqkv)
        qkv = qkv.unflatten(-1, (self.heads, 2 * self.key_dim + self.value_dim)).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        bias = self.attention_bias(grid).to(q.dtype)
        if self.attention == "matmul":  # (B, h, N, N) scores in the input dtype, softmax in float32
            scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale + bias
            out = torch.matmul(scores.float().softmax(dim=-1).to(v.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).flatten(2)
        x = x + F.linear(out, self.wproj, self.bproj)
        normed = F.layer_norm(x, (dim,), eps=self.eps2)
        if self.gelu_epilogue:
            hidden = _linear_gelu(normed, self.w_in, self.b_in)
        else:
            hidden = self.activation(F.linear(normed, self.w_in, self.b_in))
        return x + F.linear(hidden, self.w_out, self.b_out)


class FusedHead(nn.Module):
    """Final LayerNorm, token mean and classifier(s) as normalize -> mean -> one linear layer.

    With no classifier (a bare `EfficientFormerModel`) it returns the normalized tokens (B, N, C).
    """

    def __init__(self, norm: nn.LayerNorm, heads: list[nn.Linear]) -> None:
        super().__init__()
        self.eps = float(norm.eps)
        self.dim = int(norm.normalized_shape[0])
        self.has_classifier = _fold_affine_into_heads(self, _f64(norm.weight), _f64(norm.bias), heads)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        dim = self.dim
        if not self.has_classifier:
            return F.layer_norm(tokens, (dim,), self.weight.to(tokens.dtype), self.bias.to(tokens.dtype), self.eps)
        pooled = F.layer_norm(tokens, (dim,), eps=self.eps).mean(dim=1)
        return F.linear(pooled, self.weight, self.bias)


class FusedEfficientFormer(FusedNetwork):
    """The folded, eval-only network: images (B, C, H, W) -> logits (B, num_labels), or normalized
    tokens (B, N, C) for a bare backbone. Built by `fuse(model)`; holds copies of the weights.

    For `EfficientFormerForImageClassificationWithTeacher` the logits are the mean of both heads, as the
    model's `logits`.
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> None:
        backbone = getattr(model, "efficientformer", model)
        config = backbone.config
        super().__init__(config, image_size)
        from ..models.architecture import DownsamplePlan, plan

        network = plan(config)  # the stages and Downsamples, as the encoder was built from them
        grids = [network.token_grid(*self.image_size)]
        self.grid = grids[0]
        self.stem = FusedStem(backbone.patch_embed)
        stages: list[nn.Module] = []
        for item in network.layout:
            module = backbone.encoder.intermediate_stages[item.position]
            if isinstance(item, DownsamplePlan):
                stages.append(FusedDownsample(module))
            else:
                stages.extend(FusedMeta4D(b, config.hidden_act) for b in module.meta4D_layers.blocks)
        last = backbone.encoder.last_stage
        stages.extend(FusedMeta4D(b, config.hidden_act) for b in last.meta4D_layers.blocks)
        self.convs = nn.Sequential(*stages)
        self.blocks3d = nn.ModuleList(FusedMeta3D(b, grids) for b in last.meta3D_layers.blocks)
        heads = [getattr(model, name) for name in HEADS
                 if isinstance(getattr(model, name, None), nn.Linear)]
        self.head = FusedHead(backbone.layernorm, heads)
        self.eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.stem(pixel_values))
        # Traced exports are for the fixed image size: use its grid as constants, not traced sizes.
        grid = self.grid if torch.jit.is_tracing() else (x.shape[2], x.shape[3])
        tokens = x.permute(0, 2, 3, 1).flatten(1, 2)  # (B, N, C), a view on channels-last memory
        for block in self.blocks3d:
            tokens = block(tokens, grid)
        return self.head(tokens)


def fuse(model: nn.Module, image_size: tuple[int, int] | int | None = None) -> FusedEfficientFormer:
    """Fold an EfficientFormer (any of the three classes) into a `FusedEfficientFormer` in float32 on the
    CPU. The model is only read.

    Args:
        model: an `EfficientFormerModel`, `EfficientFormerForImageClassification` or
            `EfficientFormerForImageClassificationWithTeacher` (any device and dtype).
        image_size: (height, width) whose attention bias is prepared ahead (others are prepared on first use);
            default the config's `image_size`.

    Returns:
        The fused module (eval mode, float32, CPU).

    Raises:
        ConfigError: `model` is not an EfficientFormer of this package.
    """
    from .fold_v2 import fuse_v2, is_v2

    if is_v2(model):  # EfficientFormerV2: its own folding (efficientformer.deploy.fold_v2)
        return fuse_v2(model, image_size)
    backbone = getattr(model, "efficientformer", model)
    if not (hasattr(backbone, "patch_embed") and hasattr(backbone, "encoder") and hasattr(backbone, "config")):
        raise ConfigError(f"fuse() takes an EfficientFormer model of this package, got {type(model).__name__}; "
                          "load it with EfficientFormerForImageClassification.from_pretrained(...).")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    with torch.no_grad():
        return FusedEfficientFormer(model, image_size)


# -------------------------------------------------------------------------------------- the wrapper
log = logging.getLogger("efficientformer.optimize")

# Batch sizes a compiled or graph-replayed network is built for: any batch runs as a few of these (padded up
# or split), so the number of compiled shapes stays bounded whatever sizes a service sees.
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# With CUDA graphs a remainder is padded up to the next bucket when that bucket is at most this large: below
# it a replay is bound by launches, so one padded replay is cheaper than several smaller ones.
PAD_UP_TO = 32


def plan_batches(batch: int, buckets: tuple[int, ...], pad_up_to: int) -> list[tuple[int, int]]:
    """Split a batch into (images, bucket) pieces: full pieces of the largest bucket that fits, and the last
    one padded up to the next bucket when that is at most `pad_up_to` (else split further)."""
    pieces = []
    while batch > 0:
        up = next((b for b in buckets if b >= batch), None)
        if up is not None and (up == batch or up <= pad_up_to):
            pieces.append((batch, up))
            break
        down = max((b for b in buckets if b <= batch), default=None)
        if down is None:  # smaller than every bucket: pad to the smallest
            pieces.append((batch, buckets[0]))
            break
        pieces.append((down, down))
        batch -= down
    return pieces


def _own_code(fn: Callable) -> Callable:
    """A copy of `fn` with its own code object. torch.compile keeps its compiled entries, and its
    recompile limit (8 by default), per code object: without this every optimized model of the process
    (each dtype, each image size, each batch size) would count against one shared limit of the class's
    `forward`, and the ninth shape would fail."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_CODE_IDS)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


_CODE_IDS = itertools.count()


def _recompile_limit(limit: int):
    """A context in which dynamo compiles a frame up to `limit` times (the config name changed in torch 2.6)."""
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    return dynamo_config.patch(**{name: max(limit, getattr(dynamo_config, name))})


class OptimizedEfficientFormer(nn.Module):
    """A `FusedEfficientFormer` placed on a device in a dtype and memory format, optionally compiled and
    replayed through CUDA graphs. Call it with float images (B, C, H, W) on any device and dtype, any batch
    size and image size; returns logits (B, num_labels) (or tokens for a backbone) in the chosen dtype on the
    chosen device.

    Compiled and graph modes run every batch as pieces of the sizes in `batch_buckets` (with CUDA graphs a
    small remainder is padded up with zeros, which changes no other image's result: every image is computed
    on its own), so one compiled network and one graph serve each (bucket, image size). At most `max_shapes`
    (bucket, image size) pairs are compiled; later new pairs run the fused network uncompiled, with one
    warning. At most `max_graphs` graphs are kept (least recently used dropped first, freeing their memory).
    A compile or capture that fails falls back the same way, with one warning, instead of failing the call.

    `setup_seconds` is the one-time cost paid so far: building in `optimize` plus every compile and graph
    capture (each also logged at INFO level on the `efficientformer.optimize` logger); `warmup()` pays it
    ahead for the sizes a service expects.
    """

    def __init__(self, fused: FusedEfficientFormer, *, device: torch.device, dtype: torch.dtype,
                 channels_last: bool, compile: str | None, cuda_graphs: bool,
                 batch_buckets: tuple[int, ...] | None = None, max_shapes: int = 64, max_graphs: int = 32) -> None:
        super().__init__()
        self.fused = fused
        self.device, self.dtype = device, dtype
        self.channels_last, self.compile_mode, self.cuda_graphs = channels_last, compile, cuda_graphs
        self.batch_buckets = tuple(sorted(set(batch_buckets or DEFAULT_BATCH_BUCKETS)))
        self.max_shapes, self.max_graphs = max_shapes, max_graphs
        self.setup_seconds = 0.0
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if compile:
            def run(x: torch.Tensor) -> torch.Tensor:
                return fused(x)

            self._compiled = torch.compile(_own_code(run), mode=None if compile == "default" else compile,
                                           fullgraph=True, dynamic=False)
        self._compiled_keys: set[tuple] = set()  # (batch, height, width) compiled so far
        self._eager_keys: set[tuple] = set()  # shapes that run uncompiled (over max_shapes, or compile failed)
        self._graphs: collections.OrderedDict[tuple, tuple[Any, torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self._no_graph_keys: set[tuple] = set()
        self._warned: set[str] = set()

    @property
    def image_size(self) -> tuple[int, int]:
        return self.fused.image_size

    def extra_repr(self) -> str:
        return (f"device={self.device}, dtype={self.dtype}, channels_last={self.channels_last}, "
                f"compile={self.compile_mode}, cuda_graphs={self.cuda_graphs}, "
                f"triton={any(getattr(b, 'triton', False) for b in self.fused.convs)}, "
                f"triton_stem={self.fused.stem.triton}")

    def prepare_input(self, pixel_values: torch.Tensor, convert: bool = True) -> torch.Tensor:
        """Check the images and move them to the device (and, with `convert`, the dtype and memory format) of
        the network."""
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                             "use EfficientFormerImageProcessor(..., return_tensors='pt').")
        check_pixel_shape(tuple(pixel_values.shape), is_float=pixel_values.is_floating_point(), dtype=pixel_values.dtype,
                          num_channels=self.fused.num_channels, processor_hint="return_tensors='pt'")
        if not convert:
            return pixel_values.to(device=self.device)
        return pixel_values.to(device=self.device, dtype=self.dtype, memory_format=self._memory_format)

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # With graphs the copy into the graph's input buffer converts dtype and layout in the same kernel.
        x = self.prepare_input(pixel_values, convert=not self.cuda_graphs)
        self._prepare_grid(x.shape[2], x.shape[3])
        if self._compiled is None and not self.cuda_graphs:
            return self.fused(x)  # eager: every shape runs as it is
        pad_up_to = PAD_UP_TO if self.cuda_graphs else 0  # the CPU pays for padded rows: split instead
        outputs, start = [], 0
        for images, bucket in plan_batches(x.shape[0], self.batch_buckets, pad_up_to):
            outputs.append(self._run_bucket(x[start:start + images], bucket))
            start += images
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def warmup(self, batch_sizes: tuple[int, ...] | None = None, image_size: tuple[int, int] | int | None = None) -> float:
        """Compile and capture ahead for these batch sizes (default: every bucket) at this image size
        (default the prepared one), so that no request pays for it. Returns the seconds spent."""
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        height, width = image_size or self.image_size
        before = self.setup_seconds
        for batch in batch_sizes or self.batch_buckets:
            self(torch.randn(batch, self.fused.num_channels, height, width, device=self.device))
        return self.setup_seconds - before

    # --------------------------------------------------------------------------------- internals
    def _run_bucket(self, x: torch.Tensor, bucket: int) -> torch.Tensor:
        """Run `x` (at most `bucket` images) as a batch of exactly `bucket`, zero-padded; returns len(x) rows."""
        images = x.shape[0]
        key = (bucket, x.shape[2], x.shape[3])
        if not self.cuda_graphs or key in self._no_graph_keys:
            x = x.to(dtype=self.dtype, memory_format=self._memory_format)
            if bucket != images:
                x = torch.cat([x, x.new_zeros(bucket - images, *x.shape[1:])])
            return self._run(x.contiguous(memory_format=self._memory_format), key)[:images]
        entry = self._graphs.get(key)
        if entry is None:
            started, compile_seconds = time.perf_counter(), self.setup_seconds
            example = torch.zeros(key[0], x.shape[1], key[1], key[2], device=self.device, dtype=self.dtype)
            example = example.contiguous(memory_format=self._memory_format)
            example[:images].copy_(x)
            try:
                entry = capture_cuda_graph(lambda inp: self._run(inp, key), example)
            except Exception as err:  # a failed capture must not fail the call: run this shape without a graph
                self._no_graph_keys.add(key)
                self._warn_once("capture", f"efficientformer.optimize: capturing a CUDA graph for batch {key[0]} at "
                                f"{key[1]}x{key[2]} failed ({type(err).__name__}: {err}); such shapes run without "
                                "graphs (pass cuda_graphs=False to skip capturing).")
                return self._run_bucket(x, bucket)
            compile_seconds = self.setup_seconds - compile_seconds  # counted by _run already
            self._add_setup(time.perf_counter() - started - compile_seconds,
                            f"captured a CUDA graph for batch {key[0]} at {key[1]}x{key[2]}")
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:  # least recently used first; its memory pool is freed
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in[:images].copy_(x)  # the padding rows keep the zeros of the capture (and any later value is
        graph.replay()               # harmless: every image is computed on its own)
        return static_out[:images].clone()

    def _run(self, x: torch.Tensor, key: tuple) -> torch.Tensor:
        if self._compiled is None or key in self._eager_keys:
            return self.fused(x)
        new = key not in self._compiled_keys
        if new and len(self._compiled_keys) >= self.max_shapes:
            self._eager_keys.add(key)
            self._warn_once("max_shapes", f"efficientformer.optimize: {self.max_shapes} input shapes are compiled "
                            f"already; batch {key[0]} at {key[1]}x{key[2]} and later new shapes run uncompiled "
                            "(raise max_shapes, or keep to fewer image sizes).")
            return self.fused(x)
        started = time.perf_counter()
        try:  # known shapes too: should anything make torch.compile recompile them, the limit still holds
            with _recompile_limit(self.max_shapes + 1):
                out = self._compiled(x)
        except Exception as err:  # a compiler failure must not fail the call: run this shape uncompiled
            self._eager_keys.add(key)
            self._warn_once("compile", f"efficientformer.optimize: compiling for batch {key[0]} at {key[1]}x{key[2]} "
                            f"failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                            "such shapes run uncompiled (pass compile=False to skip compiling).")
            return self.fused(x)
        if new:
            self._compiled_keys.add(key)
            self._add_setup(time.perf_counter() - started, f"compiled for batch {key[0]} at {key[1]}x{key[2]}")
        return out

    def _add_setup(self, seconds: float, what: str) -> None:
        self.setup_seconds += seconds
        log.info("%s in %.1f s (setup so far %.1f s)", what, seconds, self.setup_seconds)

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _prepare_grid(self, height: int, width: int) -> None:
        from ..models.architecture import plan

        if hasattr(self.fused, "prepare_size"):  # EfficientFormerV2 (deploy.fold_v2): every attention's grid
            return self.fused.prepare_size(height, width)

        grid = plan(self.fused.config).token_grid(height, width)
        for block in self.fused.blocks3d:
            if grid not in block.biases:
                block.add_grid(grid)


def capture_cuda_graph(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int = 3):
    """Capture `fn(example)` as a CUDA graph after `warmup` runs on a side stream (which also compiles and
    autotunes). Returns (graph, static input, static output): copy new data into the static input, call
    `graph.replay()`, read the static output (overwritten by the next replay)."""
    static_in = example
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)
    return graph, static_in, static_out


def _chain_pool_kernels(fused: FusedEfficientFormer) -> None:
    """Pair up consecutive matrix-product Meta4D blocks: the first hands (mixed, mlp output) to the second, which
    adds, pools and mixes them in one Triton kernel (see `FusedMeta4D.pool_kernel`)."""
    from . import kernels

    blocks = list(fused.convs)
    for before, block in zip(blocks, blocks[1:]):
        if (isinstance(before, FusedMeta4D) and isinstance(block, FusedMeta4D) and not before.triton
                and not block.triton and before.pool_size == block.pool_size):
            kernels.add_pool_lerp_op()
            before.defer_residual = block.pool_kernel = True


def optimize(model: nn.Module, image_size: tuple[int, int] | int | None = None, *, dtype: Any = None,
             device: Any = None, channels_last: bool = True, compile: bool | str | None = None,
             cuda_graphs: bool | None = None, kernels: str | bool | None = "auto", triton_max_channels: int = 128,
             pad_stem: bool = False, triton_stem: bool = True, triton_pool: bool = True,
             attention: str | None = None, gelu_epilogue: bool | None = None,
             batch_buckets: tuple[int, ...] | None = None, max_shapes: int = 64,
             max_graphs: int = 32) -> OptimizedEfficientFormer:
    """Prepare an EfficientFormer for fast inference in one call (the model itself is left untouched).

    With no options it picks the fastest mode measured for the device (BENCHMARKS.md): on CUDA bfloat16,
    `torch.compile`, CUDA graphs, the Triton kernels (Meta4D block, stem, add + pool + lerp; when triton is
    installed), matmul attention and the GELU epilogue; on the CPU the folded float32 network on channels-last
    memory, uncompiled (compiling it gained nothing measurable on the CPU and costs tens of seconds per shape).
    Every speed-up can be switched off on its own (`compile=False`, `cuda_graphs=False`, `kernels=None`,
    `triton_stem=False`, `triton_pool=False`, `attention="sdpa"`, `gelu_epilogue=False`, `dtype="fp32"`). The one-time cost (building, then each compile and graph capture
    on first use of a shape) is in the result's `setup_seconds` and logged at INFO level on the
    `efficientformer.optimize` logger; `result.warmup()` pays it ahead.

    Args:
        model: an `EfficientFormerModel`, `EfficientFormerForImageClassification` or
            `EfficientFormerForImageClassificationWithTeacher`, or one of the EfficientFormerV2 classes.
        image_size: (height, width) or one side; the attention bias for its token grid is built ahead.
            Default: the config's `image_size` (224). Other sizes still work (their bias is built on first use,
            outside compiled graphs).
        dtype: `torch.float32`, `torch.bfloat16`, `torch.float16` or "fp32"/"bf16"/"fp16". Default: bf16 on
            CUDA (logits within about 5e-3 relative of float32 for L1), fp32 elsewhere.
        device: where to run; default the model's device.
        channels_last: keep 4-D activations in channels-last (NHWC) memory so every 1x1 conv is one
            matrix product (default True; fastest on CPU and GPU).
        compile: False, True (= "default"), or a `torch.compile` mode: "default", "reduce-overhead",
            "max-autotune", "max-autotune-no-cudagraphs". Default None: "default" on CUDA, off elsewhere.
            Compiles for fixed shapes, one per (batch bucket, image size) on first use.
        cuda_graphs: capture and replay a CUDA graph per (batch bucket, image size) (CUDA only). Default None:
            on for CUDA. Combine with compile="default" or "max-autotune-no-cudagraphs" rather than a mode
            that makes its own graphs.
        kernels: "triton" runs each Meta4D block as one fused Triton kernel (`efficientformer.deploy.kernels`: pooling,
            both 1x1 convs and the residual in one pass; CUDA, bf16/fp16, channels-last); None (or False,
            "none") uses PyTorch operators only. Default "auto": "triton" where it can run, else None.
        triton_max_channels: with the Triton kernel, only blocks at most this wide use it (default 128: on an
            H100 it beat PyTorch for the 48- and 96-wide stages of L1 and lost for 224 and 448), and only
            for inputs of at least 16384 pixels per block (a batch-1 call keeps the compiled PyTorch path).
        pad_stem: zero-pad the images to 8 channels for the first conv (same result). Off by default: on an
            H100 the padded conv plus the padding took 642 us against 536 us for the 3-channel conv (batch 256).
        triton_stem: with the Triton kernels, run the stem (both 3x3 stride-2 convs and their ReLUs) as one
            Triton kernel too (`kernels.stem_launch`: the first conv's output is recomputed on chip instead of
            written and read back). Default True; False keeps the two cuDNN convs.
        triton_pool: with the Triton kernels, each Meta4D block that runs as matrix products (wider than
            `triton_max_channels`) after another such block starts with one Triton kernel that adds the block
            before's residual, pools and mixes (`kernels.add_pool_lerp_launch`), instead of writing the sum and
            reading it back. Default True; False keeps Inductor's two passes.
        attention: "sdpa" (`F.scaled_dot_product_attention` with the bias as mask) or "matmul" (two matrix
            products in the network's dtype around a float32 softmax, which torch.compile fuses with the
            scaling and the bias; SDPA has no fused kernel for this head shape with a bias and takes its unfused
            path on the GPU). Same function either way. Default None: "matmul" on CUDA, "sdpa" elsewhere.
        gelu_epilogue: compute each GELU inside the matrix product before it (one `torch._addmm_activation`:
            on CUDA a cuBLASLt epilogue with the tanh approximation of GELU; on the CPU the exact GELU). Only
            where the model's activation is GELU and the block does not run the Triton kernel. Default None:
            on for CUDA in bf16/fp16 (where the approximation is far below the rounding of the dtype: the
            logits' error against float32 stayed 4.7e-3 for L1), off otherwise.
        batch_buckets: the batch sizes compiled or captured (default 1, 2, 4, ..., 256); other batches run as
            pieces of these (see `OptimizedEfficientFormer`). Used only with `compile` or `cuda_graphs`.
        max_shapes: most (bucket, image size) pairs compiled per optimized model; later new ones run
            uncompiled, with one warning (default 64).
        max_graphs: most CUDA graphs kept per optimized model, least recently used dropped first (default 32).

    Returns:
        An `OptimizedEfficientFormer`: call it with (B, C, H, W) float images, get logits (B, num_labels)
        (the mean of both heads for the WithTeacher class), or normalized tokens (B, N, C) for a backbone.

    Raises:
        ConfigError: unknown dtype, compile mode, kernels or attention value, bad buckets, CUDA graphs or
            the Triton kernel asked for without a CUDA device, or not an EfficientFormer.

    Example:
        >>> fast = efficientformer.optimize(model, device="cuda")  # doctest: +SKIP
        >>> logits = fast(images)  # doctest: +SKIP
        >>> fast.setup_seconds  # doctest: +SKIP
    """
    started = time.perf_counter()
    if device is None:
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    if dtype is None:
        dtype = torch.bfloat16 if on_cuda else torch.float32
    dtype = parse_dtype(dtype)
    if compile is None:
        compile = "default" if on_cuda else False
    if compile is True:
        compile = "default"
    if compile and compile not in COMPILE_MODES:
        raise ConfigError(f"compile={compile!r} is not a torch.compile mode; use one of {', '.join(COMPILE_MODES)}.")
    if cuda_graphs is None:
        cuda_graphs = on_cuda
    if cuda_graphs and not on_cuda:
        raise ConfigError(f"cuda_graphs=True needs a CUDA device, got {device}; drop cuda_graphs or pass device='cuda'.")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("float16 on the CPU is slower than float32 and loses accuracy; use fp32 or bf16 on the CPU.")
    if batch_buckets is not None and (not batch_buckets or any(not isinstance(b, int) or b < 1 for b in batch_buckets)):
        raise ConfigError(f"batch_buckets={batch_buckets!r} must be positive batch sizes, e.g. (1, 8, 64).")
    if kernels in (False, "none"):
        kernels = None
    from .fold_v2 import is_v2

    v2 = is_v2(model)  # V1's Triton kernels (Meta4D block, stem, pooling) have no EfficientFormerV2 counterpart
    if v2 and (kernels == "triton" or pad_stem or attention is not None or gelu_epilogue):
        raise ConfigError("kernels='triton', pad_stem, attention and gelu_epilogue are for EfficientFormer (V1) only; "
                          "an EfficientFormerV2 runs PyTorch operators: drop those options.")
    if kernels == "auto":
        from . import kernels as triton_kernels

        usable = not v2 and on_cuda and dtype != torch.float32 and channels_last and triton_kernels.available()
        kernels = "triton" if usable else None
    if kernels not in (None, "triton"):
        raise ConfigError(f"kernels={kernels!r} is not supported; use 'auto', 'triton' or None.")
    if attention is None:
        attention = "matmul" if on_cuda else "sdpa"
    if gelu_epilogue is None:
        gelu_epilogue = on_cuda and dtype in (torch.bfloat16, torch.float16)
    if attention not in ("sdpa", "matmul"):
        raise ConfigError(f"attention={attention!r} is not supported; use 'sdpa' or 'matmul'.")
    if kernels == "triton":
        from . import kernels as triton_kernels

        if not on_cuda or not triton_kernels.available():
            raise ConfigError("kernels='triton' needs a CUDA GPU and the triton package; drop kernels= on this machine.")
        if dtype == torch.float32 or not channels_last:
            raise ConfigError("kernels='triton' runs in bf16 or fp16 with channels_last=True; pass dtype='bf16'.")
    fused = fuse(model, image_size).to(device=device, dtype=dtype)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    if pad_stem:
        fused.stem.pad_input_channels(8)
    if kernels == "triton":
        for block in fused.convs:
            if isinstance(block, FusedMeta4D) and block.w1.shape[1] <= triton_max_channels:
                block.enable_triton()
        if triton_stem:
            fused.stem.enable_triton()
        if triton_pool:
            _chain_pool_kernels(fused)
    gelu = gelu_epilogue and fused.config.hidden_act == "gelu"
    if gelu:
        linear_gelu_op()  # registered before any compilation traces a call to it
    for block in fused.convs:
        if isinstance(block, FusedMeta4D):
            block.gelu_epilogue = gelu
    for block in fused.blocks3d:
        block.gelu_epilogue, block.attention = gelu, attention
    fast = OptimizedEfficientFormer(fused, device=device, dtype=dtype, channels_last=channels_last,
                                    compile=compile or None, cuda_graphs=cuda_graphs, batch_buckets=batch_buckets,
                                    max_shapes=max_shapes, max_graphs=max_graphs)
    fast.setup_seconds = time.perf_counter() - started
    log.info("optimize: %s %s, compile=%s, cuda_graphs=%s, kernels=%s, attention=%s, gelu_epilogue=%s; built in "
             "%.1f s (each new batch bucket and image size compiles on first use: see warmup())", device,
             str(dtype).replace("torch.", ""), compile or None, cuda_graphs, kernels, attention, gelu,
             fast.setup_seconds)
    return fast


__all__ = ["FusedEfficientFormer", "OptimizedEfficientFormer", "capture_cuda_graph", "fuse", "optimize", "parse_dtype",
           "plan_batches"]
