"""The settings of training, as plain dataclasses: `TrainConfig` (a run, the `efficientformer train` flags) and
`AugmentConfig` (the batch augmentation). No PyTorch needed, so the command line takes its defaults from here:
each default is written once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..constants import MIN_IMAGE_SIZE
from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
DISTILLATION_MODES = ("none", "hard", "soft")


@dataclass
class AugmentConfig:
    """Settings of `BatchAugment`.

    Args:
        image_size: side of the output images.
        crop_scale: area range of the random resized crop, as fractions of the image (None: no crop).
        crop_ratio: aspect-ratio range of the crop.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        randaugment_ops: operations drawn per image (0 turns RandAugment off).
        randaugment_magnitude: strength 0..10 (each draw is scaled by a random sign).
        randaugment_prob: probability that each drawn operation is applied.
        random_erase: probability of blanking one random rectangle of each image.
    """

    image_size: int = 224
    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    randaugment_ops: int = 0
    randaugment_magnitude: float = 9.0
    randaugment_prob: float = 0.5
    random_erase: float = 0.0


@dataclass
class TrainConfig:
    """Every setting of a training run (the `efficientformer train` flags, with the same names).

    Data: `data` (image folder, CSV, IDX folder or `hf:NAME`), `val_data`, `val_split` (held-out share of
    `data` when it has no validation split of its own), `image_size`, `resample`, `mean`, `std`,
    `cache_images` (decode image files once into memory), `workers` (DataLoader processes).

    Model: `model` (preset, folder, hub id or weights file), `config` (a config.json), `arch` (shape
    overrides of a new model), `distillation_head`, `drop_path_rate`.

    Optimization: `epochs`, `batch_size` (per process), `lr`, `min_lr`, `warmup_epochs`, `weight_decay`,
    `betas`, `clip_grad`, `precision` ("fp32", "bf16", "fp16"), `ema_decay` (0 = no EMA; the exported
    model is the EMA when on).

    Augmentation: `crop_scale` (None = no random resized crop), `hflip`, `vflip`, `randaugment_ops`,
    `randaugment_magnitude`, `random_erase`, `label_smoothing`, `mixup`, `cutmix`, `mix_prob`.

    Distillation: `teacher` (see `teacher.load_teacher`), `distillation` ("hard" or "soft"),
    `distill_alpha`, `distill_tau`.

    Run: `output_dir`, `resume` ("auto" or a checkpoint), `seed`, `device`, `save_every_steps`,
    `log_every`, `eval_every`, `progress`, `channels_last`, `compile`, `stop_after_steps` (stop as if
    killed after that many global steps; a later run with `resume` continues).
    """

    data: str = ""
    val_data: str | None = None
    val_split: float = 0.0
    image_size: int = 224
    resample: int = 2
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    cache_images: bool = False
    workers: int = 4

    model: str = "l1"
    config: str | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    distillation_head: bool = True
    drop_path_rate: float | None = None

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: Sequence[float] = (0.9, 0.999)
    clip_grad: float | None = None
    precision: str = "fp32"
    ema_decay: float = 0.0

    # augmentation: AugmentConfig's defaults
    crop_scale: Sequence[float] | None = AugmentConfig.crop_scale
    hflip: float = AugmentConfig.hflip
    vflip: float = AugmentConfig.vflip
    randaugment_ops: int = AugmentConfig.randaugment_ops
    randaugment_magnitude: float = AugmentConfig.randaugment_magnitude
    random_erase: float = AugmentConfig.random_erase
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0

    teacher: str | None = None
    distillation: str = "hard"
    distill_alpha: float = 0.5
    distill_tau: float = 1.0

    output_dir: str = "runs/train"
    resume: str | None = None
    seed: int = 0
    device: str = "auto"
    save_every_steps: int = 0
    log_every: int = 50
    eval_every: int = 1
    progress: bool = True
    channels_last: bool = True
    compile: bool = False
    stop_after_steps: int | None = None

    def validate(self) -> None:
        """Raise ConfigError on the first impossible setting."""
        if not self.data:
            raise ConfigError("no training data given; pass an image folder, a CSV file, an IDX folder or hf:NAME.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; choose one of {', '.join(PRECISIONS)}.")
        if self.distillation not in DISTILLATION_MODES[1:]:
            raise ConfigError(f"distillation={self.distillation!r}; choose 'hard' or 'soft'.")
        self._check_numbers()  # types first, so that the comparisons below cannot fail on a string or NaN
        for name in ("epochs", "batch_size", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size={self.image_size} is below {MIN_IMAGE_SIZE}, the smallest input "
                              "EfficientFormer takes.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in [0, 1).")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1).")
        if not (isinstance(self.val_split, (int, float)) and 0.0 <= self.val_split < 1.0):  # NaN fails too
            raise ConfigError(f"val_split={self.val_split!r} (--val-split) must be a share in [0, 1), e.g. 0.1 to "
                              "hold out 10 % of the data (0: none).")

    def _check_numbers(self) -> None:
        """Types and ranges of the numeric settings: a NaN learning rate or a negative flip probability would
        otherwise train to NaN weights or fail deep inside the loop, after the data was loaded."""
        def bad(name: str, allowed: str) -> None:
            raise ConfigError(f"{name}={getattr(self, name)!r} is invalid (--{name.replace('_', '-')}): {allowed}.")

        for name in ("epochs", "batch_size", "image_size", "workers", "randaugment_ops", "save_every_steps",
                     "log_every", "eval_every", "seed"):
            low = 1 if name in ("epochs", "batch_size", "image_size") else 0
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                bad(name, f"it must be a whole number >= {low}")
        if self.stop_after_steps is not None and not (_is_int(self.stop_after_steps) and self.stop_after_steps >= 1):
            bad("stop_after_steps", "it must be a whole number >= 1, or left out")
        for name in ("lr", "distill_tau"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "it must be a finite number above 0" + (" (e.g. 1e-3)" if name == "lr" else " (e.g. 1.0)"))
        ranges = {  # name: (low, high, high included), all finite
            "min_lr": (0.0, math.inf, False), "warmup_epochs": (0.0, math.inf, False),
            "weight_decay": (0.0, math.inf, False), "hflip": (0.0, 1.0, True), "vflip": (0.0, 1.0, True),
            "random_erase": (0.0, 1.0, True), "mix_prob": (0.0, 1.0, True), "mixup": (0.0, math.inf, False),
            "cutmix": (0.0, math.inf, False), "randaugment_magnitude": (0.0, 10.0, True),
            "distill_alpha": (0.0, 1.0, True),
        }
        for name, (low, high, closed) in ranges.items():
            value = getattr(self, name)
            if not (_is_number(value) and low <= value and (value <= high if closed else value < high)):
                bad(name, f"it must be a finite number in [{low:g}, {high:g}{']' if closed else ')'}")
        if self.clip_grad is not None and not (_is_number(self.clip_grad) and self.clip_grad >= 0):
            bad("clip_grad", "it must be a finite number >= 0 (0 or left out: no clipping)")
        if self.drop_path_rate is not None and not (_is_number(self.drop_path_rate) and 0 <= self.drop_path_rate < 1):
            bad("drop_path_rate", "it is a probability in [0, 1)")
        if not (_numbers(self.betas, 2) and all(0 <= b < 1 for b in self.betas)):
            bad("betas", "give two numbers in [0, 1), e.g. 0.9 0.999")
        if self.crop_scale is not None and not (_numbers(self.crop_scale, 2)
                                                and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            bad("crop_scale", "give two area fractions 0 < MIN <= MAX <= 1, e.g. 0.08 1.0")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and not (_numbers(values) and (name == "mean" or all(v > 0 for v in values))):
                bad(name, "give finite numbers, one per channel" + (", each above 0" if name == "std" else ""))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float, not a bool: `float("nan")` from a flag like `--lr nan` is refused."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values: Any, count: int | None = None) -> bool:
    """A list or tuple of finite numbers (of `count` of them when given)."""
    return (isinstance(values, (list, tuple)) and (count is None or len(values) == count) and len(values) > 0
            and all(_is_number(v) for v in values))
