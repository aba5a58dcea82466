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

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError, InputError
from ..presets import IMAGENET_MEAN, IMAGENET_STD
from . import checkpoint as ckpt
from .augment import BatchAugment, MixupCutmix, normalize
from .build import build_model
from .data import DataSpec, TensorImageDataset, epoch_batches, has_split, iterate_batches, load_dataset, split_dataset
from .distributed import DistContext, barrier, broadcast_buffers, cleanup, init_distributed
from .evaluation import EvalResult, autocast_context, evaluate
from .losses import head_logits, teacher_logits_of, training_loss
from .metrics import MetricsLog, draw_confusion_matrix
from .settings import AugmentConfig, TrainConfig

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


# --------------------------------------------------------------------------------------------- parts
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


def _per_channel(values: Sequence[float] | None, default: Sequence[float], channels: int) -> list[float]:
    values = list(default if values is None else values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ConfigError(f"mean/std need 1 or {channels} values, got {values}.")
    return [float(v) for v in values]


def processor_settings(cfg: TrainConfig, mean: list[float], std: list[float]) -> dict[str, Any]:
    """Image-processor settings matching the training pipeline: squash to image_size, rescale, normalize."""
    size = int(cfg.image_size)
    return {"do_resize": True, "size": {"height": size, "width": size}, "resample": int(cfg.resample),
            "do_center_crop": False, "crop_size": {"height": size, "width": size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std}


def _gather(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------- data
def prepare_data(cfg: TrainConfig, channels: int, class_names: Sequence[str] | None = None):
    """(train dataset, validation dataset or None) as `cfg` describes."""
    spec = DataSpec(size=cfg.image_size, channels=channels, resample=cfg.resample, in_memory=cfg.cache_images)
    train_set = load_dataset(cfg.data, "train", spec, class_names)
    if len(train_set) == 0:
        raise InputError(f"{cfg.data} holds no training images.")
    names = class_names or train_set.class_names
    val_set = None
    if cfg.val_data:
        val_set = load_dataset(cfg.val_data, "val", spec, names)
    elif cfg.val_split > 0:
        train_set, val_set = split_dataset(train_set, cfg.val_split, cfg.seed)
    elif has_split(cfg.data, "val"):
        val_set = load_dataset(cfg.data, "val", spec, names)
    if val_set is not None and list(val_set.class_names) != list(train_set.class_names):
        raise InputError(f"the validation classes {val_set.class_names} differ from the training classes "
                         f"{train_set.class_names}; give both splits the same class folders.")
    return train_set, val_set


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
    started = time.perf_counter()
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx, teacher, model, on_step, started)
    finally:
        cleanup(ctx)


def _train(cfg: TrainConfig, ctx: DistContext, teacher, model, on_step, started: float) -> TrainResult:
    device = ctx.device
    out = Path(cfg.output_dir)
    resume_path = ckpt.find_resume_path(cfg.resume, out)
    state = ckpt.load_checkpoint_file(resume_path) if resume_path is not None else None

    # model (identical initialization on every process: same seed before building)
    torch.manual_seed(cfg.seed)
    preset_channels = 3
    if model is None:
        class_hint = None
        if state is not None:
            labels = state["model_config"]["id2label"]
            class_hint = [labels[str(i)] for i in range(len(labels))]
        train_set, val_set = prepare_data(cfg, preset_channels if not _is_idx(cfg.data) else 1, class_hint)
        model = build_model(cfg.model, train_set.class_names, config_path=cfg.config, image_size=cfg.image_size,
                            drop_path_rate=cfg.drop_path_rate, distillation_head=cfg.distillation_head,
                            arch=cfg.arch)
    else:
        channels = getattr(getattr(model, "config", None), "num_channels", 3)
        train_set, val_set = prepare_data(cfg, 1 if _is_idx(cfg.data) else channels)
    channels = getattr(getattr(model, "config", None), "num_channels", 3)
    num_classes = len(train_set.class_names)
    mean = _per_channel(cfg.mean, IMAGENET_MEAN, channels)
    std = _per_channel(cfg.std, IMAGENET_STD, channels)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and isinstance(train_set, TensorImageDataset):
        train_set.to(device)
        if isinstance(val_set, TensorImageDataset):
            val_set.to(device)

    if teacher is None and cfg.teacher:
        from .teacher import load_teacher

        teacher = load_teacher(cfg.teacher, num_classes, device)
    elif teacher is not None:
        teacher.to(device).eval()
    mode = cfg.distillation if teacher is not None else "none"

    # optimization state
    steps_per_epoch = len(epoch_batches(len(train_set), cfg.batch_size, 0, cfg.seed, ctx.rank, ctx.world_size))
    if steps_per_epoch == 0:
        raise InputError(f"{len(train_set)} training images are fewer than one batch of {cfg.batch_size} x "
                         f"{ctx.world_size} processes; lower --batch-size.")
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                  fused=device.type == "cuda")
    schedule = WarmupCosine(optimizer, cfg.lr, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    augment = BatchAugment(AugmentConfig(
        image_size=cfg.image_size, crop_scale=tuple(cfg.crop_scale) if cfg.crop_scale else None, hflip=cfg.hflip,
        vflip=cfg.vflip, randaugment_ops=cfg.randaugment_ops, randaugment_magnitude=cfg.randaugment_magnitude,
        random_erase=cfg.random_erase), seed=cfg.seed * 1000 + ctx.rank)
    mixer = MixupCutmix(num_classes, cfg.mixup, cfg.cutmix, cfg.mix_prob, smoothing=cfg.label_smoothing,
                        seed=cfg.seed * 1000 + 500 + ctx.rank)
    torch.manual_seed(cfg.seed + 1 + ctx.rank)  # drop-path and other in-model randomness, per process

    log = MetricsLog(out, enabled=ctx.is_main)
    epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    accum = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    window = torch.zeros(3, device=device)  # loss sum, correct, seen (since the last log line)
    if state is not None:
        from ..checkpoints import state_dict_mismatch
        from ..errors import CheckpointError

        mismatch = state_dict_mismatch(model.state_dict(), state["model"])
        if mismatch:  # else load_state_dict raises a RuntimeError listing every key
            raise CheckpointError(f"{resume_path} was written for another model ({mismatch}); resume with the "
                                  "settings it was trained with, start a new --output, or drop --resume.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        mine = state["per_rank"][ctx.rank] if ctx.rank < len(state["per_rank"]) else state["per_rank"][0]
        augment.load_state_dict(mine["augment"])
        mixer.load_state_dict(mine["mixer"])
        ckpt.set_rng_state(mine["rng"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        accum, elapsed = dict(state["accum"]), float(state["elapsed"])
        window.copy_(state["window"])
        log.truncate(global_step)
        if ctx.is_main:
            print(f"resumed from {resume_path} at epoch {epoch + 1}, step {global_step}")
    else:
        log.reset()
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(out / "train_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=True)
    step_fn = torch.compile(net) if cfg.compile else net

    def save(path: Path) -> None:
        mine = {"augment": augment.state_dict(), "mixer": mixer.state_dict(), "rng": ckpt.rng_state()}
        per_rank = _gather(mine, ctx)
        if ctx.is_main:
            ckpt.save_checkpoint(
                path, model=model.state_dict(), optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                scaler=scaler.state_dict(), ema=ema.state_dict() if ema else None, per_rank=per_rank,
                epoch=epoch, step_in_epoch=step_in_epoch, global_step=global_step, accum=accum,
                window=window.detach().cpu(), elapsed=elapsed + time.perf_counter() - t_start,
                train_config=cfg.to_dict(),
                model_config=model.config.to_dict())
        barrier(ctx)

    t_start = time.perf_counter()
    progress = _progress(cfg, ctx)
    last_val: dict[str, float] = {}
    stopped = False
    window_t, window_images = time.perf_counter(), 0
    while epoch < cfg.epochs and not stopped:
        batches = epoch_batches(len(train_set), cfg.batch_size, epoch, cfg.seed, ctx.rank, ctx.world_size)
        model.train()
        bar = progress(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for images, labels in iterate_batches(train_set, batches[step_in_epoch:], device, cfg.workers):
            x = augment(images)
            x, targets = mixer(x, labels)
            x = normalize(x, mean, std, channels)
            if cfg.channels_last and device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            lr = schedule.apply(global_step)
            with autocast_context(device, cfg.precision):
                outputs = step_fn(x)
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher_logits_of(teacher(x))
                loss = training_loss(outputs, targets, t_logits, mode, cfg.distill_alpha, cfg.distill_tau)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            global_step += 1
            step_in_epoch += 1
            cls_logits = head_logits(outputs)[0].detach()
            window += torch.stack([loss.detach().float() * labels.numel(),
                                   (cls_logits.argmax(1) == labels).sum().float(),
                                   torch.full((), float(labels.numel()), device=device)])
            window_images += labels.numel() * ctx.world_size
            bar.update(1)
            if on_step is not None and ctx.is_main:
                on_step(global_step, float(loss.detach()))
            if global_step % max(1, cfg.log_every) == 0 or step_in_epoch == steps_per_epoch:
                loss_sum, correct, seen = window.tolist()
                if not math.isfinite(loss_sum) and not scaler.is_enabled():
                    raise FloatingPointError(f"the loss became {loss_sum} before step {global_step}; lower --lr or "
                                             "use --clip-grad / --precision fp32.")
                now = time.perf_counter()
                speed = window_images / max(now - window_t, 1e-9)
                accum = {"loss": accum["loss"] + loss_sum, "correct": accum["correct"] + correct,
                         "seen": accum["seen"] + seen}
                record = {"kind": "train", "step": global_step,
                          "epoch_float": round(epoch + step_in_epoch / steps_per_epoch, 4),
                          "loss": round(loss_sum / max(seen, 1), 5), "top1": round(100 * correct / max(seen, 1), 3),
                          "lr": lr, "images_per_s": round(speed, 1)}
                log.log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['top1']:.1f}", img_s=f"{speed:.0f}")
                window.zero_()
                window_t, window_images = now, 0
            if cfg.save_every_steps and global_step % cfg.save_every_steps == 0:
                save(out / ckpt.LAST)
            if cfg.stop_after_steps is not None and global_step >= cfg.stop_after_steps:
                stopped = True
                break
        bar.close()
        if stopped:
            save(out / ckpt.LAST)
            break
        # end of epoch: evaluate, log, checkpoint
        epoch += 1
        step_in_epoch = 0
        record = {"kind": "epoch", "epoch": epoch, "step": global_step,
                  "train_loss": round(accum["loss"] / max(accum["seen"], 1), 5),
                  "train_top1": round(100 * accum["correct"] / max(accum["seen"], 1), 3),
                  "lr": schedule.lr_at(max(global_step - 1, 0)),
                  "time_s": round(elapsed + time.perf_counter() - t_start, 1)}
        accum = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        if val_set is not None and (epoch % max(1, cfg.eval_every) == 0 or epoch == cfg.epochs):
            result = _eval(model, val_set, cfg, mean, std, channels, ctx)
            record.update(result.as_dict("val_"))
            if ema is not None:
                record.update(_eval(ema.module, val_set, cfg, mean, std, channels, ctx).as_dict("val_ema_"))
            last_val = {k: v for k, v in record.items() if k.startswith("val_")}
        log.log(record)
        log.write_summaries()
        if ctx.is_main:
            print(json.dumps(record), flush=True)
        save(out / ckpt.LAST)

    seconds = elapsed + time.perf_counter() - t_start
    if stopped:
        return TrainResult(str(out), None, global_step, epoch, True, last_val, {}, seconds, model)
    final = ema.module if ema is not None else model
    broadcast_buffers(final, ctx)
    model_dir = out / "model"
    if ctx.is_main:
        export_model(final, model_dir, processor_settings(cfg, mean, std))
        if val_set is not None:
            result = _eval(final, val_set, cfg, mean, std, channels, DistContext(device=device))
            draw_confusion_matrix(result.confusion, val_set.class_names, out / "confusion.png",
                                  title=f"validation: top-1 {result.top1:.2f}% of {result.count}")
            last_val = result.as_dict("val_")
        summary = {"global_step": global_step, "epochs": epoch, "seconds": round(seconds, 1),
                   "model_dir": str(model_dir), **last_val}
        ckpt.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary), flush=True)
    barrier(ctx)
    return TrainResult(str(out), str(model_dir), global_step, epoch, False, last_val, {}, seconds, final)


def export_model(model: torch.nn.Module, folder: str | os.PathLike, processor: dict[str, Any]) -> None:
    """Write config.json, model.safetensors and preprocessor_config.json (transformers' layout) to `folder`,
    atomically (the folder is swapped in whole)."""
    import importlib.util

    if importlib.util.find_spec("efficientformer.processing") is not None:
        model.save_pretrained(str(folder), processor=processor)
        return
    # the image processor module is missing: write the files here
    from safetensors.torch import save_file

    from ..fileio import write_folder

    config = model.config.copy()
    config.extra["architectures"] = [type(model).__name__]
    settings = {"image_processor_type": "EfficientFormerImageProcessor", **processor}
    with write_folder(folder) as tmp:  # swapped in whole, as save_pretrained does: never a half-written model
        config.save_pretrained(tmp)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        ckpt.atomic_write_text(tmp / "preprocessor_config.json", json.dumps(settings, indent=2) + "\n")


def _eval(model, dataset, cfg: TrainConfig, mean, std, channels, ctx) -> EvalResult:
    return evaluate(model, dataset, image_size=cfg.image_size, mean=mean, std=std, channels=channels,
                    batch_size=max(cfg.batch_size, 256), device=ctx.device, precision=cfg.precision, ctx=ctx,
                    workers=cfg.workers, channels_last=cfg.channels_last and ctx.device.type == "cuda")


def _is_idx(source: str) -> bool:
    from .data import is_idx_folder

    return not str(source).startswith("hf:") and os.path.isdir(source) and is_idx_folder(source)


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
