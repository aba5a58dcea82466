"""The PyTorch EfficientFormerV2 models: the backbone `EfficientFormerV2Model` and the classifiers
`EfficientFormerV2ForImageClassification` and `EfficientFormerV2ForImageClassificationWithTeacher`.

They are the V1 classes with another network: the same base (initialization, input checks, loading and
saving, `efficientformer.models.pytorch.models`), call contract, outputs, losses and forward surface
(`forward_features`, `forward_head`, `forward_intermediates`, `feature_info`). V2 keeps a 4-D map to the
end, so `last_hidden_state` and `forward_features` give the normalized (B, C, H/32, W/32) map, and the heads
average it over its positions.

    pixel_values (B, C, H, W) -> EfficientFormerV2Model -> map (B, C_last, h, w) -> mean -> head(s) -> logits
"""

from __future__ import annotations

from typing import Any, Sequence

from ...config_v2 import EfficientFormerV2Config
from ...errors import InputError, require
from ..architecture_v2 import plan_v2
from ..outputs import BaseModelOutput, FeatureInfo, intermediates_request, take_indices
from .layers_v2 import EncoderV2, StageV2, StemV2
from .models import (
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerPreTrainedModel,
)

torch = require("torch", "torch", "the PyTorch EfficientFormerV2 classes")
from torch import nn  # noqa: E402


def pool_map(x: Any, width: int) -> torch.Tensor:
    """(B, C, h, w) map of `forward_features` -> (B, C) mean over its positions, the pooling before the heads."""
    if torch.jit.is_tracing():
        return x.mean(dim=(2, 3))
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != width:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"forward_head takes the (batch, {width}, height, width) output of forward_features, "
                         f"got {shape}.")
    return x.mean(dim=(2, 3))


class _V2Surface:
    """What differs in every V2 class: the config class, timm's feature info and gradient checkpointing of
    the V2 stages, and pooling a map rather than tokens."""

    config_class = EfficientFormerV2Config

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (stride) and module path of each stage's map in `forward_intermediates`,
        as timm's `feature_info`.

        Example:
            >>> from efficientformer import EfficientFormerV2Config, EfficientFormerV2Model
            >>> info = EfficientFormerV2Model(EfficientFormerV2Config.from_preset("s0")).feature_info
            >>> info.channels(), info.reduction(), info[3]["module"]
            ([32, 48, 96, 176], [4, 8, 16, 32], 'encoder.stages.3')
        """
        backbone = getattr(self, "efficientformer", self)
        prefix = "" if backbone is self else self.base_model_prefix + "."
        info = [{"num_chs": stage.width, "reduction": stage.reduction,
                 "module": prefix + ".".join(("encoder",) + stage.module)} for stage in plan_v2(self.config).stages]
        return FeatureInfo(info, backbone.out_indices)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of keeping its activations, as timm's."""
        for module in self.modules():
            if isinstance(module, StageV2):
                module.grad_checkpointing = bool(enable)


class EfficientFormerV2PreTrainedModel(_V2Surface, EfficientFormerPreTrainedModel):
    """Weights initialization, `from_pretrained` / `save_pretrained`, and the checks on inputs (V1's)."""


class EfficientFormerV2Model(EfficientFormerV2PreTrainedModel):
    """The EfficientFormerV2 backbone: images (B, C, H, W) to the normalized map (B, C_last, H/32, W/32).

    Any input size of at least 32 pixels a side: the attention biases are resized from the trained grid
    (`config.image_size`) to the grids the image gives. With `out_indices` (or `features_only=True`) it
    returns the list of those stages' maps, as timm's `features_only`.

    Example:
        >>> import torch
        >>> from efficientformer import EfficientFormerV2Config, EfficientFormerV2Model
        >>> model = EfficientFormerV2Model(EfficientFormerV2Config.from_preset("s0")).eval()
        >>> model(torch.randn(1, 3, 256, 320)).last_hidden_state.shape
        torch.Size([1, 176, 8, 10])
    """

    supports_features_only = True

    def __init__(self, config: EfficientFormerV2Config, *, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__(config)
        if features_only or out_indices is not None:
            wanted = config.num_stages if out_indices is None else out_indices
            self.out_indices: tuple[int, ...] | None = tuple(take_indices(config.num_stages, wanted, "out_indices"))
        else:
            self.out_indices = None
        self.patch_embed = StemV2(config)
        self.encoder = EncoderV2(config)
        self.norm = nn.BatchNorm2d(config.hidden_sizes[-1], eps=config.batch_norm_eps)
        self.post_init()

    def _run(self, pixel_values: torch.Tensor, stop: int | None = None):
        """The one pass every output is built from, up to stage `stop` (default: all): the stem output,
        every stage's map (before the final norm) and the attention weights in order."""
        pixel_values = self._check_pixel_values(pixel_values)
        self._check_finite(pixel_values)
        x = self.patch_embed(pixel_values)
        stem, maps, weights = x, [], []
        last = self.config.num_stages - 1 if stop is None else stop
        for stage in self.encoder.stages[:last + 1]:
            x, found = stage(x)
            maps.append(x)
            weights.extend(found)
        return stem, maps, tuple(weights)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, C_last, H/32, W/32) map after the final BatchNorm, as timm's."""
        return self.norm(self._run(pixel_values)[1][-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The map of `forward_features` -> (B, C_last) mean over its positions (the backbone has no head)."""
        return pool_map(x, self.config.hidden_sizes[-1])

    def forward_intermediates(self, pixel_values: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False, *, out_indices: Sequence[int] | None = None):
        """Dense feature maps of the requested stages (strides 4, 8, 16, 32), as timm's.

        Args:
            indices: an int n for the last n stages, or a sequence of stage numbers; all when None (a
                features-only backbone: its `out_indices`).
            norm: apply the final BatchNorm to the last stage's map.
            stop_early: stop after the last requested stage; the returned final features are then its map.
            output_fmt: "NCHW" only. intermediates_only: return only the maps. out_indices: earlier name
                of `indices` (returns only the maps).

        Returns:
            `(final, maps)` (`final` as `forward_features` gives it), or only `maps`.
        """
        stages = self.config.num_stages
        take, intermediates_only, _ = intermediates_request(stages, indices, out_indices, output_fmt,
                                                            intermediates_only, default=self.out_indices)
        stop = max(take) if stop_early or intermediates_only else stages - 1
        _, maps, _ = self._run(pixel_values, stop=stop)
        picked = [self.norm(maps[i]) if norm and i == stages - 1 else maps[i] for i in take]
        if intermediates_only:
            return picked
        return (self.norm(maps[-1]) if stop == stages - 1 else maps[-1]), picked

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None):
        """Run the backbone.

        Args:
            pixel_values: float (B, num_channels, H, W), normalized as the image processor does; H, W >= 32.
            output_attentions: also return every attention's weights (B, heads, Nq, N), in network order.
            output_hidden_states: also return the stem output and every stage's map.
            return_dict: return a `BaseModelOutput` (default) instead of a tuple.

        Returns:
            `BaseModelOutput` with `last_hidden_state` (B, C_last, h, w); a features-only backbone returns
            the list of its stage maps.
        """
        maps = self._features_only_maps(pixel_values, output_attentions, output_hidden_states)
        if maps is not None:
            return maps
        stem, maps, weights = self._run(pixel_values)
        output = BaseModelOutput(last_hidden_state=self.norm(maps[-1]),
                                 hidden_states=(stem, *maps) if output_hidden_states else None,
                                 attentions=weights if output_attentions else None)
        return output if return_dict is not False else output.to_tuple()


class EfficientFormerV2ForImageClassification(_V2Surface, EfficientFormerForImageClassification):
    """Backbone + mean pooling + one linear head; the call contract and loss of
    `EfficientFormerForImageClassification`.

    Example:
        >>> import torch
        >>> from efficientformer import EfficientFormerV2Config, EfficientFormerV2ForImageClassification
        >>> model = EfficientFormerV2ForImageClassification(EfficientFormerV2Config.from_preset("s0", num_labels=3))
        >>> model(torch.randn(2, 3, 224, 224), labels=torch.tensor([0, 2])).logits.shape
        torch.Size([2, 3])
    """

    backbone_class = EfficientFormerV2Model

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, h, w) normalized map -> (B, num_labels) logits (the pooled (B, C) with `pre_logits=True`)."""
        pooled = pool_map(x, self.config.hidden_sizes[-1])
        return pooled if pre_logits else self.classifier(pooled)


class EfficientFormerV2ForImageClassificationWithTeacher(_V2Surface, EfficientFormerForImageClassificationWithTeacher):
    """Backbone + a class head and a distillation head; `logits` is their mean (the paper's inference), as
    `EfficientFormerForImageClassificationWithTeacher`."""

    backbone_class = EfficientFormerV2Model

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, h, w) normalized map -> (B, num_labels) mean of both heads (the pooled (B, C) with
        `pre_logits=True`)."""
        pooled = pool_map(x, self.config.hidden_sizes[-1])
        if pre_logits:
            return pooled
        return (self.classifier(pooled) + self.distillation_classifier(pooled)) / 2


__all__ = ["EfficientFormerV2PreTrainedModel", "EfficientFormerV2Model", "EfficientFormerV2ForImageClassification",
           "EfficientFormerV2ForImageClassificationWithTeacher", "pool_map"]
