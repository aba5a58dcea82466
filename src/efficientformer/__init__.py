"""EfficientFormer vision models for PyTorch and Keras 3.

`import efficientformer` needs only numpy and Pillow. The PyTorch and TensorFlow classes are imported
on first use, and a missing backend raises one ImportError that names the extra to install.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

# public name -> module that defines it (imported lazily)
_EXPORTS = {
    "EfficientFormerConfig": "config",
    "EfficientFormerV2Config": "config_v2",
    "EfficientFormerImageProcessor": "preprocessing.processor",
    "EfficientFormerPreTrainedModel": "models.pytorch.models",
    "EfficientFormerModel": "models.pytorch.models",
    "EfficientFormerForImageClassification": "models.pytorch.models",
    "EfficientFormerForImageClassificationWithTeacher": "models.pytorch.models",
    "EfficientFormerV2PreTrainedModel": "models.pytorch.models_v2",
    "EfficientFormerV2Model": "models.pytorch.models_v2",
    "EfficientFormerV2ForImageClassification": "models.pytorch.models_v2",
    "EfficientFormerV2ForImageClassificationWithTeacher": "models.pytorch.models_v2",
    "TFEfficientFormerPreTrainedModel": "models.keras.models",
    "TFEfficientFormerModel": "models.keras.models",
    "TFEfficientFormerForImageClassification": "models.keras.models",
    "TFEfficientFormerForImageClassificationWithTeacher": "models.keras.models",
    "TFEfficientFormerV2PreTrainedModel": "models.keras.models_v2",
    "TFEfficientFormerV2Model": "models.keras.models_v2",
    "TFEfficientFormerV2ForImageClassification": "models.keras.models_v2",
    "TFEfficientFormerV2ForImageClassificationWithTeacher": "models.keras.models_v2",
    "ImageClassifier": "classifier",
    "create_model": "factory",
    "list_models": "factory",
    "optimize": "deploy.optimize",
    "export": "deploy.export",
    "VARIANTS": "presets",
    "WEIGHTS": "presets",
    "V2_VARIANTS": "presets",
    "V2_WEIGHTS": "presets",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "InputError": "errors",
    "MissingDependencyError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
