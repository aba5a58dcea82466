"""How far GPU decoding (`efficientformer.preprocessing.gpu_decode`) is from the exact CPU path, on photos.

Usage:
    python benchmarks/gpu_decode_check.py [--device cuda|cpu] [--images 500] [--write FILE.json]

The images: `--images` 640x480 JPEGs made from the fixture photos (`end_to_end.make_jpegs`, quality 90) plus
the fixture JPEGs themselves (../shared/fixtures/images/*.jpg that decode). For each, the `pixel_values` of
`GpuDecoder` on `--device` against `EfficientFormerImageProcessor` (the released checkpoints' settings:
shortest edge 256, bicubic, crop 224), and the float32 logits of EfficientFormer-L1 (random weights, seed 0:
its classes lie close together, so top-1 agreement is a demanding test) on both. Prints one JSON line: the
largest and mean |difference| of `pixel_values`, the share of values that differ, the largest difference in
8-bit levels, the largest |logit difference| and the top-1 agreement. On the CPU (torchvision's libjpeg-turbo)
every figure is 0 / 100%; on CUDA they are nvJPEG's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import FIXTURES, make_jpegs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--write", default=None, help="also write the figures as json to this path")
    args = parser.parse_args(argv)
    from efficientformer import ImageClassifier
    from efficientformer.checkpoints.folder import DEFAULT, processor_for
    from efficientformer.factory import create_model
    from efficientformer.preprocessing.gpu_decode import GpuDecoder

    processor = processor_for(DEFAULT)
    classifier = ImageClassifier(create_model("l1", seed=0), processor, device=args.device)
    decoder = GpuDecoder(processor, args.device)
    worst = total = differing = count = 0.0
    worst_logit, agree, images = 0.0, 0, 0
    std = np.array(processor.image_std, dtype=np.float64)
    level = float((1 / 255) / std.min())  # one 8-bit level in pixel_values, at its largest
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images) + sorted(str(p) for p in FIXTURES.glob("*.jpg"))
        for batch in decoder.batches(paths, args.batch_size, threads=4):
            if not batch.names:
                continue
            exact = torch.from_numpy(processor(batch.names, return_tensors="np")["pixel_values"]).to(args.device)
            diff = (batch.pixels.float() - exact).abs()
            worst = max(worst, float(diff.max()))
            total += float(diff.double().sum())
            differing += float((diff > 0).sum())
            count += diff.numel()
            gpu_logits = classifier.logits_from_pixels(batch.pixels)
            cpu_logits = classifier.logits_from_pixels(exact)
            worst_logit = max(worst_logit, float((gpu_logits - cpu_logits).abs().max()))
            agree += int((gpu_logits.argmax(-1) == cpu_logits.argmax(-1)).sum())
            images += len(batch.names)
    row = {"device": str(decoder.device), "images": images, "pixel_values_max_abs_diff": worst,
           "pixel_values_mean_abs_diff": total / count, "share_of_values_differing": differing / count,
           "max_diff_in_8bit_levels": round(worst / level, 2), "logits_max_abs_diff": worst_logit,
           "top1_agreement": agree / images,
           "gpu": torch.cuda.get_device_name() if decoder.device.type == "cuda" else None,
           "torch": torch.__version__}
    try:
        import torchvision

        row["torchvision"] = torchvision.__version__
    except Exception:  # the decoder above imported it: only its version is missing
        pass
    print(json.dumps(row))
    if args.write:
        from efficientformer.fileio import write_json

        write_json(args.write, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
