"""The folded, inference-only EfficientFormerV2 network that `efficientformer.optimize` and the exporters run.

`fuse_v2(model)` reads an `EfficientFormerV2Model`, `EfficientFormerV2ForImageClassification` or
`EfficientFormerV2ForImageClassificationWithTeacher` and builds `FusedEfficientFormerV2`, which computes the
same function with fewer operations:

- every BatchNorm is folded into the convolution before it (stem, downsamplings, the three convolutions of
  every depthwise-conv FFN, the queries, keys, values, local values, stride conv and projection of every
  attention), with `efficientformer.deploy.folding._fold_bn`;
- every layer scale is folded into the last convolution of its branch (the FFN's second 1x1 conv, the
  attention's projection);
- the attention's `1 / sqrt(key_dim)` is folded into the query convolution;
- the attention bias is gathered once per key grid (resized from the trained grid, exactly as the model
  does), and in the talking-heads attentions pushed through the first talking head: `th1(s + bias)` =
  `th1(s) + (W1 bias + b1)`;
- the global half of the downsampling attention's queries (stride-2 sampling of the input) is the centre tap
  of its local stride-2 depthwise conv, so `local(x) + x[::2, ::2]` is one depthwise conv;
- the final BatchNorm is folded into the head(s) (averaged into one linear layer for the WithTeacher class),
  since the mean over the map commutes with a per-channel affine map.

Everything is folded in float64 and stored in float32: the result agrees with the eager model within about
1e-6 relative. The source model is only read.

    >>> import torch
    >>> from efficientformer import EfficientFormerV2Config, EfficientFormerV2ForImageClassificationWithTeacher
    >>> from efficientformer.deploy.fold_v2 import fuse_v2
    >>> model = EfficientFormerV2ForImageClassificationWithTeacher(EfficientFormerV2Config.from_preset("s0")).eval()
    >>> x = torch.randn(1, 3, 224, 224)
    >>> torch.allclose(fuse_v2(model)(x), model(x).logits, atol=1e-4)
    True
"""

from __future__ import annotations

import copy

from ..constants import HEADS
from ..errors import ConfigError, require
from .folding import (FusedNetwork, GridBiasCache, _buffer, _conv, _f64, _fold_affine_into_heads, _fold_bn,
                      _scale_vector)

torch = require("torch", "torch", "efficientformer.optimize")
from torch import nn
from torch.nn import functional as F


def is_v2(model: nn.Module) -> bool:
    """Whether `model` is one of this package's EfficientFormerV2 classes (or its backbone)."""
    from ..config import MODEL_TYPE_V2

    backbone = getattr(model, "efficientformer", model)
    return getattr(getattr(backbone, "config", None), "model_type", None) == MODEL_TYPE_V2


def _folded(conv_norm: nn.Module, scale: torch.Tensor | None = None) -> nn.Conv2d:
    """A `ConvNorm` (conv + BatchNorm) as one conv, its output optionally scaled per channel."""
    weight, bias = _fold_bn(conv_norm.convolution, conv_norm.batchnorm)
    if scale is not None:
        weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale
    return _conv(weight, bias, conv_norm.convolution)


class FusedStemV2(nn.Module):
    """Two 3x3 stride-2 convs with their BatchNorms folded in, each followed by the activation."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.conv1 = _conv(*_fold_bn(stem.convolution1, stem.batchnorm_before), stem.convolution1)
        self.conv2 = _conv(*_fold_bn(stem.convolution2, stem.batchnorm_after), stem.convolution2)
        self.activation = copy.deepcopy(stem.activation)
        self.triton = False  # the V1 Triton stem kernel does not apply (read by OptimizedEfficientFormer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv2(self.activation(self.conv1(x))))


class FusedFFN(nn.Module):
    """`s2 * FFN(x)` as three folded convs: 1x1 -> act -> 3x3 depthwise -> act -> 1x1 (scaled by s2)."""

    def __init__(self, mlp: nn.Module, scale: nn.Parameter | None) -> None:
        super().__init__()
        self.fc1 = _conv(*_fold_bn(mlp.convolution1, mlp.batchnorm_before), mlp.convolution1)
        self.mid = _conv(*_fold_bn(mlp.depthwise, mlp.batchnorm_depthwise), mlp.depthwise)
        weight, bias = _fold_bn(mlp.convolution2, mlp.batchnorm_after)
        s2 = _scale_vector(scale, weight.shape[0])
        self.fc2 = _conv(weight * s2.view(-1, 1, 1, 1), bias * s2, mlp.convolution2)
        self.activation = copy.deepcopy(mlp.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.mid(self.activation(self.fc1(x)))))


class _GridBiases(GridBiasCache):
    """The (heads, Nq, N) attention bias of every key grid met, gathered (and resized) once from the float64
    table. A plain dict, as `FusedMeta3D.biases`: a buffer registered for a new image size would change the
    module's guards under torch.compile; the grids prepared when building are registered buffers as well (so
    that exports trace them as module state)."""

    def _init_table(self, attn: nn.Module, mix: nn.Conv2d | None) -> None:
        self.heads, self.key_dim, self.value_dim = attn.num_heads, attn.key_dim, attn.value_dim
        self.resolution, self.query_stride = attn.resolution, attn.query_stride
        self.table = _f64(attn.attention_biases).clone()
        # the first talking head's weight and bias, through which the bias is pushed (None: no talking heads)
        self.mix = None if mix is None else (_f64(mix.weight).flatten(1), _f64(mix.bias))
        self.biases: dict[tuple[int, int], torch.Tensor] = {}

    def add_grid(self, grid: tuple[int, int], register: bool = False) -> torch.Tensor:
        from ..models.attention_bias import grid_bias
        from ..models.pytorch.layers import TORCH_OPS

        grid = (int(grid[0]), int(grid[1]))
        if grid in self.biases:
            return self.biases[grid]
        bias = grid_bias(self.table, self.resolution, grid, TORCH_OPS, self.query_stride)  # (heads, Nq, N)
        if self.mix is not None:
            weight, shift = self.mix
            bias = torch.einsum("gh,hqn->gqn", weight, bias) + shift.view(-1, 1, 1)
        like = self.query.weight  # the network's device and dtype
        # (heads, Nq, N), broadcast over the batch: 3-D, so that .to(memory_format=channels_last) leaves it as is
        bias = bias.to(device=like.device, dtype=like.dtype).contiguous()
        return self._keep(grid, bias, register)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        return self.biases[grid] if grid in self.biases else self.add_grid(grid)

    def split_heads(self, x: torch.Tensor, per_head: int) -> torch.Tensor:
        """(B, heads * per_head, H, W) -> (B, heads, H * W, per_head), a view on channels-last memory."""
        if _channels_last(x):
            return x.permute(0, 2, 3, 1).flatten(1, 2).unflatten(2, (self.heads, per_head)).transpose(1, 2)
        return x.flatten(2).unflatten(1, (self.heads, per_head)).transpose(-2, -1)

    @staticmethod
    def merge_heads(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, per_head) -> the (B, C, H, W) shape of `like`, in its memory format (one copy)."""
        if _channels_last(like):
            return out.transpose(1, 2).reshape(like.shape[0], like.shape[2], like.shape[3], -1).permute(0, 3, 1, 2)
        return out.transpose(-2, -1).reshape(like.shape)


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class FusedAttention4D(_GridBiases):
    """`s1 * Attention4D(x)` with folded convs: scaled queries, the bias through the first talking head, the
    layer scale in the projection."""

    def __init__(self, attn: nn.Module, scale: nn.Parameter | None) -> None:
        super().__init__()
        self._init_table(attn, attn.talking_head1)
        self.stride_conv = _folded(attn.stride_conv) if attn.stride_conv is not None else None
        keys = attn.query.convolution.out_channels
        self.query = _folded(attn.query, torch.full((keys,), float(attn.scale), dtype=torch.float64))
        self.key, self.value, self.value_local = _folded(attn.key), _folded(attn.value), _folded(attn.value_local)
        _buffer(self, "talking_head1", _f64(attn.talking_head1.weight))  # its bias is in the folded biases
        self.talking_head2 = copy.deepcopy(attn.talking_head2).requires_grad_(False)
        self.activation = copy.deepcopy(attn.activation)
        out = attn.projection.convolution.out_channels
        self.projection = _folded(attn.projection, _scale_vector(scale, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        grid = (x.shape[2], x.shape[3])
        query = self.split_heads(self.query(x), self.key_dim)
        key = self.split_heads(self.key(x), self.key_dim)
        value = self.value(x)
        local = self.value_local(value)
        scores = F.conv2d(query @ key.transpose(-2, -1), self.talking_head1) + self.bias(grid).to(query.dtype)
        weights = self.talking_head2(scores.softmax(dim=-1))
        out = self.merge_heads(weights @ self.split_heads(value, self.value_dim), local) + local
        if self.stride_conv is not None:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return self.projection(self.activation(out))


class FusedAttentionDownsample(_GridBiases):
    """The local-global attention into the last stage, with folded convs; its queries' local conv and
    stride-2 sampling as one depthwise conv."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self._init_table(attn, None)
        local = attn.query.local
        weight, bias = _f64(local.weight).clone(), _f64(local.bias)
        weight[:, :, local.kernel_size[0] // 2, local.kernel_size[1] // 2] += 1.0  # + x[:, :, ::2, ::2]
        self.query_local = _conv(weight, bias, local)
        keys = attn.query.projection.convolution.out_channels
        self.query = _folded(attn.query.projection, torch.full((keys,), float(attn.scale), dtype=torch.float64))
        self.key, self.value, self.value_local = _folded(attn.key), _folded(attn.value), _folded(attn.value_local)
        self.activation = copy.deepcopy(attn.activation)
        self.projection = _folded(attn.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = (x.shape[2], x.shape[3])
        query = self.split_heads(self.query(self.query_local(x)), self.key_dim)
        key = self.split_heads(self.key(x), self.key_dim)
        value = self.value(x)
        local = self.value_local(value)
        weights = ((query @ key.transpose(-2, -1)) + self.bias(grid).to(query.dtype)).softmax(dim=-1)
        out = self.merge_heads(weights @ self.split_heads(value, self.value_dim), local) + local
        return self.projection(self.activation(out))


class FusedDownsampleV2(nn.Module):
    """Stride-2 conv with its BatchNorm folded in, plus the folded attention downsample into the last stage."""

    def __init__(self, down: nn.Module) -> None:
        super().__init__()
        self.conv = _conv(*_fold_bn(down.projection, down.norm), down.projection)
        self.attention = FusedAttentionDownsample(down.attention) if down.attention is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.attention is None else out + self.attention(x)


class FusedBlockV2(nn.Module):
    """`x + s1 * Attention4D(x)` (attention blocks), then `x + s2 * FFN(x)`, both scales folded in."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        mixer = block.token_mixer
        self.attention = FusedAttention4D(mixer, block.layer_scale_1) if mixer is not None else None
        self.mlp = FusedFFN(block.mlp, block.layer_scale_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            x = x + self.attention(x)
        return x + self.mlp(x)


class FusedHeadV2(nn.Module):
    """Final BatchNorm, mean over the map and the classifier(s) as mean -> one linear layer; with no
    classifier (a bare backbone) the BatchNorm as a per-channel affine map of the (B, C, h, w) map."""

    def __init__(self, norm: nn.BatchNorm2d, heads: list[nn.Linear]) -> None:
        super().__init__()
        gain = _f64(norm.weight) / torch.sqrt(_f64(norm.running_var) + norm.eps)
        shift = _f64(norm.bias) - _f64(norm.running_mean) * gain
        self.has_classifier = _fold_affine_into_heads(self, gain, shift, heads, (1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_classifier:
            return x * self.weight + self.bias
        return F.linear(x.mean(dim=(2, 3)), self.weight, self.bias)


class FusedEfficientFormerV2(FusedNetwork):
    """The folded, eval-only EfficientFormerV2: images (B, C, H, W) -> logits (B, num_labels) (the mean of
    both heads for the WithTeacher class, as its `logits`), or the normalized map (B, C, H/32, W/32) for a
    bare backbone. Built by `fuse_v2(model)`; holds copies of the weights. Any input size runs (each new size's
    attention biases are built on first use, or ahead with `prepare_size`)."""

    family = "EfficientFormerV2"

    def __init__(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> None:
        backbone = getattr(model, "efficientformer", model)
        config = backbone.config
        super().__init__(config, image_size)
        self.stem = FusedStemV2(backbone.patch_embed)
        layers: list[nn.Module] = []
        for stage in backbone.encoder.stages:
            if stage.downsample is not None:
                layers.append(FusedDownsampleV2(stage.downsample))
            layers.extend(FusedBlockV2(block) for block in stage.blocks)
        self.layers = nn.Sequential(*layers)
        heads = [getattr(model, name) for name in HEADS if isinstance(getattr(model, name, None), nn.Linear)]
        self.head = FusedHeadV2(backbone.norm, heads)
        self._prepared: set[tuple[int, int]] = set()
        self.prepare_size(*self.image_size, register=True)
        self.eval()

    # read by OptimizedEfficientFormer (V1's Triton kernels and Meta3D blocks have no V2 counterpart)
    convs: tuple = ()
    blocks3d: tuple = ()

    def prepare_size(self, height: int, width: int, register: bool = False) -> None:
        """Build the attention biases of every attention for (height, width) images ahead of a call (outside
        any compiled graph)."""
        from ..models.architecture_v2 import DOWNSAMPLE, GLOBAL, STRIDE, plan_v2

        if (height, width) in self._prepared and not register:
            return
        self._prepared.add((height, width))
        grids = plan_v2(self.config).attention_grids(height, width)
        for module in self.layers.modules():
            if isinstance(module, FusedAttentionDownsample):
                module.add_grid(grids[DOWNSAMPLE], register)
            elif isinstance(module, FusedAttention4D):
                module.add_grid(grids[STRIDE if module.stride_conv is not None else GLOBAL], register)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(pixel_values)))


def fuse_v2(model: nn.Module, image_size: tuple[int, int] | int | None = None) -> FusedEfficientFormerV2:
    """Fold an EfficientFormerV2 (any of the three classes) into a `FusedEfficientFormerV2` in float32 on the
    CPU; `image_size` (default the config's) has its attention biases prepared ahead. The model is only read."""
    if not is_v2(model):
        raise ConfigError(f"fuse_v2() takes an EfficientFormerV2 model of this package, got {type(model).__name__}; "
                          "load it with EfficientFormerV2ForImageClassification.from_pretrained(...).")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    with torch.no_grad():
        return FusedEfficientFormerV2(model, image_size)


__all__ = ["FusedEfficientFormerV2", "fuse_v2", "is_v2"]
