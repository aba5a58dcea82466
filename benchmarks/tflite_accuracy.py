"""TFLite float32 / fp16 / int8 against PyTorch float32 on the real photos of ../shared/fixtures/images.

    /work/venv-tf/bin/python benchmarks/tflite_accuracy.py --model FOLDER_OR_HUB_ID --out benchmarks/results/tflite_accuracy.json

Reports, per variant: file size, relative L2 error of the logits, max abs error, top-1 agreement and
top-5 overlap with PyTorch, and the top-1 class names (with real ImageNet weights these are the
predictions). int8 is dynamic-range quantization (int8 weights, float activations), and int8-full uses a
representative set (the same photos, flipped) for full-integer kernels with float input and output.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from efficientformer.deploy.export import (
    compare_tflite,
    export_tflite,
    keras_model_from_torch,
    run_tflite,
)
from efficientformer.preprocessing.processor import EfficientFormerImageProcessor

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--out", default="tflite_accuracy.json")
parser.add_argument("--workdir", default="/tmp/efficientformer-tflite")
parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "images"))
args = parser.parse_args()

from PIL import Image

from efficientformer.deploy.export import load_model

model = load_model(args.model)  # a preset name gives the bench's random but realistic weights
processor = EfficientFormerImageProcessor.from_pretrained(args.model) if os.path.isdir(args.model) else EfficientFormerImageProcessor()
names = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "camera.png"]
photos = [Image.open(os.path.join(args.images, n)).convert("RGB") for n in names]
x = np.asarray(processor(photos, return_tensors="np")["pixel_values"], np.float32)
with torch.no_grad():
    ref = model(torch.from_numpy(x)).logits.numpy()
labels = model.config.id2label
print("pytorch logits std", float(ref.std()))
os.makedirs(args.workdir, exist_ok=True)
keras_model = keras_model_from_torch(model)
report = {"model": args.model, "images": names, "pytorch_top1": [labels[i] for i in ref.argmax(1)], "variants": {}}
for variant, kwargs in (("fp32", {}), ("fp16", {"quantize": "fp16"}), ("int8", {"quantize": "int8"}),
                        ("int8-full", {"quantize": "int8", "representative": np.concatenate([x, x[..., ::-1]])})):
    t0 = time.time()
    path = export_tflite(keras_model, os.path.join(args.workdir, f"model_{variant}.tflite"), check=False, **kwargs)
    got = run_tflite(path, x)
    row = {"size_mb": os.path.getsize(path) / 1e6, "convert_s": time.time() - t0, **compare_tflite(ref, got),
           "top1": [labels[i] for i in got.argmax(1)]}
    report["variants"][variant] = row
    print(variant, json.dumps(row))
json.dump(report, open(args.out, "w"), indent=1)
print("pytorch top1:", report["pytorch_top1"])
