"""EfficientFormerV2 on Keras 3 (TensorFlow or JAX): `TFEfficientFormerV2Model`,
`TFEfficientFormerV2ForImageClassification` and `TFEfficientFormerV2ForImageClassificationWithTeacher`,
mirroring `efficientformer.models.pytorch.models_v2` name for name.

They are the Keras V1 classes with another main layer (`layers_v2.TFEfficientFormerV2MainLayer`): the same
input checks, losses, Keras integration (`fit`, `predict`, export), loading (`from_pretrained` reads our
folders, timm's and the original release through `load_checkpoint`) and saving. As on the PyTorch side,
`last_hidden_state` and `forward_features` give the normalized (B, C_last, H/32, W/32) map.
"""

from __future__ import annotations

from ...config_v2 import EfficientFormerV2Config
from ...errors import InputError, require
from ..architecture_v2 import plan_v2
from ..outputs import FeatureInfo
from .layers import _serializable
from .layers_v2 import TFEfficientFormerV2MainLayer
from .models import (
    TFEfficientFormerForImageClassification,
    TFEfficientFormerForImageClassificationWithTeacher,
    TFEfficientFormerModel,
    TFEfficientFormerPreTrainedModel,
)

keras = require("keras", "tf", "the TensorFlow classes")
from keras import ops  # noqa: E402


def pool_map(x, width: int):
    """(B, C, h, w) map of `forward_features` -> (B, C) mean over its positions, the pooling before the heads."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or shape[1] != width:
        raise InputError(f"forward_head takes the (batch, {width}, height, width) output of forward_features, "
                         f"got {shape}.")
    return ops.mean(x, axis=(2, 3))


class _TFV2Surface:
    """What differs in every Keras V2 class: config and main layer, feature info, stage maps, map pooling."""

    config_class = EfficientFormerV2Config
    main_layer_class = TFEfficientFormerV2MainLayer

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction and layer path of each stage's map, as the PyTorch classes' (with `/` paths)."""
        info = [{"num_chs": stage.width, "reduction": stage.reduction,
                 "module": f"{self.base_model_prefix}/encoder/{stage.module[0]}"}
                for stage in plan_v2(self.config).stages]
        return FeatureInfo(info, getattr(self, "out_indices", None))

    def forward_intermediates(self, pixel_values, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False, *, out_indices=None,
                              training: bool = False):
        """Dense NCHW maps of the requested stages, as `EfficientFormerV2Model.forward_intermediates`."""
        stages = self.config.num_stages
        pixel_values, take, intermediates_only, stop = self._intermediates_request(
            pixel_values, indices, out_indices, output_fmt, intermediates_only, stop_early)
        main = self.efficientformer
        _, maps, _ = main.run(ops.cast(pixel_values, self.compute_dtype), stop=stop, training=training)
        normed = main.norm(maps[-1], training=training) if stop == stages - 1 else None
        picked = [ops.transpose(normed if norm and i == stages - 1 else maps[i], (0, 3, 1, 2)) for i in take]
        if intermediates_only:
            return picked
        return ops.transpose(normed if normed is not None else maps[-1], (0, 3, 1, 2)), picked

    def forward_head(self, x, pre_logits: bool = False):
        """The map of `forward_features` -> (B, C_last) mean (the classifiers: their logits)."""
        pooled = pool_map(x, self.config.hidden_sizes[-1])
        heads = [getattr(self, name) for name in self._head_names]
        if pre_logits or not heads:
            return pooled
        return sum(head(pooled) for head in heads) / len(heads)


class TFEfficientFormerV2PreTrainedModel(_TFV2Surface, TFEfficientFormerPreTrainedModel):
    """Base of the three Keras V2 models (the V1 base with the V2 config and main layer)."""


@_serializable
class TFEfficientFormerV2Model(_TFV2Surface, TFEfficientFormerModel):
    """The EfficientFormerV2 backbone: images (B, C, H, W) to the normalized map (B, C_last, H/32, W/32);
    with `out_indices` a features-only backbone returning those stages' maps."""

    keras_name = "tf_efficient_former_v2_model"


@_serializable
class TFEfficientFormerV2ForImageClassification(_TFV2Surface, TFEfficientFormerForImageClassification):
    """Backbone + mean over the map + one linear head (`classifier`)."""

    keras_name = "tf_efficient_former_v2_for_image_classification"


@_serializable
class TFEfficientFormerV2ForImageClassificationWithTeacher(_TFV2Surface,
                                                           TFEfficientFormerForImageClassificationWithTeacher):
    """Backbone + a class head and a distillation head; `logits` is their mean."""

    keras_name = "tf_efficient_former_v2_for_image_classification_with_teacher"


__all__ = ["TFEfficientFormerV2PreTrainedModel", "TFEfficientFormerV2Model",
           "TFEfficientFormerV2ForImageClassification", "TFEfficientFormerV2ForImageClassificationWithTeacher",
           "pool_map"]
