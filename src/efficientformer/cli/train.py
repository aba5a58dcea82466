"""Train or fine-tune an EfficientFormer classifier, optionally distilling from a teacher.

DATA is an image folder (one sub-folder per class; DATA/train + DATA/val are used as splits when present),
a CSV of path,label rows, a folder of MNIST-style IDX files (e.g. Fashion-MNIST), hf:NAME for a
Hugging Face dataset (pip install datasets), or synthetic:CLASSES:COUNT (random images in memory, to
measure training speed without reading files). The trained model goes to OUTPUT/model (config.json,
model.safetensors, preprocessor_config.json), ready for `efficientformer predict --model OUTPUT/model`.
OUTPUT also gets last.pt (the resumable state), metrics.jsonl, epochs.csv, curves.png, confusion.png and
summary.json (steps, steady images/s after the first steps and, under torchrun, whether every process ended
with the same weights: replicas_identical), the last also after --stop-after-steps.

examples:
  efficientformer train flowers/ --model l1 --image-size 128 --epochs 20 --output runs/flowers
  efficientformer train flowers/ --model snap-research/efficientformer-l1-300 --lr 2e-4 --epochs 5
  efficientformer train images.csv --val-split 0.1 --teacher my-l7-folder --distillation hard
  efficientformer train /usr/share/datasets/fashion-mnist --image-size 64 --epochs 30 --precision bf16
  efficientformer train flowers/ --output runs/flowers --resume auto        # continue after a stop
  torchrun --nproc-per-node 4 -m efficientformer train flowers/ --batch-size 64   # 4 GPUs (DDP)
"""

from __future__ import annotations

import argparse

HELP = "train or fine-tune a classifier (distillation, mixed precision, DDP, resume)"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.settings import DISTILLATION_MODES, PRECISIONS
    from ..training.settings import TrainConfig as D  # every default is TrainConfig's (no PyTorch needed)

    parser.add_argument("data", metavar="DATA",
                        help="image folder, CSV file, IDX folder, hf:NAME[:CONFIG] or synthetic:CLASSES:COUNT")
    parser.add_argument("--output", "-o", default=D.output_dir, help="output folder (default: %(default)s)")
    parser.add_argument("--resume", default=D.resume, metavar="auto|PATH",
                        help="continue from OUTPUT/last.pt ('auto') or a checkpoint file")

    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", default=D.model,
                   help="preset (l1, l3, l7: new weights) or pretrained folder / hub id / weights file "
                        "(heads re-initialized for the new classes) (default: %(default)s)")
    g.add_argument("--config", default=D.config, help="a config.json to build a new model from")
    g.add_argument("--depths", type=_ints, default=None, help="new model: blocks per stage, e.g. '2,2,4,3'")
    g.add_argument("--hidden-sizes", type=_ints, default=None, help="new model: widths, e.g. '32,64,128,192'")
    g.add_argument("--num-meta3d-blocks", type=int, default=None, help="new model: attention blocks at the end")
    g.add_argument("--num-attention-heads", type=int, default=None, help="new model: heads per attention block")
    g.add_argument("--key-dim", type=int, default=None, help="new model: query/key size per head")
    g.add_argument("--no-distillation-head", action="store_true",
                   help="one head (EfficientFormerForImageClassification) instead of class + distillation heads")
    g.add_argument("--drop-path-rate", type=float, default=D.drop_path_rate,
                   help="stochastic depth of the last block")

    g = parser.add_argument_group("data")
    g.add_argument("--val-data", default=D.val_data, help="validation source (default: DATA's own split, if any)")
    g.add_argument("--val-split", type=float, default=D.val_split,
                   help="hold out this share of DATA for validation")
    g.add_argument("--image-size", type=int, default=D.image_size,
                   help="training input side (default: %(default)s)")
    g.add_argument("--resample", type=int, default=D.resample, help="Pillow resize filter (2 bilinear, 3 bicubic)")
    g.add_argument("--mean", type=_floats, default=D.mean, help="normalization mean, 1 or 3 values (ImageNet's)")
    g.add_argument("--std", type=_floats, default=D.std, help="normalization std, 1 or 3 values (ImageNet's)")
    g.add_argument("--cache-images", action="store_true", help="decode all image files into memory once")
    g.add_argument("--workers", type=int, default=D.workers,
                   help="image-decoding processes, at most the usable cores (default: %(default)s)")

    g = parser.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=D.epochs)
    g.add_argument("--batch-size", "-b", type=int, default=D.batch_size, help="per process (default: %(default)s)")
    g.add_argument("--lr", type=float, default=D.lr, help="peak learning rate (default: %(default)s)")
    g.add_argument("--min-lr", type=float, default=D.min_lr, help="learning rate at the end of the cosine")
    g.add_argument("--warmup-epochs", type=float, default=D.warmup_epochs)
    g.add_argument("--weight-decay", type=float, default=D.weight_decay)
    g.add_argument("--clip-grad", type=float, default=D.clip_grad, help="clip the gradient norm to this value")
    g.add_argument("--precision", choices=PRECISIONS, default=D.precision,
                   help="autocast precision (fp16 adds a gradient scaler) (default: %(default)s)")
    g.add_argument("--ema-decay", type=float, default=D.ema_decay, help="EMA of the weights, e.g. 0.9998 (0: off); "
                   "the exported model is the EMA when on")

    g = parser.add_argument_group("augmentation")
    g.add_argument("--crop-scale", type=_floats, default=list(D.crop_scale),
                   help="random resized crop area range, e.g. '0.5,1' ('0' turns the crop off)")
    g.add_argument("--hflip", type=float, default=D.hflip, help="horizontal flip probability")
    g.add_argument("--vflip", type=float, default=D.vflip, help="vertical flip probability")
    g.add_argument("--randaugment", type=int, default=D.randaugment_ops, metavar="N",
                   help="RandAugment operations per image")
    g.add_argument("--randaugment-magnitude", type=float, default=D.randaugment_magnitude, metavar="M",
                   help="0..10 (default: %(default)s)")
    g.add_argument("--random-erase", type=float, default=D.random_erase, help="random erasing probability")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing)
    g.add_argument("--mixup", type=float, default=D.mixup, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=D.cutmix, help="cutmix alpha (0: off)")
    g.add_argument("--mix-prob", type=float, default=D.mix_prob, help="probability of mixing a batch")

    g = parser.add_argument_group("distillation")
    g.add_argument("--teacher", default=D.teacher,
                   help="teacher: our model (folder, hub id, weights file, or l1/l3/l7 released weights), or "
                        "timm:NAME (pretrained) / timm:NAME=PATH")
    g.add_argument("--distillation", choices=DISTILLATION_MODES[1:], default=D.distillation)
    g.add_argument("--distill-alpha", type=float, default=D.distill_alpha,
                   help="weight of the teacher term (default: %(default)s)")
    g.add_argument("--distill-tau", type=float, default=D.distill_tau, help="temperature of soft distillation")

    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=D.seed)
    g.add_argument("--device", default=D.device, help="auto, cpu, cuda, cuda:1 ... (torchrun sets one per process)")
    g.add_argument("--save-every", type=int, default=D.save_every_steps, metavar="STEPS",
                   help="also checkpoint every STEPS steps (always after each epoch)")
    g.add_argument("--log-every", type=int, default=D.log_every, metavar="STEPS")
    g.add_argument("--eval-every", type=int, default=D.eval_every, metavar="EPOCHS")
    g.add_argument("--stop-after-steps", type=int, default=D.stop_after_steps, metavar="STEPS",
                   help="stop after this many steps in total (resumable with --resume auto)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The `TrainConfig` these command-line arguments describe."""
    from ..training.settings import TrainConfig

    crop = None if args.crop_scale in ([0.0], [0], []) else tuple(args.crop_scale)
    arch = {"depths": args.depths, "hidden_sizes": args.hidden_sizes, "num_meta3d_blocks": args.num_meta3d_blocks,
            "num_attention_heads": args.num_attention_heads, "key_dim": args.key_dim}
    return TrainConfig(
        data=args.data, val_data=args.val_data, val_split=args.val_split, image_size=args.image_size,
        resample=args.resample, mean=args.mean, std=args.std, cache_images=args.cache_images, workers=args.workers,
        model=args.model, config=args.config, arch={k: v for k, v in arch.items() if v is not None},
        distillation_head=not args.no_distillation_head, drop_path_rate=args.drop_path_rate,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay, clip_grad=args.clip_grad,
        precision=args.precision, ema_decay=args.ema_decay, crop_scale=crop, hflip=args.hflip, vflip=args.vflip,
        randaugment_ops=args.randaugment, randaugment_magnitude=args.randaugment_magnitude,
        random_erase=args.random_erase, label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix,
        mix_prob=args.mix_prob, teacher=args.teacher, distillation=args.distillation,
        distill_alpha=args.distill_alpha, distill_tau=args.distill_tau, output_dir=args.output, resume=args.resume,
        seed=args.seed, device=args.device, save_every_steps=args.save_every, log_every=args.log_every,
        eval_every=args.eval_every, progress=not args.no_progress, compile=args.compile,
        stop_after_steps=args.stop_after_steps)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    result = train(config_from_args(args))
    if result.stopped_early:
        print(f"stopped after step {result.global_step}; continue with --resume auto --output {result.output_dir}")
        return 0
    print(f"model saved to {result.model_dir} ({result.seconds:.0f} s, {result.global_step} steps)")
    if result.val:
        print("validation: " + ", ".join(f"{k} {v}" for k, v in result.val.items()))
    return 0
