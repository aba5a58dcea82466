"""The training loop behind `efficientformer train`: `TrainConfig` in, a trained model folder out.

One loop serves a laptop CPU and many GPUs (`torchrun`): AdamW with a warmup + cosine schedule and
decoupled weight decay (none on norms, biases, layer scales and attention biases), label smoothing,
random resized crop / flips / RandAugment / random erasing on the batch (see `augment.py`), mixup and
cutmix, an exponential moving average (EMA) of the weights, gradient clipping, bf16 or fp16 autocast
(with a gradient scaler for fp16), stochastic depth (`drop_path_rate`), and distillation from a teacher.

Every `save_every_steps` steps and after every epoch the full state goes to OUTPUT/last.pt (atomically);
`resume="auto"` (or a path) continues from it with the same weights, optimizer, schedule, scaler, EMA,
random generators and data order, so an interrupted run ends with the weights of an uninterrupted one.

Example:
    >>> from efficientformer.training import TrainConfig, train
    >>> result = train(TrainConfig(data="path/to/folder", model="l1", epochs=5,   # doctest: +SKIP
    ...                            image_size=128, output_dir="runs/demo"))
    >>> result.model_dir  # doctest: +SKIP
    'runs/demo/model'
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from . import checkpoint as ckpt
from .distributed import DistContext, barrier, broadcast_buffers, cleanup, init_distributed, replicas_identical
from .epoch import StepTimer, train_epoch
from .evaluation import EvalResult, evaluate
from .metrics import draw_confusion_matrix
from .optim import ModelEma, WarmupCosine, parameter_groups  # noqa: F401 - their home before the split
from .run import Run, prepare_data, resume_run, save_run, setup_run, start_fresh, wrap_for_steps  # noqa: F401
from .settings import TrainConfig


@dataclass
class TrainResult:
    """What a run produced: the exported model folder (None when stopped early), final metrics, the state."""

    output_dir: str
    model_dir: str | None
    global_step: int
    epochs_done: int
    stopped_early: bool
    val: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)


def processor_settings(cfg: TrainConfig, mean: list[float], std: list[float]) -> dict[str, Any]:
    """Image-processor settings matching the training pipeline: squash to image_size, rescale, normalize."""
    size = int(cfg.image_size)
    return {"do_resize": True, "size": {"height": size, "width": size}, "resample": int(cfg.resample),
            "do_center_crop": False, "crop_size": {"height": size, "width": size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std}


# ---------------------------------------------------------------------------------------------- loop
def train(cfg: TrainConfig, *, teacher: torch.nn.Module | None = None, model: torch.nn.Module | None = None,
          on_step=None) -> TrainResult:
    """Run (or resume) one training run and export the model to OUTPUT/model.

    Args:
        cfg: the settings.
        teacher: an already built teacher module (instead of `cfg.teacher`): takes the student's normalized
            batch and returns logits (B, K) or an output with `.logits`.
        model: an already built student (instead of building it from `cfg.model`).
        on_step: optional callback `on_step(global_step, loss)` (rank 0, after each step).

    Returns:
        `TrainResult`. With `stop_after_steps` the run stops after saving OUTPUT/last.pt and exports nothing.

    Raises:
        ConfigError, InputError, CheckpointError: bad settings, data or checkpoint, before training starts.
    """
    cfg.validate()
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx, teacher, model, on_step)
    finally:
        cleanup(ctx)


def _train(cfg: TrainConfig, ctx: DistContext, teacher, model, on_step) -> TrainResult:
    """Set up (or resume), train epoch by epoch (evaluating and saving after each), then export."""
    resume_path = ckpt.find_resume_path(cfg.resume, cfg.output_dir)
    state = ckpt.load_checkpoint_file(resume_path) if resume_path is not None else None
    run = setup_run(cfg, ctx, teacher, model, state)
    if state is not None:
        resume_run(run, state, resume_path)
    else:
        start_fresh(run)
    wrap_for_steps(run)
    run.t_start = time.perf_counter()
    progress, timer = _progress(cfg, ctx), StepTimer()
    while run.epoch < cfg.epochs:
        if train_epoch(run, timer, progress, on_step):
            seconds = run.seconds()
            _write_summary(run, seconds, None, timer)
            return TrainResult(str(run.out), None, run.global_step, run.epoch, True, run.last_val, {},
                               seconds, run.model)
        _end_epoch(run)
    return _finish(run, timer)


def _end_epoch(run: Run) -> None:
    """Close an epoch: one "epoch" record (with validation figures when due), the summaries, the checkpoint."""
    cfg = run.cfg
    run.epoch += 1
    run.step_in_epoch = 0
    accum = run.accum
    record = {"kind": "epoch", "epoch": run.epoch, "step": run.global_step,
              "train_loss": round(accum["loss"] / max(accum["seen"], 1), 5),
              "train_top1": round(100 * accum["correct"] / max(accum["seen"], 1), 3),
              "lr": run.schedule.lr_at(max(run.global_step - 1, 0)),
              "time_s": round(run.seconds(), 1)}
    run.reset_accum()
    if run.val_set is not None and (run.epoch % max(1, cfg.eval_every) == 0 or run.epoch == cfg.epochs):
        record.update(_eval(run, run.model, run.ctx).as_dict("val_"))
        if run.ema is not None:
            record.update(_eval(run, run.ema.module, run.ctx).as_dict("val_ema_"))
        run.last_val = {k: v for k, v in record.items() if k.startswith("val_")}
    run.log.log(record)
    run.log.write_summaries()
    if run.ctx.is_main:
        print(json.dumps(record), flush=True)
    save_run(run, run.out / ckpt.LAST)


def _finish(run: Run, timer: StepTimer) -> TrainResult:
    """Export the final weights (the EMA's when kept) to OUTPUT/model, with a last evaluation and summary."""
    ctx, out = run.ctx, run.out
    seconds = run.seconds()
    final = run.ema.module if run.ema is not None else run.model
    broadcast_buffers(final, ctx)
    model_dir = out / "model"
    if ctx.is_main:
        export_model(final, model_dir, processor_settings(run.cfg, run.mean, run.std))
        if run.val_set is not None:
            result = _eval(run, final, DistContext(device=run.device))
            draw_confusion_matrix(result.confusion, run.val_set.class_names, out / "confusion.png",
                                  title=f"validation: top-1 {result.top1:.2f}% of {result.count}")
            run.last_val = result.as_dict("val_")
    _write_summary(run, seconds, model_dir, timer)
    return TrainResult(str(out), str(model_dir), run.global_step, run.epoch, False, run.last_val, {}, seconds, final)


def _write_summary(run: Run, seconds: float, model_dir, timer: StepTimer) -> None:
    """OUTPUT/summary.json, at the end and after a `stop_after_steps` stop (then without a model folder):
    steps, time, the steady training speed (`StepTimer.steady_rate`, all processes) and, with several
    processes, whether they all ended with the same weights. Every process calls it (the check is collective);
    rank 0 writes it while the others wait: a process that left the group while another still wrote was
    seen to abort at exit ("terminate called without an active exception", gloo)."""
    ctx = run.ctx
    identical = replicas_identical([run.model] + ([run.ema.module] if run.ema is not None else []), ctx)
    if ctx.is_main:
        _summary_file(run, seconds, model_dir, timer.steady_rate(), identical)
    barrier(ctx)


def _summary_file(run: Run, seconds: float, model_dir, images_per_s: float | None, identical: bool) -> None:
    ctx = run.ctx
    summary = {"global_step": run.global_step, "epochs": run.epoch, "seconds": round(seconds, 1),
               "model_dir": None if model_dir is None else str(model_dir), "stopped_early": model_dir is None,
               "images_per_s": images_per_s, "processes": ctx.world_size}
    if ctx.distributed:
        summary["replicas_identical"] = identical
    summary.update(run.last_val)
    ckpt.atomic_write_text(run.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


def export_model(model: torch.nn.Module, folder: str | os.PathLike, processor: dict[str, Any]) -> None:
    """Write config.json, model.safetensors and preprocessor_config.json (transformers' layout) to `folder`,
    atomically (the folder is swapped in whole): `save_pretrained`, whose one folder writer
    (`efficientformer.checkpoints.folder.write_model_folder`) convert uses too."""
    model.save_pretrained(str(folder), processor=processor)


def _eval(run: Run, model: torch.nn.Module, ctx: DistContext) -> EvalResult:
    cfg = run.cfg
    return evaluate(model, run.val_set, image_size=cfg.image_size, mean=run.mean, std=run.std, channels=run.channels,
                    batch_size=max(cfg.batch_size, 256), device=ctx.device, precision=cfg.precision, ctx=ctx,
                    workers=cfg.workers, channels_last=cfg.channels_last and ctx.device.type == "cuda")


class _NoBar:
    def __init__(self, **_: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(cfg: TrainConfig, ctx: DistContext):
    if not (cfg.progress and ctx.is_main):
        return _NoBar
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar

    def make(**kwargs: Any):
        return tqdm(leave=False, dynamic_ncols=True, **kwargs)

    return make
