"""Convert an EfficientFormer checkpoint between the transformers, timm and original layouts.

SRC is a folder, a hub id or a weights file in any of the three layouts (the layout is detected).
The output is checked by running the source and the converted model on the same random batch.

examples:
  efficientformer convert efficientformer_l1_300d.pth efficientformer-l1            # original -> transformers folder
  efficientformer convert timm/efficientformer_l1.snap_dist_in1k l1-hf --dtype float16
  efficientformer convert snap-research/efficientformer-l1-300 l1-timm --format timm
  efficientformer convert l1-hf l1_original.pth --format original
  efficientformer convert l1-timm l1-hf --overwrite                                  # replace the model in l1-hf
  efficientformer convert timm/efficientformerv2_s0.snap_dist_in1k s0-hf             # EfficientFormerV2 likewise
  efficientformer convert s0-hf eformer_s0.pth --format original                     # V2's original release layout

The output is written atomically (built beside DST, then swapped in): an error or a kill leaves what was
there. A DST that already holds a model is refused unless --overwrite is given; then all of that model's
files are replaced (no stale weights stay) and the folder's other files are kept. A DST that is, holds or
lies inside SRC (symlinks resolved) is always refused. --format timm refuses models that timm's
EfficientFormer cannot build (it fixes the attention shape: key_dim 32, 8 heads, attention_ratio 4; V2's
likewise, and key_dim 16, 8 heads, attention_ratio 4 in its downsampling attention).
"""

from __future__ import annotations

import argparse

HELP = "convert a checkpoint between the transformers, timm and original layouts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="folder, hub id or weights file (.safetensors/.bin/.pth/.pt)")
    parser.add_argument("dst", metavar="DST", help="output folder (hf, timm) or .pth file (original)")
    parser.add_argument("--format", choices=("hf", "timm", "original"), default="hf",
                        help="layout to write (default: hf, the transformers folder layout)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="cast floating-point tensors (default: keep as stored)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running both models to compare their outputs")
    parser.add_argument("--allow-training-args", action="store_true",
                        help="read a training checkpoint that pickles its argparse.Namespace arguments "
                             "(allows that class only; use for files you trust)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model already in DST (its model files; other files there are kept)")
    parser.add_argument("--revision", default=None, help="hub revision of SRC")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints.conversion import convert

    result = convert(args.src, args.dst, format=args.format, dtype=args.dtype, verify=args.verify,
                     allow_training_args=args.allow_training_args, overwrite=args.overwrite,
                     revision=args.revision)
    print(f"read {args.src} ({result.source_format} layout), wrote {result.num_tensors} tensors in the "
          f"{result.format} layout to {result.path}")
    for note in result.notes:
        print(f"note: {note}")
    if result.max_abs_diff is not None:
        print(f"verified: largest difference between source and converted model outputs: {result.max_abs_diff:.3g}")
    return 0
