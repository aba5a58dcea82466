"""Export a model to ONNX, TorchScript, TFLite or Core ML (the folded inference network), and check the
file against PyTorch where the format runs here.

Examples:
  efficientformer export --model snap-research/efficientformer-l1-300 --format onnx l1.onnx
  efficientformer export --model ./my-model --format tflite --quantize fp16 l1_fp16.tflite
  efficientformer export --model l1 --format torchscript --image-size 256 256 l1_256.pt
  efficientformer export --model ./my-model --format coreml l1.mlpackage
  efficientformer export --model timm/efficientformerv2_s0.snap_dist_in1k --format onnx s0.onnx

The model is built as the class its checkpoint holds (two heads, one head, or a backbone, whose output is
last_hidden_state), and the file carries its labels and preprocessing as metadata:
`efficientformer predict photo.jpg --model l1.onnx` runs an exported ONNX file.
"""

from __future__ import annotations

import argparse

HELP = "export a model to onnx, torchscript, tflite or coreml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="file to write (a folder ending in .mlpackage for coreml)")
    parser.add_argument("--model", required=True,
                        help="checkpoint folder, file or hub id (any supported layout), or l1/l3/l7 (V2: s0/s1/s2/l) for random "
                             "weights")
    parser.add_argument("--format", required=True, choices=["onnx", "tflite", "coreml", "torchscript"])
    parser.add_argument("--dynamic-batch", action="store_true", default=True,
                        help="onnx: free batch dimension (the default)")
    parser.add_argument("--static-batch", dest="dynamic_batch", action="store_false",
                        help="onnx: fix the batch to 2 instead")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="input height and width (default: the config's image_size)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                        help="torchscript weights, or coreml compute precision (default fp32 / fp16)")
    parser.add_argument("--quantize", default=None, choices=["fp16", "int8"], help="tflite: quantized weights")
    parser.add_argument("--opset", type=int, default=18, help="onnx opset (>= 17, default 18)")
    parser.add_argument("--no-check", action="store_true", help="skip validating the written file")


def run(args: argparse.Namespace) -> int:
    import os

    from ..errors import InputError
    from ..deploy.export import check_output_path, export, load_model

    if args.quantize and args.format != "tflite":
        raise InputError("--quantize applies to --format tflite only.")
    output = check_output_path(args.output, args.format)  # a folder given for a file fails here, before loading
    model = load_model(args.model)  # the class the checkpoint's heads make it, so the output says what was exported
    try:
        path = export(model, output, format=args.format, image_size=args.image_size,
                      dynamic_batch=args.dynamic_batch, dtype=args.dtype, quantize=args.quantize,
                      check=not args.no_check, opset=args.opset)
    except PermissionError as err:
        raise InputError(f"cannot write {err.filename or output}: permission denied; choose a folder you can "
                         "write to.") from None
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files) \
        if os.path.isdir(path) else os.path.getsize(path)
    checked = "" if args.no_check else ("; spec validated" if args.format == "coreml" else "; checked against PyTorch")
    from ..deploy.metadata import is_backbone

    backbone = is_backbone(type(model).__name__)
    labels = "" if backbone else f", {model.config.num_labels} labels"
    carried = "config" if backbone else "labels"
    print(f"wrote {path} ({size / 1e6:.1f} MB, {type(model).__name__}{labels}, with its {carried} and preprocessing "
          f"as metadata{checked})")
    return 0
