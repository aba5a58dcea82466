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
    "EfficientFormerImageProcessor": "preprocessing.processor",
    "EfficientFormerPreTrainedModel": "models.pytorch.models",
    "EfficientFormerModel": "models.pytorch.models",
    "EfficientFormerForImageClassification": "models.pytorch.models",
    "EfficientFormerForImageClassificationWithTeacher": "models.pytorch.models",
    "TFEfficientFormerPreTrainedModel": "models.keras.models",
    "TFEfficientFormerModel": "models.keras.models",
    "TFEfficientFormerForImageClassification": "models.keras.models",
    "TFEfficientFormerForImageClassificationWithTeacher": "models.keras.models",
    "ImageClassifier": "classifier",
    "create_model": "factory",
    "list_models": "factory",
    "optimize": "deploy.optimize",
    "export": "deploy.export",
    "VARIANTS": "presets",
    "WEIGHTS": "presets",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "InputError": "errors",
    "MissingDependencyError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
