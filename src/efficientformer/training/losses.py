"""Losses of classification training, with or without a teacher (the paper's distillation, after DeiT).

A model with a distillation head (`EfficientFormerForImageClassificationWithTeacher`) has two heads:

* no teacher: both heads learn from the (possibly mixed and smoothed) labels, each with weight 1/2;
* hard distillation: the class head learns from the labels and the distillation head from the teacher's
  predicted class, `(1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax teacher)` (paper: alpha = 1/2);
* soft distillation: the distillation head matches the teacher's softened distribution,
  `(1 - alpha) * CE(cls, y) + alpha * tau^2 * KL(softmax(teacher / tau) || softmax(dist / tau))`.

A single-head model gets the same mix on its one head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import DISTILLATION_MODES



def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(targets * log_softmax(logits)).

    Args:
        logits: float (B, K).
        targets: float (B, K) probabilities (one-hot, smoothed or mixed) or int64 class indices (B,).
    """
    if targets.ndim == 1:
        return F.cross_entropy(logits.float(), targets)
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mode: str,
                      tau: float = 1.0) -> torch.Tensor:
    """Loss pulling `student_logits` (B, K) toward the teacher's (B, K): "hard" (CE on argmax) or "soft" (KL)."""
    teacher_logits = teacher_logits.detach().float()
    if mode == "hard":
        return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1))
    if mode == "soft":
        return F.kl_div(F.log_softmax(student_logits.float() / tau, dim=-1),
                        F.log_softmax(teacher_logits / tau, dim=-1),
                        reduction="batchmean", log_target=True) * (tau * tau)
    raise ValueError(f"distillation mode {mode!r} is not one of {DISTILLATION_MODES}.")


def head_logits(outputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(class-head logits, distillation-head logits or None) of a model output or a plain tensor."""
    if isinstance(outputs, torch.Tensor):
        return outputs, None
    cls = getattr(outputs, "cls_logits", None)
    if cls is not None:
        return cls, outputs.distillation_logits
    return outputs.logits, None


def teacher_logits_of(outputs) -> torch.Tensor:
    """Logits of a teacher's output: a tensor, or an output object with `.logits`."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs.logits


def training_loss(outputs, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                  mode: str = "none", alpha: float = 0.5, tau: float = 1.0) -> torch.Tensor:
    """The training loss of one batch (see the module docstring).

    Args:
        outputs: the student's output (with `cls_logits`/`distillation_logits`, or `logits`), or a tensor.
        targets: float (B, K) soft targets or int64 (B,) labels.
        teacher_logits: float (B, K), required unless `mode` is "none".
        mode: "none", "hard" or "soft".
        alpha: weight of the distillation term.
        tau: temperature of soft distillation.
    Returns:
        A scalar float32 tensor.
    """
    cls_logits, dist_logits = head_logits(outputs)
    label_loss = soft_cross_entropy(cls_logits, targets)
    if mode == "none" or teacher_logits is None:
        if mode != "none":
            raise ValueError(f"distillation mode {mode!r} needs a teacher.")
        if dist_logits is None:
            return label_loss
        return 0.5 * label_loss + 0.5 * soft_cross_entropy(dist_logits, targets)
    student = dist_logits if dist_logits is not None else cls_logits
    return (1.0 - alpha) * label_loss + alpha * distillation_loss(student, teacher_logits, mode, tau)
