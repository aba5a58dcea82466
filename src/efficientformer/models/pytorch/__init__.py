"""EfficientFormer in PyTorch: the layers (`layers`; V2: `layers_v2`), the models and their forward surface
(`models`; V2: `models_v2`), loading and saving (`loading`) and timm's feature API (`features`). Names are
imported on first use."""

from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["EfficientFormerPreTrainedModel", "EfficientFormerModel", "EfficientFormerForImageClassification",
                     "EfficientFormerForImageClassificationWithTeacher"], "models"),
    **dict.fromkeys(["DropPath", "ConvStem", "Downsample", "Pooling", "ConvMlp", "Meta4D", "Meta4DBlocks",
                     "IntermediateStage", "Attention", "LinearMlp", "Meta3D", "Meta3DBlocks", "LastStage",
                     "Encoder", "grid_bias"], "layers"),
    **dict.fromkeys(["EfficientFormerV2PreTrainedModel", "EfficientFormerV2Model",
                     "EfficientFormerV2ForImageClassification",
                     "EfficientFormerV2ForImageClassificationWithTeacher", "pool_map"], "models_v2"),
    **dict.fromkeys(["ConvNorm", "StemV2", "DepthwiseFFN", "Attention4D", "LocalGlobalQuery", "Attention4DDownsample",
                     "DownsampleV2", "BlockV2", "StageV2", "EncoderV2"], "layers_v2"),
    "PretrainedIO": "loading",
    "pool_tokens": "features",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
