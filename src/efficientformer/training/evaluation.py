"""Top-1 / top-5 accuracy, loss and confusion matrix of a classifier on a labelled dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import normalize, to_float
from .data import epoch_batches, iterate_batches
from .distributed import DistContext, all_reduce_sum


@dataclass
class EvalResult:
    """Counts and rates of one evaluation; `confusion` is (K, K) with rows = true class."""

    top1: float
    top5: float
    loss: float
    count: int
    confusion: np.ndarray = field(repr=False)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}top1": round(self.top1, 4), f"{prefix}top5": round(self.top5, 4),
                f"{prefix}loss": round(self.loss, 5)}


def autocast_context(device: torch.device, precision: str):
    """`torch.autocast` for "bf16"/"fp16", a no-op context for "fp32"."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, *, image_size: int, mean: Sequence[float], std: Sequence[float],
             channels: int = 3, batch_size: int = 256, device: torch.device | str = "cpu",
             precision: str = "fp32", ctx: DistContext | None = None, workers: int = 0,
             channels_last: bool = False) -> EvalResult:
    """Evaluate `model` on every item of `dataset` (each process a share when distributed).

    Args:
        model: returns an output with `.logits` (B, K) (or a tensor) for float (B, C, S, S) input.
        dataset: a dataset of `training.data` (uint8 images, int labels).
        image_size, mean, std, channels: preprocessing (images are resized to `image_size` if they differ).
        precision: "fp32", "bf16" or "fp16" autocast.

    Returns:
        `EvalResult` with top-1 and top-5 in percent, mean cross-entropy, and the confusion matrix.
    """
    device = torch.device(device)
    ctx = ctx or DistContext(device=device)
    num_classes = len(dataset.class_names)
    was_training = model.training
    model.eval()
    batches = epoch_batches(len(dataset), batch_size, 0, 0, ctx.rank, ctx.world_size, shuffle=False,
                            drop_last=False)
    tally = Tally(num_classes, device)
    for images, labels in iterate_batches(dataset, batches, device, workers):
        x = normalize(to_float(images, image_size), mean, std, channels)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            out = model(x)
        tally.add(out if isinstance(out, torch.Tensor) else out.logits, labels)
    tally.all_reduce(ctx)
    model.train(was_training)
    return tally.result()


class Tally:
    """Running counts over batches of logits: top-1 and top-5 hits, the cross-entropy sum and the confusion
    matrix. The one place these figures are computed (`evaluate` here, `efficientformer eval` too).

    Args:
        num_classes: K, the logits' width; labels are class indices 0..K-1.
        device: where the counts live (the logits' device, so a batch is counted without a copy).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct@1, correct@5, loss sum
        self.count = torch.zeros(1, dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Count one batch: logits (B, K), labels (B,). Returns the top-1 predictions (B,)."""
        logits = torch.as_tensor(logits).float()
        labels = torch.as_tensor(labels, device=logits.device)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, min(5, K))
        self.sums[0] += (top[:, 0] == labels).sum()
        self.sums[1] += (top == labels[:, None]).any(1).sum()
        self.sums[2] += F.cross_entropy(logits, labels, reduction="sum")
        self.count += labels.numel()
        self.confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels, dtype=torch.float64),
                                  accumulate=True)
        return top[:, 0]

    def all_reduce(self, ctx: DistContext) -> None:
        """Sum the counts of every process (a no-op in a single process)."""
        all_reduce_sum(self.sums, ctx)
        all_reduce_sum(self.count, ctx)
        all_reduce_sum(self.confusion, ctx)

    def result(self) -> EvalResult:
        n = max(float(self.count), 1.0)
        return EvalResult(top1=100.0 * float(self.sums[0]) / n, top5=100.0 * float(self.sums[1]) / n,
                          loss=float(self.sums[2]) / n, count=int(self.count),
                          confusion=self.confusion.cpu().numpy().astype(np.int64))
