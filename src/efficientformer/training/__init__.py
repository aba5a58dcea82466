"""Training and fine-tuning of EfficientFormer classifiers (PyTorch), with distillation.

The pieces, each usable on its own:

* `data`: image folders, CSV files, IDX files (Fashion-MNIST) and Hugging Face datasets as uint8 batches;
* `augment`: random resized crop, flips, RandAugment-style operations, random erasing, mixup/cutmix,
  label smoothing, all on batches in plain PyTorch;
* `settings`: `TrainConfig`, every option of a run, checked before anything is built;
* `trainer`: `train()`, the run from start to export, built from `run` (setting up, saving and resuming a
  run's state), `epoch` (one epoch of optimizer steps and its log lines) and `optim` (AdamW's parameter
  groups, warmup + cosine, EMA); bf16/fp16, stochastic depth, hard/soft distillation, DDP through torchrun;
* `checkpoint`: atomic checkpoint files and random-generator states;
* `evaluation`: top-1/top-5 and confusion matrices; `metrics`: JSONL/CSV logs and PNG pictures.

Example:
    >>> from efficientformer.training import TrainConfig, train
    >>> result = train(TrainConfig(data="data/flowers", model="l1", image_size=128, epochs=3))  # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {  # name -> module of this package, imported on first use
    **dict.fromkeys(["TrainConfig", "AugmentConfig"], "settings"),
    **dict.fromkeys(["TrainResult", "train"], "trainer"),
    **dict.fromkeys(["evaluate", "EvalResult"], "evaluation"),
    **dict.fromkeys(["load_dataset", "load_idx", "DataSpec"], "data"),
    **dict.fromkeys(["BatchAugment", "MixupCutmix"], "augment"),
    "build_model": "build",
    "load_teacher": "teacher",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
