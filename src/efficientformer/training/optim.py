"""The optimization parts of a run: AdamW's parameter groups, the warmup + cosine schedule and the EMA.

Each keeps its own `state_dict` so that a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch


class ModelEma:
    """Exponential moving average of a model's weights (and a copy of its buffers).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates n, so short runs still
    get a useful average.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_float, new_float = [], []
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                ema_float.append(e)
                new_float.append(m.detach())
            else:
                e.copy_(m)
        torch._foreach_lerp_(ema_float, new_float, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


class WarmupCosine:
    """Learning rate of step t: linear warmup to `base_lr`, then cosine decay to `min_lr` at `total_steps`."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int, warmup_steps: int,
                 min_lr: float = 0.0) -> None:
        self.optimizer, self.base_lr, self.min_lr = optimizer, base_lr, min_lr
        self.total_steps, self.warmup_steps = max(1, total_steps), max(0, warmup_steps)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def apply(self, step: int) -> float:
        """Set the learning rate of every parameter group for step `step`; returns it."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "min_lr": self.min_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr, self.min_lr = state["base_lr"], state["min_lr"]
        self.total_steps, self.warmup_steps = state["total_steps"], state["warmup_steps"]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and kernels only (not norms, biases, scales, attention biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "attention_biases" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
