"""EfficientFormer in PyTorch: the layers (`layers`), the models and their forward surface (`models`),
loading and saving (`loading`) and timm's feature API (`features`). Names are imported on first use."""

from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["EfficientFormerPreTrainedModel", "EfficientFormerModel", "EfficientFormerForImageClassification",
                     "EfficientFormerForImageClassificationWithTeacher"], "models"),
    **dict.fromkeys(["DropPath", "ConvStem", "Downsample", "Pooling", "ConvMlp", "Meta4D", "Meta4DBlocks",
                     "IntermediateStage", "Attention", "LinearMlp", "Meta3D", "Meta3DBlocks", "LastStage",
                     "Encoder", "grid_bias"], "layers"),
    "PretrainedIO": "loading",
    "pool_tokens": "features",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
