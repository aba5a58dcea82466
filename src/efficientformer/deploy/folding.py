"""The pieces every folded network is built from, for both families (`deploy.optimize` for EfficientFormer,
`deploy.fold_v2` for EfficientFormerV2): BatchNorm and LayerNorm affines folded into the layer before or after
them in float64, folded convolutions, the per-grid attention-bias cache and the folded network's base."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, require

torch = require("torch", "torch", "efficientformer.optimize")
from torch import nn  # noqa: E402


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(device="cpu", dtype=torch.float64)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (O, I, kh, kw) and bias (O,) of `bn(conv(x))` in eval mode, in float64."""
    weight = _f64(conv.weight)
    bias = _f64(conv.bias) if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    factor = _f64(bn.weight) / torch.sqrt(_f64(bn.running_var) + bn.eps)
    return weight * factor.view(-1, 1, 1, 1), (bias - _f64(bn.running_mean)) * factor + _f64(bn.bias)


def _scale_vector(scale: torch.Tensor | None, dim: int) -> torch.Tensor:
    return torch.ones(dim, dtype=torch.float64) if scale is None else _f64(scale)


def _fold_input_affine(linear: nn.Linear, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """`linear(norm(x))` = `linear'(normalize(x))`: the LayerNorm's gain and shift moved into the linear."""
    weight, bias = _f64(linear.weight), _f64(linear.bias)
    gain = _f64(norm.weight) if norm.weight is not None else torch.ones(weight.shape[1], dtype=torch.float64)
    shift = _f64(norm.bias) if norm.bias is not None else torch.zeros(weight.shape[1], dtype=torch.float64)
    return weight * gain, bias + weight @ shift


def _conv(weight: torch.Tensor, bias: torch.Tensor, like: nn.Conv2d) -> nn.Conv2d:
    conv = nn.Conv2d(like.in_channels, like.out_channels, like.kernel_size, stride=like.stride,
                     padding=like.padding, dilation=like.dilation, groups=like.groups, bias=True)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv.requires_grad_(False)


def _buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    module.register_buffer(name, value.to(torch.float32).contiguous())


def _fold_affine_into_heads(module: nn.Module, gain: torch.Tensor, shift: torch.Tensor, heads: list,
                            plain_shape: tuple[int, ...] = (-1,)) -> bool:
    """Buffers `weight` and `bias` of `module` for a per-channel affine `x * gain + shift` followed by the mean
    over positions (which commutes with it) and the mean of `heads` (the two heads of WithTeacher averaged):
    one linear layer. With no head, the affine itself, shaped `plain_shape`. Returns whether there are heads."""
    if heads:
        weight = sum(_f64(h.weight) for h in heads) / len(heads)
        bias = sum(_f64(h.bias) for h in heads) / len(heads)
        _buffer(module, "weight", weight * gain)
        _buffer(module, "bias", bias + weight @ shift)
    else:
        _buffer(module, "weight", gain.view(plain_shape))
        _buffer(module, "bias", shift.view(plain_shape))
    return bool(heads)


class GridBiasCache(nn.Module):
    """A module keeping one attention bias per token grid in the dict `self.biases` (set by the subclass),
    the grids prepared when building also as buffers (`register`), which exports trace as module state and
    `.to()` / `.half()` move; the dict follows the buffers."""

    def _keep(self, grid: tuple[int, int], bias: torch.Tensor, register: bool) -> torch.Tensor:
        if register:
            self.register_buffer(f"bias_{grid[0]}x{grid[1]}", bias, persistent=False)
        self.biases[grid] = bias
        return bias

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half(): the dict follows the buffers
        super()._apply(fn, recurse)
        for grid, bias in list(self.biases.items()):
            name = f"bias_{grid[0]}x{grid[1]}"
            self.biases[grid] = self._buffers[name] if name in self._buffers else fn(bias)
        return self


class FusedNetwork(nn.Module):
    """What both families' folded networks share: a copy of the config, the channel count and the image size
    prepared ahead, and eval mode only."""

    family = "EfficientFormer"

    def __init__(self, config: Any, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config.copy()
        self.num_channels = config.num_channels
        size = image_size or (config.image_size, config.image_size)
        self.image_size = (int(size[0]), int(size[1]))

    def train(self, mode: bool = True) -> "FusedNetwork":
        if mode:
            raise ConfigError(f"a fused {self.family} is for inference only; train the original model "
                              "and call efficientformer.optimize() again afterwards.")
        return super().train(False)



__all__ = ["FusedNetwork", "GridBiasCache"]
