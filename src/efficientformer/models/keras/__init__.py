"""EfficientFormer in Keras 3 (TensorFlow or JAX backend), mirroring `efficientformer.models.pytorch`: the
layers (`layers`; V2: `layers_v2`), the models and their forward surface (`models`; V2: `models_v2`),
loading and saving (`loading`), timm's feature API (`features`), input checks (`inputs`) and losses
(`losses`). Names are imported on first use."""

from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["TFEfficientFormerPreTrainedModel", "TFEfficientFormerModel",
                     "TFEfficientFormerForImageClassification",
                     "TFEfficientFormerForImageClassificationWithTeacher"], "models"),
    **dict.fromkeys(["TFEfficientFormerMainLayer", "DropPath", "ConvStem", "Downsample", "Pooling", "ConvMlp",
                     "Meta4D", "Meta4DBlocks", "IntermediateStage", "Attention", "LinearMlp", "Meta3D",
                     "Meta3DBlocks", "LastStage", "Encoder", "HostTruncatedNormal"], "layers"),
    **dict.fromkeys(["TFEfficientFormerV2PreTrainedModel", "TFEfficientFormerV2Model",
                     "TFEfficientFormerV2ForImageClassification",
                     "TFEfficientFormerV2ForImageClassificationWithTeacher"], "models_v2"),
    "TFEfficientFormerV2MainLayer": "layers_v2",
    "check_pixel_values": "inputs",
    "check_finite": "inputs",
    "check_labels": "losses",
    "per_sample_loss": "losses",
    "PretrainedIO": "loading",
    "pool_tokens": "features",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
