"""One run's state, and how it is set up, saved and resumed.

`setup_run` builds everything a run needs from `TrainConfig` (data, model, teacher, optimizer, schedule,
scaler, EMA, augmentation) in a fixed order, because that order fixes what the random generators produce:
the same seed then gives the same weights and batches on every process and on every resume.
`save_run` writes the full state to a checkpoint; `resume_run` puts it back, so that an interrupted run
ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError, InputError
from ..preprocessing.processor import per_channel
from . import checkpoint as ckpt
from .augment import BatchAugment, MixupCutmix
from .build import build_model
from .data import DataSpec, TensorImageDataset, epoch_batches, has_split, load_dataset, split_dataset
from .distributed import DistContext, barrier
from .metrics import MetricsLog
from .optim import ModelEma, WarmupCosine, parameter_groups
from .settings import AugmentConfig, TrainConfig


def _zero_accum() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "seen": 0.0}


@dataclass
class Run:
    """Everything one run holds: what it trains on, what it trains, and where it is."""

    cfg: TrainConfig
    ctx: DistContext
    out: Path
    model: torch.nn.Module
    train_set: Any
    val_set: Any
    channels: int
    mean: list[float]
    std: list[float]
    teacher: torch.nn.Module | None
    mode: str  # distillation mode, "none" without a teacher
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    augment: BatchAugment
    mixer: MixupCutmix
    log: MetricsLog
    # position: the counters and running sums a checkpoint saves
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0  # seconds spent before this process started (by the runs it resumes)
    accum: dict[str, float] = field(default_factory=_zero_accum)  # sums over the epoch's logged windows
    window: torch.Tensor | None = None  # loss sum, correct, seen (since the last log line)
    t_start: float = 0.0
    step_fn: Any = None  # the (DDP-wrapped, compiled) module a training step calls
    last_val: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def seconds(self) -> float:
        """Training time of the whole run so far, resumed parts included."""
        return self.elapsed + time.perf_counter() - self.t_start

    def reset_accum(self) -> None:
        self.accum = _zero_accum()


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


def _is_idx(source: str) -> bool:
    from ..preprocessing.hf_datasets import PREFIX
    from .data import is_idx_folder

    return not str(source).startswith(PREFIX) and os.path.isdir(source) and is_idx_folder(source)


def _channels_of(model: torch.nn.Module) -> int:
    return getattr(getattr(model, "config", None), "num_channels", 3)


def _model_and_data(cfg: TrainConfig, model, state):
    """(model, train set, validation set): the given model, or one built for the data's classes (on resume, the
    checkpoint's classes, in its order)."""
    torch.manual_seed(cfg.seed)  # identical initialization on every process: same seed before building
    if model is not None:
        train_set, val_set = prepare_data(cfg, 1 if _is_idx(cfg.data) else _channels_of(model))
        return model, train_set, val_set
    class_hint = None
    if state is not None:
        labels = state["model_config"]["id2label"]
        class_hint = [labels[str(i)] for i in range(len(labels))]
    train_set, val_set = prepare_data(cfg, 1 if _is_idx(cfg.data) else 3, class_hint)
    model = build_model(cfg.model, train_set.class_names, config_path=cfg.config, image_size=cfg.image_size,
                        drop_path_rate=cfg.drop_path_rate, distillation_head=cfg.distillation_head, arch=cfg.arch)
    return model, train_set, val_set


def _place(cfg: TrainConfig, device: torch.device, model, train_set, val_set) -> None:
    """Move the model (and in-memory datasets, on CUDA) to `device`."""
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and isinstance(train_set, TensorImageDataset):
        train_set.to(device)
        if isinstance(val_set, TensorImageDataset):
            val_set.to(device)


def _teacher(cfg: TrainConfig, teacher, num_classes: int, device: torch.device):
    if teacher is None and cfg.teacher:
        from .teacher import load_teacher

        return load_teacher(cfg.teacher, num_classes, device)
    if teacher is not None:
        teacher.to(device).eval()
    return teacher


# ---------------------------------------------------------------------------------------------- setup
def setup_run(cfg: TrainConfig, ctx: DistContext, teacher, model, state) -> Run:
    """Build a run's parts, in the order that fixes the random streams; counters start at zero."""
    device = ctx.device
    model, train_set, val_set = _model_and_data(cfg, model, state)
    channels = _channels_of(model)
    num_classes = len(train_set.class_names)
    mean = list(per_channel(IMAGENET_MEAN if cfg.mean is None else cfg.mean, "mean", channels, one_item_repeats=True))
    std = list(per_channel(IMAGENET_STD if cfg.std is None else cfg.std, "std", channels, one_item_repeats=True))
    _place(cfg, device, model, train_set, val_set)
    teacher = _teacher(cfg, teacher, num_classes, device)

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

    return Run(cfg=cfg, ctx=ctx, out=Path(cfg.output_dir), model=model, train_set=train_set, val_set=val_set,
               channels=channels, mean=mean, std=std, teacher=teacher,
               mode=cfg.distillation if teacher is not None else "none", steps_per_epoch=steps_per_epoch,
               optimizer=optimizer, schedule=schedule, scaler=scaler, ema=ema, augment=augment, mixer=mixer,
               log=MetricsLog(Path(cfg.output_dir), enabled=ctx.is_main), window=torch.zeros(3, device=device))


def wrap_for_steps(run: Run) -> None:
    """The module a step calls: DDP around the model when distributed, compiled when asked."""
    net = run.model
    if run.ctx.distributed:
        device = run.device
        net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=True)
    run.step_fn = torch.compile(net) if run.cfg.compile else net


# ------------------------------------------------------------------------------------ save / resume
def resume_run(run: Run, state: dict[str, Any], resume_path: Path) -> None:
    """Put a checkpoint's weights, optimizer, schedule, generators and position back into `run`."""
    from ..checkpoints.shapes import state_dict_mismatch

    mismatch = state_dict_mismatch(run.model.state_dict(), state["model"])
    if mismatch:  # else load_state_dict raises a RuntimeError listing every key
        raise CheckpointError(f"{resume_path} was written for another model ({mismatch}); resume with the "
                              "settings it was trained with, start a new --output, or drop --resume.")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    rank = run.ctx.rank
    mine = state["per_rank"][rank] if rank < len(state["per_rank"]) else state["per_rank"][0]
    run.augment.load_state_dict(mine["augment"])
    run.mixer.load_state_dict(mine["mixer"])
    ckpt.set_rng_state(mine["rng"])
    run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    run.accum, run.elapsed = dict(state["accum"]), float(state["elapsed"])
    run.window.copy_(state["window"])
    run.log.truncate(run.global_step)
    if run.ctx.is_main:
        print(f"resumed from {resume_path} at epoch {run.epoch + 1}, step {run.global_step}")


def start_fresh(run: Run) -> None:
    """A new run (perhaps in an old folder): an empty log and the settings written beside it."""
    run.log.reset()
    if run.ctx.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(run.out / "train_config.json", json.dumps(run.cfg.to_dict(), indent=2) + "\n")


def _gather(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def save_run(run: Run, path: Path) -> None:
    """Write the full state to `path` (rank 0; every rank's generators gathered into it)."""
    mine = {"augment": run.augment.state_dict(), "mixer": run.mixer.state_dict(), "rng": ckpt.rng_state()}
    per_rank = _gather(mine, run.ctx)
    if run.ctx.is_main:
        ckpt.save_checkpoint(
            path, model=run.model.state_dict(), optimizer=run.optimizer.state_dict(),
            schedule=run.schedule.state_dict(), scaler=run.scaler.state_dict(),
            ema=run.ema.state_dict() if run.ema else None, per_rank=per_rank, epoch=run.epoch,
            step_in_epoch=run.step_in_epoch, global_step=run.global_step, accum=run.accum,
            window=run.window.detach().cpu(), elapsed=run.seconds(), train_config=run.cfg.to_dict(),
            model_config=run.model.config.to_dict())
    barrier(run.ctx)
