"""One epoch of training: batches in, optimizer steps, a log line every `log_every` steps.

A step is augment -> mixup/cutmix -> normalize -> forward (with the teacher under autocast) -> loss ->
scaled backward -> clipping -> optimizer step -> EMA. The running sums of loss and accuracy live on the
device (`Run.window`) and are read back only when a line is logged, so a step never waits for the GPU.
"""

from __future__ import annotations

import math
import time

import torch

from . import checkpoint as ckpt
from .augment import normalize
from .data import epoch_batches, iterate_batches
from .evaluation import autocast_context
from .losses import head_logits, teacher_logits_of, training_loss
from .run import Run, save_run


WARMUP_STEPS = 5  # a process's first steps: cuDNN autotuning, compilation, worker start-up


class StepTimer:
    """Images per second since the last log line (across every process), and the steady rate of the run: the
    log windows that begin after this process's first `WARMUP_STEPS` steps, so that the figure compares
    machines and process counts without their start-up costs. Laps follow a log line's read-back of the
    device sums, so the GPU has finished the window's steps."""

    def __init__(self) -> None:
        self.since, self.images = time.perf_counter(), 0
        self.steps = self.window_start = 0  # steps of this process: in all, before the current window
        self.steady_images, self.steady_seconds = 0, 0.0

    def add(self, images: int) -> None:
        self.images += images
        self.steps += 1

    def lap(self) -> tuple[float, float]:
        """(images per second since the last lap, now)."""
        now = time.perf_counter()
        if self.window_start >= WARMUP_STEPS:
            self.steady_images += self.images
            self.steady_seconds += now - self.since
        return self.images / max(now - self.since, 1e-9), now

    def restart(self, now: float) -> None:
        self.since, self.images, self.window_start = now, 0, self.steps

    def steady_rate(self) -> float | None:
        """Images per second (all processes) after the warm-up; None when no log window came after it."""
        return round(self.steady_images / self.steady_seconds, 1) if self.steady_seconds > 0 else None


def _step(run: Run, images: torch.Tensor, labels: torch.Tensor):
    """One optimizer step on a batch; returns (loss, the class head's logits, the learning rate)."""
    cfg, device = run.cfg, run.device
    x = run.augment(images)
    x, targets = run.mixer(x, labels)
    x = normalize(x, run.mean, run.std, run.channels)
    if cfg.channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    lr = run.schedule.apply(run.global_step)
    with autocast_context(device, cfg.precision):
        outputs = run.step_fn(x)
        t_logits = None
        if run.teacher is not None:
            with torch.no_grad():
                t_logits = teacher_logits_of(run.teacher(x))
        loss = training_loss(outputs, targets, t_logits, run.mode, cfg.distill_alpha, cfg.distill_tau)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.clip_grad:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model)
    return loss, head_logits(outputs)[0].detach(), lr


def _log_window(run: Run, lr: float, timer: StepTimer, bar) -> None:
    """Fold the window's sums into the epoch's, write one "train" record and empty the window."""
    loss_sum, correct, seen = run.window.tolist()
    if not math.isfinite(loss_sum) and not run.scaler.is_enabled():
        raise FloatingPointError(f"the loss became {loss_sum} before step {run.global_step}; lower --lr or "
                                 "use --clip-grad / --precision fp32.")
    speed, now = timer.lap()
    run.accum = {"loss": run.accum["loss"] + loss_sum, "correct": run.accum["correct"] + correct,
                 "seen": run.accum["seen"] + seen}
    record = {"kind": "train", "step": run.global_step,
              "epoch_float": round(run.epoch + run.step_in_epoch / run.steps_per_epoch, 4),
              "loss": round(loss_sum / max(seen, 1), 5), "top1": round(100 * correct / max(seen, 1), 3),
              "lr": lr, "images_per_s": round(speed, 1)}
    run.log.log(record)
    bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['top1']:.1f}", img_s=f"{speed:.0f}")
    run.window.zero_()
    timer.restart(now)


def train_epoch(run: Run, timer: StepTimer, progress, on_step=None) -> bool:
    """Train from the run's position to the end of its epoch; True when `stop_after_steps` stopped it (the
    state is then saved and the epoch is left unfinished)."""
    cfg, ctx = run.cfg, run.ctx
    if cfg.stop_after_steps is not None and run.global_step >= cfg.stop_after_steps:
        return True  # resumed from the stop of a run with the same limit: no step past it
    batches = epoch_batches(len(run.train_set), cfg.batch_size, run.epoch, cfg.seed, ctx.rank, ctx.world_size)
    run.model.train()
    bar = progress(total=run.steps_per_epoch, initial=run.step_in_epoch, desc=f"epoch {run.epoch + 1}/{cfg.epochs}")
    stopped = False
    for images, labels in iterate_batches(run.train_set, batches[run.step_in_epoch:], run.device, cfg.workers):
        loss, cls_logits, lr = _step(run, images, labels)
        run.global_step += 1
        run.step_in_epoch += 1
        run.window += torch.stack([loss.detach().float() * labels.numel(),
                                   (cls_logits.argmax(1) == labels).sum().float(),
                                   torch.full((), float(labels.numel()), device=run.device)])
        timer.add(labels.numel() * ctx.world_size)
        bar.update(1)
        if on_step is not None and ctx.is_main:
            on_step(run.global_step, float(loss.detach()))
        if run.global_step % max(1, cfg.log_every) == 0 or run.step_in_epoch == run.steps_per_epoch:
            _log_window(run, lr, timer, bar)
        if cfg.save_every_steps and run.global_step % cfg.save_every_steps == 0:
            save_run(run, run.out / ckpt.LAST)
        if cfg.stop_after_steps is not None and run.global_step >= cfg.stop_after_steps:
            stopped = True
            break
    bar.close()
    if stopped:
        save_run(run, run.out / ckpt.LAST)
    return stopped
