"""Training and fine-tuning of EfficientFormer classifiers (PyTorch), with distillation.

The pieces, each usable on its own:

* `data`: image folders, CSV files, IDX files (Fashion-MNIST) and Hugging Face datasets as uint8 batches;
* `augment`: random resized crop, flips, RandAugment-style operations, random erasing, mixup/cutmix,
  label smoothing, all on batches in plain PyTorch;
* `trainer`: `TrainConfig` and `train()` (AdamW, warmup + cosine, EMA, clipping, bf16/fp16, stochastic
  depth, hard/soft distillation, DDP through torchrun, exact resume);
* `checkpoint`: atomic checkpoint files and random-generator states;
* `evaluation`: top-1/top-5 and confusion matrices; `metrics`: JSONL/CSV logs and PNG pictures.

Example:
    >>> from efficientformer.training import TrainConfig, train
    >>> result = train(TrainConfig(data="data/flowers", model="l1", image_size=128, epochs=3))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "settings",
    "TrainResult": "trainer",
    "train": "trainer",
    "evaluate": "evaluation",
    "EvalResult": "evaluation",
    "load_dataset": "data",
    "load_idx": "data",
    "DataSpec": "data",
    "BatchAugment": "augment",
    "AugmentConfig": "settings",
    "MixupCutmix": "augment",
    "build_model": "build",
    "load_teacher": "teacher",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'efficientformer.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
