"""EfficientFormer vision models for PyTorch and Keras 3.

`import efficientformer` needs only numpy and Pillow. The PyTorch and TensorFlow classes are imported
on first use, and a missing backend raises one ImportError that names the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name -> module that defines it (imported lazily)
_EXPORTS = {
    "EfficientFormerConfig": "config",
    "EfficientFormerImageProcessor": "processing",
    "EfficientFormerPreTrainedModel": "modeling_torch",
    "EfficientFormerModel": "modeling_torch",
    "EfficientFormerForImageClassification": "modeling_torch",
    "EfficientFormerForImageClassificationWithTeacher": "modeling_torch",
    "TFEfficientFormerPreTrainedModel": "modeling_tf",
    "TFEfficientFormerModel": "modeling_tf",
    "TFEfficientFormerForImageClassification": "modeling_tf",
    "TFEfficientFormerForImageClassificationWithTeacher": "modeling_tf",
    "ImageClassifier": "classifier",
    "optimize": "inference",
    "export": "exporters",
    "VARIANTS": "presets",
    "WEIGHTS": "presets",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "InputError": "errors",
    "MissingDependencyError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'efficientformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
